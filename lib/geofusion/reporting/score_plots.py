"""Line plots of scores: robustness to sparsity and noise, skill against lead, training curves.

Every function takes the long tables the scoring modules return
(:meth:`geofusion.experiments.sparsity_study.SparsityEvaluation.curves`,
:func:`geofusion.downstream.forecast_scores.score_forecasts`) or training histories, draws one
figure and
returns it; ``synthetic=True`` labels the title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from geofusion.experiments.sparsity_study import SparsityEvaluation, relative_skill
from geofusion.learning.training import describe_stop
from geofusion.reporting.plotting import plot_latlon_grid

__all__ = ["plot_robustness_curves", "plot_histories", "with_intervals", "plot_lead_curves",
           "plot_mask_ratio_curves", "plot_training_terms", "plot_reconstruction_panels"]

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
    dashed for ``columns[1:]`` (e.g. ``valid_loss``) where a history has them.

    Where each run stopped and why is drawn too, for histories of
    :func:`geofusion.learning.training.fit`: a star on the best validation epoch (the weights kept
    when
    early stopping restores them), and below the axes one line per model from
    :func:`geofusion.learning.training.describe_stop` (e.g. "stopped after epoch 9 of 15: no
    validation
    improvement for 3 epochs; best validation loss 0.12 at epoch 6 (weights restored)").

    Example:
        >>> h = pd.DataFrame({"epoch": [1, 2, 3], "loss": [3.0, 2.0, 1.5],
        ...                   "valid_loss": [2.5, 2.0, 2.2]})
        >>> h.attrs.update(stop_reason="patience", epochs=10, patience=1, min_delta=0.0,
        ...                best_epoch=2, best_valid_loss=2.0, restored_best=True)
        >>> fig = plot_histories({"ae": h}, ("loss", "valid_loss"))
        >>> print(fig.texts[0].get_text().replace("; ", "\\n"))
        ae: stopped after epoch 3 of 10: no validation improvement for 1 epochs
        best validation loss 2 at epoch 2 (weights restored)
    """
    fig, ax = plt.subplots(figsize=(6, 3.2))
    captions = []
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
        best = history.attrs.get("best_epoch")
        if line is not None and best and "valid_loss" in columns and "valid_loss" in history:
            at_best = history.loc[history["epoch"] == best, "valid_loss"]
            ax.plot([best] * len(at_best), at_best, "*", markersize=12,
                    color=line.get_color(), label=f"{name}, best epoch {best}")
        if history.attrs.get("stop_reason") is not None:
            captions.append(f"{name}: {describe_stop(history)}")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title + _tag(synthetic))
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    if captions:
        # Below the axes, so the figure itself says where each run stopped and why.
        fig.text(0.01, -0.02, "\n".join(captions), fontsize=7, va="top", ha="left", wrap=True)
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


def plot_lead_curves(table: pd.DataFrame, channels: Sequence[str],
                     units: Mapping[str, str] | None = None,
                     styles: Mapping[str, str] | None = None, synthetic: bool = False) -> Figure:
    """RMSE (top) and ACC (bottom) against lead, one column per variable, one line per
    forecaster of ``table`` (:func:`geofusion.downstream.forecast_scores.score_forecasts`), with 95
    %
    intervals as error bars where the table has ``rmse_low``/``acc_low``. ``styles``: forecaster
    -> matplotlib format (e.g. ``"k--"`` for persistence); ACC lines that are NaN (the
    climatology) are skipped.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import pandas as pd
        >>> t = pd.DataFrame([{"forecaster": f, "lead": k, "variable": "t", "rmse": k * s,
        ...     "acc": 1 - 0.1 * k} for f, s in (("lstm", 1.0), ("persistence", 2.0))
        ...     for k in (1, 2)])
        >>> len(plot_lead_curves(t, ["t"]).axes)
        2
    """
    units, styles = dict(units or {}), dict(styles or {})
    fig, axes = plt.subplots(2, len(channels), figsize=(3.3 * len(channels), 6), sharex=True,
                             squeeze=False, layout="constrained")
    for c, variable in enumerate(channels):
        rows = table[table["variable"] == variable]
        for name in dict.fromkeys(table["forecaster"]):
            line = rows[rows["forecaster"] == name].sort_values("lead")
            style = styles.get(name, "-o")
            for ax, score in ((axes[0, c], "rmse"), (axes[1, c], "acc")):
                if line[score].isna().all():
                    continue
                error = None
                if f"{score}_low" in line:
                    error = [line[score] - line[f"{score}_low"],
                             line[f"{score}_high"] - line[score]]
                ax.errorbar(line["lead"], line[score], yerr=error, fmt=style, ms=3, capsize=2,
                            label=name)
        axes[0, c].set(title=variable, ylabel=f"RMSE [{units.get(variable, '')}]")
        axes[1, c].set(xlabel="lead [days]", ylabel="ACC")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("RMSE and ACC against lead (95 % intervals)" + _tag(synthetic))
    return fig


def plot_mask_ratio_curves(table: pd.DataFrame, channels: Sequence[str],
                           reference: Mapping[str, float] | None = None,
                           units: Mapping[str, str] | None = None, kind: str = "pixel",
                           reference_label: str = "persistence (complete)",
                           synthetic: bool = False) -> Figure:
    """Lead-1 RMSE against the missing fraction of the forecast's input, one panel per
    variable (``table``: :func:`geofusion.downstream.forecast_scores.skill_vs_mask_ratio`), with a
    horizontal ``reference`` per variable (e.g. persistence of the complete field)."""
    units = dict(units or {})
    fig, axes = plt.subplots(1, len(channels), figsize=(3.3 * len(channels), 3.2),
                             squeeze=False, layout="constrained")
    for c, variable in enumerate(channels):
        ax = axes[0, c]
        rows = table[table["variable"] == variable]
        for name in dict.fromkeys(table["forecaster"]):
            line = rows[rows["forecaster"] == name].sort_values("ratio")
            ax.plot(line["ratio"], line["rmse"], "-o", ms=3, label=name)
        if reference is not None:
            ax.axhline(reference[variable], color="k", ls="--", lw=0.8, label=reference_label)
        ax.set(title=variable, xlabel="missing fraction of the context",
               ylabel=f"RMSE [{units.get(variable, '')}]")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"lead-1 RMSE against the missing fraction of the input ({kind} masks)"
                 + _tag(synthetic))
    return fig


def plot_training_terms(histories: Mapping[str, pd.DataFrame],
                        frozen_history: pd.DataFrame | None = None,
                        synthetic: bool = False) -> Figure:
    """Both terms of every joint objective per epoch (notebook 07), one panel per scheme:
    the contrastive terms on the left axis (``contrastive``, ``masked_contrastive``), the
    reconstruction MSE on the right one, Quetin's ``alpha`` printed at each point; a last
    panel for the decoder on the frozen encoder (``frozen_history["loss"]``)."""
    panels = len(histories) + (frozen_history is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.4), squeeze=False,
                             layout="constrained")
    for ax, (scheme, history) in zip(axes[0], histories.items(), strict=False):
        ax.plot(history["epoch"], history["contrastive"], "o-", color="tab:blue",
                label="contrastive")
        if "masked_contrastive" in history:
            ax.plot(history["epoch"], history["masked_contrastive"], "s--", color="tab:cyan",
                    label="masked contrastive")
        ax.set(xlabel="epoch", ylabel="Barlow Twins loss", title=scheme)
        right = ax.twinx()
        right.plot(history["epoch"], history["reconstruction"], "o-", color="tab:red",
                   label="reconstruction")
        right.set_ylabel("reconstruction MSE", color="tab:red")
        if "alpha" in history:
            for epoch, alpha, value in zip(history["epoch"], history["alpha"],
                                           history["reconstruction"], strict=True):
                right.annotate(f"a={alpha:.2f}", (epoch, value), textcoords="offset points",
                               xytext=(0, 6), fontsize=7)
        lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], fontsize=7)
    if frozen_history is not None:
        ax = axes[0, -1]
        ax.plot(frozen_history["epoch"], frozen_history["loss"], "o-", color="tab:red")
        ax.set(xlabel="epoch", ylabel="reconstruction MSE", title="(a) frozen encoder + decoder")
    fig.suptitle("Training terms per scheme" + _tag(synthetic))
    return fig


def plot_reconstruction_panels(evaluation: SparsityEvaluation, day: int, kind: str,
                               ratios: Sequence[float], mode: str, lon: Sequence[float],
                               labels: Mapping[str, str] | None = None, date: str = "",
                               units: str = "", synthetic: bool = False) -> Figure:
    """One evaluation day seen through ``kind`` masks at each of ``ratios`` (top row, grey =
    missing) and every model's reconstruction of the complete day from it (one row per model,
    the centred latent cosine of that day in the title of latent models), all of ``mode`` on
    the colour scale of the complete day. The observations are those the scores use."""
    labels = dict(labels or {})
    c = evaluation.channels.index(mode)
    truth = evaluation.truth[day, c]
    panels = [[(evaluation.reconstruct_days(next(iter(evaluation.models)), [day], kind, r)[1][0, c],
                f"{kind}, {r:.0%} missing") for r in ratios]]
    for name, model in evaluation.models.items():
        row = []
        for r in ratios:
            title = labels.get(name, name)
            if model.has_latent:
                title += f": cos {evaluation.day_cosine(name, day, kind, r):.2f}"
            row.append((evaluation.reconstruct_days(name, [day], kind, r)[0][0, c], title))
        panels.append(row)
    row_labels = ["observation", *[labels.get(n, n) for n in evaluation.models]]
    return plot_latlon_grid(panels, evaluation.lat, np.asarray(lon), row_labels,
                            f"{mode} [{units}]", f"Reconstructions of {date} from sparse "
                            "observations", synthetic, vmin=float(truth.min()),
                            vmax=float(truth.max()))


def plot_convergence(history: pd.DataFrame, references: Mapping[str, Mapping[str, float]],
                     name: str = "model", ylabel: str = "loss", title: str = "",
                     log: bool = True, synthetic: bool = False) -> Figure:
    """A model's training and validation loss per epoch (:func:`plot_histories`) against
    reference losses on the same days, drawn as horizontal lines: ``references`` maps a
    reference name (e.g. ``"EOF code (k = 64)"``) to ``{"loss": value on the training days,
    "valid_loss": value on the validation days}``, the same loss (solid: training, dashed:
    validation), so the figure shows whether and when the model reaches the bar.

    Example:
        >>> h = pd.DataFrame({"epoch": [1, 2], "loss": [3.0, 2.0], "valid_loss": [2.5, 2.2]})
        >>> fig = plot_convergence(h, {"EOF": {"loss": 1.9, "valid_loss": 2.1}}, "ae")
        >>> sorted(line.get_label() for line in fig.axes[0].lines)[:2]
        ['EOF, loss', 'EOF, valid_loss']
    """
    fig = plot_histories({name: history}, ("loss", "valid_loss"), ylabel, title, log,
                         synthetic)
    ax = fig.axes[0]
    for i, (reference, values) in enumerate(references.items()):
        colour = f"C{(i + 3) % 10}"
        for column, style in (("loss", "-"), ("valid_loss", "--")):
            if values.get(column) is not None:
                ax.axhline(values[column], color=colour, linestyle=style, linewidth=1,
                           label=f"{reference}, {column}")
    ax.legend(fontsize=7)
    return fig
