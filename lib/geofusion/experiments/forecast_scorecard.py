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

:func:`ceiling_lead_table` puts each forecaster's decoder ceiling (lead 0) next to its errors
at leads 1 .. L, and :func:`target_assessment` checks issue 24's targets for the latent
forecasts (the best of them against damped anomaly persistence and against its EOF twin, the
same LSTM on the EOF code of equal size), with :func:`targets_met` the verdict per target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from geofusion.learning.training import describe_stop
from geofusion.verification.baseline_comparison import relative_skill, versus_best_baseline

__all__ = ["forecast_scorecard", "forecast_summary", "describe_versus", "ceiling_lead_table",
           "target_assessment", "targets_met", "TARGET_VARIABLES", "CEILING", "PERFECT_LATENT",
           "ceiling_map", "twin_names", "lstm_stops", "residual_rho_medians"]

#: Row name of a representation's decoder ceiling (the decoded true latent).
CEILING = "{} (decoder ceiling)"
#: Row name of the ceiling of its "+ residual" forecast: the decoded true latent plus the
#: damped residual of the initial day, what a perfect LSTM would score with that read-out.
PERFECT_LATENT = "{} + residual (perfect latent)"

#: The variables issue 24's forecast targets name: 2 m temperature and geopotential.
TARGET_VARIABLES: tuple[str, ...] = ("2m_temperature", "geopotential")


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


def ceiling_lead_table(scores: pd.DataFrame, ceilings: pd.DataFrame,
                       ceiling_of: Mapping[str, str | None],
                       variables: Sequence[str] = TARGET_VARIABLES,
                       value: str = "rmse") -> pd.DataFrame:
    """Each forecaster's decoder ceiling at lead 0 next to its scores at leads 1 .. L.

    Lead 0 of a forecaster is the score of its ceiling source
    (:meth:`geofusion.downstream.forecasting.LatentForecaster.ceiling_source`: the decoded
    *true* latent) on the days the lead-1 forecasts verify on: the error of a forecast whose
    latent is exact, which a decoded forecast cannot beat. Leads ``1 .. L`` are the
    forecaster's own scores.

    Args:
        scores: :func:`geofusion.downstream.forecast_scores.score_forecasts` table
            (``forecaster, lead, variable`` and ``value``).
        ceilings: the same for the ceiling sources (at least lead 1); its rows may also be
            listed in ``ceiling_of`` (e.g. the ceiling of a "+ residual" forecast at every lead).
        ceiling_of: forecaster (in ``scores`` or ``ceilings``) -> its ceiling's name in
            ``ceilings``, or None (no decoder: lead 0 NaN); the rows, in this order.
        variables: the variables, in column order.
        value: the score column (``"rmse"`` or ``"acc"``).

    Returns:
        DataFrame indexed by forecaster with columns ``(variable, lead)``, leads ``0 .. L``.

    Example:
        >>> import pandas as pd
        >>> s = pd.DataFrame({"forecaster": "m", "lead": [1, 2], "variable": "t",
        ...                   "rmse": [1.0, 2.0]})
        >>> c = pd.DataFrame({"forecaster": "m ceiling", "lead": [1], "variable": "t",
        ...                   "rmse": [0.5]})
        >>> ceiling_lead_table(s, c, {"m": "m ceiling"}, ["t"]).loc["m"].tolist()
        [0.5, 1.0, 2.0]
    """
    both = pd.concat([scores, ceilings], ignore_index=True)
    missing = sorted({n for n in ceiling_of if n not in set(both["forecaster"])}
                     | {c for c in ceiling_of.values()
                        if c is not None and c not in set(ceilings["forecaster"])})
    if missing:
        raise ValueError(f"{missing} are not in the scores or the ceilings; score them first")
    unknown = sorted(set(variables) - set(both["variable"]))
    if unknown:
        raise ValueError(f"variables {unknown} are not scored; choose among "
                         f"{sorted(set(both['variable']))}")
    table = both.set_index(["forecaster", "variable", "lead"])[value]
    leads = sorted(int(lead) for lead in scores["lead"].unique())
    lead1 = ceilings[ceilings["lead"] == 1].set_index(["forecaster", "variable"])[value]
    rows = {}
    for name, ceiling in ceiling_of.items():
        row = {}
        for variable in variables:
            row[(variable, 0)] = (float("nan") if ceiling is None
                                  else float(lead1[(ceiling, variable)]))
            for lead in leads:
                row[(variable, lead)] = float(table.get((name, variable, lead), float("nan")))
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["variable", "lead"])
    out.index.name = "forecaster"
    return out


def ceiling_map(representations: Sequence[str], twin: str = "eof_code",
                linear_inverse_model: str = "linear_inverse_model",
                references: Sequence[str] = ("damped_persistence", "persistence")
                ) -> dict[str, str | None]:
    """The rows of :func:`ceiling_lead_table` for notebook 08 and the ceiling of each.

    For every representation (the EOF twin ``twin`` among them): its decoded forecast, its
    "+ residual" forecast and :data:`PERFECT_LATENT`, each with the representation's decoder
    ceiling (:data:`CEILING`) at lead 0; the linear inverse model with the ceiling of the EOF
    code ``twin`` it runs in; the field-space ``references`` without one.

    Example:
        >>> ceiling_map(["ae"], twin="eof", references=())["linear_inverse_model"]
        'eof (decoder ceiling)'
    """
    out: dict[str, str | None] = {}
    for name in representations:
        for row in (name, f"{name} + residual", PERFECT_LATENT.format(name)):
            out[row] = CEILING.format(name)
    out[linear_inverse_model] = CEILING.format(twin)
    out.update({reference: None for reference in references})
    return out


def twin_names(candidates: Sequence[str], twin: str = "eof_code") -> dict[str, str]:
    """Each latent forecast's EOF twin: ``"barlow_twins"`` -> ``twin``,
    ``"barlow_twins + residual"`` -> ``twin + " + residual"`` (the same read-out of the same
    LSTM on the EOF code).

    Example:
        >>> twin_names(["ae", "ae + residual"])
        {'ae': 'eof_code', 'ae + residual': 'eof_code + residual'}
    """
    return {c: twin if " + " not in c else f"{twin} + {c.split(' + ', 1)[1]}"
            for c in candidates}


def target_assessment(scores: pd.DataFrame, candidates: Sequence[str],
                      twin_of: Mapping[str, str], reference: str = "damped_persistence",
                      reference_leads: Sequence[int] = (1, 3),
                      twin_leads: Sequence[int] = (1, 3, 5),
                      variables: Sequence[str] = TARGET_VARIABLES) -> pd.DataFrame:
    """Issue 24's forecast targets, one row per (target, variable, lead).

    - ``beats {reference}``: the best latent forecast has a lower RMSE than ``reference``
      (damped anomaly persistence) at each of ``reference_leads``;
    - ``at least as good as its EOF twin``: the best latent forecast's RMSE is at most that of
      its twin ``twin_of[best]`` (the same LSTM and read-out on the EOF code of equal size) at
      each of ``twin_leads``.

    The *best latent forecast* of a (variable, lead) is the candidate with the lowest RMSE
    there, chosen on the scored table itself: the most favourable reading for the latent
    forecasts, so a target missed this way is missed by every candidate, and a target met
    this way says which one meets it.

    Args:
        scores: :func:`geofusion.downstream.forecast_scores.score_forecasts` table, with
            ``rmse_low`` / ``rmse_high`` (``intervals=True``).
        candidates: the latent forecasts (e.g. the LSTM rows, decoded and "+ residual").
        twin_of: candidate -> its EOF twin's row (e.g. ``"autoencoder + residual"`` ->
            ``"eof_code + residual"``).
        reference, reference_leads, twin_leads, variables: the targets.

    Returns:
        Columns ``target, variable, lead, best_latent, rmse, rmse_low, rmse_high,
        reference, reference_rmse, reference_low, reference_high, ratio`` (``rmse /
        reference_rmse``; the gap is ``ratio - 1``), ``met`` (bool) and ``intervals``
        (``"separate, better"``, ``"separate, worse"`` or ``"overlap"``: whether the two 95 %
        intervals are disjoint).
    """
    for column in ("rmse_low", "rmse_high"):
        if column not in scores:
            raise ValueError(f"the table has no {column!r} column; score the forecasts with "
                             "score_forecasts(..., intervals=True)")
    if not candidates:
        raise ValueError("no candidate latent forecasts given; pass the LSTM rows")
    missing = sorted(set(candidates) - set(twin_of))
    if missing:
        raise ValueError(f"candidates {missing} have no EOF twin in twin_of; name one each")
    names = {*candidates, reference, *twin_of.values()}
    absent = sorted(names - set(scores["forecaster"]))
    if absent:
        raise ValueError(f"forecasters {absent} are not in the table; score them first")
    table = scores.set_index(["forecaster", "variable", "lead"])
    targets = [(f"beats {reference}", lead, False) for lead in reference_leads] + \
              [("at least as good as its EOF twin", lead, True) for lead in twin_leads]
    records = []
    for target, lead, is_twin in targets:
        for variable in variables:
            if (candidates[0], variable, lead) not in table.index:
                raise ValueError(f"lead {lead} of {variable!r} is not scored; score "
                                 f"steps >= {lead}")
            best = min(candidates, key=lambda c: table.loc[(c, variable, lead), "rmse"])
            ref = twin_of[best] if is_twin else reference
            mine, theirs = table.loc[(best, variable, lead)], table.loc[(ref, variable, lead)]
            ratio = float(mine.rmse / theirs.rmse)
            if mine.rmse_high < theirs.rmse_low:
                intervals = "separate, better"
            elif mine.rmse_low > theirs.rmse_high:
                intervals = "separate, worse"
            else:
                intervals = "overlap"
            records.append({
                "target": target, "variable": variable, "lead": int(lead),
                "best_latent": best, "rmse": float(mine.rmse),
                "rmse_low": float(mine.rmse_low), "rmse_high": float(mine.rmse_high),
                "reference": ref, "reference_rmse": float(theirs.rmse),
                "reference_low": float(theirs.rmse_low),
                "reference_high": float(theirs.rmse_high), "ratio": ratio,
                "met": bool(ratio <= 1.0) if is_twin else bool(ratio < 1.0),
                "intervals": intervals})
    return pd.DataFrame.from_records(records)


def targets_met(assessment: pd.DataFrame) -> dict[str, bool]:
    """``{target: met at every variable and lead}`` of :func:`target_assessment`, plus
    ``"all"``."""
    verdict = {str(k): bool(v) for k, v in assessment.groupby("target", sort=False)["met"]
               .all().items()}
    verdict["all"] = all(verdict.values())
    return verdict


def lstm_stops(histories: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per LSTM history of :func:`geofusion.learning.training.fit`: ``epochs_run``,
    ``best_epoch``, ``best_valid_loss``, ``reason`` (``stop_reason``) and ``description``
    (:func:`~geofusion.learning.training.describe_stop`), indexed by name."""
    return pd.DataFrame.from_dict(
        {name: {"epochs_run": len(h), "best_epoch": h.attrs.get("best_epoch"),
                "best_valid_loss": h.attrs.get("best_valid_loss"),
                "reason": h.attrs.get("stop_reason"), "description": describe_stop(h)}
         for name, h in histories.items()}, orient="index").rename_axis("LSTM")


def residual_rho_medians(forecasters: Mapping[str, Any], channels: Sequence[str]
                         ) -> pd.DataFrame:
    """Median over the grid of each forecaster's residual damping ``rho_k``
    (``residual_rho`` ``(L, C, H, W)`` of ``LatentForecaster.fit_residual_damping``,
    :mod:`geofusion.downstream.forecasting`), indexed by ``(forecaster, lead)`` (leads from
    1), a column per channel."""
    rows = {}
    for name, forecaster in forecasters.items():
        rho = np.asarray(forecaster.residual_rho)
        if rho.ndim != 4 or rho.shape[1] != len(channels):
            raise ValueError(f"{name}: residual_rho of shape {rho.shape} for {len(channels)} "
                             "channels; fit_residual_damping first")
        for lead in range(len(rho)):
            rows[(name, lead + 1)] = np.median(rho[lead].reshape(len(channels), -1), axis=-1)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=list(channels))
    out.index = pd.MultiIndex.from_tuples(out.index, names=["forecaster", "lead"])
    return out
