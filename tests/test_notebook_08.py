"""notebooks/08_forecasting.ipynb runs end to end with tiny models on one synthetic year."""

from __future__ import annotations

import json
import math

import pytest

FORECASTERS = ["autoencoder", "barlow_twins", "sparse_barlow_twins"]
RATIOS = [0.0, 0.5, 0.9]


@pytest.mark.notebook
def test_notebook_08_forecasts_in_latent_space(run_notebook, tmp_path):
    run_notebook(
        "08_forecasting.ipynb", start="2000-01-01", end="2000-12-31", batch_size=32, width=4,
        latent_dim=16, proj_dim=8, ae_epochs=1, encoder_epochs=1, decoder_epochs=1,
        decoder_width=2, context=10, lstm_hidden=16, forecast_epochs=1, forecast_batch_size=32,
        n_eval_days=60, max_lead=3, context_mask_ratios=RATIOS)
    runs = tmp_path / "runs"
    results = json.loads((runs / "results" / "08_forecasting.json").read_text())
    assert results["synthetic"] is True and results["context"] == 10
    # 60 evaluation days: starts from day 9 (10 days of context) to day 56 (3 days ahead).
    assert results["n_eval_days"] == 60 and results["n_forecasts"] == 48
    assert results["forecasters"] == FORECASTERS
    assert results["baselines"] == ["persistence", "climatology"]
    # One LSTM per representation and a frozen-encoder decoder per Barlow Twins, all cached.
    models = runs / "models"
    assert len(list(models.glob("latent_seq2seq-*/checkpoint.pt"))) == 3
    assert len(list(models.glob("frozen_decoder-*/checkpoint.pt"))) == 2
    assert results["models"]["sparse_barlow_twins"] != results["models"]["barlow_twins"]

    ceilings = [f"{name} (decoder ceiling)" for name in FORECASTERS]
    rmse, acc = results["lead1_rmse"], results["lead1_acc"]
    assert set(rmse) == {*FORECASTERS, "persistence", "climatology", *ceilings}
    for name, row in rmse.items():
        assert set(row) == set(results["channels"])
        assert all(math.isfinite(v) and v > 0 for v in row.values()), (name, row)
        ratio = results["lead1_rmse_over_persistence"][name]
        for variable, value in row.items():
            assert ratio[variable] == pytest.approx(value / rmse["persistence"][variable])
    for name in [*FORECASTERS, "persistence", *ceilings]:
        assert all(-1 <= v <= 1 for v in acc[name].values()), (name, acc[name])
    assert all(v is None for v in acc["climatology"].values())  # zero anomaly: undefined
    # Physical units: 2 m temperature errors in kelvin (standardised ones would be below 1),
    # geopotential in m^2 s^-2.
    assert 1 < rmse["climatology"]["2m_temperature"] < 30
    assert rmse["climatology"]["geopotential"] > 50
    assert set(results["lstm_beats_persistence_lead1"]) == set(FORECASTERS)

    # Rollouts: one value per lead for every forecaster, persistence error grows with lead.
    for name in [*FORECASTERS, "persistence", "climatology"]:
        for variable in results["channels"]:
            values = results["rollout_rmse"][name][variable]
            assert len(values) == 3 and all(math.isfinite(v) for v in values)
            assert len(results["rollout_acc"][name][variable]) == 3
    persistence_t2m = results["rollout_rmse"]["persistence"]["2m_temperature"]
    assert persistence_t2m[0] < persistence_t2m[2]
    assert persistence_t2m[0] == pytest.approx(rmse["persistence"]["2m_temperature"])
    # Lead 1 of the rollout is the lead-1 forecast.
    assert results["rollout_rmse"]["autoencoder"]["2m_temperature"][0] == pytest.approx(
        rmse["autoencoder"]["2m_temperature"], rel=1e-5)

    # Robustness: one RMSE per missing fraction; no mask is the lead-1 forecast.
    assert results["mask_ratios"] == RATIOS
    for name in FORECASTERS:
        t2m = results["mask_ratio_rmse"][name]["2m_temperature"]
        assert len(t2m) == len(RATIOS) and all(math.isfinite(v) for v in t2m)
        assert t2m[0] == pytest.approx(rmse[name]["2m_temperature"], rel=1e-5)
    assert set(results["summary"]) == {*FORECASTERS, "persistence", "climatology", *ceilings}
