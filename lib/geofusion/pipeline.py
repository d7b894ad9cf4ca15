"""Run the numbered notebooks with papermill under a profile and render them into ``reports/``.

Usage::

    python -m geofusion.pipeline                         # quick profile, all notebooks
    python -m geofusion.pipeline --profile full          # the report's settings, GPU, real ERA5
    python -m geofusion.pipeline --only 03 04 --set epochs=2
    python -m geofusion.pipeline sweep 03_barlow_twins --grid lambd=0.001,0.01,0.1

Profiles:

- ``quick``: CPU, the embedded synthetic default (2000-2007), small networks and few epochs,
  so that all notebooks run in minutes on two cores. Numbers are a smoke-level demonstration.
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

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
WB2_ERA5_64x32 = "gs://weatherbench2/datasets/era5/1959-2022-6h-64x32_equiangular_conservative.zarr"

# Parameters every notebook's `parameters` cell defines.
COMMON = ("data_path", "profile", "seed", "device", "run_dir", "cache_dir", "start", "end",
          "level")

# The base models. Notebooks 06-08 ask geofusion.runs for the autoencoder of 02 and the
# Barlow Twins of 03 with these same settings, so a pipeline run trains each of them once.
_BASE = {
    "quick": {"batch_size": 64, "width": 8, "latent_dim": 1000, "proj_dim": 128,
              "ae_epochs": 6, "ae_lr": 1e-3, "encoder_epochs": 3, "encoder_lr": 1e-3,
              "lambd": 0.01},
    # The report: ResNet-18, batch 128, Adam 1e-3, autoencoder 300 epochs, Barlow Twins 100
    # epochs with lambda 0.01.
    "full": {"batch_size": 128, "width": 64, "latent_dim": 1000, "proj_dim": 128,
             "ae_epochs": 300, "ae_lr": 1e-3, "encoder_epochs": 100, "encoder_lr": 1e-3,
             "lambd": 0.01},
}


def _autoencoder(base: dict[str, Any]) -> dict[str, Any]:
    return {"epochs": base["ae_epochs"], "lr": base["ae_lr"], "batch_size": base["batch_size"],
            "width": base["width"], "latent_dim": base["latent_dim"]}


def _contrastive(base: dict[str, Any], **own: Any) -> dict[str, Any]:
    return {"epochs": base["encoder_epochs"], "lr": base["encoder_lr"],
            "batch_size": base["batch_size"], "width": base["width"],
            "latent_dim": base["latent_dim"], "proj_dim": base["proj_dim"], **own}


# The sparse-view Barlow Twins of notebook 06, requested again by notebook 08.
_SPARSE = {"mask_kind": "pixel", "min_ratio": 0.0, "max_ratio": 0.9, "noise_std": 0.1,
           "noise_length": 2.0, "both_views": False}
# Frozen-encoder decoders: notebooks 06, 07 and 08 draw the same training days, so they share
# the decoders they train.
_DECODER = {
    "quick": {"decoder_epochs": 3, "decoder_lr": 1e-3, "decoder_width": 16},
    "full": {"decoder_epochs": 30, "decoder_lr": 1e-3, "decoder_width": 64},
}


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "common": {"data_path": None, "profile": "quick", "seed": 0, "device": "cpu",
                   "run_dir": "runs/quick", "cache_dir": "runs/cache", "start": "2000-01-01",
                   "end": "2007-12-31", "level": 500},
        "02_autoencoder": _autoencoder(_BASE["quick"]),
        "03_barlow_twins": _contrastive(_BASE["quick"], lambd=_BASE["quick"]["lambd"]),
        "04_simclr": _contrastive(_BASE["quick"], temperature=0.3),
        "05_supervised_contrastive": _contrastive(_BASE["quick"], temperature=0.1),
        "06_sparsity": {**_BASE["quick"], **_SPARSE, **_DECODER["quick"],
                        "n_decoder_days": 512, "n_eval_days": 64},
        "07_decoder": {**_BASE["quick"], **_DECODER["quick"], "joint_epochs": 3,
                       "joint_lr": 1e-3, "n_train_days": 512, "n_eval": 256},
        "08_forecasting": {**_BASE["quick"], **_SPARSE, **_DECODER["quick"],
                           "n_decoder_days": 512, "context": 30, "lstm_hidden": 128,
                           "forecast_epochs": 2, "n_eval_days": 180, "max_lead": 7},
    },
    "full": {
        "common": {"data_path": WB2_ERA5_64x32, "profile": "full", "seed": 0,
                   "device": "cuda", "run_dir": "runs/full", "cache_dir": "runs/cache",
                   "start": "1959-01-01", "end": "2022-12-31", "level": None},
        "02_autoencoder": _autoencoder(_BASE["full"]),
        "03_barlow_twins": _contrastive(_BASE["full"], lambd=_BASE["full"]["lambd"]),
        # The report trains SimCLR and SupCon at lr 1e-4.
        "04_simclr": {**_contrastive(_BASE["full"], temperature=0.3), "lr": 1e-4},
        "05_supervised_contrastive": {**_contrastive(_BASE["full"], temperature=0.1),
                                      "lr": 1e-4},
        "06_sparsity": {**_BASE["full"], **_SPARSE, **_DECODER["full"],
                        "n_decoder_days": None, "n_eval_days": 512},
        "07_decoder": {**_BASE["full"], **_DECODER["full"], "joint_epochs": 100,
                       "joint_lr": 1e-3, "n_train_days": None, "n_eval": None},
        "08_forecasting": {**_BASE["full"], **_SPARSE, **_DECODER["full"],
                           "n_decoder_days": None, "context": 30, "lstm_hidden": 512,
                           "forecast_epochs": 50, "n_eval_days": None, "max_lead": 10},
        "09_fusion": {"epochs": 100, "batch_size": 128, "width": 64, "mode_width": 32,
                      "token_dim": 256, "latent_dim": 1000, "proj_dim": 128,
                      "proj_hidden_dim": 1024, "n_train_days": None, "n_eval": 2048,
                      "decoder_epochs": 30, "decoder_width": 64, "context": 30,
                      "lstm_hidden": 512, "forecast_epochs": 50, "forecast_lr": 1e-3,
                      "forecast_train_days": None},
    },
}

# The report's sweeps (section 3.3), one documented command: `make sweeps PROFILE=full`.
REPORT_SWEEPS: dict[str, dict[str, list[Any]]] = {
    "03_barlow_twins": {"lambd": [0.001, 0.01, 0.1]},
    "04_simclr": {"temperature": [0.01, 0.03, 0.05, 0.07, 0.08, 0.1, 0.3]},
    "05_supervised_contrastive": {"temperature": [0.01, 0.03, 0.05, 0.07, 0.08, 0.1, 0.3]},
}


class PipelineError(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


@dataclass
class NotebookRun:
    name: str
    parameters: dict[str, Any]
    seconds: float = 0.0
    status: str = "not run"
    error: str = ""
    outputs: list[str] = field(default_factory=list)


def notebook_names(only: list[str] | None = None) -> list[str]:
    """Numbered notebooks in run order, optionally those whose name starts with ``only``."""
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [n for n in names if any(n.startswith(prefix) for prefix in only)]
        unknown = [p for p in only if not any(n.startswith(p) for n in names)]
        if unknown:
            raise ValueError(f"no notebook matches {unknown}; notebooks are {names}")
        return chosen
    return names


def parameters_for(profile: str, name: str, overrides: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The papermill parameters of notebook ``name`` under ``profile`` plus ``overrides``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    settings = PROFILES[profile]
    return {**settings["common"], **settings.get(name, {}), **(overrides or {})}


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as JSON when they parse, else as text."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {item!r}")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw
    return parsed


def _render_html(notebook_path: Path, html_path: Path) -> None:
    # MathJax from a local copy next to the report, widget state embedded (geofusion.rendering).
    from geofusion.rendering import render_notebook_html

    render_notebook_html(notebook_path, html_path)


def execute(name: str, parameters: dict[str, Any], output_dir: Path,
            kernel_name: str = "python3") -> NotebookRun:
    """Execute one notebook into ``output_dir`` and render its HTML; raise PipelineError."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output_dir.mkdir(parents=True, exist_ok=True)
    out_ipynb = output_dir / f"{name}.ipynb"
    run = NotebookRun(name, parameters)
    tic = time.perf_counter()
    os.environ["GEOFUSION_PLAIN_PROGRESS"] = "1"
    try:
        papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(out_ipynb),
                                   parameters=parameters, cwd=str(REPO),
                                   kernel_name=kernel_name, progress_bar=False)
    except PapermillExecutionError as error:
        run.status, run.error = "failed", f"cell {error.exec_count}: {error.ename}: {error.evalue}"
        raise PipelineError(f"notebook {name} failed in cell {error.exec_count} "
                            f"({error.ename}: {error.evalue}); the executed notebook with "
                            f"the traceback is {out_ipynb}") from error
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


def write_index(runs: list[NotebookRun], profile: str, output_dir: Path, seconds: float) -> Path:
    """Write ``index.html`` linking every executed notebook with the run's provenance."""
    from geofusion.io import atomic_write_text

    common = PROFILES[profile]["common"] if profile in PROFILES else {}
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
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>geofusion reports ({profile})</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}
td,th{{border-bottom:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head>
<body><h1>geofusion reports — profile <code>{profile}</code></h1>
<p><b>Data:</b> {html.escape(data_label)}</p>
<p>Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, git commit
<code>{git_commit()}</code>, total {seconds / 60:.1f} min.</p>
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>time</th><th>own parameters</th>
<th>error</th></tr>{''.join(rows)}</table>
<h2>Common parameters</h2><pre>{html.escape(json.dumps(common, indent=2))}</pre>
<h2>Machine</h2><ul>{machine}</ul>
</body></html>
"""
    path = output_dir / "index.html"
    atomic_write_text(path, page)
    return path


def run_pipeline(profile: str = "quick", only: list[str] | None = None,
                 overrides: dict[str, Any] | None = None,
                 output_dir: Path = REPO / "reports") -> list[NotebookRun]:
    """Execute the numbered notebooks in order; write HTML and the index; stop at a failure."""
    runs: list[NotebookRun] = []
    tic = time.perf_counter()
    try:
        for name in notebook_names(only):
            parameters = parameters_for(profile, name, overrides)
            print(f"[geofusion] {name} ({profile}) ...", flush=True)
            run = NotebookRun(name, parameters)
            runs.append(run)
            done = execute(name, parameters, output_dir)
            runs[-1] = done
            print(f"[geofusion] {name} done in {done.seconds:.0f} s", flush=True)
    except PipelineError as error:
        runs[-1].status, runs[-1].error = "failed", str(error)
        if (output_dir / f"{runs[-1].name}.html").exists():
            runs[-1].outputs = [f"{runs[-1].name}.html"]
        write_index(runs, profile, output_dir, time.perf_counter() - tic)
        raise
    index = write_index(runs, profile, output_dir, time.perf_counter() - tic)
    print(f"[geofusion] reports written; open {index}", flush=True)
    return runs


def run_sweep(name: str, grid: dict[str, list[Any]], profile: str = "quick",
              overrides: dict[str, Any] | None = None,
              output_dir: Path = REPO / "reports" / "sweeps"):
    """Run notebook ``name`` once per value of each swept parameter; collect its results.

    Each run gets its own ``run_dir`` (``<profile run_dir>/sweeps/<name>/<param>=<value>``) so
    checkpoints never mix. Returns the collected results table, also written as CSV and HTML.
    """
    from geofusion.results import collect_results

    base = parameters_for(profile, name, overrides)
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
    table.to_csv(output_dir / f"{name}.csv", index=False)
    (output_dir / f"{name}.html").write_text(table.to_html(index=False))
    print(table.to_string(index=False), flush=True)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geofusion.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "sweep", "sweeps"])
    parser.add_argument("notebook", nargs="?", help="notebook to sweep (with `sweep`)")
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 03")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override parameters of every notebook, e.g. epochs=2")
    parser.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                        help="swept values, e.g. lambd=0.001,0.01,0.1")
    args = parser.parse_args(argv)
    overrides = parse_assignments(args.set)
    try:
        if args.command == "run":
            run_pipeline(args.profile, args.only, overrides)
        elif args.command == "sweep":
            if not args.notebook or not args.grid:
                parser.error("sweep needs a notebook and --grid KEY=V1,V2")
            grid = {k: [json.loads(v) if v[:1].isdigit() or v[:1] == "-" else v
                        for v in str(raw).split(",")]
                    for k, raw in (item.split("=", 1) for item in args.grid)}
            run_sweep(args.notebook, grid, args.profile, overrides)
        else:
            for name, grid in REPORT_SWEEPS.items():
                run_sweep(name, grid, args.profile, overrides)
    except PipelineError as error:
        print(f"[geofusion] FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
