"""Interactive explorers (ipywidgets) for the notebooks, drawn with matplotlib.

:class:`SparsityExplorer` (notebook 06): pick the missing fraction, mask kind, noise level and
variable; the figure shows one validation day, its observation and each model's reconstruction
of the complete day, with the centred latent cosine of the observation to the complete day.

:class:`AssimilationExplorer` (notebook 10): pick the observed fraction, the noise level, the
cycle day and the variable; the figure shows the truth, the observation and every scheme's
analysis of that day from the cycled experiment.

Widgets under a notebook executor. When a notebook runs without a front end (papermill,
nbclient), output captured by a widget's ``Output`` makes the executor send the widget state
back to the kernel, which can hang the run (nbclient issue 312, papermill issue 723). So
:meth:`SparsityExplorer.show` displays the controls and draws the *initial* state in the cell's
own output, not inside the widget; the widget's callback only draws once a control moves (a
live kernel). The HTML report thus shows the initial figure too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch.nn.functional as F
from IPython.display import display
from matplotlib.figure import Figure

from geofusion.data.observations import MASK_KINDS
from geofusion.experiments.sparsity_study import SparsityEvaluation
from geofusion.reporting.plotting import draw_latlon

__all__ = ["SparsityExplorer", "AssimilationExplorer"]


class SparsityExplorer:
    """One validation day seen through any observation, and every model's reconstruction.

    The observation of the day is exactly the one :class:`SparsityEvaluation` scores for the
    same ``(kind, ratio, noise)`` (same mask generator, same noise), so the explorer shows a
    day of the robustness curves.

    Args:
        evaluation: the models, evaluation days and observation settings.
        day: index of the day among the evaluation days.
        lon: ``(W,)`` longitudes in degrees east (the latitudes come from ``evaluation``).
        date: printed in the titles.
        labels: model name -> short label for the panels (default: the names).
        units: variable -> units for the colour bar.
        synthetic: adds "(synthetic)" to the title.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import numpy as np, torch
        >>> from geofusion.learning.methods import build_method
        >>> from geofusion.downstream.reconstruction import LatentReconstructor
        >>> from geofusion.experiments.sparsity_study import SparsityEvaluation
        >>> ae = build_method("autoencoder", grid=(8, 16), width=2, latent_dim=4)
        >>> ev = SparsityEvaluation({"ae": LatentReconstructor(ae, ae.decoder)},
        ...     torch.randn(4, 5, 8, 16), np.arange(4).astype("datetime64[D]"),
        ...     np.linspace(-80, 80, 8), lambda x, t=None: x, list("abcde"))
        >>> explorer = SparsityExplorer(ev, 0, np.arange(0, 360, 22.5))
        >>> explorer.figure(0.5, "swath", 0.0, "a")._suptitle.get_text()
        'swath mask, 50% missing, noise std 0: sparse observation explorer'
    """

    def __init__(self, evaluation: SparsityEvaluation, day: int, lon: Any, date: str = "",
                 labels: Mapping[str, str] | None = None,
                 units: Mapping[str, str] | None = None, synthetic: bool = False) -> None:
        if not 0 <= day < len(evaluation.fields):
            raise ValueError(f"day must index one of the {len(evaluation.fields)} evaluation "
                             f"days, got {day}")
        self.evaluation, self.day, self.lon = evaluation, day, np.asarray(lon)
        self.date, self.synthetic = date, synthetic
        self.labels = {name: (labels or {}).get(name, name) for name in evaluation.models}
        self.units = dict(units or {})
        self.current: Figure | None = None  # the figure the controls drew last
        self._live = False

    def title(self, ratio: float, kind: str, noise: float) -> str:
        """The figure title: mask kind, missing fraction and noise level."""
        title = f"{kind} mask, {ratio:.0%} missing, noise std {noise:g}: "
        return title + "sparse observation explorer" + (" (synthetic)" if self.synthetic else "")

    def figure(self, ratio: float, kind: str, noise: float, mode: str) -> Figure:
        """Draw the state ``(ratio, kind, noise, mode)``: the complete day and its observation
        (top), the latent cosines (top right), each model's reconstruction (bottom), all of
        ``mode`` in physical units on the colour scale of the complete day."""
        ev = self.evaluation
        if mode not in ev.channels:
            raise ValueError(f"mode must be one of {ev.channels}, got {mode!r}")
        c = ev.channels.index(mode)
        fields, mask = ev.observe(kind, ratio, noise, [self.day])
        truth = ev.truth[self.day, c]
        limits = {"vmin": float(truth.min()), "vmax": float(truth.max())}
        names = list(ev.models)
        ncols = max(3, len(names))
        fig, axes = plt.subplots(2, ncols, figsize=(3.7 * ncols, 4.6), layout="constrained",
                                 squeeze=False)
        draw_latlon(axes[0, 0], truth, ev.lat, self.lon, f"complete {mode}, {self.date}",
                    **limits)
        observation = np.where(mask[0].numpy(),
                               ev.physical(fields.numpy(), [self.day])[0, c], np.nan)
        draw_latlon(axes[0, 1], observation, ev.lat, self.lon,
                    f"observation: {kind}, {ratio:.0%} missing, noise {noise:g}", **limits)
        cosines = {}
        for ax, name in zip(axes[1], names, strict=False):
            model = ev.models[name]
            if model.has_latent:
                z = model.latents(fields, mask)
                mu = ev.centres[name]
                cosines[self.labels[name]] = float(F.cosine_similarity(
                    z[0] - mu, ev.complete_latents[name][self.day] - mu, dim=0))
                standardised = model.decode(z)
            else:
                standardised = model.reconstruct(fields, mask, ev.times[[self.day]], noise)
            reconstruction = ev.physical(standardised.numpy(), [self.day])[0, c]
            mesh = draw_latlon(ax, reconstruction, ev.lat, self.lon,
                               f"{self.labels[name]} reconstruction", **limits)
        for ax in axes[1, len(names):]:
            ax.remove()
        fig.colorbar(mesh, ax=axes[1, len(names) - 1], shrink=0.8, label=self.units.get(mode, ""))
        bars = axes[0, 2]
        bars.barh(list(cosines), list(cosines.values()),
                  color=[f"C{i}" for i in range(len(cosines))])
        bars.set(xlim=(-0.2, 1.0), xlabel="centred cosine to the complete day",
                 title="latent distance")
        for ax in axes[0, 3:]:
            ax.remove()
        fig.suptitle(self.title(ratio, kind, noise))
        return fig

    def _redraw(self, ratio: float, kind: str, noise: float, mode: str) -> None:
        if not self._live:  # interactive() calls once while it is built: drawn by show()
            return
        if self.current is not None:
            plt.close(self.current)
        self.current = self.figure(ratio, kind, noise, mode)
        plt.show()

    def controls(self, ratio: float = 0.5, kind: str = "pixel", noise: float = 0.0,
                 mode: str | None = None, max_ratio: float = 0.9) -> widgets.interactive:
        """The widget: sliders for the missing fraction and noise std, drop-downs for the mask
        kind and the variable; moving one redraws :meth:`figure` (kept in ``current``)."""
        mode = mode if mode is not None else self.evaluation.channels[0]
        if kind not in MASK_KINDS:
            raise ValueError(f"kind must be one of {MASK_KINDS}, got {kind!r}")
        self._live = False
        widget = widgets.interactive(
            self._redraw,
            ratio=widgets.FloatSlider(value=ratio, min=0.0, max=max_ratio, step=0.05,
                                      description="missing"),
            kind=widgets.Dropdown(options=list(MASK_KINDS), value=kind, description="mask kind"),
            noise=widgets.FloatSlider(value=noise, min=0.0, max=1.0, step=0.05,
                                      description="noise std"),
            mode=widgets.Dropdown(options=self.evaluation.channels, value=mode,
                                  description="mode"))
        self._live = True
        return widget

    def show(self, ratio: float = 0.5, kind: str = "pixel", noise: float = 0.0,
             mode: str | None = None) -> widgets.interactive:
        """Display the controls, then draw the initial state in the cell output (module
        docstring: never inside the widget under an executor); returns the widget."""
        widget = self.controls(ratio, kind, noise, mode)
        display(widget)
        self.current = self.figure(**widget.kwargs)
        plt.show()
        return widget


class AssimilationExplorer:
    """One day of the cycled assimilation experiment: truth, observation and the analyses.

    Chooses among the experiments that
    :func:`geofusion.experiments.assimilation_study.run_assimilation_experiment` ran (observed
    fraction x noise), so moving a control shows a cycle that was scored, not a new one.
    Same display rule as :class:`SparsityExplorer` (initial state in the cell output).

    Args:
        results: :class:`geofusion.experiments.assimilation_study.AssimilationResults`.
        schemes: the analyses to draw (default: every scheme but the free run).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> from types import SimpleNamespace
        >>> import numpy as np
        >>> r = SimpleNamespace(experiments=[(0.1, 0.1)], channels=["a"], units={"a": "K"},
        ...     truth=np.zeros((2, 1, 4, 8)), observations=np.zeros((2, 1, 1, 4, 8)),
        ...     observed=np.ones((2, 1, 4, 8), bool), analyses={"x": np.zeros((2, 1, 1, 4, 8))},
        ...     mse={"x": np.ones((2, 1, 1))}, lat=np.linspace(-60, 60, 4),
        ...     lon=np.arange(0, 360, 45), times=np.arange(2).astype("datetime64[D]"),
        ...     synthetic=True, to_physical=lambda x, day: x,
        ...     experiment=lambda f, s: 0)
        >>> AssimilationExplorer(r).figure(0.1, 0.1, 1, "a")._suptitle.get_text()
        '10% observed, noise std 0.1, day 1 (1970-01-02): assimilation explorer (synthetic)'
    """

    def __init__(self, results: Any, schemes: list[str] | None = None) -> None:
        self.results = results
        self.schemes = schemes if schemes is not None else \
            [s for s in results.analyses if s != "free_run"]
        unknown = [s for s in self.schemes if s not in results.analyses]
        if unknown:
            raise ValueError(f"unknown schemes {unknown}; the results hold "
                             f"{list(results.analyses)}")
        self.current: Figure | None = None
        self._live = False

    def title(self, fraction: float, noise: float, day: int) -> str:
        date = str(self.results.times[day])[:10]
        return (f"{fraction:.0%} observed, noise std {noise:g}, day {day} ({date}): "
                "assimilation explorer" + (" (synthetic)" if self.results.synthetic else ""))

    def figure(self, fraction: float, noise: float, day: int, mode: str) -> Figure:
        """Truth, observation and each scheme's analysis of ``mode`` on cycle day ``day``,
        physical units on the truth's colour scale, the day's RMSE in each title."""
        r = self.results
        if mode not in r.channels:
            raise ValueError(f"mode must be one of {r.channels}, got {mode!r}")
        if not 0 <= day < len(r.truth):
            raise ValueError(f"day must lie in [0, {len(r.truth)}), got {day}")
        e, c = r.experiment(fraction, noise), r.channels.index(mode)
        truth = r.to_physical(r.truth[day], day)[c]
        limits = {"vmin": float(truth.min()), "vmax": float(truth.max())}
        observation = np.where(r.observed[day, e], r.to_physical(r.observations[day, e], day)[c],
                               np.nan)
        panels = [(truth, f"truth {mode}"), (observation, "observation")]
        panels += [(r.to_physical(r.analyses[s][day, e], day)[c],
                    f"{s}: RMSE {np.sqrt(r.mse[s][day, e, c]):.3g}") for s in self.schemes]
        ncols = min(4, len(panels))
        nrows = -(-len(panels) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.1 * nrows + 0.5),
                                 layout="constrained", squeeze=False)
        used = list(axes.flat)[:len(panels)]
        for ax, (field, title) in zip(used, panels, strict=True):
            mesh = draw_latlon(ax, field, r.lat, r.lon, title, **limits)
        for ax in list(axes.flat)[len(panels):]:
            ax.remove()
        fig.colorbar(mesh, ax=used, shrink=0.7, label=r.units.get(mode, ""))
        fig.suptitle(self.title(fraction, noise, day))
        return fig

    def _redraw(self, fraction: float, noise: float, day: int, mode: str) -> None:
        if not self._live:
            return
        if self.current is not None:
            plt.close(self.current)
        self.current = self.figure(fraction, noise, day, mode)
        plt.show()

    def controls(self, fraction: float, noise: float, day: int = 0,
                 mode: str | None = None) -> widgets.interactive:
        """Selection sliders over the experiments' observed fractions and noise levels, a day
        slider and a variable drop-down; moving one redraws :meth:`figure`."""
        r = self.results
        fractions = sorted({f for f, _ in r.experiments})
        noises = sorted({s for _, s in r.experiments})
        self._live = False
        widget = widgets.interactive(
            self._redraw,
            fraction=widgets.SelectionSlider(options=fractions, value=fraction,
                                             description="observed"),
            noise=widgets.SelectionSlider(options=noises, value=noise, description="noise std"),
            day=widgets.IntSlider(value=day, min=0, max=len(r.truth) - 1, description="day"),
            mode=widgets.Dropdown(options=r.channels, value=mode or r.channels[0],
                                  description="mode"))
        self._live = True
        return widget

    def show(self, fraction: float, noise: float, day: int = 0,
             mode: str | None = None) -> widgets.interactive:
        """Display the controls and draw the initial state in the cell output."""
        widget = self.controls(fraction, noise, day, mode)
        display(widget)
        self.current = self.figure(**widget.kwargs)
        plt.show()
        return widget
