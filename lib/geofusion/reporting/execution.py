"""Executing one notebook: papermill into ``<output_dir>/<name>.ipynb``, rendered to
``<name>.html``, and the provenance a run records (:func:`machine_description`,
:func:`git_commit`).

Holds :func:`execute`, its result :class:`NotebookRun`, :class:`PipelineError` and the kernel
manager (:class:`EncryptedKernelManager`, :data:`KERNEL_MANAGER`).

Conventions: a notebook runs from the repository root (``cwd``), with the parameters injected
as given (check them first with :func:`geofusion.reporting.notebooks.checked_parameters`) and
``GEOFUSION_PLAIN_PROGRESS=1`` (plain progress bars survive into the HTML). A cell error or a
dying kernel raises :class:`PipelineError` naming the notebook and the cell; the notebook is
rendered to HTML whether it failed or not. Which notebooks run, and when, is
:mod:`geofusion.reporting.scheduling`'s business.
"""

from __future__ import annotations

import contextvars
import os
import platform
import subprocess
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

from geofusion.io import repository_root
from geofusion.reporting.notebooks import notebook_path

REPO = repository_root()


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
    started: float = 0.0  # wall-clock time.time() when the notebook started


def _render_html(ipynb_path: Path, html_path: Path) -> None:
    # MathJax from a local copy next to the report, widget state embedded
    # (geofusion.reporting.rendering).
    from geofusion.reporting.rendering import render_notebook_html

    render_notebook_html(ipynb_path, html_path)


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


#: glibc malloc settings every notebook kernel gets unless this process sets them already.
#: PyTorch's CPU allocator hands each large tensor to glibc, which maps anything above its
#: (dynamic) mmap threshold afresh and unmaps it when freed, so every forward pass page-faults
#: its activations in again (72x144 fields x 64 channels x batch 128: 340 MB a layer); a fifth
#: of the smoke run's CPU was system time. From a heap that keeps freed memory (no mmap below
#: 4 GiB, trimmed only above 64 GiB) notebook 03 under the smoke profile spent 5 s instead of
#: 20 s in the kernel (reports/benchmarks/full_smoke.md); its resident set stays at its peak.
#: Results do not change.
KERNEL_MALLOC_ENV: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**30),
                                     "MALLOC_TRIM_THRESHOLD_": str(64 * 2**30),
                                     "MALLOC_TOP_PAD_": str(2**30)}


def kernel_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """What a notebook kernel gets on top of this process's environment:
    :data:`KERNEL_MALLOC_ENV` (each entry unless this process sets it), then ``env``.

    Example:
        >>> kernel_environment({"OMP_NUM_THREADS": "1"})["OMP_NUM_THREADS"]
        '1'
    """
    malloc = {k: v for k, v in KERNEL_MALLOC_ENV.items() if k not in os.environ}
    return {**malloc, **(env or {})}


def _kernel_manager(env: dict[str, str] | None) -> type[AsyncKernelManager]:
    """:data:`KERNEL_MANAGER`, or a subclass whose kernels get ``env`` on top of this
    process's environment (the kernel's own, not this process's: notebooks run side by side
    in threads of one process)."""
    if not env:
        return KERNEL_MANAGER

    class KernelManagerWithEnv(KERNEL_MANAGER):  # type: ignore[valid-type, misc]
        async def start_kernel(self, **kw: Any) -> None:
            kw["env"] = {**kw.get("env", os.environ), **env}
            await super().start_kernel(**kw)

    return KernelManagerWithEnv


def _cell_start(error: PapermillExecutionError, limit: int = 80) -> str:
    """The first non-empty line of the failing cell's source, cut to ``limit`` characters."""
    lines = [line.strip() for line in (error.source or "").splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


def execute(name: str, parameters: dict[str, Any], output_dir: Path,
            kernel_name: str = "python3", env: dict[str, str] | None = None) -> NotebookRun:
    """Execute one notebook into ``output_dir`` and render its HTML; raise PipelineError.

    ``parameters`` are injected as given (check them first with :func:`checked_parameters`);
    ``env``: environment variables of the kernel on top of this process's (e.g.
    ``{"OMP_NUM_THREADS": "1"}``), after :data:`KERNEL_MALLOC_ENV`
    (:func:`kernel_environment`). A cell error raises :class:`PipelineError` naming the
    notebook, the cell (execution count and its first line), the exception and the executed
    notebook holding the traceback; a dying kernel one naming the notebook.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    out_ipynb = output_dir / f"{name}.ipynb"
    run = NotebookRun(name, parameters, started=time.time())
    tic = time.perf_counter()
    os.environ["GEOFUSION_PLAIN_PROGRESS"] = "1"
    try:
        # In a fresh context: jupyter_core keeps its event loop in a context variable, which
        # threads started from a context that has one inherit (dask's workers), so two
        # notebooks side by side after one executed in the main thread shared one loop
        # ("This event loop is already running").
        contextvars.Context().run(
            papermill.execute_notebook, str(notebook_path(name)), str(out_ipynb),
            parameters=parameters, cwd=str(REPO), kernel_name=kernel_name,
            progress_bar=False, kernel_manager_class=_kernel_manager(kernel_environment(env)))
    except PapermillExecutionError as error:
        run.status, run.error = "failed", f"cell {error.exec_count}: {error.ename}: {error.evalue}"
        raise PipelineError(f"notebook {name} failed in cell {error.exec_count} "
                            f"({error.ename}: {error.evalue}), the cell starting "
                            f"`{_cell_start(error)}`; the executed notebook with the "
                            f"traceback is {out_ipynb}") from error
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
