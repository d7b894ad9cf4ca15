"""Reproducible runs: deterministic kernels, every random source seeded, and a record of both.

Two runs of the same code, data and settings on the same software and hardware give bitwise
identical weights and results when, before any model or tensor touches the device,

- ``torch.use_deterministic_algorithms(True)``: kernels with a nondeterministic
  implementation (atomic adds in some CUDA backward passes) use a deterministic one, or raise;
- ``torch.backends.cudnn.benchmark = False`` and ``cudnn.deterministic = True``: cuDNN does
  not time and pick among algorithms per shape (the pick may differ between runs);
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8``: cuBLAS (CUDA >= 10.2) uses a fixed workspace split,
  without which its matmuls may reduce in varying order. cuBLAS reads it when it first
  creates a handle, so it must be in the environment before CUDA work starts;
- Python's ``random``, NumPy's global generator and torch's CPU and CUDA generators are seeded
  (the library itself draws from explicit ``torch.Generator`` objects; this covers code that
  does not, such as dropout and third-party libraries);
- DataLoader worker processes seed ``random`` and NumPy from their torch seed
  (:func:`seed_worker`), which the loader derives from its ``generator`` (:func:`loader_generator`).

:func:`configure` does all of that; :func:`describe` returns the versions and settings in
force, which the pipeline stores as ``environment`` in ``reports/results.json``.

Mixed precision (:data:`AUTOCAST_POLICY`): :func:`geofusion.learning.training.fit` runs the forward
pass and loss under ``torch.autocast(dtype=torch.bfloat16)`` on CUDA only, when
``TrainConfig.amp`` is True; the losses are computed in float32 (the methods cast to float
first), there is no gradient scaler (bfloat16 has float32's range), and parameters and
optimiser state stay float32. On CPU training is float32. Autocast does not break
determinism: the same bfloat16 kernels run in the same order in every run.

Example (first code cell of a notebook; it changes process-wide settings)::

    from geofusion import reproducibility
    environment = reproducibility.configure(seed=0, device="cuda")
    environment["deterministic_algorithms"], environment["cudnn_benchmark"]  # (True, False)
"""

from __future__ import annotations

import os
import platform
import random
from typing import Any

import numpy as np
import torch

__all__ = [
    "AUTOCAST_POLICY",
    "CUBLAS_WORKSPACE_CONFIG",
    "configure",
    "describe",
    "loader_generator",
    "seed_everything",
    "seed_worker",
]

#: The cuBLAS workspace setting that makes cuBLAS deterministic (NVIDIA's documented values are
#: ``:4096:8`` and ``:16:8``; the first costs ~24 MiB of GPU memory and keeps full speed).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")

#: Where reduced precision is used in training (see the module docstring).
AUTOCAST_POLICY = ("bfloat16 autocast of forward pass and loss on CUDA when TrainConfig.amp "
                   "(losses computed in float32, no gradient scaler, float32 parameters and "
                   "optimiser state); float32 everywhere on CPU")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    ``PYTHONHASHSEED`` cannot be changed inside a running interpreter; nothing in geofusion
    depends on the iteration order of sets of strings, so it is not needed.
    """
    seed = _check_seed(seed)
    random.seed(seed)
    # The legacy global generator is what third-party code draws from: it is the one to seed.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, if CUDA starts later)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _resolve_device(device: str | torch.device) -> torch.device:
    # geofusion.learning.training.resolve_device's rule; not imported, as training imports this
    # module.
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
                         ) from error


def _set_cublas_workspace() -> None:
    current = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if current in _DETERMINISTIC_CUBLAS:
        return
    if torch.cuda.is_initialized():
        # cuBLAS has (or may have) read the environment already: changing it now would let
        # this process run with nondeterministic matmuls while claiming otherwise.
        raise RuntimeError(
            f"CUDA was initialised before geofusion.reproducibility.configure() with "
            f"CUBLAS_WORKSPACE_CONFIG={current!r}, so cuBLAS may not be deterministic; call "
            f"configure() first thing (before any tensor or model goes to the GPU), or start "
            f"Python with CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE_CONFIG} in the environment")
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG


def configure(seed: int, deterministic: bool = True,
              device: str | torch.device = "auto") -> dict[str, Any]:
    """Make this process reproducible: deterministic kernels and every random source seeded.

    Call it once at the start of a run (a notebook's first code cell), before any tensor or
    model is moved to the GPU.

    Args:
        seed: non-negative integer for Python, NumPy and torch generators.
        deterministic: True enforces deterministic algorithms (an op without one raises a
            RuntimeError naming it), disables cuDNN autotuning and sets
            ``CUBLAS_WORKSPACE_CONFIG``; False restores torch's fast defaults (cuDNN
            autotuning on) and only seeds.
        device: "auto", "cpu", "cuda" or "cuda:N": the device the run will use; on CUDA the
            cuBLAS setting is checked against an already started CUDA context.

    Returns:
        :func:`describe` of the settings now in force.

    Raises:
        RuntimeError: CUDA was initialised before this call with a nondeterministic
            ``CUBLAS_WORKSPACE_CONFIG`` (the message says how to fix it).
        ValueError: a negative or non-integer seed, or an unknown device.
    """
    resolved = _resolve_device(device)
    if not isinstance(deterministic, bool):
        raise ValueError(f"deterministic must be True or False, got {deterministic!r}")
    if deterministic:
        # The environment variable is harmless on CPU and set even there, so that a CPU
        # process which later starts CUDA (another notebook cell) is still covered.
        _set_cublas_workspace()
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    seed_everything(seed)
    return describe(resolved)


def describe(device: str | torch.device | None = None) -> dict[str, Any]:
    """Versions and reproducibility settings of this process, JSON-serialisable.

    Keys: ``python``, ``numpy``, ``torch``, ``cuda`` (the CUDA version torch was built with,
    None for a CPU build), ``cudnn`` (e.g. 90100, None without cuDNN), ``device`` (the GPU's
    name, or "cpu"), ``deterministic_algorithms``, ``cudnn_benchmark``,
    ``cudnn_deterministic``, ``cublas_workspace_config`` (None when unset),
    ``torch_threads`` and ``autocast`` (:data:`AUTOCAST_POLICY`).

    Example::

        >>> sorted(describe("cpu"))[:3]
        ['autocast', 'cublas_workspace_config', 'cuda']
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "autocast": AUTOCAST_POLICY,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   and torch.cuda.is_available() else device.type),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random`` and NumPy in a worker from its torch seed.

    torch gives worker ``w`` the seed ``base + w``, with ``base`` drawn from the loader's
    ``generator`` once per epoch (pass :func:`loader_generator`), and seeds torch in the
    worker with it. Recent torch versions also seed ``random`` and NumPy there, each by its own
    rule; this function pins both to that one seed, so what a worker draws is a documented
    function of ``(generator, worker)`` whatever the torch version.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002


def loader_generator(seed: int, epoch: int = 0) -> torch.Generator:
    """CPU generator for a DataLoader's shuffling and worker seeds in ``epoch``.

    Example::

        >>> from torch.utils.data import DataLoader
        >>> loader = DataLoader(range(8), batch_size=4, shuffle=True,
        ...                     generator=loader_generator(0), worker_init_fn=seed_worker)
        >>> [b.tolist() for b in loader] == [b.tolist() for b in DataLoader(
        ...     range(8), batch_size=4, shuffle=True, generator=loader_generator(0))]
        True
    """
    seed, epoch = _check_seed(seed), int(epoch)
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009)
