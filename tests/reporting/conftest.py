"""Fixtures of the reporting tests."""

from __future__ import annotations

import pytest

from geofusion.experiments import profiles
from geofusion.reporting import notebooks


@pytest.fixture
def notebook_dir(tmp_path, monkeypatch):
    """An empty notebook folder that every notebook lookup uses (``notebooks.NOTEBOOK_DIR``,
    read through :func:`geofusion.reporting.notebooks.notebook_path`), and a profile ``tiny``
    in place of the real ones (``profiles.PROFILES``, read through that module everywhere)."""
    directory = tmp_path / "notebooks"
    directory.mkdir()
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", directory)
    monkeypatch.setattr(profiles, "PROFILES", {"tiny": {
        "common": {"data_path": None, "run_dir": str(tmp_path / "runs")}, "01_ok": {"x": 2}}})
    return directory
