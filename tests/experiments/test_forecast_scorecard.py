"""geofusion.experiments.forecast_scorecard: the table of score_forecasts in the scorecard's
nesting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofusion.downstream.forecast_scores import (
    climatology_source,
    persistence_source,
    score_forecasts,
)
from geofusion.experiments.forecast_scorecard import (
    ceiling_lead_table,
    forecast_scorecard,
    target_assessment,
    targets_met,
)
from geofusion.experiments.scorecard import validate_scorecard
from geofusion.verification.baseline_comparison import versus_best_baseline
from geofusion.verification.baselines import climatology

CHANNELS = ["2m_temperature", "geopotential"]
TIMES = np.arange("2001-03-01", "2001-04-10", dtype="datetime64[D]")


@pytest.fixture(scope="module")
def table():
    g = torch.Generator().manual_seed(0)
    x = torch.cumsum(0.3 * torch.randn(len(TIMES), 2, 4, 8, generator=g), dim=0)
    clim = climatology(x.numpy(), TIMES, window=5)
    sources = {"persistence": persistence_source(x), "clim": climatology_source(clim, TIMES)}
    return score_forecasts(sources, x, TIMES, np.linspace(-67.5, 67.5, 4), clim,
                           lambda t: 10.0 * t + 280.0, CHANNELS, context=1, steps=3,
                           inits=np.arange(5, 30), intervals=True)


def test_scorecard_nesting_matches_the_table(table):
    card = forecast_scorecard(table, {"climatology_model": "clim"})
    assert validate_scorecard(card) is card
    assert sorted(card["persistence_rmse"]) == ["1", "2", "3"]
    for lead in ("1", "2", "3"):
        for variable in CHANNELS:
            row = table[(table.forecaster == "clim") & (table.lead == int(lead))
                        & (table.variable == variable)].iloc[0]
            assert card["forecast_rmse"]["climatology_model"][lead][variable] == row.rmse
            assert card["intervals"]["forecast_rmse"]["climatology_model"][lead][variable] == \
                [row.rmse_low, row.rmse_high]
            persistence = table[(table.forecaster == "persistence") & (table.lead == int(lead))
                                & (table.variable == variable)].iloc[0]
            assert card["persistence_rmse"][lead][variable] == persistence.rmse
    with pytest.raises(ValueError, match="not in the table"):
        forecast_scorecard(table, {"linear_regression": "linear regression"})
    with pytest.raises(ValueError, match="intervals=True"):
        forecast_scorecard(table.drop(columns="rmse_low"), {"c": "clim"})


def test_best_baseline_per_lead(table):
    versus = versus_best_baseline(table, ["persistence", "clim"], "persistence", ["lead"],
                                  model="forecaster")
    for lead in (1, 2, 3):
        rows = table[table.lead == lead].set_index(["forecaster", "variable"]).rmse
        relative = {b: np.mean([rows[(b, v)] / rows[("persistence", v)] for v in CHANNELS])
                    for b in ("persistence", "clim")}
        best = min(relative, key=relative.get)
        got = versus.loc[("clim", lead)]
        assert got.best_baseline == best
        assert got.rmse_over_best_baseline == pytest.approx(
            np.mean([rows[("clim", v)] / rows[(best, v)] for v in CHANNELS]))


def test_forecast_summary_rows(table):
    from geofusion.experiments.forecast_scorecard import forecast_summary

    robust = table[table.lead == 1].drop(columns="lead").assign(ratio=0.5)
    summary = forecast_summary(table, ["persistence", "clim"], ["geopotential"],
                               robustness=robust)
    lead1 = table[table.lead == 1].set_index(["forecaster", "variable"]).rmse
    assert summary.loc["clim", "geopotential RMSE lead 1"] == lead1[("clim", "geopotential")]
    expected = np.mean([lead1[("clim", v)] / lead1[("persistence", v)] for v in CHANNELS])
    assert summary.loc["clim", "RMSE/persistence lead 1"] == pytest.approx(expected)
    assert summary.loc["clim", "RMSE/persistence lead 1, 50% missing"] == pytest.approx(expected)
    assert summary.loc["persistence", "RMSE/persistence lead 3"] == pytest.approx(1.0)
    assert summary.loc["clim", "vs best baseline, lead 3"].endswith("better)")


def long_table(values: dict[str, list[float]], variables=CHANNELS, spread: float = 0.05):
    """A score_forecasts-like table: ``values[name][lead - 1]`` for every variable (the
    geopotential 100 times larger), intervals +- ``spread`` relative."""
    import pandas as pd

    rows = []
    for name, per_lead in values.items():
        for lead, value in enumerate(per_lead, start=1):
            for v, variable in enumerate(variables):
                rmse = value * (100.0 if v else 1.0)
                rows.append({"forecaster": name, "lead": lead, "variable": variable,
                             "rmse": rmse, "rmse_low": rmse * (1 - spread),
                             "rmse_high": rmse * (1 + spread), "acc": 0.5, "n": 10})
    return pd.DataFrame(rows)


def test_ceiling_lead_table_puts_the_ceiling_at_lead_zero():
    scores = long_table({"lstm": [1.0, 1.5, 2.0], "damped": [0.9, 1.6, 2.1]})
    ceilings = long_table({"lstm (decoder ceiling)": [0.7],
                           "lstm + residual (perfect latent)": [0.2, 0.4, 0.6]})
    table = ceiling_lead_table(scores, ceilings, {"lstm": "lstm (decoder ceiling)",
                                                  "damped": None,
                                                  "lstm + residual (perfect latent)": None})
    assert list(table.index) == ["lstm", "damped", "lstm + residual (perfect latent)"]
    assert table.loc["lstm", "2m_temperature"].tolist() == [0.7, 1.0, 1.5, 2.0]
    assert table.loc["lstm", ("geopotential", 0)] == pytest.approx(70.0)
    assert np.isnan(table.loc["damped", ("2m_temperature", 0)])
    assert table.loc["lstm + residual (perfect latent)", ("geopotential", 3)] == \
        pytest.approx(60.0)
    with pytest.raises(ValueError, match="not in the scores"):
        ceiling_lead_table(scores, ceilings, {"lstm": "nope"})
    with pytest.raises(ValueError, match="not scored"):
        ceiling_lead_table(scores, ceilings, {"lstm": None}, ["humidity"])


def test_target_assessment_picks_the_best_candidate_and_its_twin():
    scores = long_table({
        "a": [1.0, 2.0, 3.0, 4.0, 5.0], "a + r": [0.8, 2.2, 2.9, 4.0, 5.2],
        "eof": [1.1, 2.0, 3.1, 4.0, 4.0], "eof + r": [0.85, 2.0, 2.8, 4.0, 5.2],
        "damped": [0.9, 2.0, 3.0, 4.0, 5.0]}, spread=0.01)
    twin = {"a": "eof", "a + r": "eof + r"}
    out = target_assessment(scores, ["a", "a + r"], twin, reference="damped")
    assert len(out) == 2 * 2 + 3 * 2
    row = out[(out.target == "beats damped") & (out.lead == 1)
              & (out.variable == "geopotential")].iloc[0]
    assert (row.best_latent, row.reference) == ("a + r", "damped")
    assert row.ratio == pytest.approx(0.8 / 0.9) and row.met
    assert row.intervals == "separate, better"
    lead3 = out[(out.target == "beats damped") & (out.lead == 3)].iloc[0]
    assert lead3.best_latent == "a + r" and lead3.ratio == pytest.approx(2.9 / 3.0)
    twin_rows = out[out.target == "at least as good as its EOF twin"].set_index(
        ["variable", "lead"])
    # Lead 1: a + r (0.8) against eof + r (0.85); lead 3: a + r (2.9) against eof + r (2.8);
    # lead 5: a (5.0) against eof (4.0).
    assert twin_rows.loc[("2m_temperature", 1)].met
    assert not twin_rows.loc[("2m_temperature", 3)].met
    assert twin_rows.loc[("2m_temperature", 3)].intervals == "separate, worse"
    assert (twin_rows.loc[("geopotential", 5)].best_latent,
            twin_rows.loc[("geopotential", 5)].reference) == ("a", "eof")
    assert twin_rows.loc[("geopotential", 5)].ratio == pytest.approx(5.0 / 4.0)
    # Equal RMSE meets "at least as good as" but not "beats".
    equal = target_assessment(long_table({"a": [1.0], "eof": [1.0], "damped": [1.0]}),
                              ["a"], {"a": "eof"}, reference="damped", reference_leads=(1,),
                              twin_leads=(1,))
    assert equal.met.tolist() == [False, False, True, True]
    assert targets_met(equal) == {"beats damped": False,
                                  "at least as good as its EOF twin": True, "all": False}
    assert targets_met(out)["beats damped"] is True
    with pytest.raises(ValueError, match="no EOF twin"):
        target_assessment(scores, ["a"], {}, reference="damped")
    with pytest.raises(ValueError, match="not in the table"):
        target_assessment(scores, ["a"], {"a": "eof"}, reference="persistence")
    with pytest.raises(ValueError, match="intervals=True"):
        target_assessment(scores.drop(columns="rmse_low"), ["a"], twin, reference="damped")
    with pytest.raises(ValueError, match="steps >= 7"):
        target_assessment(scores, ["a"], twin, reference="damped", twin_leads=(7,))


def test_ceiling_map_and_twin_names_name_notebook_08s_rows():
    from geofusion.experiments.forecast_scorecard import ceiling_map, twin_names

    rows = ceiling_map(["ae", "eof_code"])
    assert rows["ae + residual"] == rows["ae + residual (perfect latent)"] == \
        "ae (decoder ceiling)"
    assert rows["linear_inverse_model"] == rows["eof_code"] == "eof_code (decoder ceiling)"
    assert rows["damped_persistence"] is None and rows["persistence"] is None
    assert twin_names(["bt", "bt + residual"], twin="eof") == {"bt": "eof",
                                                                "bt + residual": "eof + residual"}


def test_lstm_stops_and_residual_rho_medians():
    from types import SimpleNamespace

    import pandas as pd

    from geofusion.experiments.forecast_scorecard import lstm_stops, residual_rho_medians

    h = pd.DataFrame({"epoch": [1, 2, 3]})
    h.attrs.update(stop_reason="patience", epochs=8, patience=2, min_delta=0.0, best_epoch=1,
                   best_valid_loss=0.5, restored_best=True)
    stops = lstm_stops({"ae": h})
    assert stops.loc["ae", "epochs_run"] == 3 and stops.loc["ae", "best_epoch"] == 1
    assert stops.loc["ae", "reason"] == "patience" and "epoch 1" in stops.loc["ae", "description"]
    rho = np.zeros((2, 2, 3, 1), dtype=np.float32)
    rho[0, 0, :, 0] = [0.1, 0.9, 0.5]
    rho[1, 1, :, 0] = [0.3, 0.2, 0.4]
    medians = residual_rho_medians({"ae": SimpleNamespace(residual_rho=torch.from_numpy(rho))},
                                   CHANNELS)
    assert medians.loc[("ae", 1), "2m_temperature"] == pytest.approx(0.5)
    assert medians.loc[("ae", 2), "geopotential"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="fit_residual_damping"):
        residual_rho_medians({"ae": SimpleNamespace(residual_rho=np.zeros(3))}, CHANNELS)
