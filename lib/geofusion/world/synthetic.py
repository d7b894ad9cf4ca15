r"""The embedded default: a simulated ERA5-like atmosphere in the exact WeatherBench 2 layout.

The default data of geofusion, used whenever no WeatherBench 2 store is given. It is **not**
real observations: it is the output of a small forced-dissipative dynamical model of the
atmosphere (:mod:`geofusion.world.atmosphere`: an equivalent-barotropic vorticity model on the
sphere
with orography, a seasonal jet, storm-track eddy forcing, an MJO-like and an ENSO-like tropical
mode, and advected surface temperature and moisture), integrated in time from a seeded state,
calibrated against ERA5 statistics (``geofusion.experiments.world_calibration``), and stored
exactly as
WeatherBench 2 stores ERA5 (names, dims, coordinates, units), so the same code path reads real
and synthetic data. Every dataset carries ``synthetic=1``, ``seed``, ``model_version`` and a
``description``.

Layout (as ``gs://weatherbench2/datasets/era5/1959-2022-6h-64x32_equiangular_conservative.zarr``):
pressure-level variables are ``(time, level, longitude, latitude)``, surface ones
``(time, longitude, latitude)``; latitude ascending ``-87.1875..87.1875`` (5.625 deg, no poles),
longitude ``0..354.375``, ``level`` in hPa, 6-hourly ``time``.

From the model state (T21 on a 32 x 64 Gauss grid) to the variables, on the model grid, then
regridded conservatively (:mod:`geofusion.grids`, as WeatherBench 2 regrids ERA5):

1. **Geopotential** at 500 hPa from the streamfunction :math:`\psi` by the linear balance
   equation :math:`\nabla^2\Phi' = \nabla\cdot(f\nabla\psi)` (solved spectrally), plus the
   hypsometric mean :math:`R\,T_v\ln(1013.25/500)` (:math:`T_v = 272` K). At level :math:`p`:
   :math:`\Phi_p = R\,T_v\ln(1013.25/p) + \alpha(p)\Phi'` with :math:`\alpha(p) = 0.3 +
   0.7\ln(1013.25/p)/\ln(1013.25/500)` (equivalent-barotropic: anomalies grow with height).
2. **Winds**: geostrophic from :math:`\Phi'`, :math:`u_g = -\frac{1}{f a}\partial_\varphi\Phi`,
   :math:`v_g = \frac{1}{f a\cos\varphi}\partial_\lambda\Phi` with :math:`1/f` regularised as
   :math:`f/(f^2 + f_0^2)`, :math:`f_0 = 2\Omega\sin 10^\circ` (smoothly 0 at the equator), plus
   the ageostrophic remainder where geostrophy fails: :math:`(1 - s)(\mathbf v_\psi +
   \mathbf v_\chi)` with :math:`s = f^2/(f^2 + f_0^2)`, the model's rotational and divergent
   wind (so the tropics carry the MJO's winds). Scaled by :math:`\alpha(p)`.
3. **2 m temperature**: the model's advected surface temperature plus a diurnal cycle
   :math:`(1 + 2\,l)\cos\varphi\cos(2\pi(h_{local} - 14)/24)` K (land fraction :math:`l`)
   peaking at 14 local solar time, so daily means differ from 6-hourly values (and, sampled
   6-hourly, 12 UTC is the warmest time at longitude 0, not a tie between 12 and 18 UTC).
4. **Specific humidity**: the model's advected near-surface humidity :math:`q_s` gives a
   relative humidity :math:`r = q_s/q_{sat}(T_{2m})`; at level :math:`p`,
   :math:`q = \min(0.98, r\,(0.3 + 0.5p/1000)/0.8)\,q_{sat}(T_p, p)` with the level
   temperature :math:`T_p = T_{2m}(p/1013.25)^{0.19}` and Magnus/Clausius-Clapeyron
   :math:`q_{sat}` (about 1e-5..2e-2 kg/kg near the surface, less aloft).

A spin-up (``WorldParameters.spinup_days``) before ``start`` is discarded. Cost: a few seconds
per simulated year on one CPU core (``benchmarks/synthetic_world.py``); the prepared data and
the zarr store of the default are cached by :mod:`geofusion.data`, keyed by
:data:`MODEL_VERSION`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from geofusion.grids import ConservativeRegridder, equiangular_lat_edges
from geofusion.world.atmosphere import (
    EARTH_RADIUS,
    OMEGA,
    P0,
    WorldParameters,
    balanced_fields,
    saturation_specific_humidity,
    simulate,
)
from geofusion.world.geography import land_fraction
from geofusion.world.spherical import GaussianGrid

__all__ = ["synthetic_era5", "grid", "MODEL_VERSION", "EARTH_RADIUS", "OMEGA", "UNITS",
           "LONG_NAMES", "WorldParameters"]

# Bump when the model changes: caches keyed on it (geofusion.data.default_store) then refresh.
MODEL_VERSION = 2

R_DRY = 287.0  # J kg^-1 K^-1
T_VIRTUAL = 272.0  # K, layer-mean virtual temperature of the hypsometric mean geopotential
F0_LATITUDE = 10.0  # deg; where the regularised 1/f departs from 1/f (see item 2)

UNITS = {
    "2m_temperature": "K",
    "geopotential": "m**2 s**-2",
    "u_component_of_wind": "m s**-1",
    "v_component_of_wind": "m s**-1",
    "specific_humidity": "kg kg**-1",
}
LONG_NAMES = {
    "2m_temperature": "2 metre temperature",
    "geopotential": "Geopotential",
    "u_component_of_wind": "U component of wind",
    "v_component_of_wind": "V component of wind",
    "specific_humidity": "Specific humidity",
}


def grid(nlat: int = 32, nlon: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """WeatherBench 2 equiangular grid without poles: (latitude (nlat,), longitude (nlon,)) deg.

    Latitude is ascending, cell centres ``-90 + (j + 1/2) 180/nlat``; longitude ``i 360/nlon``.
    """
    dlat = 180.0 / nlat
    lat = -90.0 + dlat * (np.arange(nlat) + 0.5)
    lon = np.arange(nlon) * (360.0 / nlon)
    return lat, lon


def _time_axis(start: str, end: str, freq: str) -> pd.DatetimeIndex:
    """Times from ``start`` through ``end``; a date-only ``end`` includes that whole day."""
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    if end_ts == end_ts.normalize():
        return pd.date_range(start_ts, end_ts + pd.Timedelta(days=1), freq=freq, inclusive="left")
    return pd.date_range(start_ts, end_ts, freq=freq)


def _regridder(model_grid: GaussianGrid, nlat: int, nlon: int) -> ConservativeRegridder:
    lat, lon = grid(nlat, nlon)
    return ConservativeRegridder(model_grid.cell_bounds_sin_lat(), model_grid.lon,
                                 equiangular_lat_edges(lat), lon)


def synthetic_era5(start: str = "2000-01-01", end: str = "2009-12-31", freq: str = "6h",
                   seed: int = 0, nlat: int = 32, nlon: int = 64,
                   levels: tuple[int, ...] | list[int] = (500,),
                   params: WorldParameters | None = None) -> xr.Dataset:
    """Simulate the synthetic ERA5-like dataset (see the module docstring for the model).

    Parameters
    ----------
    start, end: first and last time; a date-only ``end`` includes that whole day.
    freq: time step (pandas frequency), a multiple of 6 hours; 6-hourly as in WeatherBench 2.
    seed: the only source of randomness; the same seed gives the same dataset.
    nlat, nlon: output grid size (default 32 x 64, the report's 5.625 deg grid); the world is
        integrated at T21 whatever the output grid, so finer grids hold no finer detail.
    levels: pressure levels in hPa for the pressure-level variables.
    params: :class:`geofusion.world.atmosphere.WorldParameters` (default: the calibrated world).

    Returns
    -------
    xr.Dataset with ``2m_temperature`` (time, longitude, latitude) in K and ``geopotential``
    (m^2 s^-2), ``u_component_of_wind``, ``v_component_of_wind`` (m s^-1) and
    ``specific_humidity`` (kg kg^-1), each (time, level, longitude, latitude), float32;
    attributes ``synthetic=1``, ``seed``, ``model_version`` and ``description``.

    Example
    -------
    >>> ds = synthetic_era5("2000-01-01", "2000-01-02", params=WorldParameters(spinup_days=2))
    >>> ds["geopotential"].dims, int(ds.attrs["synthetic"])
    (('time', 'level', 'longitude', 'latitude'), 1)
    """
    times = _time_axis(start, end, freq)
    if len(times) == 0:
        raise ValueError(f"empty time axis from {start!r} to {end!r}; give end after start")
    levels_arr = np.asarray(levels, dtype=np.int64)
    if levels_arr.ndim != 1 or len(levels_arr) == 0 or np.any(levels_arr <= 0):
        raise ValueError(f"levels must be a non-empty list of positive hPa values, got {levels}")
    run = simulate(times, seed=seed, params=params)
    lat, lon = grid(nlat, nlon)
    regrid = _regridder(run.grid, nlat, nlon)
    nt = len(times)
    phi_lat = np.deg2rad(lat)[None, :]
    land = land_fraction(lat, lon).T  # (lon, lat)
    hour_utc = times.hour.to_numpy(np.float64) + times.minute.to_numpy(np.float64) / 60
    shape = (nt, len(levels_arr), nlon, nlat)
    z = np.empty(shape, np.float32)
    u = np.empty(shape, np.float32)
    v = np.empty(shape, np.float32)
    q = np.empty(shape, np.float32)
    t2m = np.empty((nt, nlon, nlat), np.float32)
    chunk_len = 1460
    for first in range(0, nt, chunk_len):
        sl = slice(first, min(first + chunk_len, nt))
        bal = {k: regrid(x) for k, x in balanced_fields(run, sl, F0_LATITUDE).items()}
        t_free = regrid(run.t2m[sl].astype(np.float64))
        rh = regrid(run.q[sl].astype(np.float64)) / saturation_specific_humidity(t_free)
        local = hour_utc[sl, None, None] + lon[None, :, None] / 15.0
        diurnal = ((1.0 + 2.0 * land)[None] * np.cos(phi_lat)[None]
                   * np.cos(2 * np.pi * (local - 14.0) / 24.0))
        t2m[sl] = t_free + diurnal
        for i, p in enumerate(levels_arr.astype(np.float64)):
            alpha = 0.3 + 0.7 * np.log(P0 / p) / np.log(P0 / 500.0)
            z[sl, i] = R_DRY * T_VIRTUAL * np.log(P0 / p) + alpha * bal["phi"]
            u[sl, i] = alpha * bal["u"]
            v[sl, i] = alpha * bal["v"]
            t_p = t_free * (p / P0) ** 0.19
            rh_p = np.minimum(rh * (0.3 + 0.5 * p / 1000.0) / 0.8, 0.98)
            q[sl, i] = rh_p * saturation_specific_humidity(t_p, p)

    coords = {
        "time": ("time", times.values.astype("datetime64[ns]")),
        "level": ("level", levels_arr, {"units": "hPa", "long_name": "pressure level"}),
        "longitude": ("longitude", lon, {"units": "degrees_east", "long_name": "longitude"}),
        "latitude": ("latitude", lat, {"units": "degrees_north", "long_name": "latitude"}),
    }
    dims3 = ("time", "level", "longitude", "latitude")
    data = {
        "2m_temperature": (("time", "longitude", "latitude"), t2m),
        "geopotential": (dims3, z),
        "u_component_of_wind": (dims3, u),
        "v_component_of_wind": (dims3, v),
        "specific_humidity": (dims3, q),
    }
    ds = xr.Dataset(
        {name: (dims, values, {"units": UNITS[name], "long_name": LONG_NAMES[name]})
         for name, (dims, values) in data.items()},
        coords=coords,
    )
    ds.attrs = {
        "synthetic": 1,
        "seed": int(seed),
        "model_version": MODEL_VERSION,
        "description": (
            "SYNTHETIC ERA5-like data simulated by geofusion.world.synthetic.synthetic_era5, NOT "
            "real observations: a forced-dissipative equivalent-barotropic model of the "
            "atmosphere on the sphere (T21) with orography, a seasonal jet, storm-track eddy "
            "forcing, MJO-like and ENSO-like tropical modes, advected 2 m temperature and "
            "moisture over land and sea, balanced geopotential and geostrophic winds, stored "
            "in the WeatherBench 2 ERA5 layout."
        ),
    }
    return ds
