"""The scorecard's headline: every learned model against the best baseline the field uses.

A reviewer's first two questions, *better than what?* and *how sure?*, answered from one
scorecard (``reports/results.json``, :mod:`geofusion.experiments.scorecard`). For a column of the
card (a
reconstruction at one missing fraction, a forecast at one lead, an assimilation at one observed
fraction) each model's latitude-weighted RMSE is shown with its 95 % block-bootstrap interval
and its ratio to the **best baseline of that variable**:

    ratio = RMSE(model) / min_b RMSE(baseline b)       (< 1: the model beats every baseline)

Baselines per section (:data:`BASELINES`): reconstruction — day-of-year climatology, optimal
interpolation and the equal-size EOF code of the anomalies (its gappy fit for sparse input), so
a learned latent's ratio is to its linear twin wherever that is the best baseline; forecast —
persistence, day-of-year climatology, damped anomaly persistence, field-space linear
regression, the linear inverse model in EOF space and the EOF twin (notebook 08's LSTM on the
EOF code of the latent's size, decoded and + residual); assimilation — day-of-year
climatology, field-space optimal interpolation (with the climatology as background, and cycled
with a damped-persistence background) and reduced-rank 3D-Var in EOF space cycled with the
linear inverse model. Climatology and persistence come from the card's ``climatology_rmse``
and ``persistence_rmse`` sections; the others are rows of the section itself. The interval is
the model's own; a ratio whose model interval lies wholly below (above) the baseline's value
is marked as a clear win (loss) in :func:`headline_markdown`.

The same numbers as a picture (:func:`scorecard_figure`, in the manner of WeatherBench 2's
scorecards): a row per learned model, a column per (section, column) and variable, each cell
coloured by its ratio on a log scale centred at 1 (blue better than the best baseline, red
worse), the ratio printed in it and a frame where the model's interval excludes the baseline's
value (the rule of the ✓ / ✗, :func:`interval_mark`); grey where the card holds no value.

``python -m geofusion.headline [reports/results.json]`` prints the markdown and
``python -m geofusion.headline --figure scorecard.png [reports/results.json]`` draws the
figure; the pipeline writes both, to ``reports/headline.md`` and ``reports/scorecard.png``,
after every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from geofusion.experiments.scorecard import lookup
from geofusion.io import atomic_path
from geofusion.variables import UNITS, VARIABLES

#: Baselines of each section, in the order they are tried (a missing one is skipped).
BASELINES: dict[str, tuple[str, ...]] = {
    # eof_code (02, all test days) and eof (06, its evaluation days) are the same equal-size
    # EOF code of the anomalies; gappy_eof its sparse-input fit (issue 23).
    "reconstruction_rmse": ("climatology", "optimal_interpolation", "eof_code", "eof",
                            "gappy_eof"),
    # Issue 24: the linear inverse model in EOF space and the EOF twin (notebook 08's LSTM on
    # the EOF code of the latent's size, decoded and + residual) are the linear twins of the
    # latent forecasters.
    "forecast_rmse": ("persistence", "climatology", "damped_persistence", "linear_regression",
                      "linear_inverse_model", "eof_code", "eof_code_residual"),
    # Issue 24: every scheme with memory has a classical counterpart with memory: OI cycled
    # with damped persistence, and reduced-rank 3D-Var in EOF space cycled with the LIM.
    "assimilation": ("climatology", "optimal_interpolation", "oi_damped_persistence",
                     "eof_3dvar"),
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


def interval_mark(row: Any) -> int:
    """``-1`` where a row of :func:`headline_table` is a clear win (the model's whole interval
    below the best baseline's RMSE), ``+1`` a clear loss (wholly above), ``0`` otherwise (no
    interval, no ratio, or the interval holds the baseline's value).

    Example:
        >>> import pandas as pd
        >>> rows = [(0.8, 0.7, 0.9), (1.2, 1.1, 1.3), (0.95, 0.9, 1.0), (0.9, None, None)]
        >>> [interval_mark(pd.Series({"ratio": r, "low": lo, "high": hi, "baseline_rmse": 1.0}))
        ...  for r, lo, hi in rows]
        [-1, 1, 0, 0]
    """
    if row.ratio != row.ratio:
        return 0
    if row.high is not None and row.high < row.baseline_rmse:
        return -1
    if row.low is not None and row.low > row.baseline_rmse:
        return 1
    return 0


def _number(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.3g}"


def _cell(row: pd.Series) -> str:
    if row.rmse != row.rmse:
        return "—"
    text = _number(row.rmse)
    if row.low is not None and row.high is not None:
        text += f" [{_number(row.low)}, {_number(row.high)}]"
    if row.ratio == row.ratio:
        mark = {-1: " ✓", 0: "", 1: " ✗"}[interval_mark(row)]
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
             "weighted in physical units, 95 % block-bootstrap interval over "
             f"{card.get('scored_block', 'valid').replace('valid', 'validation')} days, "
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


#: Short names of the variables and baselines for the figure's narrow columns.
SHORT_VARIABLES: dict[str, str] = {"2m_temperature": "T2m", "geopotential": "Z",
                                   "u_component_of_wind": "U", "v_component_of_wind": "V",
                                   "specific_humidity": "Q"}
SHORT_BASELINES: dict[str, str] = {"climatology": "clim", "optimal_interpolation": "OI",
                                   "oi_damped_persistence": "OI-DP", "eof_3dvar": "EOF-3DVar",
                                   "persistence": "pers", "damped_persistence": "damped",
                                   "linear_regression": "regr",
                                   "linear_inverse_model": "LIM", "eof_code": "EOF-LSTM",
                                   "eof_code_residual": "EOF-LSTM+r"}
_GROUP_LABELS: dict[str, str] = {"reconstruction_rmse": "reconstruction\n{} missing",
                                 "forecast_rmse": "forecast\nlead {} d",
                                 "assimilation": "assimilation\n{} observed"}
#: Colour limits of the figure: ratios ``1 / R .. R`` with ``R`` the largest ratio (or its
#: inverse) of the figure, at least ``RATIO_LIMITS[0]``, at most ``RATIO_LIMITS[1]`` (beyond
#: it a cell takes the end colour; its printed ratio stays exact).
RATIO_LIMITS: tuple[float, float] = (1.25, 4.0)
MISSING_COLOUR = "#c8c8c8"


def card_columns(card: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Every ``(section, column)`` of the headline sections that a learned model of the card
    holds, sections in :data:`BASELINES` order, columns in increasing number.

    Example:
        >>> card_columns({"forecast_rmse": {"lstm": {"3": {}, "1": {}},
        ...                                 "persistence": {"7": {}}}})
        (('forecast_rmse', '1'), ('forecast_rmse', '3'))
    """
    held = []
    for section, baselines in BASELINES.items():
        rows = card.get(section) or {}
        keys = {column for model, entry in rows.items()
                if model not in baselines and isinstance(entry, dict) for column in entry}
        held += [(section, column) for column in sorted(keys, key=float)]
    return tuple(held)


def scorecard_cells(card: dict[str, Any],
                    columns: tuple[tuple[str, str], ...] | str = DEFAULT_COLUMNS,
                    variables: tuple[str, ...] = VARIABLES) -> pd.DataFrame:
    """The cells of :func:`scorecard_figure` as a long table, from :func:`headline_table`.

    Args:
        card: a scorecard.
        columns: ``(section, column)`` pairs, or ``"all"`` for :func:`card_columns`.
        variables: which variables, in order.

    Returns:
        :func:`headline_table`'s columns plus ``section``, ``column`` and ``mark``
        (:func:`interval_mark`): one row per (learned model, section, column, variable) that
        the card holds, in the order of ``columns`` and ``variables``. A column no model of
        its section holds gives no rows.

    Raises:
        TypeError: ``card`` is not a dict.
        ValueError: an unknown section or ``columns`` string.
    """
    if not isinstance(card, dict):
        raise TypeError(f"a scorecard is a dict (json.load of results.json), not "
                        f"{type(card).__name__}")
    if isinstance(columns, str):
        if columns != "all":
            raise ValueError(f"columns is a tuple of (section, column) pairs or 'all', not "
                             f"{columns!r}")
        columns = card_columns(card)
    tables = []
    for section, column in columns:
        try:
            table = headline_table(card, section, column, variables)
        except ValueError:
            if section not in BASELINES:
                raise
            continue  # a column the card lacks: grey in the figure
        tables.append(table.assign(section=section, column=column,
                                   mark=[interval_mark(row) for row in table.itertuples()]))
    if not tables:
        return pd.DataFrame(columns=["model", "variable", "rmse", "low", "high",
                                     "best_baseline", "baseline_rmse", "ratio", "section",
                                     "column", "mark"])
    return pd.concat(tables, ignore_index=True)


def _provenance(card: dict[str, Any]) -> str:
    data = {True: "synthetic default", False: "ERA5"}.get(card.get("synthetic"), "data unknown")
    return f"profile {card.get('profile')}, {data}, commit {card.get('commit')}"


def scorecard_figure(card: dict[str, Any],
                     columns: tuple[tuple[str, str], ...] | str = DEFAULT_COLUMNS,
                     variables: tuple[str, ...] = VARIABLES) -> Figure:
    """The headline as a WeatherBench 2-style scorecard: one row per learned model, one column
    per (section, column) and variable.

    Each cell is coloured by the model's ratio to the best baseline of the variable
    (:func:`headline_table`) on a diverging log scale centred at 1 with symmetric limits
    (:data:`RATIO_LIMITS`): blue better, red worse. The ratio is printed in the cell; a black
    frame (and bold ratio) marks a cell whose 95 % interval lies wholly below or above the
    baseline's RMSE (the ✓ / ✗ of :func:`headline_markdown`). Grey cells: the card holds no
    value (the model is not of that section, or the value or every baseline is missing). Group
    labels above name the section and column, the labels below each column the best baseline;
    the title gives profile and commit. A card without any learned model in ``columns`` gives
    a figure that says so.

    Artists a test can find: the colour mesh is ``fig.axes[0].collections[0]`` (its facecolors,
    after a draw, are the cells row by row); each frame is a ``Rectangle`` with
    ``gid="mark:<model>:<section>:<column>:<variable>"``.

    Args:
        card: a scorecard (``json.load`` of ``reports/results.json``).
        columns: ``(section, column)`` pairs (default :data:`DEFAULT_COLUMNS`) or ``"all"``
            (every column the card holds, :func:`card_columns`).
        variables: which variables, in order.

    Raises:
        TypeError: ``card`` is not a dict.
        ValueError: an unknown section or ``columns`` string.
    """
    cells = scorecard_cells(card, columns, variables)
    if isinstance(columns, str):
        columns = card_columns(card)
    if cells.empty:
        fig = Figure(figsize=(9, 2.2))
        fig.text(0.5, 0.75, f"geofusion scorecard — {_provenance(card)}", ha="center",
                 fontsize=11, weight="bold")
        asked = ", ".join(f"{s} {c}" for s, c in columns) or "none"
        fig.text(0.5, 0.4, textwrap.fill(
            f"No learned model of this scorecard holds any of the columns asked for ({asked}): "
            "no grid to draw. The tables list what the card holds.", 110),
            ha="center", va="center", fontsize=9)
        return fig

    models = list(dict.fromkeys(cells.model))
    keys = [(s, c, v) for s, c in columns for v in variables]
    ratio = np.full((len(models), len(keys)), np.nan)
    mark = np.zeros_like(ratio, dtype=int)
    baseline = {}
    for row in cells.itertuples():
        i, j = models.index(row.model), keys.index((row.section, row.column, row.variable))
        ratio[i, j], mark[i, j] = row.ratio, row.mark
        if row.best_baseline:
            baseline[j] = row.best_baseline
    finite = ratio[np.isfinite(ratio) & (ratio > 0)]
    spread = float(np.exp(np.abs(np.log(finite)).max())) if finite.size else 1.0
    limit = min(max(spread, RATIO_LIMITS[0]), RATIO_LIMITS[1])
    norm = colors.LogNorm(vmin=1 / limit, vmax=limit)
    cmap = colors.LinearSegmentedColormap.from_list(
        "ratio", ["#2166ac", "#92c5de", "#f7f7f7", "#f4a582", "#b2182b"]
    ).with_extremes(bad=MISSING_COLOUR)

    ncols, nrows = len(keys), len(models)
    fig = Figure(figsize=(2.4 + 0.46 * ncols + 1.3, 2.3 + 0.34 * nrows), layout="constrained")
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(np.ma.masked_invalid(ratio), cmap=cmap, norm=norm,
                         edgecolors="white", linewidth=0.6)
    ax.set_xlim(0, ncols)
    ax.set_ylim(nrows, 0)
    for i in range(nrows):
        for j in range(ncols):
            r = ratio[i, j]
            if not np.isfinite(r):
                continue
            strong = abs(np.log(r)) > 0.55 * np.log(limit)
            ax.text(j + 0.5, i + 0.5, f"{r:.2f}" if r < 10 else f"{r:.1f}", ha="center",
                    va="center", fontsize=6.5, color="white" if strong else "black",
                    weight="bold" if mark[i, j] else "normal")
            if mark[i, j]:
                model, (section, column, variable) = models[i], keys[j]
                ax.add_patch(Rectangle((j + 0.06, i + 0.08), 0.88, 0.84, fill=False,
                                       edgecolor="black", linewidth=1.6,
                                       gid=f"mark:{model}:{section}:{column}:{variable}"))
    # Groups: a white gap between them, the section and column above the variables' names.
    width = len(variables)
    for g, (section, column) in enumerate(columns):
        if g:
            ax.axvline(g * width, color="white", linewidth=4)
        held = bool(np.isfinite(ratio[:, g * width:(g + 1) * width]).any())
        ax.text(g * width + width / 2, 1.07,
                _GROUP_LABELS[section].format(column) + ("" if held else "\n(not in card)"),
                transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8,
                linespacing=1.1)
    ax.set_yticks(np.arange(nrows) + 0.5, models, fontsize=8)
    ax.set_xticks(np.arange(ncols) + 0.5,
                  [SHORT_BASELINES.get(baseline.get(j, ""), baseline.get(j, "—"))
                   for j in range(ncols)], fontsize=6.5, rotation=90)
    ax.set_xlabel("best baseline of the column", fontsize=7)
    top = ax.secondary_xaxis("top")
    top.set_xticks(np.arange(ncols) + 0.5, [SHORT_VARIABLES.get(v, v) for _, _, v in keys],
                   fontsize=7)
    top.tick_params(length=0)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(mesh, ax=ax, shrink=min(1.0, 4.0 / max(nrows, 1) + 0.4), pad=0.01,
                       extend="both" if spread > limit else "neither")
    above = [t for t in (1.1, 1.25, 1.5, 2, 3, 4) if t <= limit * 1.001][::-1][::2]
    ticks = sorted([1.0, *above, *(1 / t for t in above)])
    bar.set_ticks(ticks, labels=[f"×{t:.3g}" for t in ticks], fontsize=7)
    bar.minorticks_off()
    bar.set_label("RMSE / best baseline RMSE (log scale)", fontsize=8)
    fig.suptitle(f"geofusion scorecard — {_provenance(card)}\n"
                 "cell: the model's RMSE over the best baseline's (blue < 1 better, red > 1 "
                 "worse); framed: 95 % interval wholly below / above the baseline; grey: no "
                 "value", fontsize=9)
    return fig


def save_scorecard_figure(card: dict[str, Any], path: str | Path,
                          columns: tuple[tuple[str, str], ...] | str = DEFAULT_COLUMNS,
                          dpi: int = 130) -> Path:
    """Draw :func:`scorecard_figure` and write it to ``path`` (format from the suffix)
    atomically; returns ``path``."""
    fig = scorecard_figure(card, columns)
    path = Path(path)
    with atomic_path(path) as staged:
        fig.savefig(staged, dpi=dpi)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geofusion.headline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="reports/results.json",
                        help="a scorecard written by the pipeline (default: %(default)s)")
    parser.add_argument("--figure", metavar="OUT.png", type=Path,
                        help="write the scorecard figure there instead of printing markdown")
    parser.add_argument("--all-columns", action="store_true",
                        help="with --figure: every missing fraction, lead and observed "
                             "fraction of the card, not only the README's columns")
    args = parser.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        print(f"no scorecard at {path}: run `make reports` first, or pass the path of a "
              "results.json", file=sys.stderr)
        return 2
    card = json.loads(path.read_text())
    if args.figure is not None:
        out = save_scorecard_figure(card, args.figure,
                                    "all" if args.all_columns else DEFAULT_COLUMNS)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    print(headline_markdown(card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
