"""The scorecard's headline: every learned model against the best baseline the field uses.

A reviewer's first two questions, *better than what?* and *how sure?*, answered from one
scorecard (``reports/results.json``, :mod:`geofusion.experiments.scorecard`). For a column of the
card (a
reconstruction at one missing fraction, a forecast at one lead, an assimilation at one observed
fraction) each model's latitude-weighted RMSE is shown with its 95 % block-bootstrap interval
and its ratio to the **best baseline of that variable**:

    ratio = RMSE(model) / min_b RMSE(baseline b)       (< 1: the model beats every baseline)

Baselines per section (:data:`BASELINES`): reconstruction — day-of-year climatology and optimal
interpolation; forecast — persistence, day-of-year climatology, damped anomaly persistence and
field-space linear regression; assimilation — day-of-year climatology and field-space optimal
interpolation. Climatology and persistence come from the card's ``climatology_rmse`` and
``persistence_rmse`` sections; the others are rows of the section itself. The interval is the
model's own; a ratio whose model interval lies wholly below (above) the baseline's value is
marked as a clear win (loss) in :func:`headline_markdown`.

``python -m geofusion.headline [reports/results.json]`` prints the markdown; the pipeline writes
it to ``reports/headline.md`` after every run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from geofusion.experiments.scorecard import lookup
from geofusion.variables import UNITS, VARIABLES

#: Baselines of each section, in the order they are tried (a missing one is skipped).
BASELINES: dict[str, tuple[str, ...]] = {
    "reconstruction_rmse": ("climatology", "optimal_interpolation"),
    "forecast_rmse": ("persistence", "climatology", "damped_persistence", "linear_regression"),
    "assimilation": ("climatology", "optimal_interpolation"),
}
#: Rows of a section that are neither baselines nor learned models: the assimilation's bounds
#: (a run without observations, the encoder alone) are learned and stay in the table.
COLUMN_NAMES: dict[str, str] = {"reconstruction_rmse": "missing fraction",
                                "forecast_rmse": "lead (days)",
                                "assimilation": "observed fraction"}
#: The columns the README shows: reconstruction of complete and half-missing input, forecasts
#: at 1 and 3 days, assimilation of 10 % observed pixels.
DEFAULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("reconstruction_rmse", "0"), ("reconstruction_rmse", "0.5"),
    ("forecast_rmse", "1"), ("forecast_rmse", "3"), ("assimilation", "0.1"))


def baseline_rmse(card: dict[str, Any], section: str, column: str, baseline: str,
                  variable: str) -> tuple[float | None, list[float] | None]:
    """``(value, [low, high] or None)`` of one baseline's RMSE in a column of the card.

    ``climatology`` reads ``climatology_rmse`` (one value for every fraction and lead),
    ``persistence`` reads ``persistence_rmse[column]``, any other baseline its own row of
    ``section``. ``(None, None)`` where the card does not hold it.
    """
    intervals = card.get("intervals") or {}
    if baseline == "climatology" and section != "assimilation":
        path: tuple[str, ...] = ("climatology_rmse", variable)
    elif baseline == "persistence":
        path = ("persistence_rmse", column, variable)
    else:
        path = (section, baseline, column, variable)
    return lookup(card, *path), lookup(intervals, *path)


def headline_table(card: dict[str, Any], section: str, column: str,
                   variables: tuple[str, ...] = VARIABLES) -> pd.DataFrame:
    """One column of the card as a long table: a row per (learned model, variable).

    Args:
        card: a scorecard (``json.load`` of ``reports/results.json``).
        section: ``"reconstruction_rmse"``, ``"forecast_rmse"`` or ``"assimilation"``.
        column: the missing fraction, lead or observed fraction as the card spells it ("0.5").
        variables: which variables, in order.

    Returns:
        Columns ``model, variable, rmse, low, high, best_baseline, baseline_rmse, ratio``
        (``ratio = rmse / baseline_rmse``; NaN where the model or every baseline lacks the
        value). Models are the section's rows that are not baselines, in the card's order.

    Raises:
        ValueError: an unknown section, or a column no model of the section holds.
    """
    if section not in BASELINES:
        raise ValueError(f"unknown headline section {section!r}; choose one of "
                         f"{sorted(BASELINES)}")
    rows_of_section = card.get(section) or {}
    models = [m for m, entry in rows_of_section.items()
              if m not in BASELINES[section] and isinstance(entry, dict)]
    if not any(column in rows_of_section[m] for m in models):
        held = sorted({c for m in models for c in rows_of_section[m]})
        raise ValueError(f"no model of {section!r} holds {COLUMN_NAMES[section]} {column!r}; "
                         f"the card holds {held}")
    intervals = card.get("intervals") or {}
    records = []
    for variable in variables:
        candidates = [(b, baseline_rmse(card, section, column, b, variable)[0])
                      for b in BASELINES[section]]
        # A zero RMSE is an identity, not a reference: OI of a complete noise-free input.
        candidates = [(b, v) for b, v in candidates if v]
        best, best_value = min(candidates, key=lambda c: c[1]) if candidates else (None, None)
        for model in models:
            value = lookup(rows_of_section, model, column, variable)
            interval = lookup(intervals, section, model, column, variable) or [None, None]
            ratio = (value / best_value if value is not None and best_value
                     else float("nan"))
            records.append({"model": model, "variable": variable,
                            "rmse": float("nan") if value is None else value,
                            "low": interval[0], "high": interval[1],
                            "best_baseline": best, "baseline_rmse": best_value,
                            "ratio": ratio})
    return pd.DataFrame.from_records(records)


def _number(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.3g}"


def _cell(row: pd.Series) -> str:
    if row.rmse != row.rmse:
        return "—"
    text = _number(row.rmse)
    if row.low is not None and row.high is not None:
        text += f" [{_number(row.low)}, {_number(row.high)}]"
    if row.ratio == row.ratio:
        mark = ""
        if row.high is not None and row.high < row.baseline_rmse:
            mark = " ✓"
        elif row.low is not None and row.low > row.baseline_rmse:
            mark = " ✗"
        text += f" (×{row.ratio:.2f}{mark})"
    return text


def headline_markdown(card: dict[str, Any],
                      columns: tuple[tuple[str, str], ...] = DEFAULT_COLUMNS,
                      variables: tuple[str, ...] = VARIABLES) -> str:
    """The headline as markdown: a provenance line, then one table per column of the card.

    Each cell: ``RMSE [95 % interval] (×ratio to the best baseline)``, marked ✓ where the
    model's whole interval lies below the best baseline's RMSE and ✗ where it lies above; the
    last row of each table names the best baseline per variable with its RMSE and interval.
    Columns the card lacks are skipped with a line saying so.
    """
    environment = card.get("environment") or {}
    lines = [f"Profile `{card.get('profile')}`, "
             f"{'synthetic default' if card.get('synthetic') else 'ERA5'}, commit "
             f"`{card.get('commit')}`, {card.get('seconds', 0):.0f} s, torch "
             f"{environment.get('torch')} on {environment.get('device')}. RMSE latitude-"
             "weighted in physical units, 95 % block-bootstrap interval over validation days, "
             "(×ratio) to the best baseline of the variable: ✓ interval below it, ✗ above.", ""]
    for section, column in columns:
        try:
            table = headline_table(card, section, column, variables)
        except ValueError as error:
            lines += [f"*{section} at {column}: not in this scorecard ({error}).*", ""]
            continue
        lines.append(f"**{section}, {COLUMN_NAMES[section]} {column}**")
        lines.append("")
        lines.append("| model | " + " | ".join(f"{v} ({UNITS[v]})" for v in variables) + " |")
        lines.append("| --- |" + " --- |" * len(variables))
        for model, rows in table.groupby("model", sort=False):
            cells = [_cell(rows[rows.variable == v].iloc[0]) for v in variables]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        best = []
        for variable in variables:
            row = table[table.variable == variable].iloc[0]
            value, interval = (baseline_rmse(card, section, column, row.best_baseline, variable)
                               if row.best_baseline else (None, None))
            text = f"{row.best_baseline} {_number(value)}" if row.best_baseline else "—"
            if interval:
                text += f" [{_number(interval[0])}, {_number(interval[1])}]"
            best.append(text)
        lines.append("| *best baseline* | " + " | ".join(best) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geofusion.headline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="reports/results.json",
                        help="a scorecard written by the pipeline (default: %(default)s)")
    args = parser.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        print(f"no scorecard at {path}: run `make reports` first, or pass the path of a "
              "results.json", file=sys.stderr)
        return 2
    print(headline_markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
