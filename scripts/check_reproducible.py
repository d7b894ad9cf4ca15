"""Run a notebook twice with a tiny budget and fail unless both runs produced identical results.

    python scripts/check_reproducible.py --notebook 03                 # CUDA when available
    python scripts/check_reproducible.py --notebook 03 --device cpu
    python scripts/check_reproducible.py --notebook 03 --device cuda --keep /tmp/repro

``--device auto`` (the default) runs the CUDA form whenever CUDA is available (training in
bfloat16 autocast, :data:`geofusion.reproducibility.AUTOCAST_POLICY`, with deterministic
kernels) and the CPU form otherwise; ``tests/scripts/test_check_reproducible.py`` runs the CUDA
form wherever a GPU is present.

Each run goes through :func:`geofusion.reporting.execution.execute` (papermill, as ``make reports``
does)
into its own temporary directory (own ``run_dir``, own prepared-data cache), with the quick
profile's parameters, the chosen device and a tiny budget (:data:`TINY`: one epoch of a narrow
network on 18 months of data, so the 60 % training block holds every season; only the keys
the notebook's ``parameters`` cell declares are passed). Then

- every ``results/*.json`` must be equal in both runs, value for value, ignoring wall-clock
  fields (:data:`WALL_CLOCK_KEYS`);
- every checkpoint (``**/checkpoint.pt``) must hold bitwise identical tensors (weights,
  optimiser state, best weights) and equal metadata (history, early-stopping state) apart
  from wall-clock fields.

The exit status is 0 when everything is identical, 1 otherwise (the differences are listed).
Reproducibility on CUDA needs the notebook to call ``geofusion.reproducibility.configure``
before it touches the GPU (deterministic kernels, ``CUBLAS_WORKSPACE_CONFIG``); this script
also sets ``CUBLAS_WORKSPACE_CONFIG`` in the kernel's environment and warns when the notebook
does not call ``configure``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import papermill
import torch

from geofusion import reproducibility
from geofusion.experiments import profiles
from geofusion.learning.checkpoints import load_checkpoint
from geofusion.reporting import execution, notebooks

#: Tiny-budget parameters, applied where the notebook's parameters cell declares the key.
TINY: dict[str, Any] = {"start": "2000-01-01", "end": "2001-06-30", "epochs": 1,
                        "batch_size": 16, "width": 4, "latent_dim": 16, "proj_dim": 8,
                        "n_embed": 12}
#: Keys whose values are wall-clock measurements, ignored in the comparison.
WALL_CLOCK_KEYS = frozenset({"seconds", "elapsed_s", "wall_seconds", "duration_s",
                             "timestamp"})


def notebook_name(prefix: str) -> str:
    """The one numbered notebook whose name starts with ``prefix`` (e.g. "03")."""
    names = notebooks.notebook_names([prefix])
    if len(names) != 1:
        raise ValueError(f"--notebook {prefix!r} matches {names}; give a longer prefix")
    return names[0]


def run_parameters(name: str, device: str, profile: str, run_root: Path,
                   overrides: dict[str, Any]) -> dict[str, Any]:
    """Profile parameters + tiny budget (declared keys only) + device + this run's dirs."""
    declared = papermill.inspect_notebook(str(notebooks.NOTEBOOK_DIR / f"{name}.ipynb"))
    parameters = profiles.parameters_for(profile, name)
    parameters.update({k: v for k, v in TINY.items() if k in declared})
    parameters.update(overrides)
    parameters.update(device=device, run_dir=str(run_root / "runs"),
                      cache_dir=str(run_root / "cache"))
    return parameters


def _drop_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK_KEYS}
    if isinstance(value, list):
        return [_drop_wall_clock(v) for v in value]
    return value


def _differences(a: Any, b: Any, where: str) -> list[str]:
    """Paths at which two JSON-like values differ (floats exactly; NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in {'first' if k in a else 'second'} run"
               for k in sorted(set(a) ^ set(b))]
        for key in sorted(set(a) & set(b)):
            out += _differences(a[key], b[key], f"{where}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b and type(a) is type(b) else [f"{where}: {a!r} != {b!r}"]


def _tensor_differences(a: Any, b: Any, where: str) -> tuple[list[str], int]:
    """Differences between two nested containers of tensors (bitwise), and tensors compared."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
        return ([] if same else [f"{where}: tensors differ"]), 1
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys differ ({sorted(map(str, set(a) ^ set(b)))[:5]})"], 0
        out, count = [], 0
        for key in a:
            diffs, n = _tensor_differences(a[key], b[key], f"{where}.{key}")
            out, count = out + diffs, count + n
        return out, count
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        out, count = [], 0
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diffs, n = _tensor_differences(x, y, f"{where}[{i}]")
            out, count = out + diffs, count + n
        return out, count
    return _differences(a, b, where), 0


def compare_runs(first: Path, second: Path) -> tuple[list[str], dict[str, int]]:
    """Differences between two run directories' results and checkpoints, and what was compared.

    Returns:
        ``(differences, counts)`` with counts of ``results`` files, ``checkpoints`` and
        ``tensors`` compared. An empty ``differences`` means the runs are identical.
    """
    differences: list[str] = []
    counts = {"results": 0, "checkpoints": 0, "tensors": 0}
    results_a = sorted(p.relative_to(first) for p in first.glob("results/*.json"))
    results_b = sorted(p.relative_to(second) for p in second.glob("results/*.json"))
    if results_a != results_b:
        differences.append(f"results files differ: {results_a} vs {results_b}")
    for relative in set(results_a) & set(results_b):
        counts["results"] += 1
        a, b = (_drop_wall_clock(json.loads((root / relative).read_text()))
                for root in (first, second))
        differences += _differences(a, b, str(relative))
    checkpoints_a = sorted(p.relative_to(first) for p in first.rglob("checkpoint.pt"))
    checkpoints_b = sorted(p.relative_to(second) for p in second.rglob("checkpoint.pt"))
    if checkpoints_a != checkpoints_b:
        differences.append(f"checkpoints differ: {checkpoints_a} vs {checkpoints_b}")
    for relative in set(checkpoints_a) & set(checkpoints_b):
        counts["checkpoints"] += 1
        a, b = (load_checkpoint(root / relative) for root in (first, second))
        diffs, tensors = _tensor_differences(_drop_wall_clock(a), _drop_wall_clock(b),
                                             str(relative))
        differences += diffs
        counts["tensors"] += tensors
    if counts["results"] == 0:
        differences.append(f"no results/*.json in {first}: the notebook saved no results")
    return differences, counts


def check(name: str, device: str, profile: str = "quick", overrides: dict[str, Any] | None = None,
          keep: Path | None = None, parallel: bool = True) -> tuple[list[str], dict[str, int]]:
    """Execute notebook ``name`` twice and compare the runs (see :func:`compare_runs`)."""
    source = (notebooks.NOTEBOOK_DIR / f"{name}.ipynb").read_text()
    if device.startswith("cuda") and "reproducibility.configure" not in source:
        print(f"[check_reproducible] warning: {name} does not call "
              "geofusion.reproducibility.configure; CUDA kernels may not be deterministic",
              file=sys.stderr)
    # The kernel inherits the environment: cuBLAS is deterministic from its first call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", reproducibility.CUBLAS_WORKSPACE_CONFIG)
    with tempfile.TemporaryDirectory(prefix="check_reproducible-") as tmp:
        root = keep if keep is not None else Path(tmp)

        def execute(run: str) -> None:
            parameters = run_parameters(name, device, profile, root / run, overrides or {})
            print(f"[check_reproducible] run {run}: {name} on {device} into {root / run}",
                  flush=True)
            execution.execute(name, parameters, root / run / "output")

        # Each run is its own kernel process: running both at once halves the wall time on
        # two cores (CUDA runs share the GPU, so they go one after the other).
        workers = 1 if device.startswith("cuda") or not parallel else 2
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(execute, ("a", "b")))
        return compare_runs(root / "a" / "runs", root / "b" / "runs")


def default_device(device: str = "auto") -> str:
    """``auto``: the CUDA form whenever CUDA is available, else the CPU form."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebook", required=True, help="notebook name prefix, e.g. 03")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto (default): cuda when available, else cpu")
    parser.add_argument("--profile", default="quick", choices=sorted(profiles.PROFILES))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override parameters (after the tiny budget), e.g. epochs=2")
    parser.add_argument("--keep", type=Path, help="keep both runs in this directory")
    parser.add_argument("--sequential", action="store_true",
                        help="run the two CPU executions one after the other")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    args.device = default_device(args.device)
    name = notebook_name(args.notebook)
    differences, counts = check(name, args.device, args.profile,
                                notebooks.parse_assignments(args.set), args.keep,
                                parallel=not args.sequential)
    environment = reproducibility.describe(args.device)
    print(f"[check_reproducible] {name} on {environment['device']} (torch "
          f"{environment['torch']}, CUDA {environment['cuda']}, cuDNN {environment['cudnn']}): "
          f"compared {counts['results']} results files, {counts['checkpoints']} checkpoints, "
          f"{counts['tensors']} tensors")
    if differences:
        print(f"[check_reproducible] NOT reproducible: {len(differences)} differences",
              file=sys.stderr)
        for line in differences[:30]:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("[check_reproducible] identical: the two runs reproduce each other")
    return 0


if __name__ == "__main__":
    sys.exit(main())
