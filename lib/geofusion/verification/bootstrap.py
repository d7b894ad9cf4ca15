"""Confidence intervals of verification scores from a block bootstrap over validation days.

Consecutive days of weather are correlated (synoptic systems last several days), so the
per-day scores of a validation period are not independent draws and an ordinary (iid)
bootstrap over days underestimates the sampling spread. The **circular block bootstrap**
(Politis & Romano 1992; the moving block bootstrap of Kuensch 1989 wrapped around the end of
the period) resamples whole blocks of ``block`` consecutive days instead:

1. draw ``ceil(T / block)`` block starts uniformly in ``0 .. T - 1``;
2. each start ``s`` contributes days ``s, s + 1, ..., s + block - 1`` (modulo ``T``);
3. concatenate the blocks and keep the first ``T`` days: one resampled period.

Wrapping makes every day equally likely to be drawn, so the resampled mean is centred on the
sample mean (the non-wrapping moving block under-samples the first and last ``block - 1``
days); ``circular=False`` gives the moving block version. ``block=1`` is the iid bootstrap.
The default block is 7 days (issue 13: blocks of a week, longer than the ~2-5 day
decorrelation time of daily mid-latitude anomalies, short enough to leave ~9 blocks in 64
validation days).

A resampled period is represented by its **counts** ``(R, T)``: how often each day was
drawn. A mean over a resampled period is then ``counts @ values / T``, one matrix product for
all ``R`` resamples, without materialising ``(R, T, ...)`` copies of the values.

Statistics (each resample is reduced exactly like the point estimate):

- :func:`bootstrap_mean`: the mean over days of any per-day statistic ``(T, ...)`` (cosine
  similarities, ACC, ...).
- :func:`bootstrap_rmse`: the WeatherBench 2 RMSE ``sqrt(mean_t MSE_t)`` from per-day
  latitude-weighted MSEs ``(T, ...)``: the **per-day MSEs are resampled, averaged, then the
  root is taken**, per variable (the root of the resampled mean, never a mean of per-day
  RMSEs), as :func:`geofusion.verification.metrics.lat_weighted_rmse` computes the point estimate.
- :func:`bootstrap_acc`: the mean of per-day ACCs (WB2 averages per-time ACCs).
- :func:`rmse_interval` / :func:`acc_interval`: the same from fields, computing the per-day
  scores with :mod:`geofusion.verification.metrics`.

The interval is the **percentile interval**: the ``(1 - level) / 2`` and ``(1 + level) / 2``
quantiles of the ``R`` resampled statistics. Results are :class:`BootstrapInterval` (point
estimate, low, high, same shape); :func:`interval_table` turns several into a tidy DataFrame
and :meth:`BootstrapInterval.pairs` gives the ``[low, high]`` lists of the scorecard's
``intervals`` section.

Example:
    >>> import numpy as np
    >>> mse = np.random.default_rng(0).gamma(4.0, 0.25, size=(64, 5))  # (days, variables)
    >>> ci = bootstrap_rmse(mse, seed=0)
    >>> ci.estimate.shape, ci.low.shape, bool(np.all(ci.low <= ci.high))
    ((5,), (5,), True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "BootstrapInterval", "block_bootstrap_indices", "block_bootstrap_counts", "bootstrap_mean",
    "bootstrap_rmse", "bootstrap_rmse_ratio", "bootstrap_acc", "rmse_interval", "acc_interval",
    "interval_table",
]

DEFAULT_BLOCK = 7
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class BootstrapInterval:
    """A point estimate and its bootstrap percentile interval, all of the same shape.

    Attributes:
        estimate: the statistic on the original days, ``(...)`` (per variable, lead, ...).
        low, high: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
            resampled statistic.
        level: nominal coverage, e.g. 0.95.
        block: block length in days; n_resamples: ``R``; n_days: ``T``.
    """

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float
    block: int
    n_resamples: int
    n_days: int

    @property
    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)``."""
        return self.low, self.high

    def pairs(self) -> Any:
        """``[low, high]`` per element as nested lists of floats (the scorecard's intervals):
        a ``(C,)`` result gives ``[[low_0, high_0], ..., [low_C-1, high_C-1]]``, a scalar one
        ``[low, high]``."""
        return np.stack([self.low, self.high], axis=-1).astype(np.float64).tolist()

    def by_name(self, names: Sequence[str]) -> dict[str, list[float]]:
        """``{name: [low, high]}`` for a ``(C,)`` result, e.g. names = the variables, the
        ``intervals`` entry of the scorecard for one model (and lead)."""
        if self.low.ndim != 1 or len(names) != self.low.shape[0]:
            raise ValueError(f"by_name needs a 1-D result with one name per element; got shape "
                             f"{self.low.shape} for {len(names)} names (index the other axes "
                             "first, e.g. result for one lead)")
        return {str(n): [float(lo), float(hi)]
                for n, lo, hi in zip(names, self.low, self.high, strict=True)}


def _check_settings(n_days: int, block: int, n_resamples: int, level: float) -> None:
    if n_days < 2:
        raise ValueError(f"need at least 2 days to bootstrap, got {n_days}; score more days")
    if not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive integer number of days, got {block!r}")
    if block > n_days:
        raise ValueError(f"block of {block} days is longer than the {n_days} days scored; "
                         "use a shorter block or more days")
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2, got {n_resamples!r} "
                         "(1000 is the default)")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise ValueError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}")


def block_bootstrap_indices(n_days: int, block: int = DEFAULT_BLOCK,
                            n_resamples: int = DEFAULT_RESAMPLES,
                            seed: int | np.random.Generator = 0, circular: bool = True
                            ) -> np.ndarray:
    """Day indices of ``R`` block-bootstrap resamples of ``0 .. T - 1``: int64 ``(R, T)``.

    Block starts are drawn with ``rng.integers(0, T)`` (``circular=True``, days taken modulo
    ``T``) or ``rng.integers(0, T - block + 1)`` (``circular=False``), shape
    ``(R, ceil(T / block))``; with ``block=1`` this is exactly ``rng.integers(0, T, (R, T))``,
    the iid bootstrap.
    """
    _check_settings(n_days, block, n_resamples, DEFAULT_LEVEL)
    rng = _rng(seed)
    n_blocks = -(-n_days // block)
    high = n_days if circular else n_days - block + 1
    starts = rng.integers(0, high, size=(n_resamples, n_blocks))
    days = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_resamples, -1)
    return days[:, :n_days] % n_days


def block_bootstrap_counts(n_days: int, block: int = DEFAULT_BLOCK,
                           n_resamples: int = DEFAULT_RESAMPLES,
                           seed: int | np.random.Generator = 0, circular: bool = True
                           ) -> np.ndarray:
    """How often each day is drawn in each resample: float64 ``(R, T)``, rows sum to ``T``.

    See :func:`block_bootstrap_indices` (same seed, same resamples).

    Example:
        >>> counts = block_bootstrap_counts(10, block=3, n_resamples=4, seed=1)
        >>> counts.shape, counts.sum(axis=1).tolist()
        ((4, 10), [10.0, 10.0, 10.0, 10.0])
    """
    idx = block_bootstrap_indices(n_days, block, n_resamples, seed, circular)
    rows = np.repeat(np.arange(n_resamples), n_days)
    counts = np.zeros((n_resamples, n_days), dtype=np.float64)
    np.add.at(counts, (rows, idx.reshape(-1)), 1.0)
    return counts


def _as_days(values: Any, axis: int) -> np.ndarray:
    """Per-day values as float64 numpy with the day axis first."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("values must have a day axis, e.g. (T,) or (T, C); got a scalar")
    return np.moveaxis(x, axis, 0)


def _resampled_means(x: np.ndarray, block: int, n_resamples: int,
                     seed: int | np.random.Generator, circular: bool) -> np.ndarray:
    """``(R, ...)`` means over the days of each resample of ``x`` ``(T, ...)``."""
    counts = block_bootstrap_counts(len(x), block, n_resamples, seed, circular)
    flat = x.reshape(len(x), -1)
    return (counts @ flat / len(x)).reshape((n_resamples,) + x.shape[1:])


def _interval(estimate: np.ndarray, resampled: np.ndarray, level: float, block: int,
              n_resamples: int, n_days: int) -> BootstrapInterval:
    q = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return BootstrapInterval(np.asarray(estimate), q[0], q[1], float(level), int(block),
                             int(n_resamples), int(n_days))


def bootstrap_mean(values: Any, block: int = DEFAULT_BLOCK,
                   n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                   seed: int | np.random.Generator = 0, axis: int = 0,
                   circular: bool = True) -> BootstrapInterval:
    """Mean over days of a per-day statistic, with its block-bootstrap interval.

    Args:
        values: ``(T, ...)`` one value per day (and per variable, lead, ...), e.g. the
            positive-pair cosine of every validation day. numpy or torch. A NaN makes that
            element's estimate and interval NaN.
        block: block length in days (1 = iid bootstrap).
        n_resamples: ``R`` resampled periods.
        level: nominal coverage of the percentile interval.
        seed: int or ``numpy.random.Generator``; the same seed gives the same interval.
        axis: the day axis of ``values``.
        circular: wrap blocks around the end of the period (see module docstring).

    Returns:
        :class:`BootstrapInterval` of shape ``values.shape`` without ``axis``.

    Example:
        >>> cosine = np.linspace(0.6, 0.9, 30)
        >>> ci = bootstrap_mean(cosine, block=7, n_resamples=200, seed=0)
        >>> float(ci.low) < float(ci.estimate) < float(ci.high)
        True
    """
    x = _as_days(values, axis)
    _check_settings(len(x), block, n_resamples, level)
    resampled = _resampled_means(x, block, n_resamples, seed, circular)
    return _interval(x.mean(axis=0), resampled, level, block, n_resamples, len(x))


def bootstrap_rmse(mse_per_day: Any, block: int = DEFAULT_BLOCK,
                   n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                   seed: int | np.random.Generator = 0, axis: int = 0,
                   circular: bool = True) -> BootstrapInterval:
    """RMSE ``sqrt(mean_t MSE_t)`` and its interval, from per-day (latitude-weighted) MSEs.

    Each resample averages the resampled per-day MSEs and takes the root of that mean,
    separately per variable (and any other trailing axis), exactly as the point estimate
    ``sqrt(mean over all days)`` (WB2's RMSE,
    :func:`geofusion.verification.metrics.lat_weighted_rmse`).
    The root is monotone, so the interval is the root of the MSE interval.

    Args:
        mse_per_day: ``(T, ...)`` non-negative, e.g.
            ``metrics.lat_weighted_mse(forecast, truth, lat)`` of ``(T, C, H, W)`` fields
            (no ``time_axis``), in squared physical units.
        block, n_resamples, level, seed, axis, circular: as :func:`bootstrap_mean`.

    Returns:
        :class:`BootstrapInterval` in the units of the fields.

    Example:
        >>> mse = np.full((14, 2), 4.0)  # a constant error of 2 units
        >>> ci = bootstrap_rmse(mse, n_resamples=50)
        >>> ci.estimate.tolist(), ci.low.tolist(), ci.high.tolist()
        ([2.0, 2.0], [2.0, 2.0], [2.0, 2.0])
    """
    x = _as_days(mse_per_day, axis)
    if np.any(x < 0):
        raise ValueError("mse_per_day has negative values; pass per-day mean squared errors "
                         "(e.g. metrics.lat_weighted_mse without time_axis), not errors")
    _check_settings(len(x), block, n_resamples, level)
    resampled = _resampled_means(x, block, n_resamples, seed, circular)
    return _interval(np.sqrt(x.mean(axis=0)), np.sqrt(resampled), level, block, n_resamples,
                     len(x))


def bootstrap_rmse_ratio(mse_a: Any, mse_b: Any, block: int = DEFAULT_BLOCK,
                         n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                         seed: int | np.random.Generator = 0, axis: int = 0,
                         circular: bool = True) -> BootstrapInterval:
    """``RMSE_a / RMSE_b = sqrt(mean_t MSE_a,t / mean_t MSE_b,t)`` of two predictions of the
    same days, with a *paired* block-bootstrap interval: every resample draws the same days
    for both, so the day-to-day weather they share cancels (< 1: ``a`` is better; an interval
    wholly below 1 is a clear win).

    Example:
        >>> mse_b = np.linspace(1.0, 4.0, 28)
        >>> ci = bootstrap_rmse_ratio(0.25 * mse_b, mse_b, n_resamples=50)  # half the error
        >>> float(ci.estimate), float(ci.low), float(ci.high)
        (0.5, 0.5, 0.5)
    """
    a, b = _as_days(mse_a, axis), _as_days(mse_b, axis)
    if a.shape != b.shape:
        raise ValueError(f"mse_a {a.shape} and mse_b {b.shape} must score the same days")
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("per-day MSEs must be non-negative (metrics.lat_weighted_mse)")
    _check_settings(len(a), block, n_resamples, level)
    counts = block_bootstrap_counts(len(a), block, n_resamples, seed, circular)
    resampled_a = (counts @ a.reshape(len(a), -1)).reshape((n_resamples,) + a.shape[1:])
    resampled_b = (counts @ b.reshape(len(b), -1)).reshape((n_resamples,) + b.shape[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        return _interval(np.sqrt(a.mean(axis=0) / b.mean(axis=0)),
                         np.sqrt(resampled_a / resampled_b), level, block, n_resamples, len(a))


def bootstrap_acc(acc_per_day: Any, block: int = DEFAULT_BLOCK,
                  n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                  seed: int | np.random.Generator = 0, axis: int = 0,
                  circular: bool = True) -> BootstrapInterval:
    """Mean ACC over days and its interval, from per-day ACCs (WB2 averages per-time ACCs).

    Same as :func:`bootstrap_mean`; ``acc_per_day`` is e.g.
    ``metrics.lat_weighted_acc(forecast, truth, climatology, lat)`` of ``(T, C, H, W)``
    fields, ``(T, C)``.
    """
    return bootstrap_mean(acc_per_day, block, n_resamples, level, seed, axis, circular)


def rmse_interval(forecast: Any, truth: Any, lat: Any, block: int = DEFAULT_BLOCK,
                  n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                  seed: int | np.random.Generator = 0, circular: bool = True
                  ) -> BootstrapInterval:
    """Latitude-weighted RMSE per variable with its interval, from fields.

    Args:
        forecast, truth: ``(T, C, lat, lon)`` (or ``(T, ..., lat, lon)``) in physical units,
            day ``t`` of both verifying on the same date, days consecutive.
        lat: ``(lat,)`` degrees, ascending.
        block, n_resamples, level, seed, circular: as :func:`bootstrap_mean`.

    Returns:
        :class:`BootstrapInterval` ``(C,)``; ``estimate`` equals
        ``metrics.lat_weighted_rmse(forecast, truth, lat, time_axis=0)``.

    Example:
        >>> lat = np.linspace(-80.0, 80.0, 4)
        >>> truth = np.zeros((21, 2, 4, 8)); forecast = truth + 3.0
        >>> rmse_interval(forecast, truth, lat, n_resamples=20).estimate.round(6).tolist()
        [3.0, 3.0]
    """
    from geofusion.verification.metrics import lat_weighted_mse

    mse = lat_weighted_mse(forecast, truth, lat)
    return bootstrap_rmse(mse, block, n_resamples, level, seed, 0, circular)


def acc_interval(forecast: Any, truth: Any, climatology: Any, lat: Any,
                 block: int = DEFAULT_BLOCK, n_resamples: int = DEFAULT_RESAMPLES,
                 level: float = DEFAULT_LEVEL, seed: int | np.random.Generator = 0,
                 circular: bool = True) -> BootstrapInterval:
    """Mean ACC per variable with its interval, from fields ``(T, C, lat, lon)``.

    ``climatology`` is the reference at the verification days (e.g.
    ``baselines.climatology_forecast(clim, times)``), see
    :func:`geofusion.verification.metrics.lat_weighted_acc`.
    """
    from geofusion.verification.metrics import lat_weighted_acc

    acc = lat_weighted_acc(forecast, truth, climatology, lat)
    return bootstrap_mean(acc, block, n_resamples, level, seed, 0, circular)


def interval_table(intervals: Mapping[str, BootstrapInterval], channels: Sequence[str],
                   score: str = "rmse") -> pd.DataFrame:
    """Tidy table of ``(C,)`` intervals: one row per (name, variable).

    Args:
        intervals: name (model, or ``"model lead 3"``...) -> :class:`BootstrapInterval` of
            shape ``(C,)``.
        channels: the ``C`` variable names.
        score: name of the score, written to the ``score`` column.

    Returns:
        DataFrame with columns ``name``, ``variable``, ``score``, ``estimate``, ``low``,
        ``high``, ``level``, ``block``, ``n_resamples``, ``n_days``.
    """
    rows = []
    for name, ci in intervals.items():
        if ci.estimate.shape != (len(channels),):
            raise ValueError(f"interval {name!r} has shape {ci.estimate.shape}, expected "
                             f"({len(channels)},), one value per channel; index the other "
                             "axes first")
        for c, variable in enumerate(channels):
            rows.append({"name": name, "variable": variable, "score": score,
                         "estimate": float(ci.estimate[c]), "low": float(ci.low[c]),
                         "high": float(ci.high[c]), "level": ci.level, "block": ci.block,
                         "n_resamples": ci.n_resamples, "n_days": ci.n_days})
    return pd.DataFrame(rows)
