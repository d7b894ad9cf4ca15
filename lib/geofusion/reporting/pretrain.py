"""Train the notebooks' models data-parallel ahead of the notebooks (several GPUs or processes).

    python -m geofusion.pipeline pretrain --profile full --nproc 4        # every notebook's models
    python -m geofusion.pipeline pretrain 03 06 --profile full --nproc 4
    torchrun --standalone --nproc_per_node=4 -m geofusion.reporting.pretrain --profile full 03

Each selected notebook's parameters are checked as for a pipeline run (profile, ``--set``),
its model requests are rebuilt (:mod:`geofusion.experiments.model_requests`) and trained with
:func:`geofusion.learning.distributed.fit_distributed` (NCCL on GPUs, gloo on CPU) into the
directories the notebook looks in (the model cache key of
:func:`geofusion.learning.model_cache.pretrained`, or ``<run_dir>/09_fusion/<run>``). The
pipeline run that follows loads them instead of training. ``batch_size`` is the global batch
(divisible by the number of processes). Notebooks without encoders of their own (01, 07, 08,
10: they reuse 02, 03 and 06's) are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

import torch

from geofusion.experiments import profiles
from geofusion.experiments.model_requests import PRETRAINED_NOTEBOOKS, train_requests
from geofusion.io import repository_root
from geofusion.learning import collectives, distributed
from geofusion.reporting.notebooks import (
    checked_parameters,
    notebook_names,
    notebook_path,
    parse_assignments,
)

__all__ = ["pretrained_notebooks", "notebook_parameters", "torchrun_command", "launch", "main"]


def notebook_parameters(profile: str, names: list[str], overrides: dict[str, Any] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Every parameter of each notebook as its kernel sees it: the defaults of its
    ``parameters`` cell (evaluated) updated with :func:`checked_parameters` (the profile and
    the overrides it declares).

    Example:
        >>> notebook_parameters("full", ["03_barlow_twins"])["03_barlow_twins"]["n_embed"]
        64
    """
    checked = checked_parameters(profile, names, overrides)
    planned = {}
    for name in names:
        cells = json.loads(notebook_path(name).read_text())["cells"]
        source = next("".join(cell["source"]) for cell in cells
                      if "parameters" in cell.get("metadata", {}).get("tags", []))
        defaults: dict[str, Any] = {}
        exec(compile(source, f"{name} parameters cell", "exec"), {}, defaults)  # noqa: S102
        planned[name] = {**defaults, **checked[name]}
    return planned


def pretrained_notebooks(only: list[str] | None = None) -> list[str]:
    """The selected notebooks (prefixes as everywhere) that have models to train ahead.

    Example:
        >>> pretrained_notebooks(["0"])[:2]
        ['02_autoencoder', '03_barlow_twins']
    """
    return [name for name in notebook_names(only) if name in PRETRAINED_NOTEBOOKS]


def torchrun_command(nproc: int, profile: str, notebooks: list[str],
                     assignments: list[str]) -> list[str]:
    """The torchrun command line that trains ``notebooks`` on ``nproc`` processes."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "geofusion.reporting.pretrain",
            "--profile", profile, *notebooks, *(["--set", *assignments] if assignments else [])]


def launch(nproc: int, profile: str, only: list[str] | None, assignments: list[str],
           dry_run: bool = False) -> int:
    """Check the parameters here, then run :func:`torchrun_command`; returns its exit status."""
    names = pretrained_notebooks(only)
    checked_parameters(profile, names, parse_assignments(assignments))
    command = torchrun_command(nproc, profile, names, assignments)
    print(f"[geofusion] {'would run' if dry_run else 'running'}: {' '.join(command)}")
    if dry_run or not names:
        return 0
    # From the repository root, as the pipeline runs the notebooks: run_dir is relative to it.
    return subprocess.run(command, check=False, cwd=repository_root()).returncode


def main(argv: list[str] | None = None) -> int:
    """Run in every process of a torchrun job (or alone: one process, plain ``fit``)."""
    parser = argparse.ArgumentParser(prog="python -m geofusion.reporting.pretrain",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", metavar="notebook")
    parser.add_argument("--profile", default="quick", choices=sorted(profiles.PROFILES))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    names = pretrained_notebooks(args.notebooks or None)
    planned = notebook_parameters(args.profile, names, parse_assignments(args.set))
    collectives.init_from_env()
    try:
        if not torch.cuda.is_available():
            # The processes share the cores: one full thread pool each would oversubscribe them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // collectives.world_size()))
        for name, params in planned.items():
            directories = train_requests(name, _device_for(params),
                                         trainer=distributed.fit_distributed,
                                         progress=collectives.rank() == 0)
            if collectives.rank() == 0:
                for directory in directories:
                    print(f"[geofusion] {name}: {directory} "
                          f"({collectives.world_size()} process(es))", flush=True)
    finally:
        collectives.cleanup()
    return 0


def _device_for(params: dict[str, Any]) -> dict[str, Any]:
    # The device is not part of a model's key; a "cuda" profile on a CPU-only torchrun job
    # (gloo) trains on the CPU.
    if str(params.get("device", "auto")).startswith("cuda") and not torch.cuda.is_available():
        return {**params, "device": "cpu"}
    return params


if __name__ == "__main__":
    sys.exit(main())
