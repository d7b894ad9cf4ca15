"""Runs, sweeps and seed spreads as dask.distributed tasks: a failure stops the notebooks that
need the failed one and is reported with its notebook and cell at the end while the others keep
their results, notebooks start after their prerequisites (locally and on a cluster of two
workers given by address), training notebooks ask for a GPU where the cluster has them, each
sweep value and seed in its own run_dir."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from distributed import LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

from geofusion.experiments import profiles
from geofusion.reporting import cli, execution, index_page, notebooks, scheduling
from tests.reporting.notebook_helpers import write_notebook


def test_a_failing_notebook_stops_only_the_notebooks_that_need_it(notebook_dir, tmp_path, capfd):
    """Through the command line, one notebook at a time: the failure's notebook, cell and
    exception reach the user with exit status 1; 03 (independent) still runs and keeps its
    report; 05 (needs 02) is not run; the index records all three."""
    write_notebook(notebook_dir / "01_ok.ipynb", "pass")
    write_notebook(notebook_dir / "02_bad.ipynb", "y = 1", "\nraise ValueError('broken field')")
    write_notebook(notebook_dir / "03_independent.ipynb", "pass")
    write_notebook(notebook_dir / "05_needs_02.ipynb", "pass")
    reports = tmp_path / "reports"
    assert cli.main(["run", "--profile", "tiny", "--output-dir", str(reports)]) == 1
    err = capfd.readouterr().err
    assert re.search(r"FAILED: notebook 02_bad failed in cell \d+ \(ValueError: broken field\), "
                     r"the cell starting `raise ValueError\('broken field'\)`", err), err
    assert str(reports / "02_bad.ipynb") in err
    assert "not run, as they need a notebook that failed: 05_needs_02" in err
    assert (reports / "03_independent.html").exists() and (reports / "02_bad.html").exists()
    assert not (reports / "05_needs_02.ipynb").exists()
    index = (reports / "index.html").read_text()
    assert "failed" in index and "broken field" in index and "03_independent.html" in index
    assert "not run: needs 02_bad" in index


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
    """Two values at once; a failing value (x=5) is reported at the end, the others' results
    are kept."""
    write_notebook(notebook_dir / "01_ok.ipynb",
                   "from geofusion.experiments.scorecard import save_results\n"
                   "assert x != 5, 'x=5 breaks'\n"
                   "save_results(run_dir, '01_ok', {'x': x, 'twice': 2 * x})")
    with pytest.raises(execution.PipelineError, match=r"notebook 01_ok failed in cell \d+ "
                                                      r"\(AssertionError: x=5 breaks\)"):
        scheduling.run_sweep("01", {"x": [3, 4, 5]}, "tiny", output_dir=tmp_path / "sweeps",
                             jobs=2)
    table = pd.read_csv(tmp_path / "sweeps" / "01_ok.csv")
    assert table[["x", "twice"]].values.tolist() == [[3, 6], [4, 8]]
    assert [p.split("/runs/")[1] for p in table["file"]] == [
        "sweeps/01_ok/x=3/results/01_ok.json", "sweeps/01_ok/x=4/results/01_ok.json"]
    assert (tmp_path / "sweeps" / "01_ok.csv").read_text().startswith("twice,x,file")
    assert (tmp_path / "sweeps" / "01_ok" / "x=5" / "01_ok.html").exists()


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


class ResourceRecorder(SchedulerPlugin):
    """The resource restrictions of every task the scheduler starts, by key."""

    def __init__(self, scheduler):
        self.scheduler, self.seen = scheduler, {}

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            self.seen[key] = self.scheduler.tasks[key].resource_restrictions


@pytest.fixture(scope="module")
def two_workers():
    """A local dask cluster of two in-process workers with one thread and one ``GPU``
    resource each, as `dask worker --nthreads 1 --resources GPU=1` would give; its address is
    handed to the pipeline like a SLURM cluster's."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, memory_limit=0,
                      dashboard_address=None, resources={"GPU": 1}) as cluster:
        recorder = ResourceRecorder(cluster.scheduler)
        cluster.scheduler.add_plugin(recorder)
        yield cluster.scheduler_address, recorder


def restrictions(recorder, key):
    (found,) = [r for k, r in recorder.seen.items() if k.startswith(f"{key} [")]
    return found


def test_notebooks_on_a_two_worker_cluster_respect_prerequisites_and_ask_for_gpus(
        notebook_dir, tmp_path, two_workers):
    address, recorder = two_workers
    profiles.PROFILES["tiny"]["common"]["device"] = "cuda"
    params = "x = 1\ny = 0\nrun_dir = 'runs'\ndata_path = None\ndevice = 'cpu'"
    write_notebook(notebook_dir / "01_a.ipynb", stamped("01_a"), parameters=params)
    write_notebook(notebook_dir / "02_b.ipynb", stamped("02_b", 2.0), parameters=params)
    write_notebook(notebook_dir / "03_c.ipynb", stamped("03_c"), parameters=params)
    write_notebook(notebook_dir / "05_d.ipynb", stamped("05_d"), parameters=params)
    runs = scheduling.run_pipeline("tiny", output_dir=tmp_path / "reports", jobs=2,
                                   scheduler_address=address)
    assert [(r.name, r.status) for r in runs] == [
        ("01_a", "ok"), ("02_b", "ok"), ("03_c", "ok"), ("05_d", "ok")]
    t = {name: read_stamp(tmp_path, name) for name in ("01_a", "02_b", "03_c", "05_d")}
    assert t["02_b"][0] >= t["01_a"][1] and t["03_c"][0] >= t["01_a"][1]
    assert t["03_c"][0] < t["02_b"][1]  # side by side on the two workers
    assert t["05_d"][0] >= max(t["02_b"][1], t["03_c"][1])
    # 01 prepares data; the others train (TRAINING_NOTEBOOK_PREFIXES) on device "cuda".
    assert restrictions(recorder, "01_a") is None
    assert all(restrictions(recorder, n) == {"GPU": 1} for n in ("02_b", "03_c", "05_d"))
    assert (tmp_path / "reports" / "05_d.html").exists()


def test_a_failure_on_a_two_worker_cluster_keeps_the_other_results(notebook_dir, tmp_path,
                                                                   two_workers):
    """02 fails while 03 runs on the other worker: 03 and 04 (independent of 02) finish and
    keep their reports, 05 and 06 (they need 02) are not run; the error names the notebook,
    cell and exception. On a CPU device no notebook asks for a GPU."""
    address, recorder = two_workers
    write_notebook(notebook_dir / "01_ok.ipynb", "pass")
    write_notebook(notebook_dir / "02_bad.ipynb", "raise ValueError('broken field')")
    write_notebook(notebook_dir / "03_slow.ipynb", stamped("03_slow", 2.0))
    write_notebook(notebook_dir / "04_ok.ipynb", stamped("04_ok"))
    write_notebook(notebook_dir / "05_never.ipynb", stamped("05_never"))
    write_notebook(notebook_dir / "06_never.ipynb", stamped("06_never"))
    with pytest.raises(execution.PipelineError) as raised:
        scheduling.run_pipeline("tiny", output_dir=tmp_path / "reports", jobs=2,
                                scheduler_address=address)
    message = str(raised.value)
    assert re.match(r"notebook 02_bad failed in cell \d+ \(ValueError: broken field\)",
                    message), message
    assert message.endswith("not run, as they need a notebook that failed: 05_never, 06_never")
    assert (tmp_path / "runs" / "03_slow.stamp").exists()
    assert (tmp_path / "runs" / "04_ok.stamp").exists()
    assert not (tmp_path / "runs" / "05_never.stamp").exists()
    assert not (tmp_path / "runs" / "06_never.stamp").exists()
    for name in ("01_ok", "02_bad", "03_slow", "04_ok"):
        assert (tmp_path / "reports" / f"{name}.html").exists(), name
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "broken field" in index and "03_slow.html" in index and "not run: needs" in index
    assert restrictions(recorder, "03_slow") is None


def test_notebook_tasks_order_and_gpu_requests():
    names = ["01_a", "02_b", "03_c", "05_d", "09_e"]
    planned = {name: {"device": "cuda"} for name in names} | {"09_e": {"device": "cpu"}}
    tasks = scheduling.notebook_tasks(names, planned, Path("r"), jobs=2, tag="seed=1 ")
    assert [t.needs for t in tasks] == [(), ("seed=1 01_a",), ("seed=1 01_a",),
                                        ("seed=1 02_b", "seed=1 03_c"), ("seed=1 01_a",)]
    assert [t.gpu for t in tasks] == [False, True, True, True, False]
    # Longest remaining chain first, as in the dry run's waves: 02 (-> 06 -> 08 -> 10) before 09.
    ready = sorted(tasks[1:3] + tasks[4:], key=lambda t: -t.priority)
    assert [t.name for t in ready] == scheduling.execution_waves(names, jobs=3)[1]
    one = scheduling.notebook_tasks(names, planned, Path("r"), jobs=1, first=5)
    assert [t.priority for t in one] == [-5, -6, -7, -8, -9]  # number order
    with pytest.raises(notebooks.UsageError, match="--jobs must be at least 1"):
        scheduling.run_tasks(tasks, jobs=0)
    with pytest.raises(notebooks.UsageError, match="needs .* come later or not at all"):
        scheduling.run_tasks(tasks[1:], jobs=1)


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
    # The notebooks that ask for a GPU (on a cluster with GPUs) are those that train models.
    training = re.compile(r"\b(pretrained|fit_\w+|train_\w+)\(")
    for name in names:
        source = "".join("".join(c.source) for c in nbformat.read(
            notebooks.NOTEBOOK_DIR / f"{name}.ipynb", as_version=4).cells)
        assert (name[:2] in scheduling.TRAINING_NOTEBOOK_PREFIXES) == bool(
            training.search(source)), name
    waves = scheduling.execution_waves(names, jobs=2)
    assert [n for wave in waves for n in wave] != names  # side by side changes the order
    assert sorted(n for wave in waves for n in wave) == names
