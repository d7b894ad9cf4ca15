"""notebooks/01_data_loading.ipynb runs end to end on one synthetic year, world included."""

from __future__ import annotations

import pytest


@pytest.mark.notebook
def test_notebook_01_runs_on_synthetic_default(run_notebook, tmp_path):
    nb = run_notebook("01_data_loading.ipynb", start="2000-01-01", end="2000-12-31",
                      twin_days=20)
    text = ""
    images = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text += output.get("text", "") + output.get("data", {}).get("text/plain", "")
            images += "image/png" in output.get("data", {})
    assert "SYNTHETIC ERA5-like default" in text
    # Three blocks in time, 60/20/20 of the 366 days (issue 23), and the anomaly space.
    assert "train (220, 5, 32, 64)" in text and "valid (73, 5, 32, 64)" in text
    assert "test (73, 5, 32, 64)" in text and "model space: anomaly" in text
    assert "anomaly share of variance" in text
    assert "specific_humidity" in text  # the summary table
    assert images >= 8  # maps, seasonal cycle, series, heatmap; surface, Hovmoller, twin
    # The simulated world: its version, and the calibration table computed on the run.
    assert "model version" in text
    assert "geopotential persistence/climatology lead 3" in text
    assert "tropical u anomaly std (m/s)" in text
    # The prepared data went to the cache under the test's cache_dir.
    assert list((tmp_path / "cache").glob("prepared_*.json"))
