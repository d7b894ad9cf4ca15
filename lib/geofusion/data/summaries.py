"""Summaries of prepared data that notebook 01 shows: the seasonal cycle of a latitude band, the
correlations between the modes, and time series at chosen points, all in physical units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from geofusion.data.prepared import PreparedData

__all__ = ["seasonal_cycle", "mode_correlations", "point_series"]


def seasonal_cycle(prepared: PreparedData, band: tuple[float, float] = (30.0, 60.0)
                   ) -> pd.DataFrame:
    """Mean annual cycle of each mode averaged over a latitude band in each hemisphere.

    Area-weighted (cos latitude) mean over ``band`` degrees north (``NH``) and the mirrored
    band south (``SH``), then averaged by calendar month over all days. Returns a DataFrame
    indexed by month 1..12 with columns ``(channel, "NH"|"SH")`` in physical units.
    """
    fields = prepared.physical().astype(np.float64)
    weights = np.cos(np.deg2rad(prepared.lat))
    months = pd.DatetimeIndex(prepared.times_all).month
    columns = {}
    for hemisphere, sign in (("NH", 1.0), ("SH", -1.0)):
        lat = sign * prepared.lat
        inside = (lat >= band[0]) & (lat <= band[1])
        w = weights * inside
        series = (fields.mean(axis=3) * w).sum(axis=2) / w.sum()  # (T, C)
        for c, name in enumerate(prepared.channels):
            columns[(name, hemisphere)] = pd.Series(series[:, c]).groupby(months).mean().values
    table = pd.DataFrame(columns, index=pd.Index(sorted(set(months)), name="month"))
    return table.sort_index(axis=1, level=0, sort_remaining=False)


def mode_correlations(prepared: PreparedData) -> pd.DataFrame:
    """Correlation matrix ``(C, C)`` between modes of their area-weighted anomalies.

    Anomalies are departures from each grid point's calendar-month mean (so the shared seasonal
    cycle does not dominate), weighted by ``sqrt(cos latitude)`` so every grid point counts in
    proportion to its area; correlations are over all days and grid points.
    """
    fields = prepared.physical().astype(np.float64)
    months = pd.DatetimeIndex(prepared.times_all).month.to_numpy()
    anomalies = np.empty_like(fields)
    for month in np.unique(months):
        chosen = months == month
        anomalies[chosen] = fields[chosen] - fields[chosen].mean(axis=0, keepdims=True)
    anomalies *= np.sqrt(np.cos(np.deg2rad(prepared.lat)))[None, None, :, None]
    flat = anomalies.transpose(1, 0, 2, 3).reshape(len(prepared.channels), -1)
    return pd.DataFrame(np.corrcoef(flat), index=list(prepared.channels),
                        columns=list(prepared.channels))


def point_series(prepared: PreparedData, points: Sequence[tuple[float, float]],
                 channel: str = "2m_temperature") -> pd.DataFrame:
    """Daily series of one mode (physical units) at the grid points nearest ``(lat, lon)``.

    Returns a DataFrame indexed by day with one column per point, named after the grid point
    actually used (e.g. ``"47.8N 0.0E"``).
    """
    c = prepared.channels.index(channel)
    fields = prepared.physical()[:, c]
    columns = {}
    for lat, lon in points:
        i = int(np.argmin(np.abs(prepared.lat - lat)))
        j = int(np.argmin(np.abs((prepared.lon - lon % 360 + 180) % 360 - 180)))
        glat, glon = prepared.lat[i], prepared.lon[j]
        label = f"{abs(glat):.1f}{'N' if glat >= 0 else 'S'} {glon:.1f}E"
        columns[label] = fields[:, i, j]
    return pd.DataFrame(columns, index=pd.DatetimeIndex(prepared.times_all, name="time"))
