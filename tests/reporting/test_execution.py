"""Executing one notebook: a dying kernel is a PipelineError naming the notebook."""

from __future__ import annotations

import pytest

from geofusion.reporting import execution
from tests.reporting.notebook_helpers import write_notebook


def test_a_dying_kernel_is_a_pipeline_error_naming_the_notebook(notebook_dir, tmp_path):
    write_notebook(notebook_dir / "01_dies.ipynb", "import os; os._exit(3)")
    with pytest.raises(execution.PipelineError, match="kernel running notebook 01_dies died"):
        execution.execute("01_dies", {}, tmp_path / "reports")


def test_kernels_get_the_malloc_settings_unless_this_process_sets_them(notebook_dir, tmp_path,
                                                                      monkeypatch):
    for key in execution.KERNEL_MALLOC_ENV:
        monkeypatch.delenv(key, raising=False)
    seen = tmp_path / "seen.txt"
    keys = sorted(execution.KERNEL_MALLOC_ENV)
    write_notebook(notebook_dir / "01_env.ipynb",
                   "import os, pathlib\n"
                   f"pathlib.Path({str(seen)!r}).write_text("
                   f"' '.join(os.environ.get(k, '-') for k in {keys!r}))")
    execution.execute("01_env", {}, tmp_path / "reports", env={"OMP_NUM_THREADS": "1"})
    assert seen.read_text().split() == [execution.KERNEL_MALLOC_ENV[k] for k in keys]
    # A user's own setting wins.
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert "MALLOC_MMAP_THRESHOLD_" not in execution.kernel_environment()
    execution.execute("01_env", {}, tmp_path / "reports")
    assert "131072" in seen.read_text().split()
