"""The forecasting part of the scorecard (``reports/results.json``, issue 13 section 4).

:func:`forecast_scorecard` turns the long table of
:func:`geofusion.forecast_scores.score_forecasts` (``intervals=True``: RMSE per forecaster,
lead and variable in physical units with its 95 % block-bootstrap interval over the
initialisations) into the scorecard's nesting: ``persistence_rmse`` {lead: {variable}},
``forecast_rmse`` {model: {lead: {variable}}} and the same under ``intervals`` with
``[low, high]``, leads as strings ``"1"`` .. ``"7"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["forecast_scorecard"]


def forecast_scorecard(table: pd.DataFrame, models: Mapping[str, str],
                       persistence: str = "persistence") -> dict[str, Any]:
    """The notebook-08 part of ``reports/results.json`` (issue 13, section 4).

    Args:
        table: :func:`geofusion.forecast_scores.score_forecasts` with ``intervals=True``.
        models: scorecard model name -> forecaster name in ``table`` (e.g.
            ``{"autoencoder": "autoencoder", "linear_regression": "linear regression"}``).
        persistence: the forecaster reported as ``persistence_rmse``.

    Returns:
        ``{"persistence_rmse": {lead: {variable: rmse}}, "forecast_rmse": {model: {lead:
        {variable: rmse}}}, "intervals": {same nesting with [low, high]}}``, leads as strings
        ``"1"``, ``"2"``, ...
    """
    for column in ("rmse_low", "rmse_high"):
        if column not in table:
            raise ValueError(f"the table has no {column!r} column; score the forecasts with "
                             "score_forecasts(..., intervals=True)")
    names = [persistence, *models.values()]
    missing = sorted(set(names) - set(table["forecaster"]))
    if missing:
        raise ValueError(f"forecasters {missing} are not in the table "
                         f"{sorted(set(table['forecaster']))}; score them first")

    def nest(name: str, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = table[table["forecaster"] == name]
        out: dict[str, dict[str, Any]] = {}
        for row in rows.itertuples():
            values = [float(getattr(row, c)) for c in columns]
            out.setdefault(str(row.lead), {})[row.variable] = \
                values[0] if len(values) == 1 else values
        return out

    bounds = ("rmse_low", "rmse_high")
    return {
        "persistence_rmse": nest(persistence, ["rmse"]),
        "forecast_rmse": {key: nest(name, ["rmse"]) for key, name in models.items()},
        "intervals": {"persistence_rmse": nest(persistence, bounds),
                      "forecast_rmse": {key: nest(name, bounds) for key, name in models.items()}},
    }
