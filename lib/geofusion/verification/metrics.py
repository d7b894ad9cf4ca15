"""Latitude-weighted verification scores, following WeatherBench 2 (``weatherbench2.metrics``).

All functions take numpy arrays or torch tensors whose last two axes are ``(lat, lon)``
(latitude ascending, degrees) and return the same kind of object, with the two spatial axes
(and the time axis, when one is named) reduced. Leading axes such as channel are kept, so a
``(time, C, lat, lon)`` input scored with ``time_axis=0`` gives one value per channel.

Conventions (as in WB2, Rasp et al. 2023, section 4):

- **Area weights** (:func:`latitude_weights`): the weight of a latitude row is the area of
  its cell on the sphere, ``sin(upper bound) - sin(lower bound)``, the bounds being the
  midpoints between rows and +-90 degrees at the ends, normalised to mean 1. On an
  equiangular grid without poles (the 5.625-degree one: rows at +-2.8125, ..., +-87.1875)
  every cell has the same width, ``2 cos(lat) sin(width / 2)``, so the weights equal
  ``cos(lat) / mean(cos(lat))`` exactly; on grids with pole rows they differ (the pole row
  gets a small positive weight instead of cos(90) = 0).
- **Spatial mean** of a field ``x``: ``sum_{i,j} w_i x_ij / sum_{i,j} w_i`` =
  ``mean_{i,j}(w_i x_ij)`` since the weights have mean 1.
- **RMSE**: the spatial mean of the squared error per time, then the time mean, *then* the
  square root: ``RMSE = sqrt(mean_t MSE_t)`` (WB2 computes MSE and takes the root after the
  time average; the ``RMSESqrtBeforeTimeAvg`` variant is not the headline score).
- **ACC**: per time, the uncentred correlation of the anomalies ``f' = f - clim`` and
  ``t' = t - clim`` over space, ``mean(w f' t') / sqrt(mean(w f'^2) mean(w t'^2))``; with a
  time axis the per-time values are averaged (WB2's ``ACC.compute_chunk`` then ``compute``'s
  time mean). A zero anomaly field gives NaN, as in WB2.
- **MAE**: spatial mean of ``|f - t|``, then the time mean.

Scores are in the units of the inputs: pass physical fields
(:meth:`geofusion.data.PreparedData.destandardise`) to get K, m^2 s^-2, ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

__all__ = [
    "latitude_weights", "lat_weighted_mean", "lat_weighted_mse", "lat_weighted_rmse",
    "lat_weighted_acc", "lat_weighted_mae", "per_variable_table",
]

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def latitude_weights(lat: Array) -> Array:
    """Area weight of each latitude row, normalised to mean 1 (WB2 ``get_lat_weights``).

    Args:
        lat: ``(nlat,)`` latitudes in degrees, strictly increasing, within [-90, 90].

    Returns:
        ``(nlat,)`` weights, same type (numpy/torch), dtype and device as ``lat``: the area
        ``sin(phi_upper) - sin(phi_lower)`` of each row's cell, whose bounds are the midpoints
        between neighbouring rows and the poles at both ends, divided by the mean area.
    """
    is_torch = isinstance(lat, torch.Tensor)
    lat_np = (lat.detach().cpu().double().numpy() if is_torch
              else np.asarray(lat, dtype=np.float64))
    if lat_np.ndim != 1 or lat_np.size == 0:
        raise ValueError(f"lat must be a non-empty 1-D array of degrees, got shape {lat_np.shape}")
    if np.any(np.diff(lat_np) <= 0):
        raise ValueError("lat must be strictly increasing (south to north, as WeatherBench 2 "
                         "stores it); flip the latitude axis of the data and of lat")
    if np.any(np.abs(lat_np) > 90):
        raise ValueError(f"lat must be within [-90, 90] degrees, got range "
                         f"[{lat_np.min()}, {lat_np.max()}]")
    phi = np.deg2rad(lat_np)
    bounds = np.concatenate([[-np.pi / 2], (phi[:-1] + phi[1:]) / 2, [np.pi / 2]])
    area = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    weights = area / area.mean()
    if is_torch:
        dtype = lat.dtype if lat.is_floating_point() else torch.float32
        return torch.as_tensor(weights, dtype=dtype, device=lat.device)
    return weights.astype(lat_np.dtype if np.issubdtype(np.asarray(lat).dtype, np.floating)
                          else np.float64)


def _as_pair(forecast: Any, truth: Any) -> tuple[Any, Any, bool]:
    """Both as torch (if either is torch) or both as numpy float arrays."""
    if isinstance(forecast, torch.Tensor) or isinstance(truth, torch.Tensor):
        ref = forecast if isinstance(forecast, torch.Tensor) else truth
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        f = torch.as_tensor(forecast, dtype=dtype, device=ref.device)
        t = torch.as_tensor(truth, dtype=dtype, device=ref.device)
        return f, t, True
    f = np.asarray(forecast)
    t = np.asarray(truth)
    if not np.issubdtype(f.dtype, np.floating):
        f = f.astype(np.float64)
    return f, t.astype(f.dtype, copy=False), False


def _weights_for(x: Any, lat: Any, is_torch: bool) -> Any:
    """Latitude weights shaped ``(nlat, 1)`` to broadcast against ``(..., lat, lon)``."""
    if x.ndim < 2:
        raise ValueError(f"inputs need (..., lat, lon) axes, got shape {tuple(x.shape)}")
    nlat = x.shape[-2]
    if is_torch:
        w = latitude_weights(torch.as_tensor(lat, dtype=torch.float64))
        w = w.to(dtype=x.dtype, device=x.device)
    else:
        w = latitude_weights(np.asarray(lat, dtype=np.float64)).astype(x.dtype)
    if w.shape[0] != nlat:
        raise ValueError(f"lat has {w.shape[0]} values but the data has {nlat} latitude rows "
                         "(axis -2); pass the latitude coordinate of this grid")
    return w[:, None]


def lat_weighted_mean(x: Array, lat: Any) -> Array:
    """Area-weighted spatial mean over the last two axes ``(lat, lon)``: ``(...,)``."""
    is_torch = isinstance(x, torch.Tensor)
    if not is_torch:
        x = np.asarray(x)
    w = _weights_for(x, lat, is_torch)
    # Weights have mean 1, so the weighted mean is the plain mean of w * x.
    return (x * w).mean(axis=(-2, -1)) if not is_torch else (x * w).mean(dim=(-2, -1))


def _check_time_axis(time_axis: int | None, ndim: int) -> int | None:
    if time_axis is None:
        return None
    axis = time_axis + ndim if time_axis < 0 else time_axis
    if not 0 <= axis < ndim - 2:
        raise ValueError(f"time_axis={time_axis} is not a leading axis of a {ndim}-d input "
                         "whose last two axes are (lat, lon); pass the index of the time axis")
    return axis


def _time_mean(x: Any, axis: int | None) -> Any:
    if axis is None:
        return x
    return x.mean(dim=axis) if isinstance(x, torch.Tensor) else x.mean(axis=axis)


def lat_weighted_mse(forecast: Array, truth: Array, lat: Any,
                     time_axis: int | None = None) -> Array:
    """Area-weighted mean squared error (units of the input squared).

    Args:
        forecast, truth: ``(..., lat, lon)`` arrays or tensors (broadcastable).
        lat: ``(lat,)`` degrees, ascending.
        time_axis: leading axis to average over after the spatial mean, or None.

    Returns:
        The leading axes, without ``time_axis``: e.g. ``(C,)`` for ``(T, C, lat, lon)``.
    """
    f, t, is_torch = _as_pair(forecast, truth)
    err2 = (f - t) ** 2
    axis = _check_time_axis(time_axis, err2.ndim)
    return _time_mean(lat_weighted_mean(err2, lat), axis)


def lat_weighted_rmse(forecast: Array, truth: Array, lat: Any,
                      time_axis: int | None = None) -> Array:
    """Area-weighted RMSE, root taken after the time mean (WB2's headline RMSE).

    ``RMSE = sqrt(mean_t sum_ij w_i (f - t)^2 / sum_ij w_i)``. Without ``time_axis`` every
    leading index (e.g. each time and channel) gets its own root.

    Args:
        forecast, truth: ``(..., lat, lon)`` arrays or tensors (broadcastable), same units.
        lat: ``(lat,)`` degrees, ascending.
        time_axis: leading axis averaged *before* the root, or None.

    Returns:
        ``(...)`` without the spatial axes and ``time_axis``, units of the input.
    """
    mse = lat_weighted_mse(forecast, truth, lat, time_axis)
    return mse.sqrt() if isinstance(mse, torch.Tensor) else np.sqrt(mse)


def lat_weighted_mae(forecast: Array, truth: Array, lat: Any,
                     time_axis: int | None = None) -> Array:
    """Area-weighted mean absolute error, time-averaged over ``time_axis`` when given."""
    f, t, _ = _as_pair(forecast, truth)
    err = abs(f - t)
    axis = _check_time_axis(time_axis, err.ndim)
    return _time_mean(lat_weighted_mean(err, lat), axis)


def lat_weighted_acc(forecast: Array, truth: Array, climatology: Any, lat: Any,
                     time_axis: int | None = None) -> Array:
    """Anomaly correlation coefficient (WB2 ``ACC``), dimensionless in [-1, 1].

    Per time: ``ACC = mean(w f' t') / sqrt(mean(w f'^2) mean(w t'^2))`` over (lat, lon), with
    ``f' = forecast - climatology`` and ``t' = truth - climatology`` (uncentred: the spatial
    mean anomaly is not removed, as in WB2). With ``time_axis`` the per-time ACCs are
    averaged (WB2 averages the per-time values, it does not pool the sums over time).

    Args:
        forecast, truth: ``(..., lat, lon)``.
        climatology: broadcastable to them, e.g.
        :func:`geofusion.verification.baselines.climatology_forecast`
            at the verification times ``(T, C, lat, lon)``, or ``(C, lat, lon)``.
        lat: ``(lat,)`` degrees, ascending.
        time_axis: leading axis averaged after the per-time ACC, or None.

    Returns:
        ``(...)`` without the spatial axes and ``time_axis``. NaN where an anomaly is zero
        everywhere (the correlation is undefined).
    """
    f, t, is_torch = _as_pair(forecast, truth)
    if is_torch:
        clim = torch.as_tensor(climatology, dtype=f.dtype, device=f.device)
    else:
        clim = np.asarray(climatology, dtype=f.dtype)
    fa, ta = f - clim, t - clim
    fa, ta = (torch.broadcast_tensors(fa, ta) if is_torch else np.broadcast_arrays(fa, ta))
    axis = _check_time_axis(time_axis, fa.ndim)
    num = lat_weighted_mean(fa * ta, lat)
    den2 = lat_weighted_mean(fa * fa, lat) * lat_weighted_mean(ta * ta, lat)
    if is_torch:
        acc = num / den2.sqrt()
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = num / np.sqrt(den2)
    return _time_mean(acc, axis)


def per_variable_table(scores: Mapping[str, Any], channels: Sequence[str],
                       units: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Scores per variable as a DataFrame (one row per channel, one column per score).

    Args:
        scores: name -> ``(C,)`` values (numpy, torch or list), e.g.
            ``{"rmse": lat_weighted_rmse(...), "acc": lat_weighted_acc(...)}``.
        channels: the ``C`` variable names (e.g. ``geofusion.variables.VARIABLES``), row order.
        units: optional variable -> unit, added as a ``units`` column.

    Returns:
        DataFrame indexed by ``variable``.
    """
    columns: dict[str, np.ndarray] = {}
    for name, values in scores.items():
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape[0] != len(channels):
            raise ValueError(f"score {name!r} has {arr.shape[0]} values for {len(channels)} "
                             "channels; reduce every axis but the channel axis first")
        columns[name] = arr
    table = pd.DataFrame(columns, index=pd.Index(list(channels), name="variable"))
    if units is not None:
        table.insert(0, "units", [units.get(c, "") for c in channels])
    return table
