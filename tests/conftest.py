"""Shared fixtures: tiny papermill runs of the numbered notebooks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

# Two cores on CI: one intra-op thread per test process keeps timings predictable.
# GEOFUSION_TEST_THREADS (make test-cpu-paths: 2) runs the numerical tests on the multi-threaded
# kernels instead, whose summation order differs.
torch.set_num_threads(int(os.environ.get("GEOFUSION_TEST_THREADS", "1")))


@pytest.fixture
def run_notebook(tmp_path):
    """Execute ``notebooks/<name>`` with papermill and tiny parameters; return the executed nb,
    asserting that no cell left an error output.

    Every notebook is run from the repository root (as the pipeline does) with ``run_dir``
    pointed at a fresh temporary directory, so tests never share checkpoints or caches.
    """
    import nbformat
    import papermill

    def _run(name: str, **parameters):
        parameters.setdefault("run_dir", str(tmp_path / "runs"))
        parameters.setdefault("cache_dir", str(tmp_path / "cache"))
        parameters.setdefault("device", "cpu")
        out = tmp_path / name
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            papermill.execute_notebook(
                str(NOTEBOOKS / name),
                str(out),
                parameters=parameters,
                cwd=str(REPO),
                kernel_name="python3",
                progress_bar=False,
            )
        finally:
            if env_threads is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_threads
        executed = nbformat.read(str(out), as_version=4)
        errors = [output for cell in executed.cells for output in cell.get("outputs", [])
                  if output.get("output_type") == "error"]
        assert not errors, f"{name} has error outputs: {errors}"
        return executed

    return _run
