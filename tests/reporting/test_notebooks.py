"""Notebooks named by prefix, their declared parameters and the checked overrides: a key
nobody declares fails before anything runs, naming the valid keys."""

from __future__ import annotations

import pytest

from geofusion.experiments import profiles
from geofusion.reporting import cli, notebooks, scheduling
from tests.reporting.notebook_helpers import write_notebook


def test_parse_assignments_reads_json_and_python_literals():
    assert notebooks.parse_assignments(
        ["epochs=2", "data_path=null", "level=None", "both_views=True", "device=cuda",
         "lr=1e-3", "name=None of them"]) == {
        "epochs": 2, "data_path": None, "level": None, "both_views": True, "device": "cuda",
        "lr": 1e-3, "name": "None of them"}
    with pytest.raises(ValueError, match="key=value"):
        notebooks.parse_assignments(["epochs"])
    with pytest.raises(ValueError, match="given twice"):
        notebooks.parse_assignments(["epochs=1", "epochs=2"])


def test_parse_grid_reads_each_value_like_set():
    assert notebooks.parse_grid(["lambd=0.001,0.1", "level=None,500", "kind=pixel,patch"]) == {
        "lambd": [0.001, 0.1], "level": [None, 500], "kind": ["pixel", "patch"]}
    for bad, message in [("lambd", "key=v1,v2"), ("lambd=0.1,", "empty value"),
                         ("=1,2", "key=v1,v2")]:
        with pytest.raises(ValueError, match=message):
            notebooks.parse_grid([bad])


def test_a_misspelt_key_fails_before_any_notebook_runs_naming_the_valid_keys(notebook_dir,
                                                                             tmp_path):
    write_notebook(notebook_dir / "01_ok.ipynb", "pass")
    reports = tmp_path / "reports"
    with pytest.raises(notebooks.UsageError, match=r"'xx' is not a parameter of 01_ok .*did "
                                                  r"you mean 'x'\? valid keys of 01_ok: "
                                                  r"data_path, run_dir, x, y"):
        scheduling.run_pipeline("tiny", overrides={"xx": 3}, output_dir=reports)
    with pytest.raises(notebooks.UsageError, match="--grid 'z' is not a parameter of 01_ok"):
        scheduling.run_sweep("01", {"z": [1, 2]}, "tiny", output_dir=reports)
    with pytest.raises(notebooks.UsageError, match="both swept"):
        scheduling.run_sweep("01", {"x": [1, 2]}, "tiny", {"x": 3}, output_dir=reports)
    assert not reports.exists()  # nothing ran
    assert cli.main(["--profile", "tiny", "--set", "xx=3"]) == 2


def test_a_key_goes_to_the_notebooks_that_declare_it_and_needs_at_least_one(notebook_dir):
    write_notebook(notebook_dir / "01_ok.ipynb", "pass")
    write_notebook(notebook_dir / "02_lr.ipynb", "pass",
                   parameters="lr = 0.1\nrun_dir = 'runs'\ndata_path = None")
    applied = notebooks.applied_overrides(["01_ok", "02_lr"], {"lr": 0.5, "data_path": None})
    assert applied == {"01_ok": {"data_path": None}, "02_lr": {"lr": 0.5, "data_path": None}}
    with pytest.raises(notebooks.UsageError, match=r"'lrr' is not a parameter of 01_ok, 02_lr.*"
                                                  r"valid keys of all: data_path, run_dir; "
                                                  r"01_ok also x, y; 02_lr also lr"):
        notebooks.applied_overrides(["01_ok", "02_lr"], {"lrr": 0.5})
    # The profile's own entries are checked too.
    profiles.PROFILES["tiny"]["02_lr"] = {"lr_typo": 1}
    with pytest.raises(notebooks.UsageError, match=r"PROFILES\['tiny'\] sets \['lr_typo'\]"):
        notebooks.checked_parameters("tiny", ["02_lr"])


def test_only_and_sweep_accept_the_same_prefixes_and_reject_unknown_or_ambiguous(
        notebook_dir, capsys):
    write_notebook(notebook_dir / "01_ok.ipynb", "pass")
    write_notebook(notebook_dir / "02_other.ipynb", "pass")
    assert notebooks.notebook_names(["02"]) == ["02_other"]
    assert notebooks.notebook_names(["notebooks/02_other.ipynb", "01_ok"]) == ["01_ok",
                                                                               "02_other"]
    with pytest.raises(ValueError, match="no notebook name starts with"):
        notebooks.notebook_names(["09"])
    assert notebooks.resolve_notebook("02_o") == "02_other"
    with pytest.raises(ValueError, match=r"'0' matches several notebooks \['01_ok', "
                                         r"'02_other'\]"):
        notebooks.resolve_notebook("0")
    with pytest.raises(ValueError, match="no notebook name starts with"):
        scheduling.run_sweep("09", {"x": [1]}, "tiny")
    capsys.readouterr()
    assert cli.main(["sweep", "02", "--profile", "tiny", "--grid", "x=3,None",
                          "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "[geofusion] would run 02_other with x=3", "[geofusion] would run 02_other with x=None"]
    assert cli.main(["sweep", "0", "--profile", "tiny", "--grid", "x=3"]) == 2
    assert "matches several notebooks" in capsys.readouterr().err


def test_papermill_reads_every_parameter_of_every_notebook():
    """`papermill --help-notebook` and papermill's parameter inspection parse each line of the
    parameters cell; a line they cannot parse (e.g. an ``=`` inside its comment) is dropped
    from the help with only a warning."""
    import logging

    import nbformat
    from papermill.translators import PythonTranslator

    from geofusion.reporting.notebooks import notebook_names, notebook_path

    for name in notebook_names():
        cell = next(c for c in nbformat.read(notebook_path(name), as_version=4).cells
                    if "parameters" in c.metadata.get("tags", []))
        assigned = [line.split("=")[0].strip() for line in cell.source.splitlines()
                    if line and not line.startswith(("#", " ")) and "=" in line]
        logging.disable(logging.WARNING)
        try:
            parsed = [p.name for p in PythonTranslator.inspect(cell)]
        finally:
            logging.disable(logging.NOTSET)
        assert parsed == assigned, f"{name}: papermill cannot parse {set(assigned) - set(parsed)}"
