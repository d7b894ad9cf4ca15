"""notebooks/06_sparsity.ipynb runs end to end with tiny networks on one synthetic year."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

RATIOS = [0.0, 0.5, 0.9]
KINDS = ["pixel", "swath"]
MODELS = ["autoencoder", "barlow_twins", "sparse_barlow_twins"]


@pytest.mark.notebook
def test_notebook_06_compares_models_on_sparse_observations(run_notebook, tmp_path):
    nb = run_notebook(
        "06_sparsity.ipynb", start="2000-01-01", end="2001-12-31", width=4, latent_dim=16,
        proj_dim=8, batch_size=16, ae_epochs=1, encoder_epochs=1, decoder_epochs=1,
        decoder_width=2, n_decoder_days=64, n_eval_days=8, n_select_days=8, mask_kind="swath",
        noise_std=0.2,
        static_ratios=[0.0, 0.6], curve_ratios=RATIOS, curve_kinds=KINDS,
        curve_noise_stds=[0.0, 0.5])
    # The explorer cell ran: the interactive widget and its initial state as a figure.
    widget_cells = [c for c in nb.cells if "explorer.show" in c.source]
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
    diagnostics = results["sparse_diagnostics"]  # season probe and smoothness (issue 15)
    assert 0 <= diagnostics["season_accuracy"] <= 1 and diagnostics["latent_step"] > 0

    curves = pd.DataFrame(results["curves"])
    clean = curves[curves.noise_std == 0]
    for kind in KINDS:
        for name in MODELS:
            rows = clean[(clean.kind == kind) & (clean.model == name)]
            assert sorted(set(rows.missing_fraction)) == RATIOS
            assert rows[["rmse", "centred_cosine", "cosine"]].map(math.isfinite).all().all()
            # Nothing missing is the complete day: the same latent.
            complete = rows[rows.missing_fraction == 0]
            assert complete.centred_cosine.iloc[0] == pytest.approx(1.0, abs=1e-4)
            assert rows.centred_cosine.between(-1 - 1e-6, 1 + 1e-6).all()
            # Physical units: kelvins for 2 m temperature, not standardised values.
            t2m = rows[(rows.missing_fraction == 0.9) & (rows.variable == "2m_temperature")]
            assert 0.5 < float(t2m.rmse.iloc[0]) < 50
    # The climatology is the day-of-year one (a few kelvins on the synthetic year), ignores the
    # observation, and has no latent.
    climatology = clean[clean.model == "climatology"]
    assert climatology.centred_cosine.isna().all()
    t2m = climatology[climatology.variable == "2m_temperature"].rmse
    assert t2m.nunique() == 1 and 0.1 < t2m.iloc[0] < 10
    assert results["climatology_rmse"]["2m_temperature"] == pytest.approx(t2m.iloc[0])
    noisy = curves[(curves.noise_std == 0.5) & (curves.model == "sparse_barlow_twins")]
    assert len(noisy) == 5 and (noisy.kind == "swath").all()
    assert sorted(results["summary"]) == sorted([*MODELS, "climatology", "optimal_interpolation",
                                                 "eof", "gappy_eof"])
    # Issue 23: scored on the test block, in the anomaly space, the sparse decoder chosen on
    # validation days, anomaly metrics in the summary.
    assert results["scored_block"] == "test" and results["space"] == "anomaly"
    assert results["scorecard"]["scored_block"] == "test"
    assert results["sparse_decoder"] in results["decoder_choice"]
    assert set(results["barlow_twins_decoder_choice"]) == {"ridge", "frozen"}
    assert results["barlow_twins_decoder"] in {"ridge", "frozen"}
    assert set(results["targets_50"]) == set(curves.variable)
    assert any(k.startswith("anomaly correlation") for k in results["summary"]["eof"])
    # Optimal interpolation: no latent, and with nothing missing and no noise it returns the
    # observed day itself (up to the nugget), far below the climatology.
    oi = clean[(clean.model == "optimal_interpolation") & (clean.missing_fraction == 0)
               & (clean.variable == "2m_temperature")]
    assert oi.centred_cosine.isna().all() and (oi.rmse < 0.1 * t2m.iloc[0]).all()
    for name, row in results["summary"].items():
        numbers = [v for v in row.values() if not isinstance(v, str)]
        assert all(v is None or math.isfinite(v) for v in numbers), name
    # The scorecard part (issue 13, section 4): pixel masks, physical units, intervals.
    card = results["scorecard"]
    assert card["climatology_rmse"] == pytest.approx(results["climatology_rmse"])
    assert sorted(card["reconstruction_rmse"]) == sorted([*MODELS, "optimal_interpolation", "eof",
                                                        "gappy_eof"])
    for name in [*MODELS, "optimal_interpolation"]:
        assert sorted(card["reconstruction_rmse"][name]) == ["0", "0.5", "0.9"]
        for fraction, scores in card["reconstruction_rmse"][name].items():
            assert sorted(scores) == sorted(results["climatology_rmse"])
            for variable, value in scores.items():
                low, high = card["intervals"]["reconstruction_rmse"][name][fraction][variable]
                assert low <= value <= high, (name, fraction, variable)
    low, high = card["intervals"]["climatology_rmse"]["2m_temperature"]
    assert low <= card["climatology_rmse"]["2m_temperature"] <= high
    assert results["summary"]["sparse_barlow_twins"]["best baseline, 0.9 missing"] in (
        "climatology", "optimal_interpolation")
