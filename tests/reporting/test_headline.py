"""The headline: each model against the best baseline of its variable, with its interval."""

import json
import math

import matplotlib.colors
import numpy as np
import pytest

from geofusion.reporting import headline
from geofusion.variables import VARIABLES

T, Z = "2m_temperature", "geopotential"


def card() -> dict:
    """A hand-made scorecard: two variables, two fractions, two leads."""
    return {
        "profile": "quick", "synthetic": True, "commit": "abc1234", "seconds": 600.0,
        "environment": {"torch": "2.13.0+cpu", "device": "cpu"},
        "climatology_rmse": {T: 2.0, Z: 900.0},
        "persistence_rmse": {"1": {T: 1.0, Z: 500.0}},
        "reconstruction_rmse": {
            "autoencoder": {"0": {T: 3.0, Z: 450.0}, "0.5": {T: 4.0, Z: 700.0}},
            "optimal_interpolation": {"0": {T: 0.0, Z: 0.0}, "0.5": {T: 0.8, Z: 1000.0}},
        },
        "forecast_rmse": {
            "lstm": {"1": {T: 0.9, Z: 480.0}},
            "linear_regression": {"1": {T: 1.2, Z: 450.0}},
            "damped_persistence": {"1": {T: 0.95, Z: 520.0}},
            "barlow_twins": None,
        },
        "intervals": {"reconstruction_rmse": {"autoencoder": {"0": {T: [2.8, 3.2],
                                                                     Z: [400.0, 500.0]}}},
                      "forecast_rmse": {"lstm": {"1": {T: [0.85, 0.97], Z: [430.0, 530.0]}}},
                      "climatology_rmse": {T: [1.9, 2.1]}},
    }


def row(table, model, variable):
    return table[(table.model == model) & (table.variable == variable)].iloc[0]


def test_the_best_baseline_is_the_smallest_of_the_sections_baselines_per_variable():
    table = headline.headline_table(card(), "forecast_rmse", "1", (T, Z))
    # T: persistence 1.0, climatology 2.0, damped 0.95, regression 1.2 -> damped persistence.
    t = row(table, "lstm", T)
    assert (t.best_baseline, t.baseline_rmse) == ("damped_persistence", 0.95)
    assert t.ratio == pytest.approx(0.9 / 0.95)
    # Z: regression 450 beats persistence 500 and climatology 900.
    z = row(table, "lstm", Z)
    assert (z.best_baseline, z.ratio) == ("linear_regression", pytest.approx(480 / 450))
    # Baselines and models that do not apply are not rows.
    assert set(table.model) == {"lstm"}


def test_the_linear_twins_are_forecast_baselines():
    """Issue 24: the LIM and the EOF twin (decoded and + residual) are baselines of the
    forecast section: never model rows, and the best baseline where they are the smallest."""
    c = card()
    c["forecast_rmse"].update({"linear_inverse_model": {"1": {T: 0.93, Z: 600.0}},
                               "eof_code": {"1": {T: 1.5, Z: 700.0}},
                               "eof_code_residual": {"1": {T: 0.92, Z: 440.0}}})
    table = headline.headline_table(c, "forecast_rmse", "1", (T, Z))
    assert set(table.model) == {"lstm"}
    assert row(table, "lstm", T).best_baseline == "eof_code_residual"
    assert row(table, "lstm", Z).ratio == pytest.approx(480 / 440)
    del c["forecast_rmse"]["eof_code_residual"]
    table = headline.headline_table(c, "forecast_rmse", "1", (T, Z))
    assert row(table, "lstm", T).best_baseline == "linear_inverse_model"


def test_climatology_is_the_reference_where_optimal_interpolation_is_the_identity():
    table = headline.headline_table(card(), "reconstruction_rmse", "0", (T, Z))
    assert row(table, "autoencoder", T).best_baseline == "climatology"
    assert row(table, "autoencoder", T).ratio == pytest.approx(1.5)
    assert row(table, "autoencoder", Z).ratio == pytest.approx(0.5)
    half = headline.headline_table(card(), "reconstruction_rmse", "0.5", (T, Z))
    assert row(half, "autoencoder", T).best_baseline == "optimal_interpolation"
    assert row(half, "autoencoder", Z).best_baseline == "climatology"  # OI 1000 > 900


def test_markdown_marks_clear_wins_and_losses_from_the_interval():
    text = headline.headline_markdown(card(), columns=(("reconstruction_rmse", "0"),
                                                       ("forecast_rmse", "1")), variables=(T, Z))
    assert "Profile `quick`, synthetic default, commit `abc1234`" in text
    # T: [2.8, 3.2] above climatology 2.0 -> a clear loss; Z: [400, 500] below 900 -> a win.
    assert "| autoencoder | 3 [2.8, 3.2] (×1.50 ✗) | 450 [400, 500] (×0.50 ✓) |" in text
    # LSTM T: [0.85, 0.97] straddles 0.95 -> no mark.
    assert "0.9 [0.85, 0.97] (×0.95) |" in text
    assert "| *best baseline* | climatology 2 [1.9, 2.1] | climatology 900 |" in text


def test_a_column_the_card_lacks_is_named_and_skipped():
    text = headline.headline_markdown(card(), columns=(("forecast_rmse", "3"),))
    assert "forecast_rmse at 3: not in this scorecard" in text and "'1'" in text
    with pytest.raises(ValueError, match="unknown headline section 'table_3_1'"):
        headline.headline_table(card(), "table_3_1", "0")


def test_a_missing_value_is_a_dash_and_nan_ratio():
    partial = card()
    del partial["forecast_rmse"]["lstm"]["1"][Z]
    table = headline.headline_table(partial, "forecast_rmse", "1", (T, Z))
    assert math.isnan(row(table, "lstm", Z).ratio)
    assert "| lstm | 0.9 [0.85, 0.97] (×0.95) | — |" in headline.headline_markdown(
        partial, columns=(("forecast_rmse", "1"),), variables=(T, Z))


def test_command_line_prints_the_markdown_and_names_a_missing_file(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(card()))
    assert headline.main([str(path)]) == 0
    assert "**forecast_rmse, lead (days) 1**" in capsys.readouterr().out
    assert headline.main([str(tmp_path / "absent.json")]) == 2
    assert "run `make reports` first" in capsys.readouterr().err


# --- the scorecard figure -------------------------------------------------------------------

COLUMNS = (("reconstruction_rmse", "0"), ("forecast_rmse", "1"))


def cell_colours(fig):
    """The drawn face colour of every cell, as (rows, columns, RGBA)."""
    fig.draw_without_rendering()
    mesh = fig.axes[0].collections[0]
    rows, columns = mesh.get_array().shape
    return mesh.get_facecolors().reshape(rows, columns, 4)


def marks(fig):
    return {p.get_gid() for p in fig.axes[0].patches if (p.get_gid() or "").startswith("mark:")}


def test_the_figure_has_a_row_per_learned_model_and_a_column_per_column_and_variable():
    fig = headline.scorecard_figure(card(), COLUMNS, (T, Z))
    ax = fig.axes[0]
    assert ax.collections[0].get_array().shape == (2, 4)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["autoencoder", "lstm"]
    # Below each column its best baseline, above each group its section and column.
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clim", "clim", "damped", "regr"]
    texts = [t.get_text() for t in ax.texts]
    assert "reconstruction\n0 missing" in texts and "forecast\nlead 1 d" in texts
    # The printed ratios are headline_table's.
    assert {"1.50", "0.50", f"{0.9 / 0.95:.2f}", f"{480 / 450:.2f}"} <= set(texts)
    assert "profile quick, synthetic default, commit abc1234" in fig._suptitle.get_text()
    assert len(fig.axes) == 2  # the grid and its colour bar


def test_a_cell_is_blue_where_the_model_beats_the_baseline_red_where_it_loses_grey_if_absent():
    colours = cell_colours(headline.scorecard_figure(card(), COLUMNS, (T, Z)))
    red, blue = colours[..., 0], colours[..., 2]
    # autoencoder: T ×1.5 (worse), Z ×0.5 (better); lstm: T ×0.95 (better), Z ×1.07 (worse).
    assert red[0, 0] > blue[0, 0] and blue[0, 1] > red[0, 1]
    assert blue[1, 2] > red[1, 2] and red[1, 3] > blue[1, 3]
    # A larger ratio is further from white: ×0.5 is a deeper blue than ×0.95.
    assert colours[0, 1, 0] < colours[1, 2, 0]
    # The autoencoder has no forecast, the LSTM no reconstruction: grey.
    grey = matplotlib.colors.to_rgba(headline.MISSING_COLOUR)
    for i, j in [(0, 2), (0, 3), (1, 0), (1, 1)]:
        assert tuple(colours[i, j]) == pytest.approx(grey)


def test_the_colour_scale_is_logarithmic_and_symmetric_about_one():
    fig = headline.scorecard_figure(card(), COLUMNS, (T, Z))
    norm = fig.axes[0].collections[0].norm
    assert norm.vmin * norm.vmax == pytest.approx(1.0) and norm(1.0) == pytest.approx(0.5)
    assert norm(0.5) == pytest.approx(1 - norm(2.0))  # ×0.5 and ×2 equally far from white
    assert norm.vmax == pytest.approx(2.0)  # the largest ratio, ×0.5, sets the limits


def test_a_cell_is_framed_exactly_where_the_interval_excludes_the_baseline():
    fig = headline.scorecard_figure(card(), COLUMNS, (T, Z))
    # Autoencoder T [2.8, 3.2] > 2 and Z [400, 500] < 900; LSTM's intervals hold the baseline.
    assert marks(fig) == {f"mark:autoencoder:reconstruction_rmse:0:{T}",
                          f"mark:autoencoder:reconstruction_rmse:0:{Z}"}
    lstm = f"mark:lstm:forecast_rmse:1:{T}"
    touching = card()  # an interval ending at the baseline's 0.95 does not exclude it
    touching["intervals"]["forecast_rmse"]["lstm"]["1"][T] = [0.85, 0.95]
    assert lstm not in marks(headline.scorecard_figure(touching, COLUMNS, (T, Z)))
    below = card()
    below["intervals"]["forecast_rmse"]["lstm"]["1"][T] = [0.85, 0.949]
    assert lstm in marks(headline.scorecard_figure(below, COLUMNS, (T, Z)))
    assert "(×0.95 ✓)" in headline.headline_markdown(below, COLUMNS, (T, Z))  # the same rule


def test_the_cells_and_marks_come_from_the_headline_table():
    cells = headline.scorecard_cells(card(), COLUMNS, (T, Z))
    for section, column in COLUMNS:
        table = headline.headline_table(card(), section, column, (T, Z))
        own = cells[(cells.section == section) & (cells.column == column)]
        assert own.ratio.tolist() == table.ratio.tolist()
        assert own.mark.tolist() == [headline.interval_mark(r) for r in table.itertuples()]


def test_absent_columns_and_values_are_grey_and_named():
    partial = card()
    del partial["forecast_rmse"]["lstm"]["1"][Z]
    fig = headline.scorecard_figure(partial)  # DEFAULT_COLUMNS, every variable
    colours = cell_colours(fig)
    assert colours.shape[:2] == (2, len(headline.DEFAULT_COLUMNS) * len(VARIABLES))
    grey = matplotlib.colors.to_rgba(headline.MISSING_COLOUR)
    lstm_z = 2 * len(VARIABLES) + VARIABLES.index(Z)  # forecast lead 1, geopotential
    assert tuple(colours[1, lstm_z]) == pytest.approx(grey)
    # Forecast lead 3 and assimilation are not in the card: their groups are grey.
    assert np.allclose(colours[:, 3 * len(VARIABLES):], grey)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "forecast\nlead 3 d\n(not in card)" in texts
    assert "assimilation\n0.1 observed\n(not in card)" in texts


def test_all_columns_are_every_column_the_card_holds():
    assert headline.card_columns(card()) == (("reconstruction_rmse", "0"),
                                             ("reconstruction_rmse", "0.5"),
                                             ("forecast_rmse", "1"))
    fig = headline.scorecard_figure(card(), "all", (T, Z))
    assert fig.axes[0].collections[0].get_array().shape == (2, 6)


def test_a_card_without_learned_models_gives_a_figure_saying_so_and_wrong_input_an_error():
    for empty in ({}, {"profile": "tiny", "climatology_rmse": {T: 2.0}}):
        fig = headline.scorecard_figure(empty)
        assert not fig.axes
        assert any("No learned model" in t.get_text() for t in fig.texts)
    with pytest.raises(TypeError, match="a scorecard is a dict"):
        headline.scorecard_figure([card()])
    with pytest.raises(ValueError, match="unknown headline section 'table_3_1'"):
        headline.scorecard_figure(card(), (("table_3_1", "0"),))
    with pytest.raises(ValueError, match="or 'all'"):
        headline.scorecard_figure(card(), "every")


def test_command_line_writes_the_figure(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(card()))
    out = tmp_path / "figures" / "scorecard.png"
    assert headline.main(["--figure", str(out), str(path)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == ""  # the figure instead of the markdown
    assert headline.main(["--figure", str(tmp_path / "all.png"), "--all-columns",
                          str(path)]) == 0
    assert (tmp_path / "all.png").stat().st_size > 0


def test_assimilation_ratios_are_to_the_best_scheme_with_or_without_memory():
    """Issue 24: OI with a damped-persistence background and EOF-space 3D-Var cycled with the
    LIM are baselines of the assimilation section: never rows of their own, and the best of
    the four baselines is the reference per variable."""
    c = card()
    c["assimilation"] = {
        "latent_3dvar": {"0.1": {T: 1.0, Z: 400.0}},
        "free_run": {"0.1": {T: 2.5, Z: 990.0}},
        "climatology": {"0.1": {T: 2.0, Z: 900.0}},
        "optimal_interpolation": {"0.1": {T: 1.5, Z: 700.0}},
        "oi_damped_persistence": {"0.1": {T: 0.8, Z: 650.0}},
        "eof_3dvar": {"0.1": {T: 1.2, Z: 500.0}},
    }
    table = headline.headline_table(c, "assimilation", "0.1", (T, Z))
    assert sorted(set(table.model)) == ["free_run", "latent_3dvar"]
    assert row(table, "latent_3dvar", T).best_baseline == "oi_damped_persistence"
    assert row(table, "latent_3dvar", T).ratio == pytest.approx(1.0 / 0.8)
    assert row(table, "latent_3dvar", Z).best_baseline == "eof_3dvar"
    assert row(table, "latent_3dvar", Z).ratio == pytest.approx(400.0 / 500.0)
