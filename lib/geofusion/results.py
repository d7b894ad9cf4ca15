"""Key figures of a notebook run, written as JSON so sweeps and comparisons can collect them.

A notebook ends with ``save_results(run_dir, "03_barlow_twins", {...})``; the pipeline's
sweep command and the comparison notebook read them back with :func:`collect_results`.
Only numbers computed in the run go in: these files are what the reports' tables are made of.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from geofusion.io import atomic_write_text


def _plain(value: Any) -> Any:
    """JSON-friendly copy: numpy/torch scalars to float, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def save_results(run_dir: str | os.PathLike, name: str, results: dict[str, Any]) -> Path:
    """Write ``results`` to ``<run_dir>/results/<name>.json`` atomically; return the path."""
    path = Path(run_dir) / "results" / f"{name}.json"
    atomic_write_text(path, json.dumps(_plain(results), indent=2, sort_keys=True))
    return path


def load_results(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """Read what :func:`save_results` wrote; a clear error names the notebook to run first."""
    path = Path(run_dir) / "results" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook {name} with "
                                f"run_dir={str(run_dir)!r} first")
    return json.loads(path.read_text())


def collect_results(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per results JSON file, flattening nested dicts with '.'-joined keys."""
    rows = []
    for path in paths:
        record = json.loads(Path(path).read_text())
        rows.append(pd.json_normalize(record).iloc[0].to_dict() | {"file": str(path)})
    return pd.DataFrame(rows)
