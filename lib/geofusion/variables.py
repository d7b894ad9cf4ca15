"""The five ERA5 variables ("modes") of the report, their units and levels, and the seasons.

Every module names channels through this one place: arrays are ``(time or batch, channel, lat,
lon)`` with channels in :data:`VARIABLES` order (the report's section 3.1). Units are those of
WeatherBench 2's ERA5 store; :data:`WB2_LEVELS` are its 13 pressure levels (hPa).

Example:
    >>> from geofusion.variables import VARIABLES, season_labels
    >>> len(VARIABLES), VARIABLES[0]
    (5, '2m_temperature')
    >>> season_labels(["2000-01-15", "2000-07-01"]).tolist()
    [0, 2]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["VARIABLES", "SURFACE_VARIABLES", "WB2_LEVELS", "UNITS", "SEASONS", "season_labels"]

VARIABLES: tuple[str, ...] = (
    "2m_temperature",
    "geopotential",
    "u_component_of_wind",
    "v_component_of_wind",
    "specific_humidity",
)
SURFACE_VARIABLES: tuple[str, ...] = ("2m_temperature",)
# The 13 WeatherBench 2 pressure levels, hPa, in the store's (ascending) order.
WB2_LEVELS: tuple[int, ...] = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
UNITS: dict[str, str] = {
    "2m_temperature": "K",
    "geopotential": "m^2 s^-2",
    "u_component_of_wind": "m s^-1",
    "v_component_of_wind": "m s^-1",
    "specific_humidity": "kg kg^-1",
}
SEASONS: tuple[str, ...] = ("DJF", "MAM", "JJA", "SON")


def season_labels(times: Any) -> np.ndarray:
    """Meteorological season of each time: 0=DJF, 1=MAM, 2=JJA, 3=SON (see :data:`SEASONS`).

    ``times``: datetime64 array-like (N,). Returns int64 (N,).
    """
    month = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]")).month.to_numpy()
    return ((month % 12) // 3).astype(np.int64)
