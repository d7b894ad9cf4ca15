"""Notebooks 02-05 (autoencoder and the three contrastive methods) run end to end, tiny."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# 18 months: the 60 % training block then covers every season, as the season probe needs.
TINY = dict(start="2000-01-01", end="2001-06-30", epochs=1, batch_size=16, width=4,
            latent_dim=16, n_embed=12)
CONTRASTIVE = [("03_barlow_twins.ipynb", "barlow_twins", {"lambd": 0.01}),
               ("04_simclr.ipynb", "simclr", {"temperature": 0.3}),
               ("05_supervised_contrastive.ipynb", "supcon", {"temperature": 0.1})]


def results(tmp_path, name: str) -> dict:
    return json.loads((tmp_path / "runs" / "results" / f"{name}.json").read_text())


def check_scorecard(saved: dict, method: str) -> None:
    """The notebook's table_3_1 entry: its figures, the cosines inside their 95 % intervals."""
    # The run recorded its determinism settings (geofusion.reproducibility.configure).
    assert saved["reproducibility"]["deterministic_algorithms"] is True
    card = saved["scorecard"]
    assert card["table_3_1"] == {method: {
        k: saved[k] for k in ("positive_cosine", "negative_cosine", "embedding_variance")}}
    bounds = card["intervals"]["table_3_1"][method]
    assert sorted(bounds) == ["negative_cosine", "positive_cosine"]
    for key, (low, high) in bounds.items():
        assert low <= saved[key] <= high, (method, key)


@pytest.mark.notebook
def test_autoencoder_notebook_reports_physical_rmse_and_table_figures(run_notebook, tmp_path):
    run_notebook("02_autoencoder.ipynb", **TINY)
    saved = results(tmp_path, "02_autoencoder")
    assert saved["synthetic"] is True and saved["method"] == "autoencoder"
    assert 0.1 < saved["rmse"]["2m_temperature"] < 50  # kelvins, not standardised units
    assert -1 <= saved["negative_cosine"] <= saved["positive_cosine"] <= 1 + 1e-6
    # Scorecard entry, scored on the grid the autoencoder was trained on.
    assert saved["table_3_1_view"] == "native_grid"
    check_scorecard(saved, "autoencoder")
    diagnostics = saved["diagnostics"]  # season probe and latent smoothness (issue 15)
    assert 0 <= diagnostics["season_accuracy"] <= 1 and diagnostics["latent_step"] > 0
    assert (diagnostics["season_accuracy_low"] <= diagnostics["season_accuracy"]
            <= diagnostics["season_accuracy_high"])
    # Issue 23: scored on the test block against the climatology and the equal-size EOF code,
    # with the anomaly metrics, and the report-space model as an extra row.
    from geofusion.experiments.scorecard import validate_scorecard
    card = saved["scorecard"]
    validate_scorecard(card)
    assert saved["scored_block"] == card["scored_block"] == "test" and saved["space"] == "anomaly"
    for section in ("reconstruction_rmse", "reconstruction_acc",
                    "reconstruction_anomaly_variance_explained"):
        assert set(card[section]) == {"climatology", "eof_code", "autoencoder",
                                      "autoencoder_report_space"}, section
    rmse = card["reconstruction_rmse"]["autoencoder"]["0"]
    assert rmse == pytest.approx(saved["rmse"])
    low, high = card["intervals"]["reconstruction_rmse"]["autoencoder"]["0"]["geopotential"]
    assert low <= rmse["geopotential"] <= high
    assert set(saved["eof_code_loss"]) == {"loss", "valid_loss"}
    # The anomaly-space model and the report-space one.
    assert len(list((tmp_path / "runs" / "models").glob("autoencoder-*/checkpoint.pt"))) == 2


@pytest.mark.notebook
def test_contrastive_notebooks_and_the_comparison_table(run_notebook, tmp_path):
    for notebook, method, params in CONTRASTIVE:
        nb = run_notebook(notebook, proj_dim=8, **TINY, **params)
        saved = results(tmp_path, notebook.removesuffix(".ipynb"))
        assert saved["method"] == method and saved["synthetic"] is True
        for key in ("positive_cosine", "negative_cosine", "embedding_variance", "final_loss"):
            assert math.isfinite(saved[key]), key
        check_scorecard(saved, method)
    # The last notebook gathers every method that has results in this run_dir.
    table_html = "".join(output.get("data", {}).get("text/html", "")
                         for output in nb.cells[-1].outputs)
    for method in ("barlow_twins", "simclr", "supcon"):
        assert method in table_html
    assert "report_positive_cosine" in table_html
    # Every encoder's season probe and latent smoothness (issue 15) reach the comparison.
    assert "season_accuracy" in table_html and "latent_second_difference" in table_html


def test_notebooks_03_and_04_are_generated_from_one_template():
    spec = importlib.util.spec_from_file_location(
        "contrastive_notebooks", REPO / "scripts" / "contrastive_notebooks.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for stem in ("03_barlow_twins", "04_simclr"):
        committed = (REPO / "notebooks" / f"{stem}.ipynb").read_text()
        assert committed == generator.text(stem), (
            f"notebooks/{stem}.ipynb differs from its template; edit "
            "scripts/contrastive_notebooks.py and run it")
    assert generator.main(["--check"]) == 0
    # The method-specific entries reach the notebook: its hyperparameter and results name.
    simclr = "".join("".join(c["source"]) for c in generator.render("04_simclr")["cells"])
    assert "temperature=temperature" in simclr and '"04_simclr"' in simclr
    assert "lambd" not in simclr and "<<" not in simclr
    with pytest.raises(ValueError, match="unknown notebook"):
        generator.render("05_supervised_contrastive")
