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

The reconstruction baseline, optimal interpolation, is in
:mod:`geofusion.verification.optimal_interpolation`.

All fits take a :class:`geofusion.data.PreparedData` (or anything with ``train``,
``train_times``, ``lat``, ``lon``) and read only ``train`` and ``train_times``, so no
validation day can leak into a baseline; the tests feed validation days and check that they
change nothing.

Forecast sources (``source(inits, steps) -> (B, steps, C, H, W)`` standardised fields, see
:mod:`geofusion.downstream.forecasting`): :func:`damped_persistence_source` and
:func:`linear_regression_source` score the new baselines next to the LSTMs with
``score_forecasts``.

Fields are ``(time, channel, lat, lon)`` in any consistent units (the project passes the
fields of its representation space, :mod:`geofusion.data.anomalies`; a baseline's output is in
the units of its input). ``day_of_year``, ``climatology`` and ``climatology_forecast`` are
those of :mod:`geofusion.data.climatology` (the same climatology the anomalies are taken from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geofusion.data.anomalies import CLIMATOLOGY_WINDOW
from geofusion.data.climatology import climatology, climatology_forecast, day_of_year

__all__ = [
    "day_of_year", "climatology", "climatology_forecast", "persistence_forecast",
    "training_climatology", "training_days", "anomalies", "as_numpy",
    "lag_regression", "DampedPersistence", "fit_damped_persistence", "damped_persistence_source",
]

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


def training_days(prepared: Any) -> tuple[np.ndarray, np.ndarray]:
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

    In the anomaly space (:mod:`geofusion.data.anomalies`) the fields are already departures
    from the training climatology of the same window, so the climatology is exactly zero
    there: the baseline stays the physical day-of-year climatology of the training days, the
    same forecast in either space.
    """
    x, times = training_days(prepared)
    if getattr(prepared, "space", "report") == "anomaly" and window == CLIMATOLOGY_WINDOW:
        return np.zeros((366,) + x.shape[1:], dtype=np.float32)
    return climatology(x, times, window)


def anomalies(x: np.ndarray, times: np.ndarray, clim: np.ndarray) -> np.ndarray:
    """``x - c(doy)``: float64 anomalies ``(T, C, H, W)`` of ``x`` against the day-of-year
    climatology ``clim`` ``(366, C, H, W)`` at the days ``times``."""
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


def as_numpy(fields: Any) -> np.ndarray:
    """``fields`` (numpy or torch, any device) as a numpy array, without copying numpy input."""
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
    x = as_numpy(fields)
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
    a = np.asarray(as_numpy(series), dtype=np.float64)
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
    x, times = training_days(prepared)
    # The training climatology (exactly zero in the anomaly space, whose fields already are
    # departures from it): the same physical forecast in either space.
    clim = training_climatology(prepared, window)
    rho = lag_regression(anomalies(x, times, clim), times, max_lead, pooling, prepared.lat)
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
    x = as_numpy(fields)
    t = np.asarray(times, dtype="datetime64[ns]")

    def source(inits: Any, steps: int) -> Tensor:
        return torch.from_numpy(model.forecast(x, t, inits, steps))
    return source


# --------------------------------------------------------------------------------------------
# Field-space linear regression (WeatherBench)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Optimal interpolation
# --------------------------------------------------------------------------------------------


