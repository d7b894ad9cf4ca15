"""Which of notebook 11's differences hold across training seeds (issue 24).

Notebook 11 states, from one run, which variant rows differ from a reference row beyond their
95 % intervals (:func:`geofusion.experiments.ablations.stated_comparisons`). At the quick size
one run is not enough: the same code gave other verdicts in two runs. The seed benchmark
(``benchmarks/ablation_seeds.py``) reruns the notebook with several *training* seeds (the
world, the data, the scored days and masks, the decoders' and DDPMs' seeds and the bootstrap
fixed: only the encoders' training seed varies) and this module folds those runs:

- :func:`comparison_records`: one run's stated comparisons in long form, with the difference
  ``row - reference`` and on which side of the reference the row lies (better or worse);
- :func:`seed_values`: per row, score and variable, the mean and range over seeds;
- :func:`seed_robustness`: per compared cell, whether the sign of the difference is the same
  in every seed and in how many seeds the intervals separate (:func:`robust_verdict`);
- :func:`mark_single_run`: one run's ``better`` / ``worse`` cells marked ``holds across
  seeds``, ``does not`` or ``not measured`` from a seed table (:func:`load_seed_table`);
  :func:`fold_marks` folds them over variables for display.

A difference *holds across seeds* when, in every one of at least :data:`MIN_SEEDS` seeds,
the row lies on the same side of the reference **and** the two 95 % intervals do not overlap
(the verdict notebook 11 gives, reproduced in every seed).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geofusion.experiments.ablations import (
    DIRECTIONS,
    OPTIONAL_SETTINGS,
    REFERENCES,
    STATED_COMPARISONS,
    compare_rows,
)

__all__ = ["MIN_SEEDS", "KEY", "comparison_records", "seed_values", "robust_verdict",
           "seed_robustness", "load_seed_table", "settings_mismatch", "mark_single_run",
           "fold_marks"]

#: Fewest training seeds a "holds across seeds" needs.
MIN_SEEDS = 3
#: The columns naming one compared cell.
KEY: list[str] = ["comparison", "row", "score", "variable"]


def _value(values: dict[str, Any], row: str, score: str, variable: str) -> float:
    entry = values[row][score]
    return float(entry[variable] if variable else entry)


def comparison_records(values: dict[str, dict[str, Any]],
                       intervals: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One run's stated comparisons (:data:`geofusion.experiments.ablations.
    STATED_COMPARISONS`, each variant row against each reference row) in long form.

    One record per cell :func:`geofusion.experiments.ablations.compare_rows` compares (both
    rows hold the score with an interval): ``comparison``, ``row``, ``score``, ``variable``
    (``""`` for a score without variables), ``difference`` = row value minus the reference's
    (of the ``against`` score where the comparison maps one; the score's units), ``side`` =
    ``+1`` when the row is on the better side (:data:`~geofusion.experiments.ablations.
    DIRECTIONS`: lower RMSE / CRPS / cross-entropy, higher accuracy), ``-1`` on the worse
    side, ``0`` when equal, and ``verdict`` (``better``, ``worse``, ``overlap``: the
    intervals).

    Example:
        >>> v = {"baseline": {"season_accuracy": 0.5}, "smoothness": {"season_accuracy": 0.9}}
        >>> i = {"baseline": {"season_accuracy": [0.4, 0.6]},
        ...      "smoothness": {"season_accuracy": [0.85, 0.95]}}
        >>> comparison_records(v, i)[["row", "side", "verdict"]].values.tolist()
        [['smoothness', 1, 'better']]
    """
    variants = [row for row in values if row not in REFERENCES]
    records = []
    for name, reference, against in STATED_COMPARISONS:
        if reference not in values:
            continue
        table = compare_rows(values, intervals, reference, against=against,
                             rows=[v for v in variants if v != reference])
        for row, cells in table.iterrows():
            for column, verdict in cells.items():
                if not isinstance(verdict, str):
                    continue
                score, _, variable = str(column).partition(": ")
                difference = (_value(values, str(row), score, variable)
                              - _value(values, reference, against.get(score, score), variable))
                records.append({"comparison": name, "row": str(row), "score": score,
                                "variable": variable, "difference": difference,
                                "side": int(np.sign(DIRECTIONS[score] * difference)),
                                "verdict": verdict})
    return pd.DataFrame(records, columns=[*KEY, "difference", "side", "verdict"])


def seed_values(values_by_seed: dict[int, dict[str, dict[str, Any]]]) -> pd.DataFrame:
    """Mean and range over seeds of every number of every row.

    ``values_by_seed``: ``{seed: {row: {score: number or {variable: number}}}}`` (one
    notebook-11 run per seed). Returns one record per ``(row, score, variable)`` held by at
    least one seed: ``seeds`` (how many hold it), ``mean``, ``min``, ``max`` over them.

    Example:
        >>> table = seed_values({0: {"a": {"acc": 0.5}}, 1: {"a": {"acc": 0.7}}})
        >>> table.loc[0, ["seeds", "mean", "min", "max"]].astype(float).round(6).tolist()
        [2.0, 0.6, 0.5, 0.7]
    """
    numbers: dict[tuple[str, str, str], list[float]] = {}
    for values in values_by_seed.values():
        for row, scores in values.items():
            for score, entry in scores.items():
                items = entry.items() if isinstance(entry, dict) else [("", entry)]
                for variable, number in items:
                    numbers.setdefault((row, score, variable), []).append(float(number))
    return pd.DataFrame(
        [{"row": row, "score": score, "variable": variable, "seeds": len(found),
          "mean": float(np.mean(found)), "min": float(np.min(found)),
          "max": float(np.max(found))}
         for (row, score, variable), found in numbers.items()],
        columns=["row", "score", "variable", "seeds", "mean", "min", "max"])


def robust_verdict(sides: list[int], verdicts: list[str], n_seeds: int) -> tuple[str, str]:
    """``(robust, side)`` of one compared cell from its per-seed ``sides`` (+1 better, -1
    worse, 0 equal) and interval ``verdicts`` (``better`` / ``worse`` / ``overlap``), of
    ``n_seeds`` seeds run in all:

    - ``"incomplete"`` when fewer than ``n_seeds`` seeds measured it;
    - ``"flips"`` when the sign is not the same nonzero one in every seed (``side`` ``""``);
    - ``"holds"`` when it is and the intervals separate on that side in every seed;
    - ``"sign only"`` when the sign holds but the intervals overlap in some seed.

    ``side``: ``"better"`` or ``"worse"`` when the sign holds, else ``""``.

    Example:
        >>> robust_verdict([1, 1, -1], ["better", "better", "overlap"], 3)
        ('flips', '')
        >>> robust_verdict([-1, -1, -1], ["worse", "overlap", "worse"], 3)
        ('sign only', 'worse')
    """
    if len(sides) != len(verdicts):
        raise ValueError(f"{len(sides)} sides but {len(verdicts)} verdicts: one of each a seed")
    if len(sides) < n_seeds:
        return "incomplete", ""
    if 0 in sides or len(set(sides)) != 1:
        return "flips", ""
    side = "better" if sides[0] > 0 else "worse"
    return ("holds" if all(v == side for v in verdicts) else "sign only"), side


def seed_robustness(values_by_seed: dict[int, dict[str, dict[str, Any]]],
                    intervals_by_seed: dict[int, dict[str, dict[str, Any]]]) -> pd.DataFrame:
    """Whether each of notebook 11's stated differences holds across training seeds.

    Args:
        values_by_seed, intervals_by_seed: ``{seed: values}`` and ``{seed: intervals}`` of one
            notebook-11 run per seed (variant rows and reference rows, as
            :func:`geofusion.experiments.ablations.score_variants` returns them); at least two
            seeds, the same seeds in both.

    Returns:
        One record per compared cell (:data:`KEY`): ``seeds`` (how many measured it),
        ``mean_difference``, ``min_difference``, ``max_difference`` (row minus reference over
        the seeds, the score's units), ``better_seeds`` / ``worse_seeds`` (seeds whose
        intervals separate on that side), ``robust`` and ``side`` (:func:`robust_verdict`).
    """
    if sorted(values_by_seed) != sorted(intervals_by_seed):
        raise ValueError(f"values of seeds {sorted(values_by_seed)} but intervals of "
                         f"{sorted(intervals_by_seed)}: pass both of every seed")
    if len(values_by_seed) < 2:
        raise ValueError(f"a seed table needs two or more seeds, got {len(values_by_seed)}")
    frames = [comparison_records(values_by_seed[s], intervals_by_seed[s]).assign(seed=s)
              for s in sorted(values_by_seed)]
    long = pd.concat(frames, ignore_index=True)
    rows = []
    for key, group in long.groupby(KEY, sort=False):
        robust, side = robust_verdict(group["side"].tolist(), group["verdict"].tolist(),
                                      len(values_by_seed))
        rows.append({**dict(zip(KEY, key, strict=True)), "seeds": len(group),
                     "mean_difference": float(group["difference"].mean()),
                     "min_difference": float(group["difference"].min()),
                     "max_difference": float(group["difference"].max()),
                     "better_seeds": int((group["verdict"] == "better").sum()),
                     "worse_seeds": int((group["verdict"] == "worse").sum()),
                     "robust": robust, "side": side})
    return pd.DataFrame(rows, columns=[*KEY, "seeds", "mean_difference", "min_difference",
                                       "max_difference", "better_seeds", "worse_seeds",
                                       "robust", "side"])


def load_seed_table(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The seed table ``benchmarks/ablation_seeds.py`` writes (JSON: ``settings``, ``seeds``,
    ``values`` and ``intervals`` keyed by seed, provenance), or None when ``path`` is None or
    does not exist. Seeds come back as ints."""
    if path is None or not Path(path).exists():
        return None
    table = json.loads(Path(path).read_text())
    missing = {"settings", "seeds", "values", "intervals"} - set(table)
    if missing:
        raise ValueError(f"{path} is not a seed table (no {sorted(missing)}); rerun "
                         "benchmarks/ablation_seeds.py")
    for key in ("values", "intervals"):
        table[key] = {int(seed): rows for seed, rows in table[key].items()}
    return table


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, int | float) and isinstance(b, int | float)
                and math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0))
    return a == b


def settings_mismatch(settings: dict[str, Any], table_settings: dict[str, Any]) -> list[str]:
    """The keys whose values differ between a run's ``settings`` and a seed table's (present
    in one only, or unequal after a JSON round trip: tuples read as lists). A key of
    :data:`geofusion.experiments.ablations.OPTIONAL_SETTINGS` missing on one side has its
    "off" value there (a table measured before the setting existed ran with it off)."""
    mine, theirs = json.loads(json.dumps(settings)), json.loads(json.dumps(table_settings))
    for key, off in OPTIONAL_SETTINGS.items():
        for side in (mine, theirs):
            side.setdefault(key, off)
    return sorted(k for k in set(mine) | set(theirs)
                  if k not in mine or k not in theirs or not _same(mine[k], theirs[k]))


def mark_single_run(records: pd.DataFrame, seed_table: dict[str, Any] | None,
                    settings: dict[str, Any]) -> pd.DataFrame:
    """Mark each difference one run states (its ``better`` / ``worse`` cells of
    :func:`comparison_records`) against a seed table.

    ``across seeds`` is ``"holds across seeds"`` when the seed table (measured at the same
    ``settings``, :func:`settings_mismatch`, with at least :data:`MIN_SEEDS` seeds) finds the
    same side with separated intervals in every seed (:func:`robust_verdict` ``"holds"``),
    ``"does not"`` when it measured the cell otherwise (``why`` says how), ``"not
    measured"`` when there is no table, it was measured at other settings or with fewer seeds,
    or it lacks the cell (e.g. a variant it did not run).

    Returns the run's difference records (``overlap`` cells left out) with ``across seeds``
    and ``why`` added.
    """
    marked = records[records["verdict"] != "overlap"].copy()
    reason = None
    if seed_table is None:
        reason = "no seed table (run benchmarks/ablation_seeds.py)"
    else:
        differing = settings_mismatch(settings, seed_table["settings"])
        n_seeds = len(seed_table["values"])
        if differing:
            reason = f"the seed table was measured at other settings ({', '.join(differing)})"
        elif n_seeds < MIN_SEEDS:
            reason = f"the seed table has {n_seeds} seeds, fewer than {MIN_SEEDS}"
    if reason is not None:
        return marked.assign(**{"across seeds": "not measured", "why": reason})
    robustness = seed_robustness(seed_table["values"], seed_table["intervals"]).set_index(KEY)
    labels, whys = [], []
    for _, record in marked.iterrows():
        key = tuple(record[k] for k in KEY)
        if key not in robustness.index:
            labels.append("not measured")
            whys.append("the seed table does not compare this cell")
            continue
        cell = robustness.loc[key]
        seeds = int(cell["seeds"])
        if cell["robust"] == "holds" and cell["side"] == record["verdict"]:
            labels.append("holds across seeds")
            whys.append(f"{cell['side']} beyond the intervals in all {seeds} seeds")
        else:
            labels.append("does not")
            separated = int(cell[f"{record['verdict']}_seeds"])
            whys.append({"flips": f"the sign flips across {seeds} seeds",
                         "incomplete": f"measured in {seeds} seeds only"}.get(
                cell["robust"],
                f"{cell['side']} in every seed; {record['verdict']} beyond the intervals in "
                f"{separated} of {seeds}"))
    return marked.assign(**{"across seeds": labels, "why": whys})


def fold_marks(marks: pd.DataFrame, label: str = "holds across seeds") -> pd.DataFrame:
    """:func:`mark_single_run`'s cells marked ``label``, folded over variables: one row per
    ``(comparison, row)``, one column per score, each cell ``"better: v1, v2; worse: v3"``
    (the variables; ``"better"`` alone for a score without variables), ``""`` where none.

    Example:
        >>> marks = pd.DataFrame({"comparison": ["vs baseline"] * 3, "row": ["all"] * 3,
        ...     "score": ["crps", "crps", "season_accuracy"], "variable": ["t", "z", ""],
        ...     "verdict": ["better", "worse", "better"],
        ...     "across seeds": ["holds across seeds", "holds across seeds", "does not"]})
        >>> fold_marks(marks).loc[("vs baseline", "all"), "crps"]
        'better: t; worse: z'
    """
    chosen = marks[marks["across seeds"] == label]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for (comparison, row, score), group in chosen.groupby(["comparison", "row", "score"],
                                                          sort=False):
        parts = []
        for verdict in ("better", "worse"):
            names = [v for v, w in zip(group["variable"], group["verdict"], strict=True)
                     if w == verdict]
            if names:
                listed = ", ".join(n for n in names if n)
                parts.append(f"{verdict}: {listed}" if listed else verdict)
        cells.setdefault((comparison, row), {})[score] = "; ".join(parts)
    table = pd.DataFrame.from_dict(cells, orient="index").fillna("")
    if len(table):
        table.index = pd.MultiIndex.from_tuples(table.index, names=["comparison", "row"])
    return table
