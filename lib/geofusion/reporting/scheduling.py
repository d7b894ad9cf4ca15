"""Which notebooks run, in what order and how many at once: a run of the numbered notebooks
(:func:`run_pipeline`), a sweep of one notebook's parameter (:func:`run_sweep`) and a seed
spread (:func:`run_seeds`), each notebook execution a task on dask.distributed.

Holds the order (:data:`NOTEBOOK_PREREQUISITES`, :data:`NOTEBOOK_COST_HINT`,
:func:`execution_waves`), the tasks (:class:`NotebookTask`, :func:`notebook_tasks`), their
execution on a local cluster or the one at a scheduler address (:func:`run_tasks`, GPU
requests of :data:`TRAINING_NOTEBOOK_PREFIXES`), the error a run ends with (:func:`failure`)
and the threads each kernel gets (:func:`kernel_threads`).

Conventions: every parameter is checked against the notebooks before the first one starts
(:mod:`geofusion.reporting.notebooks`), so a typo fails in a second. With one kernel the
notebooks run in number order; with ``jobs > 1`` a notebook starts when its prerequisites are
done, the longest remaining chain of work first. A failure stops only the notebooks that need
the failed one; the others run to the end, the index is written and
:class:`geofusion.reporting.execution.PipelineError` (every failure) is raised at the end.
Each sweep value and each seed gets its own ``run_dir``, so checkpoints never mix. On a
cluster given by address the workers must see the repository, ``run_dir`` and the output
folder at the same paths (a shared file system). Progress goes to stdout as
``[geofusion] ...`` lines.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geofusion.experiments.scorecard import _plain, collect_results, seed_spread, write_scorecard
from geofusion.io import atomic_write_text, repository_root
from geofusion.reporting.execution import NotebookRun, PipelineError, execute, git_commit
from geofusion.reporting.index_page import build_scorecard, finish_run, write_seeds_page
from geofusion.reporting.notebooks import (
    UsageError,
    checked_parameters,
    checked_sweep,
    notebook_names,
    report_partial_overrides,
)

REPO = repository_root()


#: Notebooks whose results feed the scorecard (issue 13's contract); `seeds` reruns these.
SEED_NOTEBOOK_PREFIXES = ("02", "03", "04", "05", "06", "08", "10", "11")


#: What each notebook (by number) needs finished before it starts when notebooks run side by
#: side (``--jobs``): the notebooks whose trained models it requests from ``run_dir``
#: (:mod:`geofusion.learning.model_cache`; two kernels must never train the same model at once)
#: or whose results it reads. 01 builds the prepared-data cache every other notebook reads; 05's
#: comparison table reads the results of 02-04; 06 trains the sparse-view model and the frozen
#: decoders that 07, 08 and 10 load (07 then trains only its joint decoders, 08 its LSTMs);
#: 10 loads 08's LSTM; 09 and 11 train only their own models.
NOTEBOOK_PREREQUISITES: dict[str, tuple[str, ...]] = {
    "01": (), "02": ("01",), "03": ("01",), "04": ("01",), "05": ("02", "03", "04"),
    "06": ("02", "03"), "07": ("06",), "08": ("06",), "09": ("01",), "10": ("08",),
    "11": ("01",),
}

#: Seconds each notebook took in the quick profile run one after another on 2 idle cores
#: (README, "Measured `make reports`"). Only the order of a side-by-side run uses them: among
#: the notebooks ready to start, the one with the longest remaining chain of work (its own
#: cost plus that of the costliest chain of notebooks waiting for it) starts first, so the
#: chain 02 -> 06 -> 08 -> 10 is never left waiting behind a notebook nothing depends on.
NOTEBOOK_COST_HINT: dict[str, float] = {
    "01": 80, "02": 96, "03": 51, "04": 48, "05": 49, "06": 146, "07": 98, "08": 115,
    "09": 186, "10": 94, "11": 117,
}


@functools.cache
def _remaining_work(prefix: str) -> float:
    """Cost hint of ``prefix`` plus the costliest chain of notebooks that need it."""
    later = [n for n, needs in NOTEBOOK_PREREQUISITES.items() if prefix in needs]
    return NOTEBOOK_COST_HINT.get(prefix, 0.0) + max(map(_remaining_work, later), default=0.0)


def _start_order(ready: list[str]) -> list[str]:
    return sorted(ready, key=lambda n: (-_remaining_work(n[:2]), n))


def execution_waves(names: list[str], jobs: int) -> list[list[str]]:
    """The order :func:`run_pipeline` starts ``names`` with ``jobs`` kernels, as a dry run
    with every notebook taking the same time: each wave holds up to ``jobs`` notebooks whose
    prerequisites (:data:`NOTEBOOK_PREREQUISITES`, restricted to ``names``) are done, the
    longest remaining chain of work first (:data:`NOTEBOOK_COST_HINT`). For the README and
    tests; the real schedule starts a notebook as soon as a kernel is free.

    Example:
        >>> execution_waves(["01_a", "02_b", "05_c", "09_d"], jobs=2)
        [['01_a'], ['02_b', '09_d'], ['05_c']]
    """
    done: set[str] = set()
    waves = []
    pending = list(names)
    while pending:
        wave = _start_order([n for n in pending if _ready(n, names, done)])[:max(jobs, 1)]
        if not wave:
            raise UsageError(f"circular prerequisites among {pending}")
        waves.append(wave)
        done.update(n[:2] for n in wave)
        pending = [n for n in pending if n not in wave]
    return waves


def _ready(name: str, names: list[str], done: set[str]) -> bool:
    selected = {n[:2] for n in names}
    return all(p in done for p in NOTEBOOK_PREREQUISITES.get(name[:2], ()) if p in selected)


#: Notebooks whose kernels train models (encoders, decoders, LSTMs, fusion schemes, diffusion):
#: on a cluster whose workers advertise a ``GPU`` resource (``dask worker --resources GPU=1``)
#: each of them, when its ``device`` is not ``"cpu"``, asks for one (:func:`run_tasks`). 01 only
#: prepares data.
TRAINING_NOTEBOOK_PREFIXES = ("02", "03", "04", "05", "06", "07", "08", "09", "10", "11")

#: Seconds :func:`run_tasks` waits for the first worker of a cluster given by its address (a
#: SLURM or Kubernetes cluster may still be starting its workers).
WORKER_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class NotebookTask:
    """One notebook execution of a run, a sweep point or a seed: a task of :func:`run_tasks`.

    ``key`` names it in messages and is unique within a run (``03_barlow_twins``,
    ``sweep 03_barlow_twins lambd=0.01``, ``seed=1 03_barlow_twins``); ``needs`` are the keys
    of the tasks that must finish (ok) before it starts; among ready tasks the higher
    ``priority`` starts first; ``gpu``: the notebook trains on a non-CPU device, so it asks
    for one ``GPU`` where the cluster has them.
    """

    key: str
    name: str
    parameters: dict[str, Any]
    output_dir: Path
    needs: tuple[str, ...] = ()
    priority: int = 0
    gpu: bool = False


def notebook_tasks(names: list[str], planned: dict[str, dict[str, Any]], output_dir: Path,
                   jobs: int, tag: str = "", first: int = 0) -> list[NotebookTask]:
    """The tasks of one run of ``names`` (notebook order) with parameters ``planned``: each
    needs its prerequisites among ``names`` (:data:`NOTEBOOK_PREREQUISITES`). Priority: with
    one kernel number order; with more, the longest remaining chain of work first
    (:data:`NOTEBOOK_COST_HINT`), then number order. ``tag`` prefixes the keys (a seed, a
    sweep point); ``first`` is the position of the first notebook when several runs are
    queued together (so that, with one kernel, they run in the order given).

    Example:
        >>> [(t.key, t.needs) for t in notebook_tasks(
        ...     ["01_a", "02_b", "05_c"], {"01_a": {}, "02_b": {}, "05_c": {}}, Path("r"), 1)]
        [('01_a', ()), ('02_b', ('01_a',)), ('05_c', ('02_b',))]
    """
    selected = {name[:2]: name for name in names}
    tasks = []
    for i, name in enumerate(names, start=first):
        needs = tuple(f"{tag}{selected[p]}" for p in NOTEBOOK_PREREQUISITES.get(name[:2], ())
                      if p in selected)
        priority = -i if jobs == 1 else round(100 * _remaining_work(name[:2])) * 10_000 - i
        gpu = (name[:2] in TRAINING_NOTEBOOK_PREFIXES
               and planned[name].get("device", "cpu") != "cpu")
        tasks.append(NotebookTask(f"{tag}{name}", name, planned[name], output_dir, needs,
                                  priority, gpu))
    return tasks


def _run_task(task: NotebookTask, threads: int | None, forward_print: bool,
              *needed: NotebookRun) -> NotebookRun:
    """On a dask worker: execute ``task``'s notebook unless a notebook it needs did not run
    to the end. Never raises for a failing notebook: the run carries ``status`` and
    ``error``, so that the other tasks go on and the user gets every failure at the end."""
    say = builtins.print
    if forward_print:  # a remote worker: the lines also reach the client's terminal
        from distributed import print as say
    missing = [run.name for run in needed if run.status != "ok"]
    if missing:
        run = NotebookRun(task.name, task.parameters,
                          error=f"not run: needs {', '.join(missing)}, which did not finish")
        say(f"[geofusion] {task.key} {run.error}", flush=True)
        return run
    say(f"[geofusion] {task.key} ...", flush=True)
    env = None if threads is None else {"OMP_NUM_THREADS": str(threads)}
    try:
        run = execute(task.name, task.parameters, task.output_dir, env=env)
    except PipelineError as error:
        run = NotebookRun(task.name, task.parameters, status="failed", error=str(error))
        if (task.output_dir / f"{task.name}.html").exists():
            run.outputs = [f"{task.name}.html"]
        say(f"[geofusion] {task.key} FAILED", flush=True)
        return run
    say(f"[geofusion] {task.key} done in {run.seconds:.0f} s", flush=True)
    return run


#: dask settings of the local cluster, all housekeeping of the pipeline's own process: no
#: statistical profiler (it samples the worker threads every 10 ms, i.e. the threads rendering
#: HTML), event-loop health ticks every 1 s instead of 20 ms and system monitoring every 5 s
#: instead of 0.5 s. Together they took the process's idle CPU from about 2 % of a core to
#: next to none (benchmarks/pipeline_scheduler.py --pause 12, one run each on a busy 2-core
#: machine: 3.4 s of CPU -> 2.3 s; the thread-pool scheduler of earlier versions 1.7-2.0 s).
LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False,
                        "distributed.admin.tick.interval": "1s",
                        "distributed.admin.system-monitor.interval": "5s"}


@contextlib.contextmanager
def _dask_client(jobs: int, scheduler_address: str | None) -> Iterator[Any]:
    """A client of the cluster at ``scheduler_address``, or of a local cluster: one in-process
    worker with ``jobs`` threads (each thread only waits on its notebook's kernel, a process of
    its own, so threads share no GIL that matters and nothing is pickled; one worker lets the
    worker start the highest-priority ready notebook whenever a thread is free, as the
    scheduler of earlier versions did), no memory limit (the kernels' memory is not the
    worker's), no dashboard."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler_address is not None:
        with Client(scheduler_address) as client:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
            except TimeoutError as error:
                raise PipelineError(
                    f"no dask worker joined the scheduler at {scheduler_address} within "
                    f"{WORKER_WAIT_SECONDS:.0f} s; start workers (`dask worker "
                    f"{scheduler_address}`, or cluster.scale(...))") from error
            yield client
        return
    with dask.config.set(LOCAL_CLUSTER_CONFIG), LocalCluster(
            n_workers=1, threads_per_worker=jobs, processes=False, memory_limit=0,
            dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def cluster_has_gpus(client: Any) -> bool:
    """Whether a worker of ``client``'s cluster advertises a ``GPU`` resource (``dask worker
    --resources GPU=1``, or ``LocalCluster(resources={"GPU": 1})``)."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return any(worker.get("resources", {}).get("GPU", 0) >= 1 for worker in workers)


def run_tasks(tasks: list[NotebookTask], jobs: int = 1, scheduler_address: str | None = None
              ) -> dict[str, NotebookRun]:
    """Run ``tasks`` as dask.distributed tasks, each after the tasks it ``needs``; return
    every task's :class:`NotebookRun` by key (``status`` ``ok``, ``failed`` or ``not run``).

    The cluster: the one at ``scheduler_address`` (``tcp://host:8786``; its workers decide how
    many notebooks run at once and their kernels inherit the workers' environment), or a local
    one running up to ``jobs`` notebooks at once, each kernel with :func:`kernel_threads`
    threads (``OMP_NUM_THREADS``; unless ``jobs`` is 1 or the variable is set already). A task
    with ``gpu`` asks for ``resources={"GPU": 1}`` where a worker advertises GPUs
    (:func:`cluster_has_gpus`), so that training notebooks share out the GPUs and never block
    on a CPU-only cluster. A failing notebook fails its task only: independent tasks run on
    and keep their results, the tasks that need it are ``not run``; :func:`failure` turns the
    runs into the error the user sees. Progress goes to stdout as ``[geofusion] ...`` lines.
    """
    from distributed import wait

    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    keys = [task.key for task in tasks]
    if len(set(keys)) != len(keys):
        raise UsageError(f"task keys repeat: {keys}")
    for i, task in enumerate(tasks):
        unknown = [key for key in task.needs if key not in keys[:i]]
        if unknown:
            raise UsageError(f"{task.key} needs {unknown}, which come later or not at all")
    threads = (None if scheduler_address is not None or jobs == 1
               or "OMP_NUM_THREADS" in os.environ else kernel_threads(jobs))
    token = uuid.uuid4().hex[:8]  # several runs may share one cluster
    with _dask_client(jobs, scheduler_address) as client:
        gpus = cluster_has_gpus(client)
        futures: dict[str, Any] = {}
        for task in tasks:
            futures[task.key] = client.submit(
                _run_task, task, threads, scheduler_address is not None,
                *(futures[key] for key in task.needs), key=f"{task.key} [{token}]",
                pure=False, priority=task.priority,
                resources={"GPU": 1} if gpus and task.gpu else None)
        wait(list(futures.values()))
        runs = {key: future.result() for key, future in futures.items()
                if future.status == "finished"}
        for task in tasks:  # notebook order: a task's needs are settled before it
            if task.key in runs:
                continue
            if any(runs[need].status != "ok" for need in task.needs):
                runs[task.key] = NotebookRun(task.name, task.parameters, error=(
                    f"not run: needs {', '.join(task.needs)}, which did not all finish"))
            else:  # the task itself broke (a lost worker, geofusion missing on a worker)
                error = futures[task.key].exception()
                runs[task.key] = NotebookRun(
                    task.name, task.parameters, status="failed",
                    error=f"the task of {task.key} failed: {type(error).__name__}: {error}")
            print(f"[geofusion] {task.key} {runs[task.key].error}", flush=True)
    return {key: runs[key] for key in keys}


def failure(runs: list[NotebookRun]) -> PipelineError | None:
    """The error a run ends with: every failed notebook's error (notebook, cell, exception,
    where the executed notebook is), then the notebooks not run because of them; None when
    nothing failed."""
    failed = [run for run in runs if run.status == "failed"]
    if not failed:
        return None
    skipped = sorted({run.name for run in runs if run.status == "not run"})
    text = "\n".join(run.error for run in failed)
    if len(failed) > 1:
        text = f"{len(failed)} notebook runs failed:\n{text}"
    if skipped:
        text += f"\nnot run, as they need a notebook that failed: {', '.join(skipped)}"
    return PipelineError(text)

def kernel_threads(jobs: int) -> int:
    """Threads each kernel's torch gets when ``jobs`` notebooks run at once: the machine's
    cores shared out (at least 1), so kernels do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


def run_pipeline(profile: str = "quick", only: list[str] | None = None,
                 overrides: dict[str, Any] | None = None,
                 output_dir: Path = REPO / "reports", jobs: int = 1,
                 scheduler_address: str | None = None) -> list[NotebookRun]:
    """Execute the numbered notebooks; write HTML and the index; raise at the end if a
    notebook failed.

    Each notebook is a task of :func:`run_tasks` (dask.distributed: a local cluster, or the
    one at ``scheduler_address``) that starts when the notebooks it depends on
    (:data:`NOTEBOOK_PREREQUISITES`) are done. With ``jobs = 1`` the notebooks run one after
    another in number order. With ``jobs > 1`` up to ``jobs`` kernels run at once, the longest
    remaining chain of work first, and each kernel gets :func:`kernel_threads` threads through
    ``OMP_NUM_THREADS`` (unless it is set already): on a CPU much of a notebook is
    single-threaded Python (plots, bootstrap, probes), so two one-thread kernels keep two
    cores busier than one two-thread kernel. A failing notebook stops only the notebooks that
    need it; the others run to the end, and the index, ``results.json`` and the headline are
    written from them before :class:`PipelineError` (every failure, its notebook and cell)
    is raised. The scorecard merges the notebooks in number order either way.

    Every parameter is checked against the notebooks' ``parameters`` cells before the first
    notebook starts (:func:`checked_parameters`), so a typo fails in a second, not after the
    runs before it.

    Example (a misspelt override fails before anything runs):
        >>> run_pipeline("quick", only=["03"], overrides={"epoch": 2})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        geofusion.reporting.notebooks.UsageError: --set 'epoch' is not a parameter of ...
    """
    names = notebook_names(only)
    planned = checked_parameters(profile, names, overrides)
    report_partial_overrides(names, overrides or {})
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    tic = time.perf_counter()
    tasks = notebook_tasks(names, planned, output_dir, jobs)
    print(f"[geofusion] {len(tasks)} notebooks ({profile}) on "
          f"{scheduler_address or f'a local cluster, {jobs} at once'}", flush=True)
    done = run_tasks(tasks, jobs, scheduler_address)
    runs = [done[task.key] for task in tasks]
    index = finish_run(runs, profile, output_dir, time.perf_counter() - tic, overrides)
    error = failure(runs)
    if error is not None:
        raise error
    print(f"[geofusion] reports and {output_dir / 'results.json'} written; open {index}",
          flush=True)
    return runs


def run_sweep(name: str, grid: dict[str, list[Any]], profile: str = "quick",
              overrides: dict[str, Any] | None = None,
              output_dir: Path = REPO / "reports" / "sweeps", jobs: int = 1,
              scheduler_address: str | None = None):
    """Run notebook ``name`` (a prefix, as for ``--only``) once per value of each swept
    parameter; collect its results.

    Each run gets its own ``run_dir`` (``<profile run_dir>/sweeps/<name>/<param>=<value>``) so
    checkpoints never mix, and is a task of :func:`run_tasks` (``jobs`` at once on a local
    cluster, or on the cluster at ``scheduler_address``). Every swept and overridden key must be
    declared by the notebook's ``parameters`` cell. Returns the collected results table of
    the values that ran to the end, also written as CSV and HTML; then raises
    :class:`PipelineError` if a value failed.

    Example (checked before anything runs):
        >>> run_sweep("03", {"lamda": [0.1, 1.0]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        geofusion.reporting.notebooks.UsageError: --grid 'lamda' is not a parameter of ...
    """
    name, base = checked_sweep(name, grid, profile, overrides)
    tasks = []
    for parameter, values in grid.items():
        for value in values:
            tag = f"{parameter}={value}"
            run_dir = f"{base['run_dir']}/sweeps/{name}/{tag}"
            parameters = {**base, parameter: value, "run_dir": run_dir}
            tasks += notebook_tasks([name], {name: parameters}, output_dir / name / tag, jobs,
                                    tag=f"sweep {tag} ", first=len(tasks))
    done = run_tasks(tasks, jobs, scheduler_address)
    runs = [done[task.key] for task in tasks]
    table = collect_results([REPO / run.parameters["run_dir"] / "results" / f"{name}.json"
                             for run in runs if run.status == "ok"])
    atomic_write_text(output_dir / f"{name}.csv", table.to_csv(index=False))
    atomic_write_text(output_dir / f"{name}.html", table.to_html(index=False))
    print(table.to_string(index=False), flush=True)
    error = failure(runs)
    if error is not None:
        raise error
    return table


def run_seeds(profile: str = "quick", n: int = 3, only: list[str] | None = None,
              overrides: dict[str, Any] | None = None, output_dir: Path = REPO / "reports",
              jobs: int = 1, scheduler_address: str | None = None) -> dict[str, Any]:
    """Rerun the scorecard notebooks with ``n`` seeds; write the spread of every scorecard value.

    Seeds are the profile's ``seed`` + 0, 1, ..., n - 1. Each seed runs in its own ``run_dir``
    (``<run_dir>/seeds/seed=<s>``: models are trained afresh, checkpoints never mix) with its
    reports in ``<output_dir>/seeds/seed=<s>/`` and its scorecard in that folder's
    ``results.json``; ``<output_dir>/seeds.json``
    (:func:`geofusion.experiments.scorecard.seed_spread`) and
    ``seeds.html`` hold the spread, linked from ``index.html``. The notebooks are
    :data:`SEED_NOTEBOOK_PREFIXES` (those that exist), or ``only``. Every (seed, notebook) is a
    task of :func:`run_tasks` after its prerequisites of the same seed (``jobs`` at once on a
    local cluster, one after another in seed then notebook order with ``jobs = 1``, or on the
    cluster at ``scheduler_address``). When a notebook fails, the seeds' scorecards are
    written but no spread, and :class:`PipelineError` is raised.

    Example (checked before anything runs):
        >>> run_seeds("quick", n=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        geofusion.reporting.notebooks.UsageError: a seed spread needs --n 2 or more ...
    """
    if n < 2:
        raise UsageError(f"a seed spread needs --n 2 or more seeds, got {n}")
    if "seed" in (overrides or {}):
        raise UsageError("`seeds` sets the seed itself; drop --set seed=...")
    names = notebook_names(only) if only else [
        name for name in notebook_names() if name[:2] in SEED_NOTEBOOK_PREFIXES]
    planned = checked_parameters(profile, names, overrides)
    report_partial_overrides(names, overrides or {})
    first = planned[names[0]]
    seeds = [int(first["seed"]) + i for i in range(n)]
    tic = time.perf_counter()
    tasks: dict[int, list[NotebookTask]] = {}
    for seed in seeds:
        tag = f"seed={seed}"
        parameters = {name: {**planned[name], "seed": seed,
                             "run_dir": f"{planned[name]['run_dir']}/seeds/{tag}"}
                      for name in names}
        tasks[seed] = notebook_tasks(names, parameters, output_dir / "seeds" / tag, jobs,
                                     tag=f"{tag} ", first=len(tasks) * len(names))
    done = run_tasks([task for seed in seeds for task in tasks[seed]], jobs, scheduler_address)
    cards, every_run = [], []
    for seed in seeds:
        runs = [done[task.key] for task in tasks[seed]]
        every_run += runs
        ran = [run for run in runs if run.started]
        seconds = max((r.started + r.seconds for r in ran), default=0.0) - min(
            (r.started for r in ran), default=0.0)
        card, notes = build_scorecard(runs, profile, seconds, overrides)
        for note in notes:
            print(f"[geofusion] seed={seed} scorecard: {note}", file=sys.stderr, flush=True)
        write_scorecard(output_dir / "seeds" / f"seed={seed}" / "results.json", card)
        cards.append(card)
    error = failure(every_run)
    if error is not None:
        raise error
    spread = seed_spread(cards)
    record = {"profile": profile, "commit": git_commit(), "seeds": seeds, "notebooks": names,
              "overrides": dict(overrides or {}), "seconds": round(time.perf_counter() - tic, 1),
              "synthetic": cards[0]["synthetic"], "spread": spread}
    atomic_write_text(output_dir / "seeds.json", json.dumps(_plain(record), indent=2))
    write_seeds_page(output_dir, record)
    print(f"[geofusion] seed spread written to {output_dir / 'seeds.html'}", flush=True)
    return record
