"""Runs, sweeps and seed spreads: a failure stops the run naming notebook and cell, side-by-side
notebooks start after their prerequisites, each sweep value and seed in its own run_dir."""

from __future__ import annotations

import json
import os

import nbformat
import pytest

from geofusion.experiments import profiles
from geofusion.reporting import execution, index_page, notebooks, scheduling
from tests.reporting.notebook_helpers import write_notebook


def test_failing_notebook_stops_the_run_naming_notebook_and_cell(notebook_dir, tmp_path):
    write_notebook(notebook_dir / "01_ok.ipynb", "pass")
    write_notebook(notebook_dir / "02_bad.ipynb", "y = 1", "raise ValueError('broken field')")
    write_notebook(notebook_dir / "03_never.ipynb", "pass")
    with pytest.raises(execution.PipelineError, match=r"notebook 02_bad failed in cell \d+ "
                                                     r"\(ValueError: broken field\)"):
        scheduling.run_pipeline("tiny", output_dir=tmp_path / "reports")
    assert not (tmp_path / "reports" / "03_never.html").exists()
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "failed" in index and "broken field" in index


def test_seeds_reruns_each_seed_in_its_own_run_dir_and_writes_the_spread(notebook_dir, tmp_path):
    profiles.PROFILES["tiny"]["common"]["seed"] = 5
    write_notebook(notebook_dir / "01_ok.ipynb",
                   "from geofusion.experiments.scorecard import save_results\n"
                   "import os; os.makedirs(f'{run_dir}/models', exist_ok=True)\n"
                   "assert not os.listdir(f'{run_dir}/models')  # no other seed's checkpoint\n"
                   "open(f'{run_dir}/models/ckpt-{seed}', 'w').close()\n"
                   "save_results(run_dir, '01_ok', {'scorecard': {'table_3_1': {'m': {"
                   "'positive_cosine': 0.5 + seed / 10, 'negative_cosine': None}}}})",
                   parameters="seed = 0\nrun_dir = 'runs'\ndata_path = None\nx = 1")
    reports = tmp_path / "reports"
    reports.mkdir()
    index_page.write_index([], "tiny", reports, 0.0)
    assert index_page.SEEDS_PLACEHOLDER in (reports / "index.html").read_text()
    record = scheduling.run_seeds("tiny", n=2, only=["01"], output_dir=reports)
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
    with pytest.raises(notebooks.UsageError, match="drop --set seed"):
        scheduling.run_seeds("tiny", n=2, only=["01"], overrides={"seed": 1})


def test_sweep_runs_each_value_in_its_own_run_dir_and_collects_the_results(notebook_dir,
                                                                          tmp_path):
    write_notebook(notebook_dir / "01_ok.ipynb",
                   "from geofusion.experiments.scorecard import save_results\n"
                   "save_results(run_dir, '01_ok', {'x': x, 'twice': 2 * x})")
    table = scheduling.run_sweep("01", {"x": [3, 4]}, "tiny", output_dir=tmp_path / "sweeps")
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


def test_side_by_side_notebooks_start_after_their_prerequisites(notebook_dir, tmp_path,
                                                               monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    card = ("from geofusion.experiments.scorecard import save_results\n"
            "save_results(run_dir, NAME, {'scorecard': {'climatology_rmse': "
            "{'2m_temperature': VALUE}}})")
    write_notebook(notebook_dir / "01_a.ipynb", stamped("01_a"))
    # 02 and 03 both need only 01; 02 is slower, so 03 finishes first.
    write_notebook(notebook_dir / "02_b.ipynb", stamped("02_b", 3.0),
                   card.replace("NAME", "'02_b'").replace("VALUE", "2.0"))
    write_notebook(notebook_dir / "03_c.ipynb", stamped("03_c"),
                   card.replace("NAME", "'03_c'").replace("VALUE", "3.0"))
    write_notebook(notebook_dir / "05_d.ipynb", stamped("05_d"))  # needs 02, 03 (04 not selected)
    runs = scheduling.run_pipeline("tiny", output_dir=tmp_path / "reports", jobs=2)
    assert [r.name for r in runs] == ["01_a", "02_b", "03_c", "05_d"]
    assert all(r.status == "ok" for r in runs)
    t = {name: read_stamp(tmp_path, name) for name in ("01_a", "02_b", "03_c", "05_d")}
    assert t["02_b"][0] >= t["01_a"][1] and t["03_c"][0] >= t["01_a"][1]
    assert t["03_c"][0] < t["02_b"][1]  # side by side
    assert t["05_d"][0] >= max(t["02_b"][1], t["03_c"][1])
    # Each kernel got its share of the cores; the pipeline's own environment is restored.
    assert {threads for *_, threads in t.values()} == {str(scheduling.kernel_threads(2))}
    assert "OMP_NUM_THREADS" not in os.environ
    # The scorecard merges in notebook order, not in the order the notebooks finished.
    card = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert card["climatology_rmse"] == {"2m_temperature": 2.0}
    assert "01_a.html" in (tmp_path / "reports" / "index.html").read_text()


def test_a_side_by_side_failure_lets_the_running_notebook_finish_and_starts_nothing_new(
        notebook_dir, tmp_path):
    write_notebook(notebook_dir / "01_ok.ipynb", "pass")
    write_notebook(notebook_dir / "02_bad.ipynb", "raise ValueError('broken field')")
    write_notebook(notebook_dir / "03_slow.ipynb", stamped("03_slow", 3.0))
    write_notebook(notebook_dir / "04_never.ipynb", stamped("04_never"))
    with pytest.raises(execution.PipelineError, match=r"notebook 02_bad failed"):
        scheduling.run_pipeline("tiny", output_dir=tmp_path / "reports", jobs=2)
    assert (tmp_path / "runs" / "03_slow.stamp").exists()
    assert not (tmp_path / "runs" / "04_never.stamp").exists()
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "broken field" in index and "03_slow.html" in index
    with pytest.raises(notebooks.UsageError, match="--jobs must be at least 1"):
        scheduling.run_pipeline("tiny", output_dir=tmp_path / "reports", jobs=0)


def _transitive_prerequisites(prefix: str) -> set[str]:
    found: set[str] = set()
    stack = list(scheduling.NOTEBOOK_PREREQUISITES[prefix])
    while stack:
        p = stack.pop()
        if p not in found:
            found.add(p)
            stack.extend(scheduling.NOTEBOOK_PREREQUISITES[p])
    return found


def test_prerequisites_cover_every_shared_model_and_results_file():
    names = notebooks.notebook_names()
    assert sorted(scheduling.NOTEBOOK_PREREQUISITES) == sorted(n[:2] for n in names)
    for name in names:
        source = "".join("".join(c.source) for c in nbformat.read(
            notebooks.NOTEBOOK_DIR / f"{name}.ipynb", as_version=4).cells)
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
    waves = scheduling.execution_waves(names, jobs=2)
    assert [n for wave in waves for n in wave] != names  # side by side changes the order
    assert sorted(n for wave in waves for n in wave) == names
