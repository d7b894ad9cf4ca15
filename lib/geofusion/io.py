"""Atomic file and directory writes: an interrupted run never leaves a half-written file.

Everything geofusion writes to disk that a later run reads back (prepared data, checkpoints,
metric logs) goes through these helpers: the content is written to a temporary sibling path
and moved into place with ``os.replace``, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    Write the file (or, with ``is_dir=True``, the directory such as a zarr store) to the
    yielded path. If the block raises, the temporary path is removed and ``path`` is left as
    it was. An existing ``path`` is replaced only after the new content is complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written to the staged path {staged}")
        if is_dir and target.exists():
            # A directory cannot be replaced atomically when the target exists: move the old
            # one aside first, so that at every instant either the old or the new is complete.
            old = tmp / (target.name + ".old")
            os.replace(target, old)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def package_resource(*parts: str) -> Path:
    """Path of a data file shipped inside the package, ``geofusion/resources/<parts>``.

    Resolved through :mod:`importlib.resources` (not the calling module's ``__file__``), so it
    does not depend on where in the package the caller lives; the package is installed as
    files (setuptools, editable or not), so the result is a real path.

    Example:
        >>> package_resource("natural_earth").name
        'natural_earth'
    """
    return Path(str(resources.files("geofusion").joinpath("resources", *parts)))


def repository_root() -> Path:
    """The checkout that holds this package (``<root>/lib/geofusion``): where ``notebooks/``,
    ``reports/`` and ``runs/`` live. Raises ``FileNotFoundError`` (with the fix) when the
    package is installed without its repository, since the pipeline needs the notebooks.

    Example:
        >>> (repository_root() / "notebooks").is_dir()
        True
    """
    root = Path(str(resources.files("geofusion"))).resolve().parents[1]
    if not (root / "notebooks").is_dir():
        raise FileNotFoundError(f"no notebooks/ next to the installed package ({root}): install "
                                "geofusion editable from its repository (pip install -e .)")
    return root
