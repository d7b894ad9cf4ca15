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
from geofusion.experiments.forecast_scorecard import forecast_scorecard
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
