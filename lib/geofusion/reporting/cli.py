"""Run the numbered notebooks with papermill under a profile and render them into ``reports/``.

Usage::

    python -m geofusion.pipeline                         # quick profile, all notebooks
    python -m geofusion.pipeline --profile full          # the report's settings, GPU, real ERA5
    python -m geofusion.pipeline --only 03 04 --set epochs=2
    python -m geofusion.pipeline run 03 --set data_path=None --dry-run   # check, print the plan
    python -m geofusion.pipeline sweep 03 --grid lambd=0.001,0.01,0.1 --jobs 2
    python -m geofusion.pipeline --profile full --scheduler-address tcp://host:8786
    python -m geofusion.pipeline pretrain --profile full --nproc 4   # models data-parallel first
    python -m geofusion.pipeline cost --profile full     # every model's steps -> hours, memory

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
commit, machine and durations. Every notebook run (of a run, a sweep, a seed spread) is a task
on dask.distributed: a local cluster running ``--jobs`` at once, or the cluster at
``--scheduler-address``. A failing notebook stops the notebooks that need it; the others run
on, and the run ends with status 1 and every failure's notebook and cell named.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from geofusion.experiments import profiles
from geofusion.experiments.profiles import REPORT_SWEEPS
from geofusion.io import repository_root
from geofusion.reporting.execution import PipelineError
from geofusion.reporting.notebooks import (
    UsageError,
    checked_parameters,
    checked_sweep,
    notebook_names,
    parse_assignments,
    parse_grid,
    report_partial_overrides,
)
from geofusion.reporting.pretrain import launch
from geofusion.reporting.scheduling import (
    SEED_NOTEBOOK_PREFIXES,
    execution_waves,
    kernel_threads,
    run_pipeline,
    run_seeds,
    run_sweep,
)

REPO = repository_root()


def print_cost(profile: str, only: list[str] | None, overrides: dict, steps: int,
               gpu_tflops: float, gpu_efficiency: float, output: Path | None) -> None:
    """``cost``: measure every model the selected notebooks train
    (:mod:`geofusion.experiments.cost`) and print (and write) the projected training time and
    peak memory."""
    import platform

    import torch

    from geofusion.experiments import cost
    from geofusion.reporting.pretrain import notebook_parameters

    planned = notebook_parameters(profile, notebook_names(only), overrides)
    jobs = cost.cost_jobs(planned)
    measured = []
    for job in jobs:
        measured.append(cost.measure_job(job, device="auto", steps=steps))
        print(f"[geofusion] {job.notebook} {job.label}: "
              f"{measured[-1].seconds_per_step:.3g} s/step on {measured[-1].device}", flush=True)
    rows, per_notebook = cost.projection_table(measured, gpu_tflops, gpu_efficiency)
    device = (torch.cuda.get_device_name() if torch.cuda.is_available() else cost.cpu_name())
    header = (f"Profile `{profile}`, measured on {device} (torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, python {platform.python_version()}, load "
              f"average {os.getloadavg()[0]:.1f} at the end), "
              f"{steps} timed steps per model after one warm-up. The GPU column is a "
              f"projection from the counted FLOPs at {gpu_efficiency:g} of "
              f"{gpu_tflops:g} TFLOP/s, not a measurement. Every model the notebooks train "
              f"(encoders, fusion schemes, frozen and joint decoders, latent LSTMs, DDPMs; "
              f"a model several notebooks use is counted once, under the first); the "
              f"DDPMs are trained on the CPU whatever the device, so measured there. "
              f"Epochs are the maximum (early stopping may end sooner); validation and "
              f"encoding passes and the evaluations are not counted "
              f"(geofusion.experiments.cost).")
    own = {job.notebook for job in jobs}
    notes = [f"- {name}: trains no model of its own; "
             + "; ".join(f"{job.label} is counted under {job.notebook}"
                         for job in jobs if name in job.shared_with)
             for name in planned if name not in own and name in cost.TRAINING_NOTEBOOKS]
    text = (f"{header}\n\n{cost.markdown_table(rows, index=False)}\n\n"
            f"{cost.markdown_table(per_notebook)}\n")
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)


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
                        choices=["run", "sweep", "sweeps", "seeds", "pretrain", "cost"])
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
                        help="`run`, `sweep(s)`, `seeds`: notebooks executed at once on the "
                             "local dask cluster, each started when the ones it depends on are "
                             "done (NOTEBOOK_PREREQUISITES); `make reports` uses 2 (default: "
                             "%(default)s, one after another)")
    parser.add_argument("--scheduler-address", default=None, metavar="ADDRESS",
                        help="`run`, `sweep(s)`, `seeds`: run the notebooks on the dask "
                             "cluster whose scheduler is at ADDRESS (e.g. tcp://host:8786, "
                             "or a dask-jobqueue SLURMCluster's scheduler_address) instead "
                             "of a local one; its workers decide how many run at once "
                             "(--jobs is ignored) and must see the repository and run "
                             "folders at the same paths; training notebooks ask for a GPU "
                             "where workers advertise one (`dask worker ... --resources "
                             "GPU=1`)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="`pretrain`: torchrun processes (one per GPU) that train the "
                             "selected notebooks' models data-parallel into the model cache")
    parser.add_argument("--steps", type=int, default=2,
                        help="`cost`: timed optimisation steps per model (after one warm-up) "
                             "of every model the selected notebooks train (encoders, fusion "
                             "schemes, frozen and joint decoders, LSTMs, DDPMs)")
    parser.add_argument("--gpu-tflops", type=float, default=989.0,
                        help="`cost`: peak TFLOP/s of the GPU the projection assumes "
                             "(default: H100/H200 dense bfloat16)")
    parser.add_argument("--gpu-efficiency", type=float, default=0.3,
                        help="`cost`: assumed fraction of that peak reached")
    parser.add_argument("--cost-output", type=Path, default=None,
                        help="`cost`: also write the tables as markdown to this file")
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
                report_partial_overrides(list(planned), overrides)
                for name, params in planned.items():
                    print(f"[geofusion] would run {name} with {json.dumps(params)}")
                if args.jobs > 1:
                    for wave in execution_waves(list(planned), args.jobs):
                        print(f"[geofusion] side by side ({kernel_threads(args.jobs)} "
                              f"thread(s) each): {', '.join(wave)}")
            else:
                run_pipeline(args.profile, only, overrides, args.output_dir, jobs=args.jobs,
                             scheduler_address=args.scheduler_address)
        elif args.command == "sweep":
            if len(args.notebooks) != 1 or args.only or not args.grid:
                raise UsageError("sweep needs one notebook and --grid KEY=V1,V2, e.g. "
                                 "`sweep 03 --grid lambd=0.001,0.01`")
            grid = parse_grid(args.grid)
            if args.dry_run:
                name, _ = checked_sweep(args.notebooks[0], grid, args.profile, overrides)
                for key, values in grid.items():
                    for value in values:
                        print(f"[geofusion] would run {name} with {key}={value}")
            else:
                run_sweep(args.notebooks[0], grid, args.profile, overrides,
                          args.output_dir / "sweeps", jobs=args.jobs,
                          scheduler_address=args.scheduler_address)
        elif args.command == "pretrain":
            if args.grid:
                raise UsageError("--grid belongs to `sweep`; `pretrain` takes --nproc")
            only = [*args.only, *args.notebooks] or None
            status = launch(args.nproc, args.profile, only, args.set, dry_run=args.dry_run)
            if status:
                raise PipelineError(f"pretrain: torchrun exited with status {status}")
        elif args.command == "cost":
            only = [*args.only, *args.notebooks] or None
            print_cost(args.profile, only, overrides, args.steps, args.gpu_tflops,
                       args.gpu_efficiency, args.cost_output)
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
                run_seeds(args.profile, args.n, only, overrides, args.output_dir,
                          jobs=args.jobs, scheduler_address=args.scheduler_address)
        else:
            if args.notebooks or args.only or args.grid:
                raise UsageError("`sweeps` runs the report's sweeps (REPORT_SWEEPS) and takes "
                                 "no notebook or --grid; use `sweep NOTEBOOK --grid ...`")
            for name, grid in REPORT_SWEEPS.items():
                if args.dry_run:
                    checked_sweep(name, grid, args.profile, overrides)
                    print(f"[geofusion] would sweep {name} over {grid}")
                else:
                    run_sweep(name, grid, args.profile, overrides, args.output_dir / "sweeps",
                              jobs=args.jobs, scheduler_address=args.scheduler_address)
    except UsageError as error:
        print(f"[geofusion] error: {error}", file=sys.stderr)
        return 2
    except PipelineError as error:
        print(f"[geofusion] FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
