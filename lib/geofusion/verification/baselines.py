"""Reference baselines in field space, every one fitted on the training days only.

Forecast baselines (valid ``k = 1 .. 7`` days after an initialisation day ``t``; ``c(d)`` is
the day-of-year climatology of the training days, ``a_t = x_t - c(doy_t)`` the anomaly):

- **persistence** (:func:`persistence_forecast`): ``x_hat_{t+k} = x_t``.
- **climatology** (:func:`climatology`, :func:`climatology_forecast`,
  :func:`training_climatology`): ``x_hat_{t+k} = c(doy_{t+k})``, the mean of the training
  days within +-7 days of the day of year.
- **damped anomaly persistence** (:func:`fit_damped_persistence`):
  ``x_hat_{t+k} = c(doy_{t+k}) + rho_k a_t`` with ``rho_k`` the training-day least-squares
  regression of ``a_{t+k}`` on ``a_t`` (the lag-``k`` autocorrelation), per variable and grid
  point. It tends to persistence for short leads and to climatology for long ones.
- **linear regression** (:func:`fit_linear_regression`, the WeatherBench linear-regression
  baseline, Rasp et al. 2020): ``x_hat_{t+k} = c(doy_{t+k}) + b_k + W_k^T P(a_t)`` with
  ``P`` the leading principal components of the standardised, area-weighted anomaly of all
  variables at ``t``, and ``(W_k, b_k)`` a ridge regression fitted directly for every lead on
  the training days, its penalty chosen by blocked cross-validation within the training days.

Reconstruction baseline:

- **optimal interpolation** (:func:`fit_optimal_interpolation`): per variable and day,
  ``x_a = x_b + B H^T (H B H^T + R)^{-1} (y - H x_b)`` with the background ``x_b`` the
  day-of-year climatology, ``B`` a Gaussian covariance in distance on the sphere (variance
  and length scale estimated from training anomalies) and ``R`` the exact covariance of the
  project's correlated observation noise
  (:func:`geofusion.data.observations.correlated_noise_covariance`).

All fits take a :class:`geofusion.data.PreparedData` (or anything with ``train``,
``train_times``, ``lat``, ``lon``) and read only ``train`` and ``train_times``, so no
validation day can leak into a baseline; the tests feed validation days and check that they
change nothing.

Forecast sources (``source(inits, steps) -> (B, steps, C, H, W)`` standardised fields, see
:mod:`geofusion.downstream.forecasting`): :func:`damped_persistence_source` and
:func:`linear_regression_source` score the new baselines next to the LSTMs with
``score_forecasts``.

Fields are ``(time, channel, lat, lon)`` in any consistent units (the project passes
standardised fields; a baseline's output is in the units of its input).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from geofusion.data.observations import correlated_noise_covariance

__all__ = [
    "day_of_year", "climatology", "climatology_forecast", "persistence_forecast",
    "training_climatology",
    "lag_regression", "DampedPersistence", "fit_damped_persistence", "damped_persistence_source",
    "LinearRegressionForecast", "fit_linear_regression", "linear_regression_source",
    "OptimalInterpolation", "fit_optimal_interpolation", "chordal_distance_km",
    "estimate_background_correlation",
]

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG), as geofusion.data.observations
DAMPED_POOLINGS = ("gridpoint", "latitude", "global")


# --------------------------------------------------------------------------------------------
# Persistence and day-of-year climatology
# --------------------------------------------------------------------------------------------

def persistence_forecast(fields: np.ndarray | Tensor, lead: int = 1) -> Any:
    """Persistence: the forecast valid at ``t + lead`` is the field at ``t``.

    Args:
        fields: ``(T, ...)`` consecutive daily fields.
        lead: lead time in steps (days), >= 1.

    Returns:
        ``(T - lead, ...)`` forecasts, valid at the times of ``fields[lead:]`` (the truth to
        score them against): i.e. ``fields[:-lead]``.
    """
    if lead < 1:
        raise ValueError(f"lead must be >= 1 step, got {lead}")
    if len(fields) <= lead:
        raise ValueError(f"{len(fields)} fields leave nothing to verify at lead {lead}")
    return fields[:-lead]


def day_of_year(times: Any) -> np.ndarray:
    """Day of year 1..366 of datetime64 times (Feb 29 is day 60 in leap years, as in WB2)."""
    return pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]")).day_of_year.to_numpy()


def climatology(train_fields: np.ndarray | Tensor, train_times: Any, window: int = 15
                ) -> np.ndarray:
    """Day-of-year climatology from the training days only.

    The mean for day ``d`` pools every training day whose day of year is within
    ``window // 2`` days of ``d`` (circularly, so late December pools with early January):
    a running mean of per-day sums divided by the running count, so every pooled day counts
    once. A day of year with no training day in its window (training shorter than a year)
    takes the value of the nearest one that has (circularly).

    Args:
        train_fields: ``(T, C, lat, lon)`` (any trailing shape) of the training split.
        train_times: ``(T,)`` datetime64 of those days.
        window: width in days of the smoothing window, odd, >= 1.

    Returns:
        float32 ``(366, C, lat, lon)``; row ``d - 1`` is day of year ``d``.
    """
    x = (train_fields.detach().cpu().numpy() if isinstance(train_fields, Tensor)
         else np.asarray(train_fields))
    doy = day_of_year(train_times)
    if len(doy) != len(x) or len(x) == 0:
        raise ValueError(f"need one time per field and at least one field, got {len(doy)} "
                         f"times for {len(x)} fields")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of days >= 1, got {window}")
    sums = np.zeros((366,) + x.shape[1:], dtype=np.float64)
    np.add.at(sums, doy - 1, x.astype(np.float64))
    counts = np.bincount(doy - 1, minlength=366).astype(np.float64)
    half = window // 2
    offsets = range(-half, half + 1)
    pooled_sums = sum(np.roll(sums, k, axis=0) for k in offsets)
    pooled_counts = sum(np.roll(counts, k) for k in offsets)
    have = np.flatnonzero(pooled_counts > 0)
    days = np.arange(366)
    dist = np.abs(days[:, None] - have[None, :])
    nearest = have[np.argmin(np.minimum(dist, 366 - dist), axis=1)]
    clim = pooled_sums[nearest] / pooled_counts[nearest].reshape((-1,) + (1,) * (x.ndim - 1))
    return clim.astype(np.float32)


def climatology_forecast(climatology: np.ndarray | Tensor, times: Any) -> Any:
    """The climatology at each time: ``(len(times), C, lat, lon)``, same type as the input.

    ``climatology`` is :func:`climatology`'s ``(366, ...)`` array; ``times`` datetime64.
    """
    idx = day_of_year(times) - 1
    if isinstance(climatology, Tensor):
        return climatology[torch.as_tensor(idx, device=climatology.device)]
    return np.asarray(climatology)[idx]


def _train_split(prepared: Any) -> tuple[np.ndarray, np.ndarray]:
    """``prepared.train`` as float numpy and ``prepared.train_times``: all a fit may read."""
    try:
        fields, times = prepared.train, prepared.train_times
    except AttributeError as err:
        raise ValueError("pass a geofusion.data.PreparedData (or an object with train, "
                         "train_times, lat and lon); baselines read the training split only"
                         ) from err
    x = fields.detach().cpu().numpy() if isinstance(fields, Tensor) else np.asarray(fields)
    if x.ndim != 4:
        raise ValueError(f"prepared.train must be (T, C, lat, lon), got shape {x.shape}")
    times = np.asarray(times, dtype="datetime64[ns]")
    if len(times) != len(x):
        raise ValueError(f"prepared has {len(times)} training times for {len(x)} training "
                         "fields; pass the matching train_times")
    return x, times


def training_climatology(prepared: Any, window: int = 15) -> np.ndarray:
    """:func:`climatology` of ``prepared.train`` (the training days only), ``(366, C, H, W)``.

    The one call notebooks should use for "climatology", so the validation days cannot
    enter it.

    Example (needs a PreparedData, not run as a doctest)::

        clim = training_climatology(prepared)
        climatology_forecast(clim, prepared.valid_times)  # (T_valid, C, H, W)
    """
    x, times = _train_split(prepared)
    return climatology(x, times, window)


def _anomalies(x: np.ndarray, times: np.ndarray, clim: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) - clim[day_of_year(times) - 1]


def _day_numbers(times: Any) -> np.ndarray:
    """Whole days since 1970 of datetime64 times; raises for sub-daily or repeated times."""
    t = np.asarray(times, dtype="datetime64[ns]")
    days = t.astype("datetime64[D]")
    if np.any(days != t):
        raise ValueError("times must be daily (midnight) datetime64; these baselines work on "
                         "daily means, resample the data to days first")
    out = days.astype(np.int64)
    if len(np.unique(out)) != len(out):
        raise ValueError("times repeat a day; pass one field per day")
    return out


def _lag_pairs(times: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` of all pairs of days with ``day_j - day_i == lag`` (gaps allowed)."""
    days = _day_numbers(times)
    lookup = np.full(days.max() - days.min() + lag + 1, -1, dtype=np.int64)
    lookup[days - days.min()] = np.arange(len(days))
    j = lookup[days - days.min() + lag]
    i = np.flatnonzero(j >= 0)
    return i, j[i]


def _check_inits(inits: Any, length: int) -> np.ndarray:
    inits = np.asarray(inits, dtype=np.int64).reshape(-1)
    if inits.size == 0:
        raise ValueError("no initialisation indices given; pass at least one")
    if inits.min() < 0 or inits.max() >= length:
        raise ValueError(f"initialisation indices must lie in [0, {length - 1}] for a series "
                         f"of {length} days, got [{inits.min()}, {inits.max()}]")
    return inits


def _valid_doy_index(times: np.ndarray, inits: np.ndarray, steps: int) -> np.ndarray:
    """``(B, steps)`` climatology rows of the days ``times[init] + 1 .. + steps`` (by date,
    so the valid day is right even beyond the end of the series)."""
    start = np.asarray(times, dtype="datetime64[ns]")[inits].astype("datetime64[D]")
    valid = start[:, None] + np.arange(1, steps + 1).astype("timedelta64[D]")
    return (day_of_year(valid.reshape(-1)) - 1).reshape(len(inits), steps)


def _as_numpy(fields: Any) -> np.ndarray:
    if isinstance(fields, Tensor):
        return fields.detach().cpu().numpy()
    return np.asarray(fields)


# --------------------------------------------------------------------------------------------
# Damped anomaly persistence
# --------------------------------------------------------------------------------------------

def _initial_anomalies(climatology: np.ndarray, max_lead: int, fields: Any, times: Any,
                       inits: Any, steps: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked inputs of a forecast baseline's ``forecast``: the fields, their times, the
    initialisation indices and the anomalies ``(B, C, H, W)`` of the initial days from
    ``climatology``."""
    if not 1 <= steps <= max_lead:
        raise ValueError(f"steps must be in 1..{max_lead} (the leads fitted), got {steps}; "
                         f"refit with max_lead >= {steps}")
    x = _as_numpy(fields)
    times = np.asarray(times, dtype="datetime64[ns]")
    if len(times) != len(x):
        raise ValueError(f"{len(times)} times for {len(x)} fields; pass the fields' times")
    if x.shape[1:] != climatology.shape[1:]:
        raise ValueError(f"fields have shape {x.shape[1:]} per day, the model was fitted on "
                         f"{climatology.shape[1:]}")
    inits = _check_inits(inits, len(x))
    anomaly = x[inits].astype(np.float32) - climatology[day_of_year(times[inits]) - 1]
    return x, times, inits, anomaly


def lag_regression(series: Any, times: Any, max_lead: int, pooling: str = "gridpoint",
                   lat: Any = None) -> np.ndarray:
    """Least-squares damping of a persisted series: ``rho_k = sum a_t a_{t+k} / sum a_t^2``.

    The sums run over every pair of days exactly ``k`` days apart (by date, so gaps in
    ``times`` are respected) and, by ``pooling``, over nothing else (``"gridpoint"``), over
    longitude (``"latitude"``) or over the area-weighted grid (``"global"``). ``rho_k a_t``
    is then the MSE-optimal forecast of ``a_{t+k}`` that scales today's value; for a
    stationary, zero-mean series it is the lag-``k`` autocorrelation. Used for the anomalies
    of damped persistence (:func:`fit_damped_persistence`) and for the decoder residuals of
    :meth:`geofusion.downstream.forecasting.LatentForecaster.fit_residual_damping`.

    Args:
        series: ``(T, C, H, W)`` (e.g. anomalies), the days ``times``.
        times: ``(T,)`` daily datetime64.
        max_lead: leads ``1 .. max_lead`` days.
        pooling: ``"gridpoint"``, ``"latitude"`` or ``"global"``.
        lat: ``(H,)`` degrees, needed for ``"global"`` (area weights).

    Returns:
        float32 ``(max_lead, C, H, W)`` (constant along the pooled axes); 0 where the series
        is identically zero (nothing to persist).

    Example:
        >>> times = np.arange("2001-01-01", "2001-01-05", dtype="datetime64[D]")
        >>> a = np.array([1.0, 0.5, 0.25, 0.125]).reshape(4, 1, 1, 1)
        >>> # lead 1: (1*.5 + .5*.25 + .25*.125) / (1 + .25 + .0625); lead 2: .3125 / 1.25
        >>> lag_regression(a, times, 2)[:, 0, 0, 0].tolist()
        [0.5, 0.25]
    """
    if pooling not in DAMPED_POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {DAMPED_POOLINGS}")
    if max_lead < 1:
        raise ValueError(f"max_lead must be >= 1 day, got {max_lead}")
    a = np.asarray(_as_numpy(series), dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"series must be (T, C, H, W), got shape {a.shape}")
    times = np.asarray(times, dtype="datetime64[ns]")
    if len(times) != len(a):
        raise ValueError(f"{len(times)} times for {len(a)} days of the series; pass its times")
    if pooling == "global":
        if lat is None:
            raise ValueError("global pooling weights by area: pass lat (degrees, ascending)")
        from geofusion.verification.metrics import latitude_weights
        area = latitude_weights(np.asarray(lat, dtype=np.float64))[:, None]
    rho = np.empty((max_lead,) + a.shape[1:], dtype=np.float64)
    for k in range(1, max_lead + 1):
        i, j = _lag_pairs(times, k)
        if len(i) < 2:
            raise ValueError(f"the days hold {len(i)} pairs {k} days apart; need more "
                             "(contiguous) days or a smaller max_lead")
        if np.array_equal(i, np.arange(i[0], i[0] + len(i))) and np.array_equal(j, i + k):
            # Contiguous daily series (the usual case): views, not copies of the whole series.
            ai, aj = a[i[0]:i[-1] + 1], a[j[0]:j[-1] + 1]
        else:
            ai, aj = a[i], a[j]
        num = np.einsum("tchw,tchw->chw", ai, aj)
        den = np.einsum("tchw,tchw->chw", ai, ai)
        if pooling == "latitude":
            num, den = num.sum(-1, keepdims=True), den.sum(-1, keepdims=True)
        elif pooling == "global":
            num = (num * area).sum((-2, -1), keepdims=True)
            den = (den * area).sum((-2, -1), keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            # A point with no anomaly at all (constant field) has nothing to persist: rho 0.
            rho[k - 1] = np.broadcast_to(np.where(den > 0, num / den, 0.0), a.shape[1:])
    return rho.astype(np.float32)


@dataclass(frozen=True)
class DampedPersistence:
    """Damped anomaly persistence, ``x_hat_{t+k} = c(doy_{t+k}) + rho_k (x_t - c(doy_t))``.

    Attributes:
        climatology: float32 ``(366, C, H, W)``, :func:`climatology` of the training days.
        rho: float32 ``(max_lead, C, H, W)``; ``rho[k - 1]`` multiplies the anomaly at lead
            ``k`` (constant along the pooled axes).
        pooling: ``"gridpoint"``, ``"latitude"`` or ``"global"`` (see
            :func:`fit_damped_persistence`).
    """

    climatology: np.ndarray
    rho: np.ndarray
    pooling: str

    @property
    def max_lead(self) -> int:
        return int(self.rho.shape[0])

    def forecast(self, fields: Any, times: Any, inits: Any, steps: int) -> np.ndarray:
        """Forecasts from ``fields[inits]`` valid 1 .. ``steps`` days later.

        Args:
            fields: ``(T, C, H, W)`` in the units of the fit (e.g. ``prepared.valid``).
            times: ``(T,)`` datetime64 days of ``fields``.
            inits: ``(B,)`` initialisation indices into ``fields``.
            steps: leads ``1 .. steps`` days, ``<= max_lead``.

        Returns:
            float32 ``(B, steps, C, H, W)``.
        """
        x, times, inits, anomaly = _initial_anomalies(self.climatology, self.max_lead, fields,
                                                      times, inits, steps)
        valid = self.climatology[_valid_doy_index(times, inits, steps)]
        return (valid + self.rho[None, :steps] * anomaly[:, None]).astype(np.float32)


def fit_damped_persistence(prepared: Any, max_lead: int = 7, pooling: str = "gridpoint",
                           window: int = 15) -> DampedPersistence:
    """Fit damped anomaly persistence on the training days of ``prepared``.

    ``rho_k = sum a_t a_{t+k} / sum a_t^2`` over every pair of training days ``k`` days apart
    (anomalies from the training :func:`climatology`), i.e. the least-squares coefficient of
    the regression of the anomaly ``k`` days later on today's anomaly, which is the lag-``k``
    autocorrelation for a stationary anomaly and the MSE-optimal damping of a persisted
    anomaly. The sums run over time and, by ``pooling``, over:

    - ``"gridpoint"`` (default): nothing else, one ``rho_k`` per variable and grid point.
      Persistence differs most between neighbouring land and sea points (sea-surface
      temperature keeps 2m-temperature anomalies for weeks, land forgets in days), which a
      latitude band would average away; with years of training days the sampling error of a
      per-point estimate, ~``(1 - rho^2) / sqrt(T_eff)``, is a few hundredths.
    - ``"latitude"``: also over longitude, one value per variable and latitude row (for short
      training periods).
    - ``"global"``: over the whole grid (area-weighted), one value per variable.

    Args:
        prepared: :class:`geofusion.data.PreparedData`; only ``train`` and ``train_times``
            are read.
        max_lead: leads ``1 .. max_lead`` days.
        pooling: see above.
        window: climatology smoothing window, days (:func:`climatology`).

    Returns:
        :class:`DampedPersistence`.

    Example (needs a PreparedData, not run as a doctest)::

        model = fit_damped_persistence(prepared)
        model.forecast(prepared.valid, prepared.valid_times, [0, 1], steps=7)  # (2, 7, C, H, W)
    """
    x, times = _train_split(prepared)
    clim = climatology(x, times, window)
    rho = lag_regression(_anomalies(x, times, clim), times, max_lead, pooling, prepared.lat)
    return DampedPersistence(clim, rho, pooling)


def damped_persistence_source(model: DampedPersistence, fields: Any, times: Any
                              ) -> Callable[[Any, int], Tensor]:
    """:class:`DampedPersistence` as a forecast source on the series ``fields`` (its days
    ``times``): ``source(inits, steps) -> (B, steps, C, H, W)`` float32 tensor.

    Example (needs a PreparedData, not run as a doctest)::

        source = damped_persistence_source(fit_damped_persistence(prepared),
                                           prepared.valid, prepared.valid_times)
        score_forecasts({"damped_persistence": source, ...}, prepared.valid, ...)
    """
    x = _as_numpy(fields)
    t = np.asarray(times, dtype="datetime64[ns]")

    def source(inits: Any, steps: int) -> Tensor:
        return torch.from_numpy(model.forecast(x, t, inits, steps))
    return source


# --------------------------------------------------------------------------------------------
# Field-space linear regression (WeatherBench)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearRegressionForecast:
    """Ridge regression of future anomalies on the principal components of today's anomaly.

    ``x_hat_{t+k} = c(doy_{t+k}) + intercept[k-1] + P(a_t) @ coef[k-1]``, with
    ``P(a) = (flatten(a / scale * sqrt(w)) - mean) @ components.T`` the leading principal
    component scores of the anomaly ``a = x_t - c(doy_t)`` (every variable divided by its
    training anomaly std ``scale``, every row by the square root of its area weight ``w``,
    so the PCs are those of the area-weighted, equally weighted variables).

    Attributes:
        climatology: float32 ``(366, C, H, W)`` of the training days.
        scale: float32 ``(C,)`` training anomaly std per variable (area-weighted).
        sqrt_weights: float32 ``(H,)`` square roots of the latitude area weights.
        mean: float32 ``(D,)`` training mean of the scaled anomaly (``D = C H W``).
        components: float32 ``(K, D)`` orthonormal leading EOFs.
        coef: float32 ``(max_lead, K, D)`` regression weights, field units.
        intercept: float32 ``(max_lead, D)``.
        alpha: float64 ``(max_lead, C)`` ridge penalty chosen per lead and variable.
        explained_variance: float64 ``(K,)`` share of the training anomaly variance per PC.
    """

    climatology: np.ndarray
    scale: np.ndarray
    sqrt_weights: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    alpha: np.ndarray
    explained_variance: np.ndarray

    @property
    def max_lead(self) -> int:
        return int(self.coef.shape[0])

    def scores(self, anomalies: np.ndarray) -> np.ndarray:
        """Principal component scores ``(N, K)`` of anomalies ``(N, C, H, W)``."""
        z = anomalies / self.scale[:, None, None] * self.sqrt_weights[:, None]
        z = z.reshape(len(anomalies), -1) - self.mean
        return (z @ self.components.T).astype(np.float32)

    def forecast(self, fields: Any, times: Any, inits: Any, steps: int) -> np.ndarray:
        """Forecasts from ``fields[inits]`` valid 1 .. ``steps`` days later, float32
        ``(B, steps, C, H, W)`` (arguments as :meth:`DampedPersistence.forecast`)."""
        x, times, inits, anomaly = _initial_anomalies(self.climatology, self.max_lead, fields,
                                                      times, inits, steps)
        pcs = self.scores(anomaly)
        out = np.einsum("bk,lkd->bld", pcs, self.coef[:steps]) + self.intercept[None, :steps]
        out = out.reshape(len(inits), steps, *x.shape[1:])
        return (out + self.climatology[_valid_doy_index(times, inits, steps)]).astype(np.float32)


def _ridge_cv_errors(x: np.ndarray, y: np.ndarray, column_weights: np.ndarray,
                     groups: np.ndarray, n_groups: int, alphas: np.ndarray, folds: int,
                     init_days: np.ndarray, gap: int) -> np.ndarray:
    """Blocked cross-validation error ``(len(alphas), n_groups)`` of ridge ``y ~ x``.

    The pairs are cut into ``folds`` contiguous blocks of initialisation days; each block is
    predicted by the ridge fitted on the pairs whose initialisation lies more than ``gap``
    days away from it (so no target day of the fit is a day of the held-out block). The
    weighted squared error of column group ``g`` for every ``alpha`` comes from one SVD of
    the fitting inputs ``x_f = U s V^T``:
    ``E = |y_v|^2_w - 2 sum_k d_k (P^T y_v W G^T)_kk + d^T ((P^T P) o (G W G^T)) d`` with
    ``P = x_v V``, ``G = U^T y_f``, ``d = s / (s^2 + alpha)`` and ``W`` the column weights.
    """
    order = np.argsort(init_days, kind="stable")
    blocks = np.array_split(order, folds)
    errors = np.zeros((len(alphas), n_groups))
    for held in blocks:
        lo, hi = init_days[held].min(), init_days[held].max()
        fit = np.flatnonzero((init_days < lo - gap) | (init_days > hi + gap))
        if len(fit) < 2:
            continue  # too few days outside this block (tiny training sets): skip it
        xm, ym = x[fit].mean(0), y[fit].mean(0)
        u, s, vt = np.linalg.svd(x[fit] - xm, full_matrices=False)
        # The (r, D) products run in the targets' dtype (float32 for fields: the bulk of the
        # cost), the small reductions below in float64.
        g = (u.T.astype(y.dtype) @ (y[fit] - ym)).astype(np.float64)        # (r, D)
        p = (x[held] - xm) @ vt.T                                            # (n_v, r)
        yv = y[held] - ym                                                    # (n_v, D)
        ptp = p.T @ p
        m = (p.T.astype(y.dtype) @ (yv * column_weights.astype(y.dtype))).astype(np.float64)
        yv = yv.astype(np.float64)
        d = s[None, :] / (s[None, :] ** 2 + alphas[:, None])   # (A, r)
        for c in range(n_groups):
            cols = groups == c
            wc = column_weights[cols]
            gc = g[:, cols]
            base = float(np.sum(yv[:, cols] ** 2 * wc))
            cross = np.sum(m[:, cols] * gc, axis=1)             # (r,)
            quad = ptp * ((gc * wc) @ gc.T)                     # (r, r)
            errors[:, c] += base - 2 * d @ cross + np.einsum("ak,kl,al->a", d, quad, d)
    return errors


def fit_linear_regression(prepared: Any, max_lead: int = 7, n_components: int = 100,
                          alphas: Sequence[float] | None = None, folds: int = 5,
                          window: int = 15) -> LinearRegressionForecast:
    """Fit the WeatherBench linear-regression baseline on the training days of ``prepared``.

    1. Anomalies ``a`` from the training :func:`climatology`; every variable divided by its
       training anomaly std, every latitude row multiplied by ``sqrt(area weight)``.
    2. The ``K = n_components`` leading EOFs of these (all variables jointly; eigenvectors of
       the ``T x T`` Gram matrix, exact and deterministic) give the predictors ``P(a_t)``.
    3. For every lead ``k`` separately (direct, not iterated), over all training pairs
       ``(t, t + k)``: ridge regression of the anomaly field ``a_{t+k}`` (every grid point
       and variable, field units) on ``P(a_t)`` with an intercept,
       ``W_k = argmin |A_{t+k} - b - P W|^2 + alpha |W|^2``.
    4. ``alpha`` is chosen per lead and variable from ``alphas`` (default: the mean PC
       variance times ``10^-3 .. 10^3``, 13 values) by ``folds``-fold blocked
       cross-validation over contiguous blocks of training days, with a gap of ``max_lead``
       days around the held-out block; the score is the area-weighted squared error, as in
       the latitude-weighted RMSE.

    Args:
        prepared: :class:`geofusion.data.PreparedData`; only ``train``, ``train_times`` and
            ``lat`` are read.
        max_lead: leads ``1 .. max_lead`` days.
        n_components: EOFs kept (capped at the training days - 1).
        alphas: candidate ridge penalties (in PC-score units squared), or None.
        folds: cross-validation blocks (>= 2).
        window: climatology smoothing window, days.

    Returns:
        :class:`LinearRegressionForecast`.

    Example (needs a PreparedData, not run as a doctest)::

        model = fit_linear_regression(prepared)
        model.forecast(prepared.valid, prepared.valid_times, [0], steps=3)  # (1, 3, C, H, W)
    """
    from geofusion.verification.metrics import latitude_weights

    if max_lead < 1:
        raise ValueError(f"max_lead must be >= 1 day, got {max_lead}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2 for cross-validation, got {folds}")
    x, times = _train_split(prepared)
    n, c, h, w = x.shape
    if n < 3:
        raise ValueError(f"{n} training days are too few for a regression; use more")
    clim = climatology(x, times, window)
    a = _anomalies(x, times, clim)                                  # (N, C, H, W) float64
    area = latitude_weights(np.asarray(prepared.lat, dtype=np.float64))
    if area.shape[0] != h:
        raise ValueError(f"prepared.lat has {area.shape[0]} values for {h} latitude rows")
    scale = np.sqrt(np.mean(a**2 * area[:, None], axis=(0, 2, 3)))
    scale = np.where(scale > 0, scale, 1.0)
    sqrt_w = np.sqrt(area)
    # float32 for the (N, D) products (their cost dominates; the leading EOFs are well
    # separated from round-off), float64 for everything of size N x K or smaller.
    z = (a / scale[:, None, None] * sqrt_w[:, None]).reshape(n, -1)
    mean = z.mean(0)
    z = (z - mean).astype(np.float32)
    eigval, eigvec = np.linalg.eigh((z @ z.T).astype(np.float64))  # ascending
    k = int(min(n_components, n - 1))
    eigval, eigvec = eigval[::-1][:k], eigvec[:, ::-1][:, :k]
    eigval = np.clip(eigval, 1e-12 * eigval[0], None)
    components = (eigvec.T.astype(np.float32) @ z) / np.sqrt(eigval)[:, None].astype(np.float32)
    pcs = eigvec * np.sqrt(eigval)                                 # (N, K) = z @ components.T
    explained = eigval / np.sum(z.astype(np.float64) ** 2)
    del z
    targets = a.reshape(n, -1).astype(np.float32)
    groups = np.repeat(np.arange(c), h * w)
    column_weights = np.tile(np.repeat(area, w), c)
    if alphas is None:
        alphas = np.mean(eigval) * np.logspace(-3, 3, 13)
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or alphas.size == 0 or np.any(alphas < 0):
        raise ValueError("alphas must be a non-empty sequence of penalties >= 0")
    days = _day_numbers(times)
    coef = np.empty((max_lead, k, c * h * w), dtype=np.float32)
    intercept = np.empty((max_lead, c * h * w), dtype=np.float32)
    chosen = np.empty((max_lead, c))
    for lead in range(1, max_lead + 1):
        i, j = _lag_pairs(times, lead)
        if len(i) < folds * 2:
            raise ValueError(f"the training days hold {len(i)} pairs {lead} days apart; need "
                             f"at least {2 * folds} (more training days or a smaller max_lead)")
        xi, yj = pcs[i], targets[j]
        errors = _ridge_cv_errors(xi, yj, column_weights, groups, c, alphas, folds, days[i],
                                  gap=max_lead)
        best = alphas[np.argmin(errors, axis=0)]                   # (C,)
        chosen[lead - 1] = best
        xm, ym = xi.mean(0), yj.mean(0)
        u, s, vt = np.linalg.svd(xi - xm, full_matrices=False)
        g = (u.T.astype(np.float32) @ (yj - ym)).astype(np.float64)  # (r, D)
        for ch in range(c):
            cols = groups == ch
            d = s / (s**2 + best[ch])
            coef[lead - 1][:, cols] = (vt.T * d) @ g[:, cols]
        intercept[lead - 1] = ym - xm @ coef[lead - 1]
    return LinearRegressionForecast(
        climatology=clim, scale=scale.astype(np.float32), sqrt_weights=sqrt_w.astype(np.float32),
        mean=mean.astype(np.float32), components=components.astype(np.float32), coef=coef,
        intercept=intercept, alpha=chosen, explained_variance=explained)


def linear_regression_source(model: LinearRegressionForecast, fields: Any, times: Any
                             ) -> Callable[[Any, int], Tensor]:
    """:class:`LinearRegressionForecast` as a forecast source on ``fields`` (days ``times``):
    ``source(inits, steps) -> (B, steps, C, H, W)`` float32 tensor.

    Example (needs a PreparedData, not run as a doctest)::

        source = linear_regression_source(fit_linear_regression(prepared),
                                          prepared.valid, prepared.valid_times)
    """
    x = _as_numpy(fields)
    t = np.asarray(times, dtype="datetime64[ns]")

    def source(inits: Any, steps: int) -> Tensor:
        return torch.from_numpy(model.forecast(x, t, inits, steps))
    return source


# --------------------------------------------------------------------------------------------
# Optimal interpolation
# --------------------------------------------------------------------------------------------

def _unit_vectors(lat: Any, lon: Any) -> np.ndarray:
    """``(H * W, 3)`` unit vectors of the grid points, row-major ``(lat, lon)``."""
    phi = np.deg2rad(np.asarray(lat, dtype=np.float64))[:, None]
    lam = np.deg2rad(np.asarray(lon, dtype=np.float64))[None, :]
    xyz = np.stack(np.broadcast_arrays(np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam),
                                       np.sin(phi) + 0 * lam), axis=-1)
    return xyz.reshape(-1, 3)


def chordal_distance_km(lat: Any, lon: Any) -> np.ndarray:
    """Straight-line (chord) distance in km between every pair of grid points, float64
    ``(H W, H W)``, points row-major ``(lat, lon)``.

    ``chord = 2 R sin(g / 2R)`` for a great-circle distance ``g``: equal to ``g`` within 1 %
    below 3100 km and 10 % at 8000 km.
    """
    u = _unit_vectors(lat, lon)
    gram = np.clip(u @ u.T, -1.0, 1.0)
    return EARTH_RADIUS_KM * np.sqrt(np.clip(2.0 - 2.0 * gram, 0.0, None))


def _lag_correlations(a: np.ndarray, lat: np.ndarray, lon: np.ndarray, max_lag: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Correlations of ``a`` ``(N, H, W)`` between grid points ``(di, dj)`` apart (``di`` in
    ``0..max_lag``, ``dj`` in ``-max_lag..max_lag``, longitude periodic) and their chordal
    distances in km: two flat arrays over all such point pairs."""
    n, h, w = a.shape
    power = np.einsum("thw,thw->hw", a, a)
    u = _unit_vectors(lat, lon).reshape(h, w, 3)
    corr, dist = [], []
    for di in range(0, max_lag + 1):
        for dj in range(-max_lag, max_lag + 1):
            if di == 0 and dj <= 0:
                continue  # (0, 0) is the point itself; (0, -dj) repeats (0, dj)
            if di >= h:
                continue
            other = np.roll(a, -dj, axis=2)[:, di:]
            num = np.einsum("thw,thw->hw", a[:, :h - di], other)
            den = np.sqrt(power[:h - di] * np.roll(power, -dj, axis=1)[di:])
            with np.errstate(invalid="ignore", divide="ignore"):
                corr.append((num / den).reshape(-1))
            chord = np.linalg.norm(u[:h - di] - np.roll(u, -dj, axis=1)[di:], axis=-1)
            dist.append((EARTH_RADIUS_KM * chord).reshape(-1))
    return np.concatenate(corr), np.concatenate(dist)


def estimate_background_correlation(anomalies: Any, lat: Any, lon: Any, max_lag: int = 2,
                                    min_correlation: float = 0.1) -> tuple[float, float]:
    """Gaussian correlation with a nugget, ``rho(d) = c exp(-d^2 / 2L^2)`` for ``d > 0``
    (``rho(0) = 1``), fitted to the spatial correlations of ``anomalies`` ``(N, H, W)`` (one
    variable). Returns ``(L in km, c)``.

    The correlation between every pair of grid points up to ``max_lag`` rows and columns
    apart (uncentred, over the ``N`` days: anomalies have mean ~0) is computed with its
    chordal distance ``d``; pairs with correlation above ``min_correlation`` (below it the
    logarithm is dominated by noise and by the non-Gaussian tail) fit
    ``-ln rho = -ln c + d^2 / (2 L^2)`` by least squares. ``1 - c`` (clipped to [0, 1)) is the
    share of the anomaly variance that is uncorrelated at the grid spacing: structure smaller
    than the grid, which a pure Gaussian would give (numerically) zero variance, so that OI
    would smooth it away even from dense, accurate observations.
    """
    x = _as_numpy(anomalies).astype(np.float64)
    if x.ndim != 3:
        raise ValueError(f"anomalies must be (N, H, W) for one variable, got shape {x.shape}")
    corr, dist = _lag_correlations(x, np.asarray(lat), np.asarray(lon), max_lag)
    keep = np.isfinite(corr) & (corr > min_correlation) & (corr < 1.0) & (dist > 0)
    if keep.sum() < 3:
        raise ValueError("too few grid-point pairs are correlated above min_correlation to "
                         "fit a length scale; lower min_correlation or raise max_lag")
    design = np.stack([np.ones(int(keep.sum())), dist[keep] ** 2], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, -np.log(corr[keep]), rcond=None)
    if not slope > 0:
        raise ValueError("the anomaly correlations do not decrease with distance; check the "
                         "anomalies (one variable, (N, H, W), latitude ascending)")
    return float(np.sqrt(0.5 / slope)), float(np.clip(np.exp(-intercept), 1e-3, 1.0))


@dataclass(frozen=True)
class OptimalInterpolation:
    """Optimal interpolation (BLUE) of sparse noisy observations, per variable and day.

    ``x_a = x_b + B H^T (H B H^T + R)^{-1} (y - H x_b)``, where ``x_b`` is the day-of-year
    climatology, ``H`` picks the observed grid points,
    ``B_pq = s_p s_q (c exp(-d_pq^2 / 2L^2) + (1 - c) [p = q])`` (per variable: ``s`` the
    background error std per grid point, ``L`` its length scale, ``c`` the share of the
    variance correlated in space, ``d`` the chordal distance, see
    :func:`fit_optimal_interpolation`) and
    ``R = noise_std^2 k(p - q)`` the exact covariance of
    :func:`geofusion.data.observations.correlated_noise` (Gaussian in grid-index space with length
    ``noise_length`` grid points, periodic in longitude), in the units of the fields
    (standardised in the project).

    Attributes:
        climatology: float32 ``(366, C, H, W)`` background.
        background_std: float64 ``(C, H, W)`` ``s``.
        length_scale_km: float64 ``(C,)`` ``L``.
        correlated_fraction: float64 ``(C,)`` ``c``.
        lat, lon: degrees of the grid.
        noise_std, noise_length: the observation noise model.
        periodic_lon: as :func:`geofusion.data.observations.correlated_noise`.
        nugget: optional white observation error variance added to ``R``, as a fraction of
            the mean background variance (default 0).
    """

    climatology: np.ndarray
    background_std: np.ndarray
    length_scale_km: np.ndarray
    correlated_fraction: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    noise_std: float
    noise_length: float
    periodic_lon: bool = True
    nugget: float = 0.0

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.climatology.shape[-2]), int(self.climatology.shape[-1])

    def background(self, times: Any) -> np.ndarray:
        """``x_b``: the climatology of each day, float32 ``(T, C, H, W)``."""
        return climatology_forecast(self.climatology, times)

    def background_covariance(self, channel: int, distance_km: np.ndarray | None = None
                              ) -> np.ndarray:
        """``B`` of one variable, float64 ``(H W, H W)``, points row-major ``(lat, lon)``
        (``distance_km``: :func:`chordal_distance_km` of the grid, computed if None)."""
        d = chordal_distance_km(self.lat, self.lon) if distance_km is None else distance_km
        s = self.background_std[channel].reshape(-1)
        length, c = self.length_scale_km[channel], self.correlated_fraction[channel]
        corr = c * np.exp(-(d**2) / (2.0 * length**2))
        corr[np.diag_indices_from(corr)] = 1.0
        return s[:, None] * s[None, :] * corr

    def observation_covariance(self, channel: int) -> np.ndarray:
        """``R`` of one variable on all grid points, float64 ``(H W, H W)``: the exact
        correlated-noise covariance plus ``nugget * mean(s^2)`` on the diagonal."""
        return self._with_nugget(correlated_noise_covariance(
            self.grid, self.noise_length, self.noise_std, self.periodic_lon).numpy(), channel)

    def _with_nugget(self, r: np.ndarray, channel: int) -> np.ndarray:
        r = r.copy()
        r[np.diag_indices_from(r)] += self.nugget * float(np.mean(
            self.background_std[channel] ** 2))
        return r

    def _covariances(self) -> tuple[Tensor, Tensor]:
        """``B`` and ``B + R`` of every variable on all grid points, float64 ``(C, H W, H W)``
        each (:meth:`background_covariance`, :meth:`observation_covariance`), memoised across
        calls and across copies that differ only in the noise (``dataclasses.replace``, as the
        sparsity evaluation does per observation): building them costs more than a small
        analysis. Keyed by the contents of the statistics, so a refit is never served stale
        matrices."""
        stats = (self.background_std, self.length_scale_km, self.correlated_fraction,
                 self.lat, self.lon)
        b_key = ("B", _contents_key(*stats))

        def build_b() -> Tensor:
            distance = chordal_distance_km(self.lat, self.lon)
            return torch.from_numpy(np.stack([self.background_covariance(ch, distance)
                                              for ch in range(len(self.background_std))]))

        b = _memoised(b_key, build_b)

        def build_b_plus_r() -> Tensor:
            r_noise = correlated_noise_covariance(self.grid, self.noise_length,
                                                  self.noise_std, self.periodic_lon).numpy()
            r = torch.from_numpy(np.stack([self._with_nugget(r_noise, ch)
                                           for ch in range(len(b))]))
            return b + r

        b_plus_r = _memoised((b_key, "B+R", self.grid, float(self.noise_length),
                              float(self.noise_std), bool(self.periodic_lon),
                              float(self.nugget)), build_b_plus_r)
        return b, b_plus_r

    def analyse(self, observations: Any, observed: Any, times: Any) -> np.ndarray:
        """Analyses of every day and variable, float32 ``(T, C, H, W)``.

        Args:
            observations: ``(T, C, H, W)`` observed values (only the observed points are
                read; e.g. the first output of :class:`geofusion.data.observations.Observation`).
            observed: bool ``(T, H, W)`` (True = observed, the same points for every
                variable, the project's masks) or ``(H, W)`` for every day.
            times: ``(T,)`` datetime64 days (for the background).

        Days with the same observed points share one Cholesky factorisation of
        ``H B H^T + R`` per variable (all variables batched); a day without observations
        gets the background. If a factorisation fails (``R`` near zero for noise-free
        observations) a white nugget of ``1e-10``, ``1e-8``, ... times the mean variance is
        added until it succeeds.
        """
        y = _as_numpy(observations).astype(np.float64)
        mask = _as_numpy(observed).astype(bool)
        if y.ndim != 4 or y.shape[1:] != self.climatology.shape[1:]:
            raise ValueError(f"observations must be (T, C, H, W) with (C, H, W) = "
                             f"{self.climatology.shape[1:]} (the fitted grid), got {y.shape}")
        t, c, h, w = y.shape
        if mask.shape == (h, w):
            mask = np.broadcast_to(mask, (t, h, w))
        if mask.shape != (t, h, w):
            raise ValueError(f"observed must be (T, H, W) = {(t, h, w)} or (H, W), got "
                             f"{mask.shape}; one mask per day, shared by the variables")
        xb = self.background(times).astype(np.float64)
        if len(xb) != t:
            raise ValueError(f"{len(xb)} times for {t} days of observations")
        out = xb.copy()
        flat_mask = mask.reshape(t, -1)
        if not flat_mask.any():
            return out.astype(np.float32)
        b, b_plus_r = self._covariances()
        innovation = (y - xb).reshape(t, c, -1)
        patterns, which = np.unique(flat_mask, axis=0, return_inverse=True)
        which = which.reshape(-1)
        for p, pattern in enumerate(patterns):
            obs = np.flatnonzero(pattern)
            if obs.size == 0:
                continue
            days = np.flatnonzero(which == p)
            o = torch.from_numpy(obs)
            s = b_plus_r[:, o[:, None], o[None, :]]                # (C, m, m) = H B H^T + R
            chol = _cholesky_with_nugget(s)
            d = torch.from_numpy(np.ascontiguousarray(
                innovation[days][:, :, obs].transpose(1, 2, 0)))  # (C, m, days)
            # B H^T w as B (H^T w): scattering w costs nothing, gathering B H^T (C, n, m) did.
            weights = torch.zeros(c, h * w, len(days), dtype=torch.float64)
            weights[:, o] = torch.cholesky_solve(d, chol)
            incr = (b @ weights).numpy()                           # (C, n, days)
            out[days] += incr.transpose(2, 0, 1).reshape(len(days), c, h, w)
        return out.astype(np.float32)


# The covariance matrices of the latest optimal interpolations (float64 (C, n, n), 160 MB
# each on the 32x64 grid), least recently used first.
_COVARIANCES: OrderedDict[Any, Tensor] = OrderedDict()
_COVARIANCES_KEPT = 3


def _contents_key(*arrays: Any) -> str:
    """A digest of the arrays' shapes, dtypes and bytes (a cache key)."""
    digest = hashlib.sha1()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _memoised(key: Any, build: Callable[[], Tensor]) -> Tensor:
    """``build()``, kept in :data:`_COVARIANCES` under ``key`` (the last few only)."""
    if key in _COVARIANCES:
        _COVARIANCES.move_to_end(key)
        return _COVARIANCES[key]
    value = build()
    _COVARIANCES[key] = value
    while len(_COVARIANCES) > _COVARIANCES_KEPT:
        _COVARIANCES.popitem(last=False)
    return value


def _cholesky_with_nugget(s: Tensor) -> Tensor:
    """Lower Cholesky factors of the batch ``s`` ``(C, m, m)``, adding ``eps * mean(diag)``
    to the diagonal (eps = 0, 1e-10, 1e-8, ..., 1e-2) until every factorisation succeeds."""
    scale = torch.diagonal(s, dim1=-2, dim2=-1).mean(-1)[:, None, None]
    eye = torch.eye(s.shape[-1], dtype=s.dtype)
    for eps in (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2):
        chol, info = torch.linalg.cholesky_ex(s + eps * scale * eye if eps else s)
        if not bool(info.any()):
            return chol
    raise ValueError("H B H^T + R is not positive definite even with a nugget of 1e-2 of its "
                     "variance; check background_std and the noise settings for NaN or "
                     "negative values")


def fit_optimal_interpolation(prepared: Any, noise_std: float, noise_length: float,
                              window: int = 15, max_lag: int = 2,
                              min_correlation: float = 0.1, periodic_lon: bool = True
                              ) -> OptimalInterpolation:
    """Estimate the optimal-interpolation statistics from the training days of ``prepared``.

    - background: the training :func:`climatology` (``window``-day smoothing).
    - background error std ``s`` per variable and grid point: the root mean square of the
      training anomalies from that climatology (exactly the climatology's error on the
      training days; per point, because anomaly variance changes by an order of magnitude
      between the tropics and high latitudes).
    - background error correlation per variable: a Gaussian of length scale ``L`` holding a
      share ``c`` of the variance plus an uncorrelated share ``1 - c``
      (:func:`estimate_background_correlation` on the training anomalies divided by ``s``).
      The uncorrelated share is the sub-grid structure: without it ``B`` (and ``R``, also a
      Gaussian) are numerically singular on this grid and OI smooths away real small-scale
      signal even from dense observations (measured on the synthetic data: dense
      observations with noise 0.1 gave an analysis error of 0.16-4.6 depending on a
      diagonal regularisation, against 0.10 for the raw observations). ``B`` uses the
      Gaussian of the chordal distance rather than of the great-circle distance: a Gaussian
      of the great-circle distance is not positive definite on the sphere (Gneiting 2013),
      the chordal one is (a Gaussian in 3-D restricted to the sphere), and the two distances
      agree within 1 % below ~3000 km, where the correlation is not negligible.
    - ``R``: the observation noise model the data were corrupted with, ``noise_std`` (units
      of the fields; standardised in the project) and ``noise_length`` (grid points), as in
      :class:`geofusion.data.observations.Observation`. It is a setting of the experiment, not a
      fit.

    Args:
        prepared: :class:`geofusion.data.PreparedData`; only ``train``, ``train_times``,
            ``lat`` and ``lon`` are read.
        noise_std, noise_length: the observation noise (both >= 0).
        window: climatology window, days.
        max_lag, min_correlation: of :func:`estimate_background_correlation`.
        periodic_lon: of the noise model.

    Returns:
        :class:`OptimalInterpolation`.

    Example (needs a PreparedData, not run as a doctest)::

        oi = fit_optimal_interpolation(prepared, noise_std=0.1, noise_length=2.0)
        observe = Observation(kind="pixel", min_ratio=0.5, max_ratio=0.5, noise_std=0.1,
                              noise_length=2.0)
        noisy, observed = observe(torch.from_numpy(prepared.valid),
                                  torch.Generator().manual_seed(0))
        analysis = oi.analyse(noisy, observed, prepared.valid_times)  # standardised
    """
    if not noise_std >= 0 or not noise_length >= 0:
        raise ValueError(f"noise_std and noise_length must be >= 0, got {noise_std}, "
                         f"{noise_length}")
    x, times = _train_split(prepared)
    lat = np.asarray(prepared.lat, dtype=np.float64)
    lon = np.asarray(prepared.lon, dtype=np.float64)
    if (len(lat), len(lon)) != x.shape[-2:]:
        raise ValueError(f"prepared.lat/lon give a {len(lat)} x {len(lon)} grid, the fields "
                         f"are {x.shape[-2]} x {x.shape[-1]}")
    clim = climatology(x, times, window)
    a = _anomalies(x, times, clim)
    std = np.sqrt(np.mean(a**2, axis=0))
    floor = 1e-6 * max(float(std.max()), 1e-30)
    std = np.maximum(std, floor)  # a constant point would make B singular
    fitted = np.array([estimate_background_correlation(a[:, ch] / std[ch], lat, lon, max_lag,
                                                       min_correlation)
                       for ch in range(x.shape[1])])
    return OptimalInterpolation(clim, std, fitted[:, 0], fitted[:, 1], lat, lon,
                                float(noise_std), float(noise_length), periodic_lon)
