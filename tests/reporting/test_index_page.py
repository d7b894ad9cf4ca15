"""The run's scorecard, its tables and the index page."""

from __future__ import annotations

import os
import time

import pytest

from geofusion.reporting import execution, index_page


def test_the_scorecard_merges_results_written_during_this_run_only(tmp_path):
    from geofusion.experiments.scorecard import save_results

    run_dir = tmp_path / "runs"
    started = time.time()
    save_results(run_dir, "06_a", {"scorecard": {"climatology_rmse": {"geopotential": 300.0},
                                                  "reconstruction_rmse": {"autoencoder": {
                                                      "0": {"geopotential": 120.0}}}}})
    save_results(run_dir, "08_b", {"environment": {"deterministic_algorithms": True},
                                   "scorecard": {
        "climatology_rmse": {"geopotential": 305.0},
        "forecast_rmse": {"autoencoder": {"1": {"geopotential": 280.0}}}}})
    save_results(run_dir, "07_stale", {"scorecard": {"table_3_1": {"x": {}}}})
    stale = run_dir / "results" / "07_stale.json"
    os.utime(stale, (started - 3600, started - 3600))
    save_results(run_dir, "09_failed", {"scorecard": {"table_3_1": {"y": {}}}})
    params = {"run_dir": str(run_dir), "data_path": "era5.zarr", "device": "cpu"}
    runs = [execution.NotebookRun("06_a", params, 5.0, "ok", started=started - 1),
            execution.NotebookRun("07_stale", params, 5.0, "ok", started=started - 1),
            execution.NotebookRun("08_b", params, 5.0, "ok", started=started - 1),
            execution.NotebookRun("09_failed", params, 5.0, "failed", started=started - 1)]
    card, notes = index_page.build_scorecard(runs, "full", 20.0)
    assert card["climatology_rmse"] == {"geopotential": 300.0}  # 06 first, 08 conflicts
    assert card["forecast_rmse"]["autoencoder"]["1"] == {"geopotential": 280.0}
    assert "table_3_1" not in card  # stale and failed notebooks contribute nothing
    assert (card["synthetic"], card["seconds"], list(card["notebooks"])) == (
        False, 20.0, ["06_a", "08_b"])
    assert card["environment"]["per_notebook"] == {"08_b": {"deterministic_algorithms": True}}
    assert any("07_stale" in n and "predates this run" in n for n in notes)
    assert any("06_a gives 300.0, 08_b gives 305.0" in n for n in notes)
    html = index_page.scorecard_tables_html(card)
    assert '<table id="scorecard-reconstruction_rmse">' in html
    assert "<tr><th>autoencoder / 0</th><td>120</td></tr>" in html
    assert "geopotential (m^2 s^-2)" in html


def test_a_scorecard_breaking_the_schema_fails_the_run_naming_the_notebook(notebook_dir,
                                                                           tmp_path):
    from geofusion.experiments.scorecard import save_results

    run = execution.NotebookRun("01_ok", {"run_dir": str(tmp_path / "runs")}, 1.0, "ok",
                               started=time.time() - 1)
    save_results(tmp_path / "runs", "01_ok", {"scorecard": {"forecast_rmse": {"m": {"d1": {}}}}})
    (tmp_path / "scorecard.png").write_bytes(b"an earlier run's figure")
    with pytest.raises(execution.PipelineError, match=r"01_ok: scorecard\['forecast_rmse'\]"):
        index_page.finish_run([run], "tiny", tmp_path, 1.0, None)
    assert "scorecard invalid" in (tmp_path / "index.html").read_text()
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "scorecard.png").exists()  # no figure of an earlier run either


def scored_run(tmp_path):
    """A notebook run that wrote a scorecard with one learned model beating climatology."""
    from geofusion.experiments.scorecard import save_results

    run_dir = tmp_path / "runs"
    save_results(run_dir, "06_a", {"scorecard": {
        "climatology_rmse": {"geopotential": 300.0},
        "reconstruction_rmse": {"autoencoder": {"0": {"geopotential": 120.0}}},
        "intervals": {"reconstruction_rmse": {"autoencoder": {"0": {
            "geopotential": [110.0, 130.0]}}}}}})
    return [execution.NotebookRun("06_a", {"run_dir": str(run_dir)}, 5.0, "ok",
                                  started=time.time() - 1)]


def test_the_index_opens_with_the_scorecard_figure_written_next_to_it(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    index = index_page.finish_run(scored_run(tmp_path), "quick", reports, 10.0, None)
    png = reports / "scorecard.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = index.read_text()
    # Offline: a relative link to the PNG beside the page, above the tables, inside #scorecard.
    assert '<img src="scorecard.png"' in page and 'id="scorecard-figure"' in page
    assert (page.index('id="scorecard"') < page.index('id="scorecard-figure"')
            < page.index('<table id="scorecard-reconstruction_rmse">'))
    assert "<tr><th>autoencoder / 0</th><td>120 [110, 130]</td></tr>" in page  # tables stay


def test_a_figure_that_cannot_be_drawn_is_a_note_and_no_stale_figure_is_shown(tmp_path,
                                                                             monkeypatch):
    from geofusion.reporting import headline

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "scorecard.png").write_bytes(b"an earlier run's figure")

    def broken(card, path, columns=headline.DEFAULT_COLUMNS):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(headline, "save_scorecard_figure", broken)
    page = index_page.finish_run(scored_run(tmp_path), "quick", reports, 10.0, None).read_text()
    assert not (reports / "scorecard.png").exists()
    assert "scorecard figure not drawn: RuntimeError: no fonts" in page
    assert 'id="scorecard-figure"' not in page
    assert '<table id="scorecard-reconstruction_rmse">' in page
    assert (reports / "headline.md").exists() and (reports / "results.json").exists()
