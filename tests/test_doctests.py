"""Every usage example in the library's docstrings runs and prints what it says: every module
of every subpackage (``pkgutil.walk_packages``), so a module moved into a layer stays doctested.

``experiments.scorecard`` runs its own in its test file."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import matplotlib
import pytest

import geofusion

matplotlib.use("Agg")

OWN_TESTS = {"geofusion.experiments.scorecard"}
MODULES = sorted(info.name for info in pkgutil.walk_packages(geofusion.__path__, "geofusion.")
                 if info.name not in OWN_TESTS)


def test_every_layer_is_collected():
    """walk_packages reaches into every subpackage (iter_modules would stop at the root)."""
    layers = {name.split(".")[1] for name in MODULES if name.count(".") >= 2}
    assert {"models", "world", "data", "learning", "verification", "downstream",
            "experiments", "reporting"} <= layers


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
