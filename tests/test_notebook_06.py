"""notebooks/06_sparsity.ipynb runs end to end with tiny networks on one synthetic year."""

from __future__ import annotations

import json
import math

import pytest

RATIOS = [0.0, 0.5, 0.9]
KINDS = ["pixel", "swath"]
MODELS = ["autoencoder", "barlow_twins", "sparse_barlow_twins"]


@pytest.mark.notebook
def test_notebook_06_compares_models_on_sparse_observations(run_notebook, tmp_path):
    nb = run_notebook(
        "06_sparsity.ipynb", start="2000-01-01", end="2000-12-31", width=4, latent_dim=16,
        proj_dim=8, batch_size=16, ae_epochs=1, encoder_epochs=1, decoder_epochs=1,
        decoder_width=2, n_decoder_days=64, n_eval_days=8, mask_kind="swath", noise_std=0.2,
        static_ratios=[0.0, 0.6], curve_ratios=RATIOS, curve_kinds=KINDS,
        curve_noise_stds=[0.0, 0.5])
    # The widget cell ran: the interactive widget and its initial state as a figure.
    widget_cells = [c for c in nb.cells if "widgets.interactive" in c.source]
    assert len(widget_cells) == 1
    kinds = [key for o in widget_cells[0].outputs for key in o.get("data", {})]
    assert "application/vnd.jupyter.widget-view+json" in kinds and "image/png" in kinds

    runs = tmp_path / "runs"
    results = json.loads((runs / "results" / "06_sparsity.json").read_text())
    observation = {"kind": "swath", "min_ratio": 0.0, "max_ratio": 0.9, "noise_std": 0.2,
                   "noise_length": 2.0, "both_views": False}
    assert results["observation"] == observation and results["synthetic"] is True
    assert results["ratios"] == RATIOS and results["curve_kinds"] == KINDS
    assert results["models"] == MODELS and results["n_eval_days"] == 8
    # The sparse model was trained through runs with exactly this observation dict.
    sparse_dir = runs / "models" / results["model_dirs"]["sparse_barlow_twins"]
    description = json.loads((sparse_dir / "description.json").read_text())
    assert description["params"]["observation"] == observation
    assert (sparse_dir / "checkpoint.pt").exists()
    assert results["model_dirs"]["barlow_twins"] != results["model_dirs"]["sparse_barlow_twins"]

    for kind in KINDS:
        for name in MODELS:
            curve = results["curves"][kind][name]
            for key in ("centred_cosine", "cosine", "rmse_over_climatology",
                        "rmse_2m_temperature"):
                assert len(curve[key]) == len(RATIOS)
                assert all(math.isfinite(v) for v in curve[key]), (kind, name, key)
            # Nothing missing is the complete day: the same latent.
            assert curve["centred_cosine"][0] == pytest.approx(1.0, abs=1e-4)
            assert all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in curve["centred_cosine"])
            assert all(v > 0 for v in curve["rmse_over_climatology"])
            assert sorted(results["rmse"][kind][name]) == sorted(f"{r:g}" for r in RATIOS)
            # Physical units: kelvins for 2 m temperature, not standardised values.
            t2m = results["rmse"][kind][name]["0.9"]["2m_temperature"]
            assert 0.5 < t2m < 50, t2m
    assert 1 < results["climatology_rmse"]["2m_temperature"] < 50
    assert len(results["noise_curves"]["sparse_barlow_twins"]["centred_cosine"]) == 2
    assert sorted(results["static"]) == ["0", "0.6"]
    assert sorted(results["static"]["0.6"]) == sorted(MODELS)
    assert sorted(results["summary"]) == sorted(MODELS)
    for row in results["summary"].values():
        assert all(v is None or math.isfinite(v) for v in row.values())
