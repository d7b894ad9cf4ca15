"""Summaries of forecast scores: the notebook-08 table and its part of the scorecard.

:func:`forecast_summary` condenses the long table of
:func:`geofusion.downstream.forecast_scores.score_forecasts` into one row per forecaster (lead-1 and
last-lead skill relative to persistence, ACC, robustness to a masked context, and how each
compares with the best baseline, :mod:`geofusion.verification.baseline_comparison`).

:func:`forecast_scorecard` turns the long table of
:func:`geofusion.downstream.forecast_scores.score_forecasts` (``intervals=True``: RMSE per
forecaster,
lead and variable in physical units with its 95 % block-bootstrap interval over the
initialisations) into the scorecard's nesting: ``persistence_rmse`` {lead: {variable}},
``forecast_rmse`` {model: {lead: {variable}}} and the same under ``intervals`` with
``[low, high]``, leads as strings ``"1"`` .. ``"7"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from geofusion.verification.baseline_comparison import relative_skill, versus_best_baseline

__all__ = ["forecast_scorecard", "forecast_summary", "describe_versus"]


def forecast_scorecard(table: pd.DataFrame, models: Mapping[str, str],
                       persistence: str = "persistence") -> dict[str, Any]:
    """The notebook-08 part of ``reports/results.json`` (issue 13, section 4).

    Args:
        table: :func:`geofusion.downstream.forecast_scores.score_forecasts` with ``intervals=True``.
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


def describe_versus(row: Any) -> str:
    """``"0.950 x damped_persistence (3/5 better)"`` from a row of
    :func:`geofusion.verification.baseline_comparison.versus_best_baseline`."""
    return (f"{row.rmse_over_best_baseline:.3f} x {row.best_baseline} "
            f"({int(row.variables_better)}/{int(row.n_variables)} better)")


def forecast_summary(scores: pd.DataFrame, baselines: Sequence[str],
                     variables: Sequence[str] = ("2m_temperature", "geopotential"),
                     ceilings: pd.DataFrame | None = None,
                     robustness: pd.DataFrame | None = None,
                     reference: str = "persistence") -> pd.DataFrame:
    """One row per forecaster of ``scores`` (and ``ceilings``, lead 1 only).

    Columns: the lead-1 RMSE of each of ``variables`` (physical units) and its 95 % interval;
    the mean over variables of RMSE / ``reference`` RMSE at lead 1 and at the last lead; the
    mean lead-1 ACC; with ``robustness``
    (:func:`geofusion.downstream.forecast_scores.skill_vs_mask_ratio`)
    the lead-1 RMSE / reference RMSE with the largest missing fraction of the context; and how
    each forecaster compares with the best of ``baselines`` at lead 1 and at the last lead
    (:func:`describe_versus`).
    """
    last = int(scores["lead"].max())
    lead1 = scores[scores["lead"] == 1]
    if ceilings is not None:
        lead1 = pd.concat([lead1, ceilings[ceilings["lead"] == 1]], ignore_index=True)
    names = list(dict.fromkeys(lead1["forecaster"]))
    skill = relative_skill(lead1, reference, ["lead"], model="forecaster")["rmse_over_reference"]
    skill_last = relative_skill(scores, reference, ["lead"], model="forecaster")
    versus = versus_best_baseline(scores, baselines, reference, ["lead"], model="forecaster")
    summary = pd.DataFrame(index=names)
    for variable in variables:
        rows = lead1[lead1["variable"] == variable].set_index("forecaster")
        summary[f"{variable} RMSE lead 1"] = rows["rmse"]
        if "rmse_low" in rows:
            summary[f"{variable} 95 % interval"] = [
                f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(rows.loc[names, "rmse_low"],
                                                         rows.loc[names, "rmse_high"],
                                                         strict=True)]
    summary[f"RMSE/{reference} lead 1"] = skill.xs(1, level="lead")
    summary[f"RMSE/{reference} lead {last}"] = \
        skill_last["rmse_over_reference"].xs(last, level="lead")
    summary["ACC lead 1"] = lead1.groupby("forecaster", sort=False)["acc"].mean()
    if robustness is not None:
        worst = float(robustness["ratio"].max())
        masked = robustness[robustness["ratio"] == worst].set_index(["forecaster", "variable"])
        persistence = lead1[lead1["forecaster"] == reference].set_index("variable")["rmse"]
        ratio = masked["rmse"] / persistence.reindex(masked.index.get_level_values("variable")
                                                     ).to_numpy()
        summary[f"RMSE/{reference} lead 1, {worst:.0%} missing"] = \
            ratio.groupby(level="forecaster").mean()
    for lead in (1, last):
        summary[f"vs best baseline, lead {lead}"] = \
            versus.xs(lead, level="lead").apply(describe_versus, axis=1)
    return summary
