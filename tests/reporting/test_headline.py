"""The headline: each model against the best baseline of its variable, with its interval."""

import json
import math

import pytest

from geofusion.reporting import headline

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
