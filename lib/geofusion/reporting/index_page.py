"""What a run leaves next to the executed notebooks: the scorecard (``results.json``), the
headline (``headline.md``), its figure (``scorecard.png``), ``index.html`` and, after ``seeds``,
``seeds.html``.

Holds the scorecard of a run (:func:`build_scorecard`), its HTML tables
(:func:`scorecard_tables_html`), the index page (:func:`write_index`), the three written
together after every run (:func:`finish_run`) and the seed-spread page
(:func:`seed_spread_html`, :func:`write_seeds_page`).

Conventions: a notebook contributes the ``scorecard`` section of
``<run_dir>/results/<name>.json`` only if it ran to the end and wrote that file during this run;
sections merge in run order (the earlier notebook wins a conflict, which is reported). Numbers
print with 4 significant digits, ``—`` where a value does not apply, 95 % intervals as
``[low, high]``. Pages are written atomically (:func:`geofusion.io.atomic_write_text`);
``index.html`` carries ids a browser test finds (see :func:`write_index`) and
:data:`SEEDS_PLACEHOLDER` until a seed spread exists.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import sys
from pathlib import Path
from typing import Any

from geofusion import reproducibility
from geofusion.experiments import profiles
from geofusion.experiments.profiles import COMMON
from geofusion.experiments.scorecard import (
    SCORECARD_SECTIONS,
    TABLE_3_1_FIGURES,
    ScorecardError,
    lookup,
    merge_scorecards,
    missing_entries,
    validate_scorecard,
    write_scorecard,
)
from geofusion.io import atomic_write_text, repository_root
from geofusion.reporting.execution import (
    NotebookRun,
    PipelineError,
    git_commit,
    machine_description,
)

REPO = repository_root()


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
    """Write ``index.html``: the scorecard first (its figure, ``scorecard.png`` next to the page
    where it exists, then its tables), then every executed notebook with the run's provenance.

    Elements a browser test can find: ``#profile`` (the profile name), ``#commit`` (git
    commit), ``#machine`` (a list of host, CPUs, versions, GPU), ``#synthetic`` (with
    ``data-synthetic="true"`` or ``"false"``), ``#scorecard`` (the section holding
    ``figure#scorecard-figure`` where ``scorecard.png`` exists and one
    ``table#scorecard-<section>`` per scorecard section), ``#notebooks`` (the run table).
    """
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
            (SCORECARD_FIGURE if (output_dir / "scorecard.png").exists() else "")
            + '<p><a href="results.json">results.json</a> (schema in the README); RMSE in '
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


def finish_run(runs: list[NotebookRun], profile: str, output_dir: Path, seconds: float,
               overrides: dict[str, Any] | None) -> Path:
    """Write ``results.json`` (the scorecard), ``headline.md`` (each learned model against the
    best baseline, :mod:`geofusion.reporting.headline`), ``scorecard.png`` (the same as a
    figure) and ``index.html`` after a run, ok or failed. A figure that cannot be drawn is a
    note on the index, not a failed run; a stale ``scorecard.png`` is removed first."""
    from geofusion.reporting.headline import headline_markdown, save_scorecard_figure

    (output_dir / "scorecard.png").unlink(missing_ok=True)
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
    try:
        save_scorecard_figure(scorecard, output_dir / "scorecard.png")
    except Exception as error:  # the tables and the run's record come first
        notes = [*notes, f"scorecard figure not drawn: {type(error).__name__}: {error}"]
        print(f"[geofusion] {notes[-1]}", file=sys.stderr, flush=True)
    return write_index(runs, profile, output_dir, seconds, scorecard, notes)


#: The figure at the top of the scorecard section: its natural size up to nearly the window's
#: width (wider than the page's text: the grid has a column per variable and column), centred.
SCORECARD_FIGURE = (
    '<figure id="scorecard-figure" style="margin:1em 0"><a href="scorecard.png">'
    '<img src="scorecard.png" alt="Scorecard: each learned model\'s RMSE over the best '
    'baseline\'s, per variable and column" style="max-width:96vw;position:relative;'
    'left:50%;transform:translateX(-50%)"></a><figcaption>Each learned model\'s RMSE over '
    "the best baseline's of the variable (blue better, red worse, log scale), framed where "
    "the 95 % interval lies wholly below or above the baseline, grey where the card holds no "
    "value (<code>python -m geofusion.headline --figure scorecard.png reports/results.json"
    '</code>; the numbers in <a href="headline.md">headline.md</a> and the tables below).'
    "</figcaption></figure>\n")
SEEDS_LINK = ('<p id="seeds-link"><a href="seeds.html">Seed spread of the scorecard</a> '
              "(<code>python -m geofusion.pipeline seeds</code>).</p>")
SEEDS_PLACEHOLDER = "<!--seeds-link-->"


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


def write_seeds_page(output_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``seeds.html`` from the record of a ``seeds`` run (what
    :func:`geofusion.reporting.scheduling.run_seeds` writes to ``seeds.json``: ``profile``,
    ``commit``, ``seeds``, ``notebooks``, ``seconds``, ``synthetic``, ``spread``) and link it
    from ``index.html`` where that page holds :data:`SEEDS_PLACEHOLDER`."""
    profile, seeds, names, spread = (record["profile"], record["seeds"], record["notebooks"],
                                     record["spread"])
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
    return output_dir / "seeds.html"
