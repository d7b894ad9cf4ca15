"""notebooks/10_assimilation.ipynb cycles every scheme with tiny models on one synthetic year."""

from __future__ import annotations

import json
import math

import pytest

SCHEMES = ["free_run", "encode_only", "latent_3dvar", "latent_blend", "eof_3dvar",
           "oi_damped_persistence", "optimal_interpolation", "climatology"]


@pytest.mark.notebook
def test_notebook_10_cycles_latent_assimilation(run_notebook, tmp_path):
    run_notebook(
        "10_assimilation.ipynb", start="2000-01-01", end="2000-12-31", batch_size=32, width=4,
        latent_dim=16, proj_dim=8, encoder_epochs=1, decoder_epochs=1, decoder_width=2,
        context=10, lstm_hidden=16, forecast_epochs=1, forecast_batch_size=32, cycle_days=12,
        observed_fractions=[0.1, 0.5], obs_noise_stds=[0.1], b_rank=2, var_iterations=3,
        n_stat_days=64, show_fraction=0.1, show_noise=0.1, space="anomaly",
        train_fraction=0.6, test_fraction=0.2, encoder="eof_residual")
    results = json.loads((tmp_path / "runs" / "results" / "10_assimilation.json").read_text())
    assert results["synthetic"] is True and results["minimiser_monotone"] is True
    # Issue 23: anomaly space, the cycle over the held-out test block (last 20 % of the year).
    assert results["scored_block"] == "test" and results["settings"]["block"] == "test"
    assert results["space"] == "anomaly" and results["encoder_kind"] == "eof_residual"
    # The decoder chosen on validation days between the conv and the ridge decoder.
    assert set(results["decoder_choice"]) == {"conv", "ridge"}
    assert results["decoder"] in results["decoder_choice"]
    assert "2000-10-15" <= results["cycle"][0] <= "2000-10-25"
    card = results["scorecard"]["assimilation"]
    assert set(card) == set(SCHEMES)
    for scheme in SCHEMES:
        assert set(card[scheme]) == {"0.1", "0.5"}
        for fraction, row in card[scheme].items():
            assert all(math.isfinite(v) and v > 0 for v in row.values()), (scheme, fraction)
            bounds = results["scorecard"]["intervals"]["assimilation"][scheme][fraction]
            for variable, value in row.items():
                low, high = bounds[variable]
                assert low <= value <= high
    # physical units: kelvin and m^2 s^-2, not standardised values
    assert 0.5 < card["climatology"]["0.1"]["2m_temperature"] < 30
    assert card["climatology"]["0.1"]["geopotential"] > 50
    # the free run ignores the observations: identical in both observing systems
    assert card["free_run"]["0.1"] == card["free_run"]["0.5"]
    # Issue 24: B's inflation of the classical cycles chosen on validation days, and the
    # targets measured (not typed) at every fraction against EOF 3D-Var and at the sparsest
    # one against climatology-background OI.
    for name in ("eof_3dvar", "oi_damped_persistence"):
        chosen = results["settings"]["classical_inflation"][name]
        assert len(chosen["inflation"]) == 2 and chosen["validation_days"] == 12
    targets = results["targets"]
    assert {(t["reference"], t["observed_fraction"]) for t in targets} == {
        ("eof_3dvar", 0.1), ("eof_3dvar", 0.5), ("optimal_interpolation", 0.1)}
    for t in targets:
        assert t["low"] <= t["difference"] <= t["high"]
        assert t["met"] == (t["rmse"] < t["reference_rmse"] if t["reference"] ==
                            "optimal_interpolation" else t["rmse"] <= t["reference_rmse"])
