"""Prepared data: daily, standardised fields split by time into training, validation and (on
request) test blocks, with what is needed to undo the scaling (:class:`PreparedData`).

Arrays are ``(time, channel, lat, lon)`` float32, channels in
:data:`geofusion.variables.VARIABLES` order, latitude ascending, longitude 0..360 east;
statistics are the training block's only. Built by :func:`geofusion.data.preparation.prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from geofusion.variables import (
    UNITS,
    season_labels,
)

__all__ = ["evenly_spaced_days", "PreparedData"]


def evenly_spaced_days(n_days: int, n: int | None) -> np.ndarray:
    """Indices of ``n`` days spread evenly over a block of ``n_days`` (first and last
    included), all of them when ``n`` is None or not smaller: the scored subsample of a block
    that keeps every season, unlike a contiguous run of days.

    Example:
        >>> evenly_spaced_days(10, 4).tolist(), len(evenly_spaced_days(10, None))
        ([0, 3, 6, 9], 10)
    """
    if n is None or n >= n_days:
        return np.arange(n_days)
    if n < 1:
        raise ValueError(f"n must be a positive number of days or None, got {n}")
    return np.unique(np.linspace(0, n_days - 1, n).round().astype(int))


@dataclass
class PreparedData:
    """Daily, standardised fields split by time, with what is needed to undo the scaling.

    Attributes
    ----------
    train, valid: float32 ``(T, C, lat, lon)`` standardised fields (training = earlier days).
    train_times, valid_times: datetime64[ns] ``(T,)`` day of each sample.
    channels: variable names, :data:`VARIABLES` order.
    mean, std: float32 ``(C,)`` training statistics in physical units (:data:`UNITS`).
    lat, lon: degrees ``(lat,)`` ascending and ``(lon,)`` 0..360 east.
    level: pressure level of the pressure-level variables, hPa.
    synthetic: True when the data is the synthetic default, not real ERA5.
    space: "report" (fields standardised with ``mean`` / ``std``, the report's section 3.1) or
        "anomaly" (day-of-year anomalies of ``climatology`` divided by ``std`` per variable,
        :func:`geofusion.data.anomalies.to_space`, the notebooks' default).
    climatology: float32 ``(366, C, lat, lon)`` physical training climatology that the
        anomaly space is taken from; None in the report space.
    test, test_times: the held-out last block of a three-way split (``prepare(...,
        test_fraction=...)``), standardised with the training statistics; None for the
        default two-way split. Sweeps select on ``valid``; only a final scorecard reads
        ``test``. :meth:`physical` and :attr:`times_all` cover train and valid only, so
        nothing fitted on "all days" (climatologies, explorers) sees the test block.
    """

    train: np.ndarray
    valid: np.ndarray
    train_times: np.ndarray
    valid_times: np.ndarray
    channels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    level: int
    synthetic: bool
    test: np.ndarray | None = None
    test_times: np.ndarray | None = None
    space: str = "report"
    climatology: np.ndarray | None = None

    def destandardise(self, x: np.ndarray | torch.Tensor, times: Any = None
                      ) -> np.ndarray | torch.Tensor:
        """Fields of this space ``(..., T, C, lat, lon)`` -> physical units; numpy in, numpy
        out, torch too.

        Report space: ``x * std + mean``. Anomaly space: ``x * std + climatology(doy)``, which
        needs the day of each field: ``times`` ``(T,)`` datetime64, matching the axis before
        the channels (a leading axis of any length, e.g. members, broadcasts).
        """
        torch_in = isinstance(x, torch.Tensor)
        if torch_in:
            std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
            mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
            out = x * std + mean
        else:
            x = np.asarray(x)
            out = x * self.std[:, None, None] + self.mean[:, None, None]
        if self.climatology is None:
            return out
        if times is None:
            raise ValueError("these fields are anomalies (space='anomaly'): pass the day of "
                             "each field, destandardise(x, times), to add the climatology "
                             "back")
        doy = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]").reshape(-1)
                               ).day_of_year.to_numpy() - 1
        if x.ndim < 4 or x.shape[-4] != len(doy):
            raise ValueError(f"{len(doy)} times for fields of shape {tuple(x.shape)}; pass "
                             "one time per field (the axis before the channels)")
        clim = self.climatology[doy]
        if torch_in:
            return out + torch.as_tensor(clim, dtype=x.dtype, device=x.device)
        return out + clim

    def as_valid_at(self, x: np.ndarray | torch.Tensor, from_times: Any, to_times: Any
                    ) -> np.ndarray | torch.Tensor:
        """The fields ``x`` of days ``from_times`` expressed as fields of days ``to_times``:
        the same physical fields (persistence), ``x + (c(from) - c(to)) / std`` in the anomaly
        space, ``x`` itself in the report space. ``x`` ``(T, C, lat, lon)``, both times
        ``(T,)``.
        """
        if self.climatology is None:
            return x
        def doy(times: Any) -> np.ndarray:
            return pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]").reshape(-1)
                                    ).day_of_year.to_numpy() - 1
        shift = (self.climatology[doy(from_times)] - self.climatology[doy(to_times)]) \
            / self.std[:, None, None]
        if isinstance(x, torch.Tensor):
            return x + torch.as_tensor(shift, dtype=x.dtype, device=x.device)
        return np.asarray(x) + shift.astype(np.float32)

    def _check_split(self, split: str) -> None:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
        if split == "test" and self.test is None:
            raise ValueError("this data has no test split; prepare it with test_fraction > 0 "
                             "(e.g. train_fraction=0.6, test_fraction=0.2)")

    def times(self, split: str) -> np.ndarray:
        """The ``train``, ``valid`` or ``test`` times."""
        self._check_split(split)
        return {"train": self.train_times, "valid": self.valid_times,
                "test": self.test_times}[split]

    def fields(self, split: str) -> np.ndarray:
        """The standardised ``(T, C, lat, lon)`` fields of ``train``, ``valid`` or ``test``."""
        self._check_split(split)
        return {"train": self.train, "valid": self.valid, "test": self.test}[split]

    def season_labels(self, split: str) -> np.ndarray:
        """Season label (0=DJF .. 3=SON) of every sample of ``split`` (train, valid, test)."""
        return season_labels(self.times(split))

    @property
    def times_all(self) -> np.ndarray:
        """All days, training then validation, datetime64[ns] ``(T,)``."""
        return np.concatenate([self.train_times, self.valid_times])

    def physical(self) -> np.ndarray:
        """All days (train then valid) in physical units, float32 ``(T, C, lat, lon)``."""
        return self.destandardise(np.concatenate([self.train, self.valid]),
                                  self.times_all).astype(np.float32)

    def summary(self) -> pd.DataFrame:
        """Per-variable statistics in physical units over all days (train + valid).

        Columns: units, mean, std, min, max, and the training mean/std used to standardise.
        """
        rows = []
        physical = self.physical()
        for c, name in enumerate(self.channels):
            values = physical[:, c].ravel().astype(np.float64)
            rows.append({"variable": name, "units": UNITS.get(name, ""),
                         "mean": values.mean(), "std": values.std(), "min": values.min(),
                         "max": values.max(), "train mean": float(self.mean[c]),
                         "train std": float(self.std[c])})
        return pd.DataFrame(rows).set_index("variable")
