"""Line plots of scores: robustness to sparsity and noise, skill against lead, training curves.

Every function takes the long tables the scoring modules return
(:meth:`geofusion.reconstruction_scores.SparsityEvaluation.curves`,
:func:`geofusion.forecasting.score_forecasts`) or training histories, draws one figure and
returns it; ``synthetic=True`` labels the title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from geofusion.reconstruction_scores import relative_skill

__all__ = ["plot_robustness_curves", "plot_histories", "with_intervals"]

_DASHES = {"pixel": "-", "patch": "--", "swath": ":"}


def _tag(synthetic: bool) -> str:
    return " (synthetic)" if synthetic else ""


def plot_robustness_curves(curves: pd.DataFrame, mode: str, units: str = "",
                           training_kind: str | None = None,
                           labels: Mapping[str, str] | None = None, reference: str = "climatology",
                           synthetic: bool = False) -> Figure:
    """Reconstruction skill and latent cosine against the missing fraction, and against noise.

    ``curves``: :meth:`SparsityEvaluation.curves` over kinds, missing fractions and noise stds;
    shaded bands are the 95 % block-bootstrap intervals of the ``training_kind`` curves.
    Panels: (1) mean over variables of RMSE / RMSE of ``reference`` against the missing
    fraction (no noise), one line per model and mask kind (solid pixel, dashed patch, dotted
    swath; thick for ``training_kind``); (2) the RMSE of ``mode`` in ``units``; (3) the centred
    latent cosine to the complete day (latent models only); (4) that cosine against the noise
    std with nothing missing.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import pandas as pd
        >>> curves = pd.DataFrame([{"model": m, "kind": "pixel", "missing_fraction": r,
        ...     "noise_std": 0.0, "variable": "t", "rmse": 1.0 + r, "centred_cosine": 1 - r,
        ...     "cosine": 1.0} for m in ("ae", "climatology") for r in (0.0, 0.5)])
        >>> len(plot_robustness_curves(curves, "t", "K").axes)
        4
    """
    labels = dict(labels or {})
    skill = relative_skill(curves, reference).reset_index()
    clean = skill[skill["noise_std"] == 0]
    mode_rmse = curves[(curves["variable"] == mode) & (curves["noise_std"] == 0)]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6), layout="constrained")
    models = [m for m in dict.fromkeys(curves["model"]) if m != reference]
    for i, name in enumerate(models):
        colour = f"C{i}"
        for kind in dict.fromkeys(clean["kind"]):
            style = {"ls": _DASHES.get(kind, "-"), "color": colour, "marker": ".",
                     "lw": 2.2 if kind == training_kind else 1.2}
            rows = clean[(clean["model"] == name) & (clean["kind"] == kind)]
            axes[0].plot(rows["missing_fraction"], rows["rmse_over_reference"],
                         label=f"{labels.get(name, name)}, {kind}", **style)
            rmse = mode_rmse[(mode_rmse["model"] == name) & (mode_rmse["kind"] == kind)]
            axes[1].plot(rmse["missing_fraction"], rmse["rmse"], **style)
            axes[2].plot(rows["missing_fraction"], rows["centred_cosine"], **style)
            if kind == training_kind and "rmse_low" in rmse:  # 95 % intervals, training kind
                axes[1].fill_between(rmse["missing_fraction"], rmse["rmse_low"],
                                     rmse["rmse_high"], color=colour, alpha=0.15, lw=0)
                band = curves[(curves["model"] == name) & (curves["kind"] == kind)
                              & (curves["noise_std"] == 0)].drop_duplicates("missing_fraction")
                axes[2].fill_between(band["missing_fraction"], band["centred_cosine_low"],
                                     band["centred_cosine_high"], color=colour, alpha=0.15,
                                     lw=0)
        noisy = skill[(skill["model"] == name) & (skill["missing_fraction"] == 0)]
        axes[3].plot(noisy["noise_std"], noisy["centred_cosine"], "-o", color=colour,
                     label=labels.get(name, name))
    reference_rmse = mode_rmse[mode_rmse["model"] == reference]["rmse"]
    axes[0].axhline(1.0, color="grey", lw=0.8, label=labels.get(reference, reference))
    if len(reference_rmse):
        axes[1].axhline(float(reference_rmse.iloc[0]), color="grey", lw=0.8)
    ref_label = labels.get(reference, reference)
    axes[0].set(xlabel="missing fraction", ylabel=f"RMSE / {ref_label} RMSE (mean of modes)",
                title="reconstruction skill")
    axes[1].set(xlabel="missing fraction", ylabel=f"RMSE [{units}]",
                title=f"{mode} reconstruction RMSE")
    axes[2].set(xlabel="missing fraction", ylabel="centred cosine to the complete day",
                title="latent distance")
    axes[3].set(xlabel="noise std (standardised)", ylabel="centred cosine to the complete day",
                title="noise, nothing missing")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=7)
    axes[3].legend(fontsize=7)
    n_days = curves.attrs.get("n_days")
    days = f", {n_days} validation days" if n_days else ""
    fig.suptitle(f"Robustness to sparsity and noise{days}" + _tag(synthetic))
    return fig


def plot_histories(histories: Mapping[str, pd.DataFrame], columns: Sequence[str] = ("loss",),
                   ylabel: str = "loss", title: str = "", log: bool = True,
                   synthetic: bool = False) -> Figure:
    """Per-epoch training curves: one colour per model, solid for ``columns[0]`` (training),
    dashed for ``columns[1:]`` (e.g. ``valid_loss``) where a history has them."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, history in histories.items():
        line = None
        for j, column in enumerate(columns):
            if column not in history:
                continue
            style = "o-" if j == 0 else "--"
            kwargs = {} if line is None else {"color": line.get_color()}
            (drawn,) = ax.plot(history["epoch"], history[column], style,
                               label=f"{name}, {column}", **kwargs)
            line = line or drawn
    ax.set(xlabel="epoch", ylabel=ylabel, title=title + _tag(synthetic))
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    return fig


def with_intervals(table: pd.DataFrame, index: str | Sequence[str], columns: str,
                   value: str = "rmse", digits: int = 3) -> pd.DataFrame:
    """A wide table of ``"estimate [low, high]"`` strings from a long table with the columns
    ``value``, ``value_low`` and ``value_high`` (e.g. :meth:`SparsityEvaluation.curves`), for
    showing each score with its 95 % interval.

    Example:
        >>> import pandas as pd
        >>> long = pd.DataFrame({"model": ["a"], "variable": ["t"], "rmse": [1.234],
        ...                      "rmse_low": [1.1], "rmse_high": [1.4]})
        >>> with_intervals(long, "model", "variable", digits=2).loc["a", "t"]
        '1.2 [1.1, 1.4]'
    """
    for column in (value, f"{value}_low", f"{value}_high"):
        if column not in table:
            raise ValueError(f"the table has no column {column!r}; pass a long table with "
                             f"{value}, {value}_low and {value}_high (e.g. "
                             "SparsityEvaluation.curves)")
    text = table.assign(_text=[f"{v:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"
                               for v, lo, hi in zip(table[value], table[f"{value}_low"],
                                                    table[f"{value}_high"], strict=True)])
    return text.pivot_table(index=index, columns=columns, values="_text", aggfunc="first",
                            sort=False)
