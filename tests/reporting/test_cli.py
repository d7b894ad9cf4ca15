"""The command line end to end: parameters reach the notebook, reports and index are written."""

from __future__ import annotations

import json

from geofusion.reporting import cli, execution
from tests.reporting.notebook_helpers import write_notebook


def test_pipeline_renders_notebooks_and_index(notebook_dir, tmp_path, capfd):
    """Through the command line: the profile's value and a `--set y=None` reach the notebook;
    the kernel's TCP warning is gone (issue 10) while what a kernel writes to its stderr still
    reaches the terminal."""
    write_notebook(notebook_dir / "01_ok.ipynb", "print('x is', x, 'and y is', repr(y))",
                   "import os; os.write(2, b'a real kernel complaint\\n')",
                   "from geofusion.experiments.scorecard import save_results\n"
                   "save_results(run_dir, '01_ok', {'scorecard': {'climatology_rmse': "
                   "{'2m_temperature': 2.0 + x}, 'intervals': {'climatology_rmse': "
                   "{'2m_temperature': [3.5, 4.5]}}}})")
    status = cli.main(["run", "01", "--profile", "tiny", "--set", "y=None",
                            "--output-dir", str(tmp_path / "reports")])
    assert status == 0
    html = (tmp_path / "reports" / "01_ok.html").read_text()
    assert "x is 2 and y is None" in html  # profile parameter and Python None arrived
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "01_ok.html" in index and "git commit" in index
    assert '<code id="profile">tiny</code>' in index
    assert 'id="synthetic" data-synthetic="true"' in index and 'id="commit"' in index
    assert 'id="machine"' in index
    # The scorecard: the notebook's section merged with the pipeline's provenance, shown first.
    card = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert card["climatology_rmse"] == {"2m_temperature": 4.0}
    assert card["intervals"] == {"climatology_rmse": {"2m_temperature": [3.5, 4.5]}}
    assert (card["profile"], card["synthetic"], card["overrides"]) == ("tiny", True,
                                                                      {"y": None})
    assert card["commit"] == execution.git_commit() and list(card["notebooks"]) == ["01_ok"]
    assert {"torch", "cuda", "cudnn", "deterministic_algorithms"} <= set(card["environment"])
    assert index.index('id="scorecard"') < index.index('id="notebooks"')
    assert "<td>4 [3.5, 4.5]</td>" in index
    headline = (tmp_path / "reports" / "headline.md").read_text()
    assert "Profile `tiny`" in headline and card["commit"] in headline
    err = capfd.readouterr().err
    assert "a real kernel complaint" in err
    assert "without encryption" not in err
