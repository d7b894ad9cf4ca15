"""Run the numbered notebooks with papermill under a profile and render them into ``reports/``.

Usage::

    python -m geofusion.pipeline                         # quick profile, all notebooks
    python -m geofusion.pipeline --profile full          # the report's settings, GPU, real ERA5
    python -m geofusion.pipeline --only 03 04 --set epochs=2
    python -m geofusion.pipeline run 03 --set data_path=None --dry-run   # check, print the plan
    python -m geofusion.pipeline sweep 03 --grid lambd=0.001,0.01,0.1

Notebooks are named by prefix everywhere (``03``, ``03_barlow``, ``notebooks/03_...ipynb``);
an unknown or (for ``sweep``) ambiguous prefix is an error listing the notebooks. Values of
``--set`` / ``--grid`` are JSON (``2``, ``1e-3``, ``null``, ``"text"``) or Python's ``None``,
``True``, ``False``; anything else is text. Every key is checked against the notebooks'
``parameters`` cells before anything runs: a ``--set`` key goes to the selected notebooks that
declare it and must be declared by at least one of them (the run prints which notebooks keep
their profile's value); a ``--grid`` key must be declared by the swept notebook. A key nobody
declares is an error naming the valid keys, never a silent run of the defaults.

Profiles:

- ``quick``: CPU, the embedded synthetic default (2000-2007), width-8 networks trained to a
  plateau on native-scale views (warm-up + cosine, early stopping; autoencoder 12, encoders
  6, decoders 6 epochs), so that all notebooks run in minutes on two cores
  (reports/benchmarks/quick_convergence.md has the measurements and what they miss).
- ``full``: GPU, WeatherBench 2 ERA5 64x32 1959-2022 at the store's first level (the report's
  choice), ResNet-18 at full width, batch 128, 100 epochs (autoencoder 300), the report's
  learning rates, lambda and temperatures.

Each notebook is executed from the repository root into ``reports/<name>.ipynb`` and rendered
to ``reports/<name>.html``; ``reports/index.html`` links them with the run's parameters, git
commit, machine and durations. A failing notebook stops the run with the notebook and cell
named.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import functools
import html
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import papermill
import zmq
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from papermill.exceptions import PapermillExecutionError
from traitlets import default

from geofusion import reproducibility
from geofusion.experiments import profiles
from geofusion.experiments.profiles import COMMON, REPORT_SWEEPS, parameters_for
from geofusion.experiments.scorecard import (
    SCORECARD_SECTIONS,
    TABLE_3_1_FIGURES,
    ScorecardError,
    _plain,
    lookup,
    merge_scorecards,
    missing_entries,
    seed_spread,
    validate_scorecard,
    write_scorecard,
)
from geofusion.io import repository_root

REPO = repository_root()
NOTEBOOK_DIR = REPO / "notebooks"


class PipelineError(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


class UsageError(ValueError):
    """The command line asks for a notebook or parameter that does not exist; says the fix."""


@dataclass
class NotebookRun:
    name: str
    parameters: dict[str, Any]
    seconds: float = 0.0
    status: str = "not run"
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    started: float = 0.0  # wall-clock time.time() when the notebook started


def _as_prefix(text: str) -> str:
    """``notebooks/03_barlow_twins.ipynb`` (tab completion) and ``03`` name the same notebook."""
    prefix = Path(text).name.removesuffix(".ipynb")
    if not prefix:
        raise UsageError(f"empty notebook name {text!r}; give a prefix such as 03")
    return prefix


def notebook_names(only: list[str] | None = None) -> list[str]:
    """Numbered notebooks in run order; with ``only``, those whose name starts with a prefix.

    A prefix may also be a path (``notebooks/03_barlow_twins.ipynb``). A prefix matching no
    notebook raises :class:`UsageError` listing the notebooks.

    Example:
        >>> notebook_names(["03", "notebooks/04_simclr.ipynb"])
        ['03_barlow_twins', '04_simclr']
    """
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return names
    prefixes = [_as_prefix(p) for p in only]
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unknown:
        raise UsageError(f"no notebook name starts with {unknown}; give a prefix of one of "
                         f"{names}")
    return [n for n in names if any(n.startswith(p) for p in prefixes)]


def resolve_notebook(prefix: str) -> str:
    """The one notebook whose name starts with ``prefix`` (same prefixes as ``--only``).

    Example:
        >>> resolve_notebook("03")
        '03_barlow_twins'
        >>> resolve_notebook("0")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        geofusion.reporting.pipeline.UsageError: '0' matches several notebooks ...
    """
    matches = notebook_names([prefix])
    if len(matches) > 1:
        raise UsageError(f"{prefix!r} matches several notebooks {matches}; give a longer "
                         f"prefix, e.g. {matches[0][:2]!r}")
    return matches[0]


@functools.lru_cache(maxsize=64)
def _inspect(path: str, mtime_ns: int) -> dict[str, str]:
    # Keyed on the modification time, so an edited notebook is read again.
    return {key: info["default"] for key, info in papermill.inspect_notebook(path).items()}


def declared_parameters(name: str) -> dict[str, str]:
    """Parameters declared by the cell tagged ``parameters`` of notebook ``name``.

    Read with ``papermill.inspect_notebook``; maps each name to its default as written in the
    cell (source text, not evaluated).

    Example:
        >>> declared_parameters("03_barlow_twins")["lambd"]
        '0.01'
    """
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    if not path.exists():
        raise UsageError(f"{path} does not exist; notebooks are {notebook_names()}")
    return dict(_inspect(str(path), path.stat().st_mtime_ns))


def _unknown_key_message(key: str, option: str, names: list[str]) -> str:
    declared = {name: set(declared_parameters(name)) for name in names}
    everything = sorted(set().union(*declared.values()))
    close = difflib.get_close_matches(key, everything, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if len(names) == 1:
        valid = f"valid keys of {names[0]}: {', '.join(everything)}"
    else:
        shared = set.intersection(*declared.values())
        own = "; ".join(f"{name} also {', '.join(sorted(keys - shared))}"
                        for name, keys in declared.items() if keys - shared)
        valid = f"valid keys of all: {', '.join(sorted(shared))}; {own}"
    return (f"{option} {key!r} is not a parameter of {', '.join(names)} (a notebook would "
            f"silently run its default); {hint}{valid}")


def applied_overrides(names: list[str], overrides: dict[str, Any],
                      option: str = "--set") -> dict[str, dict[str, Any]]:
    """The ``--set`` overrides each notebook of ``names`` receives.

    Rule (one run, several notebooks): a key goes to the notebooks whose ``parameters`` cell
    declares it and must be declared by at least one of them; a key that none declares is a
    typo and raises :class:`UsageError` naming the valid keys of each notebook (papermill
    would otherwise inject it and the notebook would silently run its defaults).

    Example:
        >>> applied = applied_overrides(["02_autoencoder", "03_barlow_twins"], {"lambd": 0.1})
        >>> applied["02_autoencoder"], applied["03_barlow_twins"]
        ({}, {'lambd': 0.1})
        >>> applied_overrides(["03_barlow_twins"], {"lamdb": 0.1})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        geofusion.reporting.pipeline.UsageError: --set 'lamdb' is not a parameter ... 'lambd'? ...
    """
    applied: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in overrides.items():
        takers = [name for name in names if key in declared_parameters(name)]
        if not takers:
            raise UsageError(_unknown_key_message(key, option, names))
        for name in takers:
            applied[name][key] = value
    return applied


def checked_parameters(profile: str, names: list[str], overrides: dict[str, Any] | None = None
                       ) -> dict[str, dict[str, Any]]:
    """Parameters of each notebook: the profile's plus the overrides it declares, all checked
    against its ``parameters`` cell before anything runs.

    Example:
        >>> checked_parameters("quick", ["03_barlow_twins"], {"lambd": 0.1})[
        ...     "03_barlow_twins"]["lambd"]
        0.1
    """
    applied = applied_overrides(names, overrides or {})
    checked = {}
    for name in names:
        base = parameters_for(profile, name)
        stray = sorted(set(base) - set(declared_parameters(name)))
        if stray:
            raise UsageError(f"PROFILES[{profile!r}] sets {stray} that the parameters cell of "
                             f"{name} does not declare; declare them in the notebook or remove "
                             f"them from the profile")
        checked[name] = {**base, **applied[name]}
    return checked


_PYTHON_LITERALS = {"None": None, "True": True, "False": False}


def parse_value(raw: str) -> Any:
    """One command-line value: JSON (``2``, ``0.01``, ``true``, ``null``, ``[1, 2]``), Python's
    ``None`` / ``True`` / ``False``, otherwise the text itself.

    Example:
        >>> [parse_value(v) for v in ["2", "1e-3", "None", "null", "False", "cuda", "[1, 2]"]]
        [2, 0.001, None, None, False, 'cuda', [1, 2]]
    """
    if raw in _PYTHON_LITERALS:
        return _PYTHON_LITERALS[raw]
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _split_assignment(item: str, form: str) -> tuple[str, str]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"expected {form}, got {item!r}")
    return key.strip(), raw


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` strings with :func:`parse_value`; a repeated key raises.

    Example:
        >>> parse_assignments(["epochs=2", "data_path=None", "device=cuda"])
        {'epochs': 2, 'data_path': None, 'device': 'cuda'}
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, raw = _split_assignment(item, "key=value")
        if key in parsed:
            raise UsageError(f"--set {key} is given twice; keep one")
        parsed[key] = parse_value(raw)
    return parsed


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """Parse ``--grid key=v1,v2`` strings: comma-separated values read by :func:`parse_value`.

    Example:
        >>> parse_grid(["lambd=0.001,0.01", "mask_kind=pixel,patch"])
        {'lambd': [0.001, 0.01], 'mask_kind': ['pixel', 'patch']}
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, raw = _split_assignment(item, "key=v1,v2")
        values = raw.split(",")
        if key in grid:
            raise UsageError(f"--grid {key} is given twice; list all values in one: "
                             f"{key}=v1,v2")
        if any(not v for v in values):
            raise UsageError(f"--grid {item!r} has an empty value; write {key}=v1,v2")
        grid[key] = [parse_value(v) for v in values]
    return grid


def _render_html(notebook_path: Path, html_path: Path) -> None:
    # MathJax from a local copy next to the report, widget state embedded
    # (geofusion.reporting.rendering).
    from geofusion.reporting.rendering import render_notebook_html

    render_notebook_html(notebook_path, html_path)


class EncryptedKernelManager(AsyncKernelManager):
    """Kernel manager that provisions CurveZMQ keys for kernels that support them.

    ipykernel (7.x) warns "Kernel is running over TCP without encryption" once per kernel when
    it talks over plain TCP, which papermill uses by default: nine lines of noise in every
    ``make reports``. The fix the warning itself names is manager-provisioned CurveZMQ keys
    (``transport_encryption="auto"``: only when the kernelspec declares curve support and pyzmq
    has it), so the warning goes away because its cause does; no warning or log is filtered,
    and a kernel's real errors still reach the terminal and the notebook.
    """

    @default("transport_encryption")
    def _transport_encryption_default(self) -> str:
        return "auto" if zmq.has("curve") else "disabled"


# jupyter_client < 8.10 has no transport encryption (and its ipykernel prints no such warning).
KERNEL_MANAGER: type[AsyncKernelManager] = (
    EncryptedKernelManager if "transport_encryption" in AsyncKernelManager.class_trait_names()
    else AsyncKernelManager)


def execute(name: str, parameters: dict[str, Any], output_dir: Path,
            kernel_name: str = "python3") -> NotebookRun:
    """Execute one notebook into ``output_dir`` and render its HTML; raise PipelineError.

    ``parameters`` are injected as given (check them first with :func:`checked_parameters`).
    A cell error or a dying kernel raises :class:`PipelineError` naming the notebook and cell.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    out_ipynb = output_dir / f"{name}.ipynb"
    run = NotebookRun(name, parameters, started=time.time())
    tic = time.perf_counter()
    os.environ["GEOFUSION_PLAIN_PROGRESS"] = "1"
    try:
        papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(out_ipynb),
                                   parameters=parameters, cwd=str(REPO),
                                   kernel_name=kernel_name, progress_bar=False,
                                   kernel_manager_class=KERNEL_MANAGER)
    except PapermillExecutionError as error:
        run.status, run.error = "failed", f"cell {error.exec_count}: {error.ename}: {error.evalue}"
        raise PipelineError(f"notebook {name} failed in cell {error.exec_count} "
                            f"({error.ename}: {error.evalue}); the executed notebook with "
                            f"the traceback is {out_ipynb}") from error
    except DeadKernelError as error:
        raise PipelineError(f"the kernel running notebook {name} died ({error}); the "
                            f"partly executed notebook is {out_ipynb}; a kernel killed without "
                            f"a traceback is often out of memory") from error
    finally:
        run.seconds = time.perf_counter() - tic
        if out_ipynb.exists():
            _render_html(out_ipynb, output_dir / f"{name}.html")
            run.outputs = [f"{name}.html", f"{name}.ipynb"]
    run.status = "ok"
    return run


def machine_description() -> dict[str, str]:
    """Where a run happened: host, CPU count, Python/torch versions, GPU if any."""
    import torch

    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return info


def git_commit() -> str:
    """HEAD commit of the repository, with ``+dirty`` when there are uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def _results_path(run: NotebookRun) -> Path:
    return REPO / str(run.parameters.get("run_dir", "runs")) / "results" / f"{run.name}.json"


def build_scorecard(runs: list[NotebookRun], profile: str, seconds: float,
                    overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The run's scorecard: the ``scorecard`` sections of every notebook that ran to the end
    and wrote ``<run_dir>/results/<name>.json`` during this run, deep-merged in run order
    (:func:`geofusion.experiments.scorecard.merge_scorecards`; on a conflict the earlier notebook
    wins and
    the conflict is returned), with the pipeline's provenance keys. Validated.

    A results file older than the notebook's start (left by an earlier run) is not used.
    ``environment`` is :func:`geofusion.reproducibility.describe` of the pipeline process
    (versions; its determinism flags are the pipeline's own), plus ``per_notebook``: the
    ``environment`` entry each notebook saved in its results (e.g. the return value of
    ``reproducibility.configure``), i.e. the settings in force inside its kernel.

    Returns:
        ``(scorecard, notes)``: notes name conflicts and stale or missing results files.
    """
    parts, notes, contributors, kernels = [], [], {}, {}
    for run in runs:
        if run.status != "ok":
            continue
        path = _results_path(run)
        if not path.exists():
            continue
        if path.stat().st_mtime < run.started - 1.0:  # 1 s: coarse file-system clocks
            notes.append(f"{run.name}: {path} predates this run; not in the scorecard")
            continue
        results = json.loads(path.read_text())
        if "scorecard" in results:
            parts.append((run.name, results["scorecard"]))
            contributors[run.name] = round(run.seconds, 1)
        if isinstance(results.get("environment"), dict):
            kernels[run.name] = results["environment"]
    merged, conflicts = merge_scorecards(parts)
    device = next((r.parameters.get("device") for r in runs), None)
    environment = reproducibility.describe(device if device in ("cpu", "cuda") else None)
    if kernels:  # the settings in force inside each kernel, where a notebook recorded them
        environment["per_notebook"] = kernels
    data_path = runs[0].parameters.get("data_path") if runs else None
    card = {"profile": profile, "synthetic": data_path is None, "commit": git_commit(),
            "seconds": round(seconds, 1), "environment": environment,
            "notebooks": contributors, "overrides": dict(overrides or {}), **merged}
    return validate_scorecard(card), notes + conflicts


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"


def _leaf_rows(tree: Any, depth: int, path: tuple[str, ...] = ()
               ) -> list[tuple[tuple[str, ...], Any]]:
    """(path, leaf) pairs of a section; a null subtree is one leaf (does not apply)."""
    if isinstance(tree, dict) and (depth != 0 or tree):
        return [row for key, child in tree.items()
                for row in _leaf_rows(child, depth - 1, (*path, key))]
    return [(path, tree)]


_ROW_LABELS = {"persistence_rmse": "lead (days)", "reconstruction_rmse": "model / missing fraction",
               "forecast_rmse": "model / lead (days)", "table_3_1": "method",
               "assimilation": "scheme / observed fraction", "ablations": "entry"}


def scorecard_tables_html(card: dict[str, Any]) -> str:
    """The scorecard's sections as HTML tables (rows: the outer keys; columns: variables or
    figures), each value with its 95 % interval as ``value [low, high]`` where one exists.

    Example:
        >>> html = scorecard_tables_html({"climatology_rmse": {"2m_temperature": 2.81},
        ...     "intervals": {"climatology_rmse": {"2m_temperature": [2.7, 2.93]}}})
        >>> "2.81 [2.7, 2.93]" in html and 'id="scorecard-climatology_rmse"' in html
        True
    """
    from geofusion.variables import UNITS, VARIABLES

    parts = []
    for section, levels in SCORECARD_SECTIONS.items():
        tree = card.get(section)
        if not tree:
            continue
        intervals = (card.get("intervals") or {}).get(section)
        if section == "ablations":  # mixed depths (numbers and per-variable scores)
            levels = ()
        # Rows are the levels above the last, columns the last (ablations: one column).
        depth = len(levels) if levels else -1
        rows: dict[tuple[str, ...], dict[str, str]] = {}
        columns: list[str] = []
        for path, value in _leaf_rows(tree, depth):
            if len(path) < max(len(levels), 1):  # a null model: does not apply
                rows.setdefault(path, {})
                continue
            row, column = (path[:-1], path[-1]) if levels else (path, "value")
            if column not in columns:
                columns.append(column)
            text = _number(value)
            interval = lookup(intervals, *path)
            if isinstance(interval, list) and None not in interval:
                text += f" [{_number(interval[0])}, {_number(interval[1])}]"
            rows.setdefault(row, {})[column] = text
        order = [*VARIABLES, *TABLE_3_1_FIGURES]
        columns.sort(key=lambda c: order.index(c) if c in order else len(order))
        head = "".join(f"<th>{html.escape(c)}"
                       + (f" ({html.escape(UNITS[c])})" if c in UNITS else "") + "</th>"
                       for c in columns)
        label = _ROW_LABELS.get(section, "")
        body = "".join(
            f"<tr><th>{html.escape(' / '.join(row)) or section}</th>"
            + ("".join(f"<td>{cells.get(c, '—')}</td>" for c in columns) if cells
               else f'<td colspan="{len(columns)}">does not apply</td>') + "</tr>"
            for row, cells in rows.items())
        parts.append(f'<h3>{section}</h3><table id="scorecard-{section}">'
                     f"<tr><th>{html.escape(label)}</th>{head}</tr>{body}</table>")
    return "\n".join(parts)


def write_index(runs: list[NotebookRun], profile: str, output_dir: Path, seconds: float,
                scorecard: dict[str, Any] | None = None, notes: list[str] | None = None
                ) -> Path:
    """Write ``index.html``: the scorecard as tables first, then every executed notebook with
    the run's provenance.

    Elements a browser test can find: ``#profile`` (the profile name), ``#commit`` (git
    commit), ``#machine`` (a list of host, CPUs, versions, GPU), ``#synthetic`` (with
    ``data-synthetic="true"`` or ``"false"``), ``#scorecard`` (the section holding one
    ``table#scorecard-<section>`` per scorecard section), ``#notebooks`` (the run table).
    """
    from geofusion.io import atomic_write_text

    common = profiles.PROFILES[profile]["common"] if profile in profiles.PROFILES else {}
    data = runs[0].parameters.get("data_path") if runs else common.get("data_path")
    data_label = ("synthetic ERA5-like default (geofusion.data.synthetic_era5) — NOT real "
                  "observations" if data is None else f"ERA5 from {data}")
    rows = []
    for run in runs:
        link = (f'<a href="{html.escape(run.outputs[0])}">{html.escape(run.name)}</a>'
                if run.outputs else html.escape(run.name))
        own = {k: v for k, v in run.parameters.items() if k not in COMMON}
        rows.append(f"<tr><td>{link}</td><td>{run.status}</td><td>{run.seconds:.0f} s</td>"
                    f"<td><code>{html.escape(json.dumps(own))}</code></td>"
                    f"<td>{html.escape(run.error)}</td></tr>")
    machine = "".join(f"<li>{k}: {html.escape(v)}</li>" for k, v in machine_description().items())
    if scorecard is None:
        card_html = "<p>No scorecard: no notebook of this run wrote one.</p>"
    else:
        missing = missing_entries(scorecard)
        card_html = (
            '<p><a href="results.json">results.json</a> (schema in the README); RMSE in '
            "physical units, 95 % block-bootstrap intervals as [low, high] where computed; "
            "— where a value does not apply.</p>" + scorecard_tables_html(scorecard)
            + (f"<p>Not in this scorecard: {html.escape(', '.join(missing))}.</p>"
               if missing else ""))
    if notes:
        card_html += "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
    seeds = SEEDS_LINK if (output_dir / "seeds.html").exists() else SEEDS_PLACEHOLDER
    synthetic = "true" if data is None else "false"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>geofusion reports ({profile})</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}
td,th{{border-bottom:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head>
<body><h1>geofusion reports — profile <code id="profile">{html.escape(profile)}</code></h1>
<p id="synthetic" data-synthetic="{synthetic}"><b>Data:</b> {html.escape(data_label)}</p>
<p>Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, git commit
<code id="commit">{html.escape(git_commit())}</code>, total {seconds / 60:.1f} min.</p>
<section id="scorecard"><h2>Scorecard</h2>{card_html}{seeds}</section>
<h2>Notebooks</h2>
<table id="notebooks"><tr><th>notebook</th><th>status</th><th>time</th><th>own parameters</th>
<th>error</th></tr>{''.join(rows)}</table>
<h2>Common parameters</h2><pre>{html.escape(json.dumps(common, indent=2))}</pre>
<h2>Machine</h2><ul id="machine">{machine}</ul>
</body></html>
"""
    path = output_dir / "index.html"
    atomic_write_text(path, page)
    return path


SEEDS_LINK = ('<p id="seeds-link"><a href="seeds.html">Seed spread of the scorecard</a> '
              "(<code>python -m geofusion.pipeline seeds</code>).</p>")
SEEDS_PLACEHOLDER = "<!--seeds-link-->"
#: Notebooks whose results feed the scorecard (issue 13's contract); `seeds` reruns these.
SEED_NOTEBOOK_PREFIXES = ("02", "03", "04", "05", "06", "08", "10", "11")


def _spread_entries(node: dict[str, Any], path: tuple[str, ...]
                    ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    if "values" in node and "mean" in node:
        return [(path, node)]
    return [entry for key, child in node.items()
            for entry in _spread_entries(child, (*path, key))]


def seed_spread_html(spread: dict[str, Any], seeds: list[int]) -> str:
    """The seed spread as one table per scorecard section: mean ± std, min, max, per seed.

    Example:
        >>> html = seed_spread_html({"climatology_rmse": {"geopotential": {
        ...     "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3,
        ...     "values": [1.0, 2.0, 3.0]}}}, [0, 1, 2])
        >>> "<td>2 ± 1</td><td>1</td><td>3</td><td>1</td><td>2</td><td>3</td>" in html
        True
    """
    parts = []
    for section, tree in spread.items():
        rows = []
        for path, node in _spread_entries(tree, ()):
            cells = [f"{_number(node['mean'])} ± {_number(node['std'])}",
                     _number(node["min"]), _number(node["max"]),
                     *(_number(v) for v in node["values"])]
            rows.append(f"<tr><th>{html.escape(' / '.join(path))}</th>"
                        + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        head = "".join(f"<th>seed {s}</th>" for s in seeds)
        parts.append(f'<h3>{section}</h3><table id="seeds-{section}"><tr><th>entry</th>'
                     f"<th>mean ± std</th><th>min</th><th>max</th>{head}</tr>"
                     f"{''.join(rows)}</table>")
    return "\n".join(parts)


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
        geofusion.reporting.pipeline.UsageError: a seed spread needs --n 2 or more ...
    """
    if n < 2:
        raise UsageError(f"a seed spread needs --n 2 or more seeds, got {n}")
    if "seed" in (overrides or {}):
        raise UsageError("`seeds` sets the seed itself; drop --set seed=...")
    names = notebook_names(only) if only else [
        name for name in notebook_names() if name[:2] in SEED_NOTEBOOK_PREFIXES]
    planned = checked_parameters(profile, names, overrides)
    _report_partial_overrides(names, overrides or {})
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
    from geofusion.io import atomic_write_text

    spread = seed_spread(cards)
    record = {"profile": profile, "commit": git_commit(), "seeds": seeds, "notebooks": names,
              "overrides": dict(overrides or {}), "seconds": round(time.perf_counter() - tic, 1),
              "synthetic": cards[0]["synthetic"], "spread": spread}
    atomic_write_text(output_dir / "seeds.json", json.dumps(_plain(record), indent=2))
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>geofusion seed spread "
            f"({html.escape(profile)})</title></head><body><h1>Seed spread — profile "
            f"<code>{html.escape(profile)}</code>, seeds {seeds}</h1>"
            f"<p>git commit <code>{html.escape(record['commit'])}</code>; "
            f"{'synthetic data' if record['synthetic'] else 'ERA5'}; notebooks "
            f"{', '.join(names)}; {record['seconds'] / 60:.1f} min. Sample std (ddof 1) over "
            f"the seeds; <a href=\"seeds.json\">seeds.json</a>; each seed's scorecard in "
            f"<code>seeds/seed=&lt;s&gt;/results.json</code>.</p>"
            f"{seed_spread_html(spread, seeds)}</body></html>\n")
    atomic_write_text(output_dir / "seeds.html", page)
    index = output_dir / "index.html"
    if index.exists() and SEEDS_PLACEHOLDER in index.read_text():
        atomic_write_text(index, index.read_text().replace(SEEDS_PLACEHOLDER, SEEDS_LINK))
    print(f"[geofusion] seed spread written to {output_dir / 'seeds.html'}", flush=True)
    return record


def _finish(runs: list[NotebookRun], profile: str, output_dir: Path, seconds: float,
            overrides: dict[str, Any] | None) -> Path:
    """Write ``results.json`` (the scorecard), ``headline.md`` (each learned model against the
    best baseline, :mod:`geofusion.reporting.headline`) and ``index.html`` after a run, ok or
    failed."""
    from geofusion.io import atomic_write_text
    from geofusion.reporting.headline import headline_markdown

    try:
        scorecard, notes = build_scorecard(runs, profile, seconds, overrides)
    except ScorecardError as error:
        write_index(runs, profile, output_dir, seconds, None, [f"scorecard invalid: {error}"])
        raise PipelineError(f"a notebook wrote a scorecard that breaks the schema: {error}; "
                            f"fix its save_results(..., scorecard=...) call") from error
    for note in notes:
        print(f"[geofusion] scorecard: {note}", file=sys.stderr, flush=True)
    write_scorecard(output_dir / "results.json", scorecard)
    atomic_write_text(output_dir / "headline.md", headline_markdown(scorecard) + "\n")
    return write_index(runs, profile, output_dir, seconds, scorecard, notes)


def _report_partial_overrides(names: list[str], overrides: dict[str, Any]) -> None:
    """Say which notebooks keep the profile's value of an override they do not declare."""
    for key in overrides:
        skipped = [name for name in names if key not in declared_parameters(name)]
        if skipped:
            print(f"[geofusion] --set {key} applies only where declared: not to "
                  f"{', '.join(skipped)} (they keep the profile's value)", flush=True)


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
        geofusion.reporting.pipeline.UsageError: --set 'epoch' is not a parameter of ...
    """
    names = notebook_names(only)
    planned = checked_parameters(profile, names, overrides)
    _report_partial_overrides(names, overrides or {})
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
    index = _finish(runs, profile, output_dir, time.perf_counter() - tic, overrides)
    if failure is not None:
        raise failure
    print(f"[geofusion] reports and {output_dir / 'results.json'} written; open {index}",
          flush=True)
    return runs


def _checked_sweep(prefix: str, grid: dict[str, list[Any]], profile: str,
                   overrides: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The swept notebook's name and base parameters, every key checked; raise UsageError."""
    name = resolve_notebook(prefix)
    both = sorted(set(grid) & set(overrides or {}))
    if both:
        raise UsageError(f"{both} both swept (--grid) and set (--set); keep one")
    applied_overrides([name], dict.fromkeys(grid), option="--grid")
    return name, checked_parameters(profile, [name], overrides)[name]


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
        geofusion.reporting.pipeline.UsageError: --grid 'lamda' is not a parameter of ...
    """
    from geofusion.experiments.scorecard import collect_results
    from geofusion.io import atomic_write_text

    name, base = _checked_sweep(name, grid, profile, overrides)
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


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0 ok, 1 a notebook failed, 2 bad usage).

    Example:
        >>> main(["sweep", "03", "--grid", "lambd=0.001,0.01", "--set", "epochs=1",
        ...       "--dry-run"])
        [geofusion] would run 03_barlow_twins with lambd=0.001
        [geofusion] would run 03_barlow_twins with lambd=0.01
        0
    """
    parser = argparse.ArgumentParser(prog="python -m geofusion.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "sweep", "sweeps", "seeds"])
    parser.add_argument("notebooks", nargs="*", metavar="notebook",
                        help="notebook name prefixes, e.g. 03 (with `run`: like --only; with "
                             "`sweep`: exactly one notebook)")
    parser.add_argument("--profile", default="quick", choices=sorted(profiles.PROFILES))
    parser.add_argument("--only", nargs="*", default=[], help="notebook name prefixes, e.g. 01 03")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override parameters, e.g. epochs=2 data_path=None; each key goes "
                             "to the selected notebooks that declare it and must be declared "
                             "by at least one")
    parser.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                        help="swept values, e.g. lambd=0.001,0.01,0.1")
    parser.add_argument("--n", type=int, default=3,
                        help="number of seeds (with `seeds`; seed, seed+1, ...)")
    parser.add_argument("--output-dir", type=Path, default=REPO / "reports",
                        help="where reports go (default: reports/; sweeps in its sweeps/)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="`run`: notebooks executed at once, each started when the ones it "
                             "depends on are done (NOTEBOOK_PREREQUISITES); `make reports` "
                             "uses 2 (default: %(default)s, one after another)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check every notebook and parameter, print the plan, run nothing")
    args = parser.parse_args(argv)
    try:
        overrides = parse_assignments(args.set)
        if args.command == "run":
            if args.grid:
                raise UsageError("--grid belongs to `sweep`; use --set with `run`")
            only = [*args.only, *args.notebooks] or None
            if args.dry_run:
                planned = checked_parameters(args.profile, notebook_names(only), overrides)
                _report_partial_overrides(list(planned), overrides)
                for name, params in planned.items():
                    print(f"[geofusion] would run {name} with {json.dumps(params)}")
                if args.jobs > 1:
                    for wave in execution_waves(list(planned), args.jobs):
                        print(f"[geofusion] side by side ({kernel_threads(args.jobs)} "
                              f"thread(s) each): {', '.join(wave)}")
            else:
                run_pipeline(args.profile, only, overrides, args.output_dir, jobs=args.jobs)
        elif args.command == "sweep":
            if len(args.notebooks) != 1 or args.only or not args.grid:
                raise UsageError("sweep needs one notebook and --grid KEY=V1,V2, e.g. "
                                 "`sweep 03 --grid lambd=0.001,0.01`")
            grid = parse_grid(args.grid)
            if args.dry_run:
                name, _ = _checked_sweep(args.notebooks[0], grid, args.profile, overrides)
                for key, values in grid.items():
                    for value in values:
                        print(f"[geofusion] would run {name} with {key}={value}")
            else:
                run_sweep(args.notebooks[0], grid, args.profile, overrides,
                          args.output_dir / "sweeps")
        elif args.command == "seeds":
            if args.grid:
                raise UsageError("--grid belongs to `sweep`; `seeds` takes --n")
            only = [*args.only, *args.notebooks] or None
            if args.dry_run:
                names = notebook_names(only) if only else [
                    n for n in notebook_names() if n[:2] in SEED_NOTEBOOK_PREFIXES]
                checked_parameters(args.profile, names, overrides)
                print(f"[geofusion] would run {', '.join(names)} with {args.n} seeds")
            else:
                run_seeds(args.profile, args.n, only, overrides, args.output_dir)
        else:
            if args.notebooks or args.only or args.grid:
                raise UsageError("`sweeps` runs the report's sweeps (REPORT_SWEEPS) and takes "
                                 "no notebook or --grid; use `sweep NOTEBOOK --grid ...`")
            for name, grid in REPORT_SWEEPS.items():
                if args.dry_run:
                    _checked_sweep(name, grid, args.profile, overrides)
                    print(f"[geofusion] would sweep {name} over {grid}")
                else:
                    run_sweep(name, grid, args.profile, overrides, args.output_dir / "sweeps")
    except UsageError as error:
        print(f"[geofusion] error: {error}", file=sys.stderr)
        return 2
    except PipelineError as error:
        print(f"[geofusion] FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
