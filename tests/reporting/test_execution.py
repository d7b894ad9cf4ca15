"""Executing one notebook: a dying kernel is a PipelineError naming the notebook."""

from __future__ import annotations

import pytest

from geofusion.reporting import execution
from tests.reporting.notebook_helpers import write_notebook


def test_a_dying_kernel_is_a_pipeline_error_naming_the_notebook(notebook_dir, tmp_path):
    write_notebook(notebook_dir / "01_dies.ipynb", "import os; os._exit(3)")
    with pytest.raises(execution.PipelineError, match="kernel running notebook 01_dies died"):
        execution.execute("01_dies", {}, tmp_path / "reports")
