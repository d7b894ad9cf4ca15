"""Tiny notebooks for the reporting tests: a ``parameters`` cell and the given code cells."""

from __future__ import annotations

import nbformat


def write_notebook(path, *sources, parameters="x = 1\ny = 0\nrun_dir = 'runs'\ndata_path = None"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)
