"""Which notebooks run, in what order and how many at once: a run of the numbered notebooks
(:func:`run_pipeline`), a sweep of one notebook's parameter (:func:`run_sweep`) and a seed
spread (:func:`run_seeds`).

Holds the order (:data:`NOTEBOOK_PREREQUISITES`, :data:`NOTEBOOK_COST_HINT`,
:func:`execution_waves`), the scheduler itself (``_execute``) and the threads each kernel gets
(:func:`kernel_threads`).

Conventions: every parameter is checked against the notebooks before the first one starts
(:mod:`geofusion.reporting.notebooks`), so a typo fails in a second. With one kernel the
notebooks run in number order; with ``jobs > 1`` a notebook starts when its prerequisites are
done, the longest remaining chain of work first. A failure starts nothing new, lets the running
notebooks finish, writes the index and raises :class:`geofusion.reporting.execution.PipelineError`.
Each sweep value and each seed gets its own ``run_dir``, so checkpoints never mix. Progress
goes to stdout as ``[geofusion] ...`` lines.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
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


def _execute(names: list[str], planned: dict[str, dict[str, Any]], jobs: int, profile: str,
             output_dir: Path) -> tuple[list[NotebookRun], PipelineError | None]:
    """Run ``names`` on ``jobs`` kernels at once, each started when its prerequisites are
    done (one kernel: in number order; more: longest remaining chain of work first); after a
    failure start nothing new and let the running ones finish. Returns the runs that started,
    in notebook order, and the first failure (None if every notebook ran)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    runs = {name: NotebookRun(name, planned[name]) for name in names}
    done: set[str] = set()
    pending = list(names)
    failure: PipelineError | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Any, str] = {}
        while pending or running:
            while failure is None and len(running) < jobs:
                ready = [n for n in pending if _ready(n, names, done)]
                ready = _start_order(ready) if jobs > 1 else ready
                if not ready:
                    break
                name = ready[0]
                pending.remove(name)
                print(f"[geofusion] {name} ({profile}) ...", flush=True)
                runs[name].started = time.time()
                running[pool.submit(execute, name, planned[name], output_dir)] = name
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                try:
                    runs[name] = future.result()
                except PipelineError as error:
                    runs[name].status, runs[name].error = "failed", str(error)
                    if (output_dir / f"{name}.html").exists():
                        runs[name].outputs = [f"{name}.html"]
                    failure = failure or error
                    continue
                done.add(name[:2])
                print(f"[geofusion] {name} done in {runs[name].seconds:.0f} s", flush=True)
    return [runs[n] for n in names if runs[n].started], failure


def kernel_threads(jobs: int) -> int:
    """Threads each kernel's torch gets when ``jobs`` notebooks run at once: the machine's
    cores shared out (at least 1), so kernels do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


def run_pipeline(profile: str = "quick", only: list[str] | None = None,
                 overrides: dict[str, Any] | None = None,
                 output_dir: Path = REPO / "reports", jobs: int = 1) -> list[NotebookRun]:
    """Execute the numbered notebooks; write HTML and the index; stop at a failure.

    With ``jobs = 1`` the notebooks run one after another in number order. With ``jobs > 1``
    up to ``jobs`` kernels run at once, each notebook starting when the notebooks it depends
    on (:data:`NOTEBOOK_PREREQUISITES`) are done, and each kernel gets
    :func:`kernel_threads` threads through ``OMP_NUM_THREADS`` (unless it is set already):
    on a CPU much of a notebook is single-threaded Python (plots, bootstrap, probes), so two
    one-thread kernels keep two cores busier than one two-thread kernel. The scorecard
    merges the notebooks in number order either way.

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
    threads_set = jobs == 1 or "OMP_NUM_THREADS" in os.environ
    if not threads_set:
        os.environ["OMP_NUM_THREADS"] = str(kernel_threads(jobs))
    try:
        runs, failure = _execute(names, planned, jobs, profile, output_dir)
    finally:
        if not threads_set:
            del os.environ["OMP_NUM_THREADS"]
    index = finish_run(runs, profile, output_dir, time.perf_counter() - tic, overrides)
    if failure is not None:
        raise failure
    print(f"[geofusion] reports and {output_dir / 'results.json'} written; open {index}",
          flush=True)
    return runs


def run_sweep(name: str, grid: dict[str, list[Any]], profile: str = "quick",
              overrides: dict[str, Any] | None = None,
              output_dir: Path = REPO / "reports" / "sweeps"):
    """Run notebook ``name`` (a prefix, as for ``--only``) once per value of each swept
    parameter; collect its results.

    Each run gets its own ``run_dir`` (``<profile run_dir>/sweeps/<name>/<param>=<value>``) so
    checkpoints never mix. Every swept and overridden key must be declared by the notebook's
    ``parameters`` cell. Returns the collected results table, also written as CSV and HTML.

    Example (checked before anything runs):
        >>> run_sweep("03", {"lamda": [0.1, 1.0]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        geofusion.reporting.notebooks.UsageError: --grid 'lamda' is not a parameter of ...
    """
    name, base = checked_sweep(name, grid, profile, overrides)
    result_files = []
    for parameter, values in grid.items():
        for value in values:
            tag = f"{parameter}={value}"
            run_dir = f"{base['run_dir']}/sweeps/{name}/{tag}"
            parameters = {**base, parameter: value, "run_dir": run_dir}
            print(f"[geofusion] sweep {name} {tag} ...", flush=True)
            execute(name, parameters, output_dir / name / tag)
            result_files.append(REPO / run_dir / "results" / f"{name}.json")
    table = collect_results(result_files)
    atomic_write_text(output_dir / f"{name}.csv", table.to_csv(index=False))
    atomic_write_text(output_dir / f"{name}.html", table.to_html(index=False))
    print(table.to_string(index=False), flush=True)
    return table


def run_seeds(profile: str = "quick", n: int = 3, only: list[str] | None = None,
              overrides: dict[str, Any] | None = None, output_dir: Path = REPO / "reports"
              ) -> dict[str, Any]:
    """Rerun the scorecard notebooks with ``n`` seeds; write the spread of every scorecard value.

    Seeds are the profile's ``seed`` + 0, 1, ..., n - 1. Each seed runs in its own ``run_dir``
    (``<run_dir>/seeds/seed=<s>``: models are trained afresh, checkpoints never mix) with its
    reports in ``<output_dir>/seeds/seed=<s>/`` and its scorecard in that folder's
    ``results.json``; ``<output_dir>/seeds.json``
    (:func:`geofusion.experiments.scorecard.seed_spread`) and
    ``seeds.html`` hold the spread, linked from ``index.html``. The notebooks are
    :data:`SEED_NOTEBOOK_PREFIXES` (those that exist), or ``only``.

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
    cards = []
    for seed in seeds:
        tag = f"seed={seed}"
        runs: list[NotebookRun] = []
        seed_tic = time.perf_counter()
        for name in names:
            parameters = {**planned[name], "seed": seed,
                          "run_dir": f"{planned[name]['run_dir']}/seeds/{tag}"}
            print(f"[geofusion] {tag} {name} ({profile}) ...", flush=True)
            runs.append(execute(name, parameters, output_dir / "seeds" / tag))
        card, notes = build_scorecard(runs, profile, time.perf_counter() - seed_tic, overrides)
        for note in notes:
            print(f"[geofusion] {tag} scorecard: {note}", file=sys.stderr, flush=True)
        write_scorecard(output_dir / "seeds" / tag / "results.json", card)
        cards.append(card)
    spread = seed_spread(cards)
    record = {"profile": profile, "commit": git_commit(), "seeds": seeds, "notebooks": names,
              "overrides": dict(overrides or {}), "seconds": round(time.perf_counter() - tic, 1),
              "synthetic": cards[0]["synthetic"], "spread": spread}
    atomic_write_text(output_dir / "seeds.json", json.dumps(_plain(record), indent=2))
    write_seeds_page(output_dir, record)
    print(f"[geofusion] seed spread written to {output_dir / 'seeds.html'}", flush=True)
    return record
