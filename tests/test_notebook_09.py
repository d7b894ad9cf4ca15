"""notebooks/09_fusion.ipynb runs end to end with tiny networks on one synthetic year."""

from __future__ import annotations

import json
import math

import pytest

SCHEMES = ["early", "late_cross_attention"]


@pytest.mark.notebook
def test_notebook_09_compares_fusion_schemes(run_notebook, tmp_path):
    nb = run_notebook(
        "09_fusion.ipynb", start="2000-01-01", end="2000-12-31", schemes=SCHEMES,
        dropout_scheme="late_cross_attention", mode_group_scheme="late_concat", epochs=1,
        batch_size=16, width=4, mode_width=2, token_dim=8, latent_dim=16, proj_dim=8,
        proj_hidden_dim=16, n_train_days=48, n_eval=24, decoder_epochs=1, decoder_width=2,
        fine_start="2001-01-01", fine_end="2001-01-31")
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
    runs = tmp_path / "runs"
    results = json.loads((runs / "results" / "09_fusion.json").read_text())
    expected = [*SCHEMES, "late_cross_attention+dropout", "late_concat+mode_group"]
    assert sorted(results["summary"]) == sorted(expected)
    for name in expected:
        assert (runs / "09_fusion" / name / "checkpoint.pt").exists()
        assert (runs / "09_fusion" / name / "decoder" / "checkpoint.pt").exists()
        row = results["summary"][name]
        assert -1 <= row["missing-mode cosine (worst)"] <= row["missing-mode cosine (mean)"] <= 1
        assert row["recon RMSE / climatology"] > 0 and math.isfinite(row["MFLOPs/sample"])
    # The mode-dropout twin shares its architecture with the plain scheme: same cost.
    plain, twin = results["summary"]["late_cross_attention"], \
        results["summary"]["late_cross_attention+dropout"]
    assert plain["parameters"] == twin["parameters"]
    assert results["synthetic"] is True and results["n_train_days"] == 48
    assert results["fine_grid"] == [64, 128]
    assert set(results["fine_rmse"]) == {"new fine-grid decoder",
                                         "training-grid decoder, upsampled", "climatology"}
    # Physical units: the climatology RMSE of 2 m temperature is kelvins, not standardised.
    climatology_t2m = results["rmse"]["climatology"]["2m_temperature [K]"]
    assert 1 < climatology_t2m < 50
