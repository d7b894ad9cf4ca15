"""How models compare with baselines scored under the same setting (issue 13: "each learned
model's row says how it compares to the best baseline").

Both functions take a long table of scores, one row per ``(model, setting..., variable)`` with
an ``rmse`` column, where the *setting* columns say what was held fixed (mask kind, missing
fraction and noise for reconstructions; lead for forecasts):

- :func:`relative_skill`: ``mean_c RMSE_c / RMSE_c(reference)`` per model and setting;
- :func:`versus_best_baseline`: the best of several baselines per setting (lowest
  :func:`relative_skill`), the model's ``mean_c RMSE_c / RMSE_c(best)`` and on how many
  variables the model beats it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["relative_skill", "versus_best_baseline"]


def _check(table: pd.DataFrame, names: Sequence[str], model: str) -> None:
    missing = sorted(set(names) - set(table[model]))
    if missing or not names:
        raise ValueError(f"{missing or list(names)} are not among the scored {model}s "
                         f"{sorted(set(table[model]))}; score them first or name another")


def relative_skill(table: pd.DataFrame, reference: str, setting: Sequence[str],
                   model: str = "model", extra: Sequence[str] = ()) -> pd.DataFrame:
    """``rmse_over_reference`` = mean over variables of ``RMSE_c / RMSE_c(reference)`` under
    the same setting (1 = no better than the reference), one row per ``(model, setting...)``,
    plus the first value of each ``extra`` column.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"model": ["m", "m", "ref", "ref"], "lead": 1,
        ...                   "variable": ["a", "b", "a", "b"], "rmse": [2.0, 9.0, 4.0, 9.0]})
        >>> float(relative_skill(t, "ref", ["lead"]).loc[("m", 1), "rmse_over_reference"])
        0.75
    """
    _check(table, [reference], model)
    keys = [*setting, "variable"]
    ref = table[table[model] == reference].set_index(keys)["rmse"]
    joined = table.join(ref.rename("_reference"), on=keys)
    joined["rmse_over_reference"] = joined["rmse"] / joined["_reference"]
    aggregations = {"rmse_over_reference": ("rmse_over_reference", "mean"),
                    **{column: (column, "first") for column in extra}}
    return joined.groupby([model, *setting], sort=False).agg(**aggregations)


def versus_best_baseline(table: pd.DataFrame, baselines: Sequence[str], reference: str,
                         setting: Sequence[str], model: str = "model") -> pd.DataFrame:
    """Each model against the best baseline of its setting.

    The best baseline of a setting is the one of ``baselines`` with the lowest
    :func:`relative_skill` against ``reference``. Returns one row per ``(model, setting...)``:
    ``best_baseline``, ``rmse_over_best_baseline`` (mean over variables of
    ``RMSE_c / RMSE_c(best)``; below 1 is better than the best baseline), ``variables_better``
    (variables on which the model's RMSE is lower) and ``n_variables``.

    Example:
        >>> import pandas as pd
        >>> rmse = {"ae": (1.0, 4.0), "oi": (2.0, 2.0), "climatology": (4.0, 4.0)}
        >>> t = pd.DataFrame([{"model": m, "lead": 1, "variable": v, "rmse": r}
        ...                   for m, rs in rmse.items() for v, r in zip("ab", rs)])
        >>> row = versus_best_baseline(t, ["oi", "climatology"], "climatology", ["lead"]
        ...                            ).loc[("ae", 1)]
        >>> row.best_baseline, float(row.rmse_over_best_baseline), int(row.variables_better)
        ('oi', 1.25, 1)
    """
    _check(table, list(baselines), model)
    setting = list(setting)
    skill = relative_skill(table, reference, setting, model).reset_index()
    ranked = skill[skill[model].isin(baselines)].sort_values("rmse_over_reference", kind="stable")
    best = ranked.groupby(setting, sort=False)[model].first().rename("best_baseline")
    joined = table.join(best, on=setting)
    scores = table.set_index([model, *setting, "variable"])["rmse"]
    joined["_best"] = scores.reindex(pd.MultiIndex.from_frame(
        joined[["best_baseline", *setting, "variable"]])).to_numpy()
    joined["_ratio"] = joined["rmse"] / joined["_best"]
    joined["_better"] = joined["rmse"] < joined["_best"]
    return joined.groupby([model, *setting], sort=False).agg(
        best_baseline=("best_baseline", "first"), rmse_over_best_baseline=("_ratio", "mean"),
        variables_better=("_better", "sum"), n_variables=("variable", "count"))
