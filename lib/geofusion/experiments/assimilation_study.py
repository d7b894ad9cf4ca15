"""The cycling assimilation experiment of notebook 10: every scheme on the same days and data.

:func:`run_assimilation_experiment` takes a trained sparse-view forecaster (encoder, decoder,
latent LSTM: :class:`geofusion.downstream.forecasting.LatentForecaster`) and a grid of observing
systems
(observed fraction ``f`` x noise std ``sigma``, the project's masks of one kind and its
correlated noise). For each of the ``E = len(fractions) * len(noises)`` experiments it draws,
every day of the cycle, a sparse noisy observation of the truth (the days of one block,
``block``: the notebook cycles over the held-out **test** days), and cycles
side by side (:func:`geofusion.downstream.assimilation.run_cycle`):

- ``free_run``: no observations (upper bound);
- ``encode_only``: the encoded observation alone (the other bound);
- ``latent_3dvar``: variational analysis through the decoder with ``B`` from training-period
  latent forecast errors (diagonal or low-rank plus diagonal) and ``R`` from the noise model
  plus the decoder's representation error;
- ``latent_blend``: the Kalman-like latent blend, gains and the encoder's bias correction from
  training-year error statistics;

and, as classical references, field-space ``optimal_interpolation``
(:class:`geofusion.verification.optimal_interpolation.OptimalInterpolation`, day-of-year climatology
background), the ``climatology`` itself and two classical schemes **with memory**, the
counterparts of the latent cycles (issue 24):

- ``eof_3dvar``: reduced-rank 3D-Var in the space of the leading EOFs (as many as the latent
  has dimensions), cycled with the linear inverse model's one-day forecast as background
  (:class:`geofusion.verification.eof_3dvar.EOF3DVar`, the linear EOF twin of the latent LSTM);
- ``oi_damped_persistence``: optimal interpolation cycled with damped persistence of
  yesterday's analysis as background
  (:class:`geofusion.verification.optimal_interpolation.PersistenceOptimalInterpolation`).

Both estimate ``B`` from one-day errors started from the truth on training days, and multiply
it by an inflation chosen per experiment among :data:`INFLATIONS` on a cycle over validation
days (:func:`select_inflation`). Every latent analysis starts from a climatological spin-up (the
latents of the climatology of the ``context`` days before the cycle), the classical ones from a
zero anomaly. :func:`assess_targets` measures issue 24's targets with paired intervals.

Error statistics come from **training** days only: ``B`` from one-day LSTM forecast errors of
the training latents (in-sample, so the LSTM's error is underestimated: 3D-Var and the blend
then lean on the background somewhat too much), ``R_z`` of the blend from encoding sparse
noisy observations of ``n_stat_days`` training days, the decoder's error variance likewise.

:class:`AssimilationResults` holds the analyses and scores (lat-weighted RMSE per day,
experiment and variable in physical units) and turns them into the table, the scorecard
section (with 95 % block-bootstrap intervals over the cycle days) and the figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from geofusion.data.observations import Observation, add_noise, apply_mask, make_mask
from geofusion.downstream.assimilation import (
    EncodeOnly,
    FreeRun,
    Latent3DVar,
    LatentBlend,
    LatentCovariance,
    ObservationError,
    decoder_error_variance,
    differentiable_decoder,
    encoder_errors,
    latent_forecast_errors,
    run_cycle,
    shrunk_covariance,
)
from geofusion.downstream.forecast_scores import takes_times
from geofusion.downstream.reconstruction import observation_generator
from geofusion.variables import UNITS
from geofusion.verification.baselines import climatology_forecast, training_climatology
from geofusion.verification.bootstrap import block_bootstrap_counts, bootstrap_rmse
from geofusion.verification.eof_3dvar import fit_eof_3dvar
from geofusion.verification.metrics import lat_weighted_mse
from geofusion.verification.optimal_interpolation import (
    fit_optimal_interpolation,
    fit_persistence_optimal_interpolation,
)

__all__ = ["SCHEMES", "LATENT_SCHEMES", "CLASSICAL_CYCLED", "INFLATIONS", "AssimilationResults",
           "draw_observations", "select_inflation", "assess_targets",
           "run_assimilation_experiment"]

#: The latent schemes, cycled with the LSTM background.
LATENT_SCHEMES: tuple[str, ...] = ("free_run", "encode_only", "latent_3dvar", "latent_blend")
#: The classical schemes with memory: the latent schemes' counterparts (issue 24).
CLASSICAL_CYCLED: tuple[str, ...] = ("eof_3dvar", "oi_damped_persistence")
#: Every scheme scored, latent ones first, then the classical references.
SCHEMES: tuple[str, ...] = (*LATENT_SCHEMES, *CLASSICAL_CYCLED, "optimal_interpolation",
                            "climatology")
#: Multipliers of ``B`` the classical cycled schemes choose from on validation days.
INFLATIONS: tuple[float, ...] = (1.0, 3.0, 9.0)
#: Offset of the validation cycle's noise seed from the test cycle's (same masks, new noise).
VALIDATION_NOISE_OFFSET = 7919


@dataclass
class AssimilationResults:
    """Analyses and scores of every scheme over one cycle (module docstring).

    Attributes:
        experiments: ``E`` pairs ``(observed fraction, noise std)``.
        truth: ``(T, C, H, W)`` the cycle's days in the model's space; times: ``(T,)``.
        observations, observed: ``(T, E, C, H, W)`` observed values (0 where missing) and
            bool masks ``(T, E, H, W)``.
        analyses: scheme -> ``(T, E, C, H, W)`` analyses in the model's space.
        mse: scheme -> ``(T, E, C)`` lat-weighted MSE per day in squared physical units.
        costs: per cycle day, the 3D-Var cost ``J`` (summed over experiments) per iteration.
        channels, units, lat, lon, synthetic: for tables and figures.
        settings: the experiment's settings (JSON-friendly), with ``block``, the block of
            days cycled and scored.
        destandardise: ``prepared.destandardise`` (``(x, times)``; a one-argument callable
            in the report space); :meth:`to_physical` applies it to one day.
    """

    experiments: list[tuple[float, float]]
    truth: np.ndarray
    times: np.ndarray
    observations: np.ndarray
    observed: np.ndarray
    analyses: dict[str, np.ndarray]
    mse: dict[str, np.ndarray]
    costs: list[list[float]]
    channels: list[str]
    units: dict[str, str]
    lat: np.ndarray
    lon: np.ndarray
    synthetic: bool
    settings: dict[str, Any] = field(default_factory=dict)
    destandardise: Any = None

    def to_physical(self, fields: np.ndarray, day: int) -> np.ndarray:
        """Fields ``(..., C, H, W)`` of cycle day ``day`` (e.g. ``truth[day]`` or
        ``analyses[s][day, e]``) in physical units."""
        x = np.asarray(fields)
        if takes_times(self.destandardise):
            flat = x.reshape(-1, *x.shape[-3:])
            days = np.repeat(np.asarray(self.times)[day:day + 1], len(flat))
            return np.asarray(self.destandardise(flat, days)).reshape(x.shape)
        return np.asarray(self.destandardise(x))

    def experiment(self, fraction: float, noise: float) -> int:
        """Index of the experiment ``(fraction, noise)``."""
        for e, (f, s) in enumerate(self.experiments):
            if np.isclose(f, fraction) and np.isclose(s, noise):
                return e
        raise ValueError(f"no experiment with observed fraction {fraction} and noise {noise}; "
                         f"they are {self.experiments}")

    def rmse_per_day(self, scheme: str, fraction: float, noise: float) -> pd.DataFrame:
        """Lat-weighted RMSE per cycle day (index: date) and variable, physical units."""
        e = self.experiment(fraction, noise)
        return pd.DataFrame(np.sqrt(self.mse[scheme][:, e]), columns=self.channels,
                            index=pd.DatetimeIndex(self.times, name="date"))

    def table(self, block: int = 7, seed: int = 0) -> pd.DataFrame:
        """Time-mean RMSE (root of the mean MSE over the cycle) per scheme, observed fraction,
        noise and variable, with its 95 % block-bootstrap interval (``low``, ``high``)."""
        rows = []
        for scheme, mse in self.mse.items():
            for e, (fraction, noise) in enumerate(self.experiments):
                ci = bootstrap_rmse(mse[:, e], block=block, seed=seed)
                for c, variable in enumerate(self.channels):
                    rows.append({"scheme": scheme, "observed_fraction": fraction,
                                 "noise_std": noise, "variable": variable,
                                 "rmse": float(ci.estimate[c]), "low": float(ci.low[c]),
                                 "high": float(ci.high[c])})
        return pd.DataFrame(rows)

    def wide(self, variable: str, noise: float) -> pd.DataFrame:
        """``rmse [low, high]`` strings, schemes x observed fractions, for one variable and
        noise level (the notebook's table)."""
        t = self.table()
        t = t[(t.variable == variable) & np.isclose(t.noise_std, noise)]
        text = t.apply(lambda r: f"{r.rmse:.3g} [{r.low:.3g}, {r.high:.3g}]", axis=1)
        return (t.assign(value=text).pivot(index="scheme", columns="observed_fraction",
                                          values="value").loc[list(self.mse)])

    def scorecard(self, noise: float) -> dict[str, Any]:
        """The ``assimilation`` section of ``reports/results.json`` at one noise level:
        ``{scheme: {observed_fraction: {variable: rmse}}}`` and its ``intervals``."""
        table = self.table()
        table = table[np.isclose(table.noise_std, noise)]
        values: dict[str, Any] = {}
        intervals: dict[str, Any] = {}
        for (scheme, fraction), rows in table.groupby(["scheme", "observed_fraction"],
                                                      sort=False):
            key = f"{fraction:g}"
            values.setdefault(scheme, {})[key] = dict(zip(rows.variable, rows.rmse, strict=True))
            intervals.setdefault(scheme, {})[key] = {
                v: [lo, hi] for v, lo, hi in zip(rows.variable, rows.low, rows.high,
                                                 strict=True)}
        return {"assimilation": values, "intervals": {"assimilation": intervals}}

    def beats(self, scheme: str, others: Sequence[str], variables: Sequence[str],
              fraction: float, noise: float) -> pd.DataFrame:
        """Whether ``scheme``'s time-mean RMSE is below each of ``others`` per variable."""
        t = self.table()
        t = t[np.isclose(t.observed_fraction, fraction) & np.isclose(t.noise_std, noise)]
        rmse = t.pivot(index="scheme", columns="variable", values="rmse")
        return pd.DataFrame({other: rmse.loc[scheme, list(variables)]
                             < rmse.loc[other, list(variables)] for other in others}).T

    def plot_rmse_through_cycle(self, fraction: float, noise: float,
                                variables: Sequence[str] | None = None) -> Figure:
        """Analysis RMSE per day of the cycle for every scheme, one panel per variable."""
        variables = list(variables or self.channels)
        fig, axes = plt.subplots(1, len(variables), figsize=(3.6 * len(variables), 3.2),
                                 layout="constrained", squeeze=False)
        styles = {"free_run": "k--", "encode_only": "C0-", "latent_3dvar": "C3-",
                  "latent_blend": "C2-", "eof_3dvar": "C4--", "oi_damped_persistence": "C5--",
                  "optimal_interpolation": "C1-", "climatology": "k:"}
        for ax, variable in zip(axes[0], variables, strict=True):
            for scheme in self.mse:
                series = self.rmse_per_day(scheme, fraction, noise)[variable]
                ax.plot(np.arange(len(series)), series.to_numpy(), styles.get(scheme, "-"),
                        lw=1.2, label=scheme)
            ax.set(title=variable, xlabel="day of the cycle",
                   ylabel=f"RMSE [{self.units.get(variable, '')}]")
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"Analysis RMSE through the cycle: {fraction:.0%} observed, noise std "
                     f"{noise:g}" + (" (synthetic)" if self.synthetic else ""))
        return fig

    def plot_costs(self, days: Sequence[int] | None = None) -> Figure:
        """The 3D-Var cost ``J`` against the iteration for some cycle days (log scale)."""
        days = list(days if days is not None else range(0, len(self.costs),
                                                        max(1, len(self.costs) // 5)))
        fig, ax = plt.subplots(figsize=(5.5, 3.2), layout="constrained")
        for day in days:
            ax.plot(self.costs[day], "-o", ms=2, label=f"day {day}")
        ax.set(xlabel="L-BFGS iteration", ylabel="J (all experiments)", yscale="log",
               title="Latent 3D-Var: cost during the minimisation")
        ax.legend(fontsize=7)
        return fig


def _physical(destandardise: Any, x: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``destandardise(x, times)`` (the days on the axis before the channels), or
    ``destandardise(x)`` for a one-argument callable."""
    if takes_times(destandardise):
        return np.asarray(destandardise(x, times))
    return np.asarray(destandardise(x))


def _observation(kind: str, fraction: float, noise: float, length: float) -> Observation:
    missing = 1.0 - fraction
    return Observation(kind=kind, min_ratio=missing, max_ratio=missing, noise_std=noise,
                       noise_length=length)


def draw_observations(truth: torch.Tensor, experiments: Sequence[tuple[float, float]],
                      kind: str = "pixel", noise_length: float = 2.0,
                      distinct_masks: int | None = None, seed: int = 0,
                      noise_seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each day's sparse noisy observation of ``truth`` ``(T, C, H, W)`` (standardised) in every
    experiment ``(observed fraction, noise std)``.

    Masks: ``distinct_masks`` ``k`` masks of ``kind`` per observed fraction, day ``t`` gets mask
    ``t mod k`` (None: a new mask every day), nested across fractions and the same at every
    noise level (:func:`geofusion.downstream.reconstruction.observation_generator`), as a fixed
    observing network that cycles through ``k`` configurations. Schemes that factorise a
    covariance per observed pattern (optimal interpolation, 3D-Var's ``R``) then factorise
    ``k`` times per experiment instead of ``T`` times. Noise:
    :func:`geofusion.data.observations.add_noise` (correlation length ``noise_length`` grid points),
    drawn anew for every day and experiment from ``noise_seed`` (None: ``seed``), so another
    block can be observed by the same network with other noise.

    Returns:
        ``(observations (T, E, C, H, W), observed (T, E, H, W))``, observations 0 where missing
        (:func:`geofusion.data.observations.apply_mask`).

    Example::

        >>> truth = torch.zeros(5, 2, 4, 8)
        >>> y, m = draw_observations(truth, [(0.25, 0.0), (0.5, 0.1)], distinct_masks=2)
        >>> tuple(y.shape), m[:, 0].float().mean().item(), bool((m[2] == m[0]).all())
        ((5, 2, 2, 4, 8), 0.25, True)
    """
    if truth.ndim != 4:
        raise ValueError(f"truth must be (T, C, H, W) fields, got shape {tuple(truth.shape)}")
    if distinct_masks is not None and distinct_masks < 1:
        raise ValueError(f"distinct_masks must be >= 1 (or None for a new mask every day), got "
                         f"{distinct_masks}")
    days, (h, w) = len(truth), truth.shape[-2:]
    k = days if distinct_masks is None else min(distinct_masks, days)
    noise_seed = seed if noise_seed is None else noise_seed
    values, masks = [], []
    for e, (fraction, noise) in enumerate(experiments):
        if not 0 < fraction <= 1:
            raise ValueError(f"observed fractions must lie in (0, 1], got {fraction}")
        mask = make_mask((k, h, w), 1.0 - fraction, kind,
                         observation_generator(seed, kind))[torch.arange(days) % k]
        noisy = (add_noise(truth, noise_length, noise,
                           torch.Generator().manual_seed(noise_seed + e))
                 if noise > 0 else truth)
        values.append(apply_mask(noisy, mask))
        masks.append(mask)
    return torch.stack(values, dim=1), torch.stack(masks, dim=1)


def select_inflation(cycle: Callable[[float, str], np.ndarray], valid_truth: Any, lat: Any,
                     n_experiments: int, inflations: Sequence[float] = INFLATIONS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A classical cycle's analyses with the multiplier of ``B`` chosen on validation days.

    For each candidate ``lam`` the cycle runs over the validation days (``cycle(lam,
    "valid")``), scored against ``valid_truth``, and over the scored block (``cycle(lam,
    "scored")``, kept, not looked at); each experiment then takes the scored-block analyses of
    the candidate with its lowest validation error. Running both cycles per candidate lets
    the two share the factorisations of their common observing network; the choice reads the
    validation errors only.

    Args:
        cycle: ``cycle(lam, block) -> analyses (T_block, E, C, H, W)``, ``block`` ``"valid"``
            or ``"scored"``, the model space.
        valid_truth: ``(T_valid, C, H, W)`` the validation days, same units.
        lat: latitudes of the grid.
        n_experiments: ``E``.
        inflations: the candidates, each > 0.

    Returns:
        ``(analyses (T, E, C, H, W), chosen (E,), mse (len(inflations), E))``; ``mse`` is the
        validation time-mean latitude-weighted MSE summed over the channels (the model
        space's standardised units weigh the variables alike); ties go to the first listed
        candidate.

    Example::

        >>> truth = np.zeros((3, 1, 2, 2))
        >>> def cycle(lam, block):   # validation error (lam - 2)^2; a perfect scored block at 4
        ...     bad = (lam - 2.0) if block == "valid" else (lam - 4.0)
        ...     return np.full((3, 2, 1, 2, 2), bad)
        >>> analyses, chosen, mse = select_inflation(cycle, truth, [-30.0, 30.0], 2,
        ...                                          [1.0, 2.0, 4.0])
        >>> chosen.tolist(), mse[:, 0].tolist(), float(analyses[0, 0, 0, 0, 0])
        ([2.0, 2.0], [1.0, 0.0, 4.0], -2.0)
    """
    candidates = np.asarray(list(inflations), dtype=np.float64)
    if candidates.size == 0 or not (candidates > 0).all():
        raise ValueError(f"inflations must be a non-empty list of multipliers > 0, got "
                         f"{list(inflations)}")
    target = np.asarray(valid_truth, dtype=np.float64)[:, None]
    mse, scored = [], []
    for lam in candidates:
        valid = np.asarray(cycle(float(lam), "valid"), dtype=np.float64)
        if valid.shape[:2] != (len(target), n_experiments):
            raise ValueError(f"the validation cycle returned {valid.shape}, expected "
                             f"({len(target)}, {n_experiments}, C, H, W)")
        mse.append(np.asarray(lat_weighted_mse(valid, target, lat)).mean(axis=0).sum(axis=-1))
        scored.append(cycle(float(lam), "scored"))
    mse_array = np.stack(mse)
    best = np.argmin(mse_array, axis=0)
    analyses = np.stack([scored[best[e]][:, e] for e in range(n_experiments)], axis=1)
    return analyses, candidates[best], mse_array


def assess_targets(results: AssimilationResults, noise: float, low_fraction: float = 0.02,
                   variables: Sequence[str] = ("geopotential", "2m_temperature"),
                   block: int = 7, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Issue 24's targets for notebook 10, measured on the scored block at one noise level.

    1. ``latent_3dvar`` at least as good as ``eof_3dvar`` (its classical twin: reduced-rank
       3D-Var cycled with the LIM) at **every** observed fraction;
    2. ``latent_3dvar`` better than climatology-background ``optimal_interpolation`` at
       ``low_fraction`` observed;

    for each of ``variables``. The difference ``RMSE(latent_3dvar) - RMSE(reference)``
    (physical units; < 0: latent 3D-Var better) comes with a 95 % **paired** circular
    block-bootstrap interval (both schemes' per-day MSEs resampled with the same days,
    :func:`geofusion.verification.bootstrap.block_bootstrap_counts`).

    Returns:
        One row per (target, observed fraction, variable): ``target``, ``reference``,
        ``observed_fraction``, ``variable``, ``rmse``, ``reference_rmse``, ``difference``,
        ``low``, ``high``, ``relative`` (difference / reference RMSE), ``met`` (target 1:
        ``difference <= 0``; target 2: ``< 0``) and ``evidence``: ``"clear"`` where the
        interval excludes 0, ``"within noise"`` otherwise.
    """
    needed = {"latent_3dvar", "eof_3dvar", "optimal_interpolation"}
    if not needed <= set(results.mse):
        raise ValueError(f"the results lack {sorted(needed - set(results.mse))}; run "
                         "run_assimilation_experiment with every scheme")
    fractions = sorted({f for f, s in results.experiments if np.isclose(s, noise)})
    if not fractions:
        raise ValueError(f"no experiment at noise {noise}; they are {results.experiments}")
    if not any(np.isclose(f, low_fraction) for f in fractions):
        raise ValueError(f"no experiment at observed fraction {low_fraction} and noise "
                         f"{noise}; observed fractions are {fractions}")
    unknown = [v for v in variables if v not in results.channels]
    if unknown:
        raise ValueError(f"unknown variables {unknown}; choose from {results.channels}")
    counts = block_bootstrap_counts(len(results.times), block, n_resamples, seed)
    plan = [("latent_3dvar <= eof_3dvar", "eof_3dvar", f) for f in fractions]
    plan.append((f"latent_3dvar < optimal_interpolation at {low_fraction:g}",
                 "optimal_interpolation", low_fraction))
    rows = []
    for target, reference, fraction in plan:
        e = results.experiment(fraction, noise)
        ours, theirs = results.mse["latent_3dvar"][:, e], results.mse[reference][:, e]
        resampled = (np.sqrt(counts @ ours / len(ours))
                     - np.sqrt(counts @ theirs / len(theirs)))            # (R, C)
        low, high = np.quantile(resampled, [0.025, 0.975], axis=0)
        for variable in variables:
            c = results.channels.index(variable)
            rmse, ref = float(np.sqrt(ours[:, c].mean())), float(np.sqrt(theirs[:, c].mean()))
            difference = rmse - ref
            strict = reference == "optimal_interpolation"
            rows.append({
                "target": target, "reference": reference, "observed_fraction": fraction,
                "variable": variable, "rmse": rmse, "reference_rmse": ref,
                "difference": difference, "low": float(low[c]), "high": float(high[c]),
                "relative": difference / ref,
                "met": bool(difference < 0 if strict else difference <= 0),
                "evidence": "clear" if high[c] < 0 or low[c] > 0 else "within noise"})
    return pd.DataFrame(rows)


def run_assimilation_experiment(
    forecaster: Any, prepared: Any, fractions: Sequence[float], noises: Sequence[float],
    kind: str = "pixel", noise_length: float = 2.0, days: int = 60, first_day: int = 0,
    b_rank: int = 0, var_iterations: int = 20, n_stat_days: int = 512,
    distinct_masks: int | None = None, seed: int = 0, progress: bool = True,
    block: str = "valid", eof_modes: int | None = None,
    inflations: Sequence[float] = INFLATIONS,
) -> AssimilationResults:
    """Cycle every scheme over ``days`` days of ``block`` for each (fraction, noise) experiment.

    Args:
        forecaster: the trained sparse-view
        :class:`geofusion.downstream.forecasting.LatentForecaster`
            (with ``latents["train"]``, as
            :func:`geofusion.downstream.forecasting.fit_latent_forecaster`
            returns it).
        prepared: :class:`geofusion.data.PreparedData`.
        fractions: observed fractions in (0, 1]; noises: noise std (standardised units).
        kind, noise_length: mask kind and noise correlation length (grid points).
        days: cycle length; first_day: its first day within ``block``.
        b_rank: rank of ``B``'s low-rank part (0 = diagonal).
        var_iterations: L-BFGS iterations per day.
        n_stat_days: training days for the encoder- and decoder-error statistics.
        distinct_masks: masks per observed fraction the cycle days rotate through
            (:func:`draw_observations`; None: a new mask every day).
        seed: observations and statistics draws.
        block: the days cycled and scored, ``"valid"`` or ``"test"`` (the notebook's: the
            held-out test block of a three-way split). Every statistic (``B``, ``R``, the
            encoder errors, the OI fit, the climatology) comes from training days whatever
            the block.
        eof_modes: EOF modes of ``eof_3dvar`` (None: the latent size, the equal-size twin).
        inflations: candidate multipliers of the classical cycled schemes' ``B``, chosen per
            experiment on a cycle over the first ``days`` validation days (same masks, other
            noise) when ``block`` is ``"test"``; with ``block="valid"`` there is no separate
            block to choose on and the first candidate is used.

    Returns:
        :class:`AssimilationResults`.
    """
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"observed fractions must lie in (0, 1], got {f}")
    if block not in ("valid", "test"):
        raise ValueError(f"block must be 'valid' or 'test' (never the training days the "
                         f"statistics come from), got {block!r}")
    block_fields, block_times = prepared.fields(block), prepared.times(block)
    if not 0 <= first_day < first_day + days <= len(block_fields):
        raise ValueError(f"the cycle (first_day {first_day}, {days} days) must lie within the "
                         f"{len(block_fields)} days of the {block} block")
    experiments = [(float(f), float(s)) for f in fractions for s in noises]
    truth = torch.as_tensor(block_fields[first_day:first_day + days])
    times = np.asarray(block_times[first_day:first_day + days])

    # Training-period error statistics
    rng = np.random.default_rng(seed)
    stat_days = np.sort(rng.choice(len(prepared.train), min(n_stat_days, len(prepared.train)),
                                   replace=False))
    stat_fields = torch.as_tensor(prepared.train[stat_days])
    background_errors = latent_forecast_errors(forecaster, forecaster.latents["train"])
    b = LatentCovariance.estimate(background_errors, rank=b_rank, seed=seed)
    representation = decoder_error_variance(forecaster, stat_fields)
    b_full = shrunk_covariance(background_errors)
    complete = forecaster.encode(stat_fields)
    gains, biases = [], []
    for e, (f, s) in enumerate(experiments):
        errors = encoder_errors(forecaster, stat_fields, _observation(kind, f, s, noise_length),
                                torch.Generator().manual_seed(seed + 1000 + e), complete)
        # The encoder's mean error is corrected before blending (LatentBlend: a gain from the
        # covariance alone over-trusts a biased input).
        biases.append(errors.mean(dim=0))
        gains.append(LatentBlend.from_covariances(b_full, shrunk_covariance(errors)).gain)

    # Observations of the cycle days, one observing system per experiment
    observations, observed = draw_observations(truth, experiments, kind, noise_length,
                                               distinct_masks, seed)
    encoded = torch.stack([forecaster.encode(observations[:, e], observed[:, e])
                           for e in range(len(experiments))], dim=1)

    # Climatological spin-up: the latents of the climatology of the days before the cycle
    clim = training_climatology(prepared)  # zero in the anomaly space
    before = times[0] - np.arange(forecaster.context, 0, -1).astype("timedelta64[D]")
    spin_up = forecaster.encode(torch.as_tensor(climatology_forecast(clim, before)))
    initial = spin_up[None].repeat(len(experiments), 1, 1)

    schemes = {
        "free_run": FreeRun(),
        "encode_only": EncodeOnly(encoded),
        "latent_3dvar": Latent3DVar(
            observations, observed, differentiable_decoder(forecaster), b,
            [ObservationError(s, noise_length, representation) for _, s in experiments],
            max_iter=var_iterations),
        "latent_blend": LatentBlend(torch.stack(gains), encoded, torch.stack(biases)),
    }
    analyses: dict[str, np.ndarray] = {}
    for name, scheme in schemes.items():
        cycle = run_cycle(forecaster, initial, scheme, days, progress=progress)
        analyses[name] = forecaster.decode(cycle.analysis).numpy()   # (T, E, C, H, W)

    # The fitted statistics do not depend on the noise (a setting of R): fit once.
    noise_levels = sorted({s for _, s in experiments})
    fitted = fit_optimal_interpolation(prepared, noise_std=noise_levels[0],
                                       noise_length=noise_length)
    interpolators = {s: dataclasses.replace(fitted, noise_std=s) for s in noise_levels}
    # One analyse call per noise level with the days of all its experiments stacked: each
    # call builds the full-grid B and R (5 x 2048^2 each on 64 x 32), and days are analysed
    # independently, so stacking changes nothing but that overhead.
    oi_analyses: dict[int, np.ndarray] = {}
    for noise, interpolator in interpolators.items():
        members = [e for e, (_, s) in enumerate(experiments) if s == noise]
        stacked = interpolator.analyse(torch.cat([observations[:, e] for e in members]),
                                       torch.cat([observed[:, e] for e in members]),
                                       np.tile(times, len(members)))
        for i, e in enumerate(members):
            oi_analyses[e] = stacked[i * days:(i + 1) * days]
    analyses["optimal_interpolation"] = np.stack([oi_analyses[e] for e in
                                                  range(len(experiments))], axis=1)
    # The classical schemes with memory (issue 24), fitted on training days: reduced-rank
    # 3D-Var in EOF space cycled with the LIM, and OI cycled with damped persistence. R is a
    # setting: one fit, one copy per noise level.
    k = int(eof_modes or forecaster.latents["train"].shape[1])
    eof_fit = fit_eof_3dvar(prepared, k, noise_std=noise_levels[0], noise_length=noise_length)
    persistence_fit = fit_persistence_optimal_interpolation(prepared, noise_levels[0],
                                                            noise_length)
    classical = {"eof_3dvar": eof_fit, "oi_damped_persistence": persistence_fit}
    candidates = [float(x) for x in inflations]
    choose = block == "test" and len(candidates) > 1
    if choose:
        valid_days = min(days, len(prepared.fields("valid")))
        valid_truth = prepared.fields("valid")[:valid_days]
        valid_obs, valid_observed = draw_observations(
            torch.as_tensor(valid_truth), experiments, kind, noise_length, distinct_masks, seed,
            noise_seed=seed + VALIDATION_NOISE_OFFSET)
        valid_times = np.asarray(prepared.times("valid")[:valid_days])
    selection: dict[str, Any] = {}
    for name, fitted_once in classical.items():
        analyses[name] = np.empty(tuple(observations.shape), dtype=np.float32)
        chosen = np.full(len(experiments), candidates[0])
        validation_mse = np.full((len(candidates), len(experiments)), np.nan)
        for noise in noise_levels:
            # One noise level at a time, a fresh copy each: its cached factorisations (up to
            # ~0.5 GB for OI) are dropped before the next level's are built.
            fit = fitted_once.with_noise(noise)
            members = [e for e, (_, s) in enumerate(experiments) if s == noise]
            blocks = {"scored": (observations[:, members], observed[:, members], times)}
            if choose:
                blocks["valid"] = (valid_obs[:, members], valid_observed[:, members],
                                   valid_times)
                analyses[name][:, members], chosen[members], validation_mse[:, members] = \
                    select_inflation(lambda lam, which, fit=fit, blocks=blocks: fit.cycle(
                        *(x.numpy() if isinstance(x, torch.Tensor) else x
                          for x in blocks[which]), lam),
                        valid_truth, prepared.lat, len(members), candidates)
            else:
                analyses[name][:, members] = fit.cycle(observations[:, members].numpy(),
                                                       observed[:, members].numpy(), times,
                                                       chosen[members])
            del fit, blocks
        selection[name] = {"inflation": chosen.tolist()}
        if choose:
            selection[name].update({"validation_days": valid_days, "candidates": candidates,
                                    "validation_mse": validation_mse.T.tolist()})
    analyses["climatology"] = np.repeat(climatology_forecast(clim, times)[:, None],
                                        len(experiments), axis=1)
    analyses = {name: analyses[name] for name in SCHEMES}
    truth_physical = _physical(prepared.destandardise, truth.numpy(), times)
    # (T, E, C, H, W) -> (E, T, ...) so the days are the axis before the channels.
    mse = {name: np.asarray(lat_weighted_mse(
               _physical(prepared.destandardise, a.swapaxes(0, 1), times).swapaxes(0, 1),
               truth_physical[:, None], prepared.lat))
           for name, a in analyses.items()}
    return AssimilationResults(
        experiments=experiments, truth=truth.numpy(), times=times,
        observations=observations.numpy(), observed=observed.numpy(), analyses=analyses,
        mse=mse, costs=schemes["latent_3dvar"].costs, channels=list(prepared.channels),
        units={c: UNITS.get(c, "") for c in prepared.channels}, lat=np.asarray(prepared.lat),
        lon=np.asarray(prepared.lon),
        synthetic=bool(prepared.synthetic),
        settings={"kind": kind, "noise_length": noise_length, "days": days,
                  "first_day": first_day, "b_rank": b_rank, "var_iterations": var_iterations,
                  "n_stat_days": len(stat_days), "distinct_masks": distinct_masks, "seed": seed,
                  "n_background_error_samples": int(len(background_errors)),
                  "block": block, "eof_modes": k,
                  # per scheme: B's multiplier per experiment (and the validation MSE of each
                  # candidate, per experiment, when it was chosen on validation days)
                  "classical_inflation": selection},
        destandardise=prepared.destandardise)
