"""notebooks/11_beyond.ipynb trains every ablation variant tiny and writes `ablations`."""

from __future__ import annotations

import json
import math

import pytest

from geofusion.experiments.ablations import REFERENCES, SCORES, VARIANTS
from geofusion.experiments.scorecard import validate_scorecard


@pytest.mark.notebook
def test_notebook_11_writes_one_ablation_row_per_variant(run_notebook, tmp_path):
    run_notebook(
        "11_beyond.ipynb", start="2000-01-01", end="2001-12-31", epochs=1, batch_size=16,
        width=2, latent_dim=8, proj_dim=4, proj_hidden_dim=8, easy_min=100,
        n_eval_days=16, members=4, diffusion_steps=10, diffusion_epochs=2,
        diffusion_batch_size=32, diffusion_hidden=16, diffusion_train_days=64,
        climatology_window=183, probe_hidden=[8], probe_iterations=50,
        variants=["baseline", "all"])
    results = json.loads((tmp_path / "runs" / "results" / "11_beyond.json").read_text())
    card = validate_scorecard(results["scorecard"])
    # "all" switches every addition on, so it runs every code path of the other variants.
    assert set(card["ablations"]) == {"baseline", "all", *REFERENCES}
    for variant in ("baseline", "all"):
        row, bounds = card["ablations"][variant], card["intervals"]["ablations"][variant]
        assert set(row) == set(SCORES)
        assert 0 <= row["season_accuracy"] <= 1 and row["seconds_per_epoch"] > 0
        for score in ("reconstruction_rmse_50", "forecast_rmse_1day", "crps_decoder",
                      "crps_diffusion", "crps_forecast_deterministic",
                      "crps_forecast_diffusion"):
            for variable, value in row[score].items():
                low, high = bounds[score][variable]
                assert math.isfinite(value) and value > 0 and low <= value <= high
        # a one-member ensemble's CRPS is its MAE, never above its RMSE
        for variable, mae in row["crps_decoder"].items():
            assert mae <= row["reconstruction_rmse_50"][variable] * (1 + 1e-9)
        # physical units: kelvin, not standardised values
        assert 0.1 < row["crps_decoder"]["2m_temperature"] < 100
        assert all(v > 0 for v in row["spread_skill_forecast_diffusion"].values())
    references = card["ablations"]
    assert set(references["persistence"]) == {"forecast_rmse_1day",
                                              "crps_forecast_deterministic"}
    assert 0.1 < references["climatological_ensemble"]["crps_diffusion"]["2m_temperature"] < 30
    assert 0.1 < references["climatology"]["reconstruction_rmse_50"]["2m_temperature"] < 30
    assert set(VARIANTS) >= {"baseline", "all"}
    # Issue 23: the anomaly space, the EOF-residual encoder, every score on the test block (the
    # last fifth of 2000-2001, from August 2001), the references included.
    assert results["space"] == "anomaly" and results["encoder"] == "eof_residual"
    assert results["scored_block"] == "test" and results["eval_days"][0] >= "2001-08-01"
    assert results["decoder_observed"] is True  # the sparse latents meet a decoder fitted on them
