"""Every usage example in the library's docstrings runs and prints what it says (issue 14:
public entry points carry an example, run as a doctest).

``pipeline`` and ``results`` run theirs in their own test files."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import matplotlib
import pytest

import geofusion

matplotlib.use("Agg")

OWN_TESTS = {"pipeline", "results"}
MODULES = sorted(info.name for info in pkgutil.iter_modules(geofusion.__path__)
                 if info.name not in OWN_TESTS)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"geofusion.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
