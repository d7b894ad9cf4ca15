"""The papermill pipeline: parameters per profile, rendering, index, failures named."""

from __future__ import annotations

import doctest
import json
import os
import time

import nbformat
import pytest

from geofusion.experiments import profiles
from geofusion.reporting import pipeline


def write_notebook(path, *sources, parameters="x = 1\ny = 0\nrun_dir = 'runs'\ndata_path = None"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    directory = tmp_path / "notebooks"
    directory.mkdir()
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", directory)
    monkeypatch.setattr(profiles, "PROFILES", {"tiny": {
        "common": {"data_path": None, "run_dir": str(tmp_path / "runs")}, "01_ok": {"x": 2}}})
    return directory


def test_parse_assignments_reads_json_and_python_literals():
    assert pipeline.parse_assignments(
        ["epochs=2", "data_path=null", "level=None", "both_views=True", "device=cuda",
         "lr=1e-3", "name=None of them"]) == {
        "epochs": 2, "data_path": None, "level": None, "both_views": True, "device": "cuda",
        "lr": 1e-3, "name": "None of them"}
    with pytest.raises(ValueError, match="key=value"):
        pipeline.parse_assignments(["epochs"])
    with pytest.raises(ValueError, match="given twice"):
        pipeline.parse_assignments(["epochs=1", "epochs=2"])


def test_parse_grid_reads_each_value_like_set():
    assert pipeline.parse_grid(["lambd=0.001,0.1", "level=None,500", "kind=pixel,patch"]) == {
        "lambd": [0.001, 0.1], "level": [None, 500], "kind": ["pixel", "patch"]}
    for bad, message in [("lambd", "key=v1,v2"), ("lambd=0.1,", "empty value"),
                         ("=1,2", "key=v1,v2")]:
        with pytest.raises(ValueError, match=message):
            pipeline.parse_grid([bad])


def test_pipeline_renders_notebooks_and_index(notebooks, tmp_path, capfd):
    """Through the command line: the profile's value and a `--set y=None` reach the notebook;
    the kernel's TCP warning is gone (issue 10) while what a kernel writes to its stderr still
    reaches the terminal."""
    write_notebook(notebooks / "01_ok.ipynb", "print('x is', x, 'and y is', repr(y))",
                   "import os; os.write(2, b'a real kernel complaint\\n')",
                   "from geofusion.experiments.scorecard import save_results\n"
                   "save_results(run_dir, '01_ok', {'scorecard': {'climatology_rmse': "
                   "{'2m_temperature': 2.0 + x}, 'intervals': {'climatology_rmse': "
                   "{'2m_temperature': [3.5, 4.5]}}}})")
    status = pipeline.main(["run", "01", "--profile", "tiny", "--set", "y=None",
                            "--output-dir", str(tmp_path / "reports")])
    assert status == 0
    html = (tmp_path / "reports" / "01_ok.html").read_text()
    assert "x is 2 and y is None" in html  # profile parameter and Python None arrived
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "01_ok.html" in index and "git commit" in index
    assert '<code id="profile">tiny</code>' in index
    assert 'id="synthetic" data-synthetic="true"' in index and 'id="commit"' in index
    assert 'id="machine"' in index
    # The scorecard: the notebook's section merged with the pipeline's provenance, shown first.
    card = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert card["climatology_rmse"] == {"2m_temperature": 4.0}
    assert card["intervals"] == {"climatology_rmse": {"2m_temperature": [3.5, 4.5]}}
    assert (card["profile"], card["synthetic"], card["overrides"]) == ("tiny", True,
                                                                      {"y": None})
    assert card["commit"] == pipeline.git_commit() and list(card["notebooks"]) == ["01_ok"]
    assert {"torch", "cuda", "cudnn", "deterministic_algorithms"} <= set(card["environment"])
    assert index.index('id="scorecard"') < index.index('id="notebooks"')
    assert "<td>4 [3.5, 4.5]</td>" in index
    headline = (tmp_path / "reports" / "headline.md").read_text()
    assert "Profile `tiny`" in headline and card["commit"] in headline
    err = capfd.readouterr().err
    assert "a real kernel complaint" in err
    assert "without encryption" not in err


def test_a_dying_kernel_is_a_pipeline_error_naming_the_notebook(notebooks, tmp_path):
    write_notebook(notebooks / "01_dies.ipynb", "import os; os._exit(3)")
    with pytest.raises(pipeline.PipelineError, match="kernel running notebook 01_dies died"):
        pipeline.execute("01_dies", {}, tmp_path / "reports")


def test_a_misspelt_key_fails_before_any_notebook_runs_naming_the_valid_keys(notebooks,
                                                                             tmp_path):
    write_notebook(notebooks / "01_ok.ipynb", "pass")
    reports = tmp_path / "reports"
    with pytest.raises(pipeline.UsageError, match=r"'xx' is not a parameter of 01_ok .*did "
                                                  r"you mean 'x'\? valid keys of 01_ok: "
                                                  r"data_path, run_dir, x, y"):
        pipeline.run_pipeline("tiny", overrides={"xx": 3}, output_dir=reports)
    with pytest.raises(pipeline.UsageError, match="--grid 'z' is not a parameter of 01_ok"):
        pipeline.run_sweep("01", {"z": [1, 2]}, "tiny", output_dir=reports)
    with pytest.raises(pipeline.UsageError, match="both swept"):
        pipeline.run_sweep("01", {"x": [1, 2]}, "tiny", {"x": 3}, output_dir=reports)
    assert not reports.exists()  # nothing ran
    assert pipeline.main(["--profile", "tiny", "--set", "xx=3"]) == 2


def test_a_key_goes_to_the_notebooks_that_declare_it_and_needs_at_least_one(notebooks):
    write_notebook(notebooks / "01_ok.ipynb", "pass")
    write_notebook(notebooks / "02_lr.ipynb", "pass",
                   parameters="lr = 0.1\nrun_dir = 'runs'\ndata_path = None")
    applied = pipeline.applied_overrides(["01_ok", "02_lr"], {"lr": 0.5, "data_path": None})
    assert applied == {"01_ok": {"data_path": None}, "02_lr": {"lr": 0.5, "data_path": None}}
    with pytest.raises(pipeline.UsageError, match=r"'lrr' is not a parameter of 01_ok, 02_lr.*"
                                                  r"valid keys of all: data_path, run_dir; "
                                                  r"01_ok also x, y; 02_lr also lr"):
        pipeline.applied_overrides(["01_ok", "02_lr"], {"lrr": 0.5})
    # The profile's own entries are checked too.
    profiles.PROFILES["tiny"]["02_lr"] = {"lr_typo": 1}
    with pytest.raises(pipeline.UsageError, match=r"PROFILES\['tiny'\] sets \['lr_typo'\]"):
        pipeline.checked_parameters("tiny", ["02_lr"])


def test_failing_notebook_stops_the_run_naming_notebook_and_cell(notebooks, tmp_path):
    write_notebook(notebooks / "01_ok.ipynb", "pass")
    write_notebook(notebooks / "02_bad.ipynb", "y = 1", "raise ValueError('broken field')")
    write_notebook(notebooks / "03_never.ipynb", "pass")
    with pytest.raises(pipeline.PipelineError, match=r"notebook 02_bad failed in cell \d+ "
                                                     r"\(ValueError: broken field\)"):
        pipeline.run_pipeline("tiny", output_dir=tmp_path / "reports")
    assert not (tmp_path / "reports" / "03_never.html").exists()
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "failed" in index and "broken field" in index


def test_only_and_sweep_accept_the_same_prefixes_and_reject_unknown_or_ambiguous(
        notebooks, capsys):
    write_notebook(notebooks / "01_ok.ipynb", "pass")
    write_notebook(notebooks / "02_other.ipynb", "pass")
    assert pipeline.notebook_names(["02"]) == ["02_other"]
    assert pipeline.notebook_names(["notebooks/02_other.ipynb", "01_ok"]) == ["01_ok",
                                                                               "02_other"]
    with pytest.raises(ValueError, match="no notebook name starts with"):
        pipeline.notebook_names(["09"])
    assert pipeline.resolve_notebook("02_o") == "02_other"
    with pytest.raises(ValueError, match=r"'0' matches several notebooks \['01_ok', "
                                         r"'02_other'\]"):
        pipeline.resolve_notebook("0")
    with pytest.raises(ValueError, match="no notebook name starts with"):
        pipeline.run_sweep("09", {"x": [1]}, "tiny")
    capsys.readouterr()
    assert pipeline.main(["sweep", "02", "--profile", "tiny", "--grid", "x=3,None",
                          "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "[geofusion] would run 02_other with x=3", "[geofusion] would run 02_other with x=None"]
    assert pipeline.main(["sweep", "0", "--profile", "tiny", "--grid", "x=3"]) == 2
    assert "matches several notebooks" in capsys.readouterr().err


def test_docstring_examples_of_the_pipeline_pass():
    """The usage examples in the docstrings are run as doctests (real notebooks, nothing
    executed)."""
    result = doctest.testmod(pipeline, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 10


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
    runs = [pipeline.NotebookRun("06_a", params, 5.0, "ok", started=started - 1),
            pipeline.NotebookRun("07_stale", params, 5.0, "ok", started=started - 1),
            pipeline.NotebookRun("08_b", params, 5.0, "ok", started=started - 1),
            pipeline.NotebookRun("09_failed", params, 5.0, "failed", started=started - 1)]
    card, notes = pipeline.build_scorecard(runs, "full", 20.0)
    assert card["climatology_rmse"] == {"geopotential": 300.0}  # 06 first, 08 conflicts
    assert card["forecast_rmse"]["autoencoder"]["1"] == {"geopotential": 280.0}
    assert "table_3_1" not in card  # stale and failed notebooks contribute nothing
    assert (card["synthetic"], card["seconds"], list(card["notebooks"])) == (
        False, 20.0, ["06_a", "08_b"])
    assert card["environment"]["per_notebook"] == {"08_b": {"deterministic_algorithms": True}}
    assert any("07_stale" in n and "predates this run" in n for n in notes)
    assert any("06_a gives 300.0, 08_b gives 305.0" in n for n in notes)
    html = pipeline.scorecard_tables_html(card)
    assert '<table id="scorecard-reconstruction_rmse">' in html
    assert "<tr><th>autoencoder / 0</th><td>120</td></tr>" in html
    assert "geopotential (m^2 s^-2)" in html


def test_a_scorecard_breaking_the_schema_fails_the_run_naming_the_notebook(notebooks,
                                                                           tmp_path):
    from geofusion.experiments.scorecard import save_results

    run = pipeline.NotebookRun("01_ok", {"run_dir": str(tmp_path / "runs")}, 1.0, "ok",
                               started=time.time() - 1)
    save_results(tmp_path / "runs", "01_ok", {"scorecard": {"forecast_rmse": {"m": {"d1": {}}}}})
    with pytest.raises(pipeline.PipelineError, match=r"01_ok: scorecard\['forecast_rmse'\]"):
        pipeline._finish([run], "tiny", tmp_path, 1.0, None)
    assert "scorecard invalid" in (tmp_path / "index.html").read_text()
    assert not (tmp_path / "results.json").exists()


def test_seeds_reruns_each_seed_in_its_own_run_dir_and_writes_the_spread(notebooks, tmp_path):
    profiles.PROFILES["tiny"]["common"]["seed"] = 5
    write_notebook(notebooks / "01_ok.ipynb",
                   "from geofusion.experiments.scorecard import save_results\n"
                   "import os; os.makedirs(f'{run_dir}/models', exist_ok=True)\n"
                   "assert not os.listdir(f'{run_dir}/models')  # no other seed's checkpoint\n"
                   "open(f'{run_dir}/models/ckpt-{seed}', 'w').close()\n"
                   "save_results(run_dir, '01_ok', {'scorecard': {'table_3_1': {'m': {"
                   "'positive_cosine': 0.5 + seed / 10, 'negative_cosine': None}}}})",
                   parameters="seed = 0\nrun_dir = 'runs'\ndata_path = None\nx = 1")
    reports = tmp_path / "reports"
    reports.mkdir()
    pipeline.write_index([], "tiny", reports, 0.0)
    assert pipeline.SEEDS_PLACEHOLDER in (reports / "index.html").read_text()
    record = pipeline.run_seeds("tiny", n=2, only=["01"], output_dir=reports)
    assert record["seeds"] == [5, 6] and record["notebooks"] == ["01_ok"]
    entry = record["spread"]["table_3_1"]["m"]["positive_cosine"]
    assert entry["values"] == pytest.approx([1.0, 1.1])
    assert entry["mean"] == pytest.approx(1.05) and entry["std"] == pytest.approx(0.1 / 2 ** 0.5)
    assert record["spread"]["table_3_1"]["m"]["negative_cosine"]["n"] == 0
    assert json.loads((reports / "seeds.json").read_text())["seeds"] == [5, 6]
    for seed in (5, 6):
        card = json.loads((reports / "seeds" / f"seed={seed}" / "results.json").read_text())
        assert card["table_3_1"]["m"]["positive_cosine"] == pytest.approx(0.5 + seed / 10)
        assert os.listdir(tmp_path / "runs" / "seeds" / f"seed={seed}" / "models") == [
            f"ckpt-{seed}"]
    assert "<td>1.05 ± 0.07071</td>" in (reports / "seeds.html").read_text()
    assert 'href="seeds.html"' in (reports / "index.html").read_text()
    with pytest.raises(pipeline.UsageError, match="drop --set seed"):
        pipeline.run_seeds("tiny", n=2, only=["01"], overrides={"seed": 1})


def test_sweep_runs_each_value_in_its_own_run_dir_and_collects_the_results(notebooks,
                                                                          tmp_path):
    write_notebook(notebooks / "01_ok.ipynb",
                   "from geofusion.experiments.scorecard import save_results\n"
                   "save_results(run_dir, '01_ok', {'x': x, 'twice': 2 * x})")
    table = pipeline.run_sweep("01", {"x": [3, 4]}, "tiny", output_dir=tmp_path / "sweeps")
    assert table[["x", "twice"]].values.tolist() == [[3, 6], [4, 8]]
    assert [p.split("/runs/")[1] for p in table["file"]] == [
        "sweeps/01_ok/x=3/results/01_ok.json", "sweeps/01_ok/x=4/results/01_ok.json"]
    assert (tmp_path / "sweeps" / "01_ok.csv").read_text().startswith("twice,x,file")


STAMP = ("import os, time, pathlib\n"
         "stamp = pathlib.Path(run_dir) / (NAME + '.stamp')\n"
         "stamp.parent.mkdir(parents=True, exist_ok=True)\n"
         "start = time.time()\n"
         "time.sleep(PAUSE)\n"
         "stamp.write_text(f\"{start} {time.time()} {os.environ.get('OMP_NUM_THREADS')}\")")


def stamped(name: str, pause: float = 0.0) -> str:
    return STAMP.replace("NAME", repr(name)).replace("PAUSE", str(pause))


def read_stamp(tmp_path, name):
    start, end, threads = (tmp_path / "runs" / f"{name}.stamp").read_text().split()
    return float(start), float(end), threads


def test_side_by_side_notebooks_start_after_their_prerequisites(notebooks, tmp_path,
                                                               monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    card = ("from geofusion.experiments.scorecard import save_results\n"
            "save_results(run_dir, NAME, {'scorecard': {'climatology_rmse': "
            "{'2m_temperature': VALUE}}})")
    write_notebook(notebooks / "01_a.ipynb", stamped("01_a"))
    # 02 and 03 both need only 01; 02 is slower, so 03 finishes first.
    write_notebook(notebooks / "02_b.ipynb", stamped("02_b", 3.0),
                   card.replace("NAME", "'02_b'").replace("VALUE", "2.0"))
    write_notebook(notebooks / "03_c.ipynb", stamped("03_c"),
                   card.replace("NAME", "'03_c'").replace("VALUE", "3.0"))
    write_notebook(notebooks / "05_d.ipynb", stamped("05_d"))  # needs 02, 03 (04 not selected)
    runs = pipeline.run_pipeline("tiny", output_dir=tmp_path / "reports", jobs=2)
    assert [r.name for r in runs] == ["01_a", "02_b", "03_c", "05_d"]
    assert all(r.status == "ok" for r in runs)
    t = {name: read_stamp(tmp_path, name) for name in ("01_a", "02_b", "03_c", "05_d")}
    assert t["02_b"][0] >= t["01_a"][1] and t["03_c"][0] >= t["01_a"][1]
    assert t["03_c"][0] < t["02_b"][1]  # side by side
    assert t["05_d"][0] >= max(t["02_b"][1], t["03_c"][1])
    # Each kernel got its share of the cores; the pipeline's own environment is restored.
    assert {threads for *_, threads in t.values()} == {str(pipeline.kernel_threads(2))}
    assert "OMP_NUM_THREADS" not in os.environ
    # The scorecard merges in notebook order, not in the order the notebooks finished.
    card = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert card["climatology_rmse"] == {"2m_temperature": 2.0}
    assert "01_a.html" in (tmp_path / "reports" / "index.html").read_text()


def test_a_side_by_side_failure_lets_the_running_notebook_finish_and_starts_nothing_new(
        notebooks, tmp_path):
    write_notebook(notebooks / "01_ok.ipynb", "pass")
    write_notebook(notebooks / "02_bad.ipynb", "raise ValueError('broken field')")
    write_notebook(notebooks / "03_slow.ipynb", stamped("03_slow", 3.0))
    write_notebook(notebooks / "04_never.ipynb", stamped("04_never"))
    with pytest.raises(pipeline.PipelineError, match=r"notebook 02_bad failed"):
        pipeline.run_pipeline("tiny", output_dir=tmp_path / "reports", jobs=2)
    assert (tmp_path / "runs" / "03_slow.stamp").exists()
    assert not (tmp_path / "runs" / "04_never.stamp").exists()
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "broken field" in index and "03_slow.html" in index
    with pytest.raises(pipeline.UsageError, match="--jobs must be at least 1"):
        pipeline.run_pipeline("tiny", output_dir=tmp_path / "reports", jobs=0)


def _transitive_prerequisites(prefix: str) -> set[str]:
    found: set[str] = set()
    stack = list(pipeline.NOTEBOOK_PREREQUISITES[prefix])
    while stack:
        p = stack.pop()
        if p not in found:
            found.add(p)
            stack.extend(pipeline.NOTEBOOK_PREREQUISITES[p])
    return found


def test_prerequisites_cover_every_shared_model_and_results_file():
    names = pipeline.notebook_names()
    assert sorted(pipeline.NOTEBOOK_PREREQUISITES) == sorted(n[:2] for n in names)
    for name in names:
        source = "".join("".join(c.source) for c in nbformat.read(
            pipeline.NOTEBOOK_DIR / f"{name}.ipynb", as_version=4).cells)
        needs = _transitive_prerequisites(name[:2])
        if name[:2] != "01":
            assert "01" in needs, name  # the prepared-data cache
        for other in names:  # results another notebook saved
            if other != name and f'"{other}"' in source and "load_results" in source:
                assert other[:2] in needs, (name, other)
    # The shared base models (test above): 06-08 and 10 after 02, 03; 07, 08, 10 after 06's
    # sparse-view model; 10 after 08's LSTM.
    for later in ("06", "07", "08", "10"):
        assert {"02", "03"} <= _transitive_prerequisites(later)
    assert all("06" in _transitive_prerequisites(p) for p in ("07", "08", "10"))
    assert "08" in _transitive_prerequisites("10")
    waves = pipeline.execution_waves(names, jobs=2)
    assert [n for wave in waves for n in wave] != names  # side by side changes the order
    assert sorted(n for wave in waves for n in wave) == names
