"""The day-of-year climatology of the training days: the seasonal cycle every anomaly is taken
from and the climatology baseline forecasts.

``c(d)`` is the mean of the training days within ``window // 2`` days of day of year ``d``
(circularly), :func:`climatology`; :func:`climatology_forecast` reads it at given days. Both
the anomaly space of the models (:mod:`geofusion.data.anomalies`) and the climatology baseline
(:mod:`geofusion.verification.baselines`) use these functions, so "anomaly" and "climatology"
mean the same thing everywhere.

Example:
    >>> import numpy as np
    >>> times = np.arange("2001-01-01", "2002-01-01", dtype="datetime64[D]")
    >>> fields = np.ones((365, 1, 2, 2), dtype="float32")
    >>> clim = climatology(fields, times)
    >>> clim.shape, float(clim.min()), float(clim.max())
    ((366, 1, 2, 2), 1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = ["day_of_year", "climatology", "climatology_forecast"]


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
