r"""A synthetic ERA5-like dataset in the exact WeatherBench 2 layout (the embedded default).

The default data of geofusion, used whenever no WeatherBench 2 store is given. It is **not**
real observations: it is a cheap, deterministic toy atmosphere with the structure that makes
the report's experiments meaningful (a latitudinal gradient, seasons, travelling weather systems
that a forecaster can follow, and physically tied variables), stored exactly as WeatherBench 2
stores ERA5 (names, dims, coordinates, units), so the same code path reads real and synthetic
data. Every dataset carries the attributes ``synthetic=1``, ``seed`` and a ``description``.

Layout (as ``gs://weatherbench2/datasets/era5/1959-2022-6h-64x32_equiangular_conservative.zarr``):
pressure-level variables are ``(time, level, longitude, latitude)``, surface ones
``(time, longitude, latitude)``; latitude ascending ``-87.1875..87.1875`` (5.625 deg, no poles),
longitude ``0..354.375``, ``level`` in hPa, 6-hourly ``time``.

The model, with latitude :math:`\varphi`, longitude :math:`\lambda`, pressure :math:`p` (hPa),
time :math:`t` (days) and the seasonal index :math:`S(t) = -\cos(2\pi(d - 20)/365.25)`
(:math:`d` the day of year, so :math:`S=+1` in late July, boreal summer):

1. **Zonal-mean 2 m temperature**
   :math:`\bar T(\varphi, t) = 299 - 45\sin^2\varphi + 20\,S(t)\sin\varphi` K: warm tropics,
   cold poles, and a seasonal cycle whose sign flips with :math:`\sin\varphi`, i.e. of
   opposite phase in the two hemispheres and largest near the poles. A fixed, seeded
   stationary pattern (zonal wavenumbers 1-3, about 2 K, standing in for land and sea) is added.
2. **Travelling Rossby-like waves.** The geopotential anomaly at 500 hPa is
   :math:`\Phi'(\lambda,\varphi,t) = \mathrm{Re}\sum_{h,k} a_{h,k}(t)\,E_h(\varphi)\,
   e^{i(k\lambda - \omega_k t)}` for each hemisphere :math:`h` and zonal wavenumbers
   :math:`k = 2..6`, with a Gaussian mid-latitude envelope :math:`E_h` centred on
   :math:`\pm 50^\circ` (width 18 deg), angular phase speeds :math:`\omega_k/k` from
   -4 deg/day (long waves retrogress, westward) to +10 deg/day (short waves move east), and
   complex amplitudes :math:`a_{h,k}(t)` following an AR(1) process with a 6-day e-folding
   time (slowly varying), stronger in the winter hemisphere (factor :math:`1 \mp 0.3 S`).
   The flow is thus predictable for days and a forecaster beats persistence.
3. **Geopotential** at level :math:`p`: hypsometric zonal mean
   :math:`\bar\Phi = R\,T_v \ln(1013.25/p)` with :math:`R = 287` J/(kg K) and layer-mean
   temperature :math:`T_v = 247 + 0.58(\bar T - 234)` K (about 5.0e4..5.9e4 m^2/s^2 at
   500 hPa), plus :math:`\alpha(p)\Phi'` with :math:`\alpha(p) = 0.3 + 0.7\ln(1013.25/p) /
   \ln(1013.25/500)` (equivalent-barotropic waves growing with height).
4. **Winds: geostrophic.** :math:`u = -\frac{1}{f a}\partial_\varphi\Phi`,
   :math:`v = \frac{1}{f a\cos\varphi}\partial_\lambda\Phi` with :math:`f = 2\Omega\sin\varphi`
   and :math:`1/f` regularised near the equator as :math:`f/(f^2 + f_0^2)`,
   :math:`f_0 = 2\Omega\sin 10^\circ` (the geostrophic limit is clipped smoothly: no sign jump
   at the equator), evaluated analytically, plus 1 m/s of independent AR(1) ageostrophic noise.
5. **2 m temperature** :math:`T_{2m} = \bar T + \Phi'/(R\ln 2.03)` (thickness: a ridge is warm)
   + a diurnal cycle :math:`1.5\cos\varphi\cos(2\pi(h_{local} - 15)/24)` K peaking at 15 local
   solar time (so daily means differ from 6-hourly values) + 0.7 K AR(1) noise.
6. **Specific humidity** (Clausius-Clapeyron): :math:`q = 0.622\,RH\,e_s(T_p)/p` with the
   Magnus saturation pressure :math:`e_s(T) = 6.112\exp(17.67(T - 273.15)/(T - 29.65))` hPa,
   the level temperature :math:`T_p = (T_{2m} - \text{diurnal})(p/1013.25)^{0.19}`, and
   :math:`RH = (0.3 + 0.5 p/1000)(1 + 0.2\tanh(v/10))` (moist poleward flow ahead of troughs),
   capped at 0.98: about 1e-4..2e-2 kg/kg near the surface and less aloft.

Everything is vectorised in float32: the waves are a ``(time, 2K) @ (2K, lon*lat)`` matrix
product and the AR(1) processes a linear filter, so ten years 6-hourly at 64x32 take seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy.signal import lfilter

# Bump when the model changes: caches keyed on it (geofusion.data.default_store) then refresh.
MODEL_VERSION = 1

R_DRY = 287.0  # J kg^-1 K^-1
EARTH_RADIUS = 6.371e6  # m
OMEGA = 7.292e-5  # s^-1
P0 = 1013.25  # hPa
WAVENUMBERS = (2, 3, 4, 5, 6)
# Angular phase speed per wavenumber, degrees of longitude per day (negative = westward).
PHASE_SPEED_DEG_PER_DAY = (-4.0, 1.0, 5.0, 8.0, 10.0)
F0_LATITUDE = 10.0  # deg; where the regularised 1/f departs from 1/f (see item 4)
WAVE_STD = (700.0, 800.0, 750.0, 600.0, 450.0)  # m^2 s^-2, AR(1) stationary std per mode

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


def _ar1(rng: np.random.Generator, n: int, shape: tuple[int, ...], rho: float,
         std: float | np.ndarray = 1.0, complex_: bool = False) -> np.ndarray:
    """Stationary AR(1) series along axis 0: ``x_t = rho x_{t-1} + sqrt(1-rho^2) std e_t``."""
    noise = rng.standard_normal((n, *shape), dtype=np.float32)
    if complex_:
        imag = rng.standard_normal((n, *shape), dtype=np.float32)
        noise = (noise + 1j * imag).astype(np.complex64) / np.float32(np.sqrt(2))
    # Start in the stationary distribution (x_0 = e_0, unit variance) so there is no spin-up.
    scale = np.float32(np.sqrt(1.0 - rho**2))
    rest = lfilter([scale], [np.float32(1.0), np.float32(-rho)], noise[1:], axis=0,
                   zi=np.float32(rho) * noise[:1])[0]
    out = np.concatenate([noise[:1], rest], axis=0)
    return (out * std).astype(np.complex64 if complex_ else np.float32)


def synthetic_era5(start: str = "2000-01-01", end: str = "2009-12-31", freq: str = "6h",
                   seed: int = 0, nlat: int = 32, nlon: int = 64,
                   levels: tuple[int, ...] | list[int] = (500,)) -> xr.Dataset:
    """Generate the synthetic ERA5-like dataset (see the module docstring for the model).

    Parameters
    ----------
    start, end: first and last time; a date-only ``end`` includes that whole day.
    freq: time step (pandas frequency), 6-hourly as in WeatherBench 2.
    seed: the only source of randomness; the same seed gives the same dataset.
    nlat, nlon: grid size (default 32 x 64, the report's 5.625 deg grid).
    levels: pressure levels in hPa for the pressure-level variables.

    Returns
    -------
    xr.Dataset with ``2m_temperature`` (time, longitude, latitude) in K and ``geopotential``
    (m^2 s^-2), ``u_component_of_wind``, ``v_component_of_wind`` (m s^-1) and
    ``specific_humidity`` (kg kg^-1), each (time, level, longitude, latitude), float32;
    attributes ``synthetic=1``, ``seed`` and ``description``.
    """
    times = _time_axis(start, end, freq)
    if len(times) == 0:
        raise ValueError(f"empty time axis from {start!r} to {end!r}; give end after start")
    levels_arr = np.asarray(levels, dtype=np.int64)
    if levels_arr.ndim != 1 or len(levels_arr) == 0 or np.any(levels_arr <= 0):
        raise ValueError(f"levels must be a non-empty list of positive hPa values, got {levels}")
    rng = np.random.default_rng(seed)
    lat, lon = grid(nlat, nlon)
    nt = len(times)
    # Work on (longitude, latitude) like the WB2 store, flattened for matrix products.
    phi = np.deg2rad(lat)[None, :]  # (1, nlat)
    lam = np.deg2rad(lon)[:, None]  # (nlon, 1)
    sin_phi, cos_phi = np.sin(phi), np.cos(phi)

    days = ((times - times[0]) / pd.Timedelta(days=1)).to_numpy(np.float64)
    doy = times.day_of_year.to_numpy(np.float64) + times.hour.to_numpy(np.float64) / 24.0
    season = (-np.cos(2 * np.pi * (doy - 20.0) / 365.25)).astype(np.float32)  # (T,)
    step_days = float(days[1] - days[0]) if nt > 1 else 0.25

    # 1. zonal-mean surface temperature (T, 1, nlat) and a fixed stationary pattern.
    t_zm = (299.0 - 45.0 * sin_phi**2)[None] + 20.0 * season[:, None, None] * sin_phi[None]
    t_zm = t_zm.astype(np.float32)
    stationary = np.zeros((nlon, nlat))
    for k in (1, 2, 3):
        amp, phase = rng.uniform(0.5, 1.2), rng.uniform(0, 2 * np.pi)
        stationary += amp * np.cos(k * lam + phase) * np.cos(phi) ** 2
    stationary = stationary.astype(np.float32)

    # 2. travelling waves: complex amplitudes (T, 2 hemispheres, K) times spatial patterns.
    nk = len(WAVENUMBERS)
    rho = float(np.exp(-step_days / 6.0))
    amps = _ar1(rng, nt, (2, nk), rho, std=np.asarray(WAVE_STD, np.float32), complex_=True)
    # Winter hemisphere more active: S > 0 is boreal summer, so the SH (h=0) is enhanced.
    winter = np.stack([1 + 0.3 * season, 1 - 0.3 * season], axis=1)  # (T, 2)
    kk = np.asarray(WAVENUMBERS, np.float64)
    omega = kk * np.deg2rad(PHASE_SPEED_DEG_PER_DAY)  # rad/day
    propagation = np.exp(-1j * omega[None, :] * days[:, None])  # (T, K)
    coef = (amps * winter[:, :, None] * propagation[:, None, :]).astype(np.complex64)
    coef = coef.reshape(nt, 2 * nk)

    centres, width = np.deg2rad([-50.0, 50.0]), np.deg2rad(18.0)
    env = np.exp(-(((phi[0][None, :] - centres[:, None]) / width) ** 2))  # (2, nlat)
    denv = env * (-2.0 * (phi[0][None, :] - centres[:, None]) / width**2)  # d/dphi
    zonal = np.exp(1j * kk[:, None] * lam[None, :, 0])  # (K, nlon)
    pat = (env[:, None, None, :] * zonal[None, :, :, None]).reshape(2 * nk, nlon * nlat)
    pat_phi = (denv[:, None, None, :] * zonal[None, :, :, None]).reshape(2 * nk, nlon * nlat)
    pat_lam = ((1j * kk)[None, :, None, None] * env[:, None, None, :]
               * zonal[None, :, :, None]).reshape(2 * nk, nlon * nlat)

    def real_field(p: np.ndarray) -> np.ndarray:
        # Re(coef @ p) = coef.real @ p.real - coef.imag @ p.imag, in float32 real matmuls.
        stacked = np.concatenate([coef.real, -coef.imag], axis=1).astype(np.float32)
        basis = np.concatenate([p.real, p.imag], axis=0).astype(np.float32)
        return (stacked @ basis).reshape(nt, nlon, nlat)

    phi_wave = real_field(pat)  # Phi' at 500 hPa, (T, nlon, nlat)

    # 5. surface temperature: zonal mean + stationary + thickness anomaly + diurnal + noise.
    hour_utc = times.hour.to_numpy(np.float64) + times.minute.to_numpy(np.float64) / 60
    local = hour_utc[:, None, None] + np.rad2deg(lam)[None] / 15.0
    diurnal = (1.5 * cos_phi[None] * np.cos(2 * np.pi * (local - 15.0) / 24.0)).astype(np.float32)
    rho_t = float(np.exp(-step_days / 2.0))
    t_noise = _ar1(rng, nt, (nlon, nlat), rho_t, std=0.7)
    t_free = t_zm + stationary[None] + phi_wave / np.float32(R_DRY * np.log(P0 / 500.0)) + t_noise
    del t_noise
    t2m = (t_free + diurnal).astype(np.float32)

    # 3-4. per-level geopotential and geostrophic winds.
    # 1/f regularised as f / (f^2 + f0^2): ~1/f outside the tropics, smoothly 0 at the
    # equator (a hard clip of |f| flips sign there and makes an unphysical jump in u).
    f = 2 * OMEGA * sin_phi
    f0 = 2 * OMEGA * np.sin(np.deg2rad(F0_LATITUDE))
    inv_f = (f / (f**2 + f0**2)).astype(np.float32)
    dphi_wave_dphi = real_field(pat_phi)
    dphi_wave_dlam = real_field(pat_lam)
    # d T_zm / d phi (T, 1, nlat): analytic derivative of item 1.
    dtzm = (-90.0 * sin_phi * cos_phi)[None] + 20.0 * season[:, None, None] * cos_phi[None]
    t_v = 247.0 + 0.58 * (t_zm - 234.0)
    shape = (nt, len(levels_arr), nlon, nlat)
    z = np.empty(shape, np.float32)
    u = np.empty(shape, np.float32)
    v = np.empty(shape, np.float32)
    q = np.empty(shape, np.float32)
    for i, p in enumerate(levels_arr.astype(np.float64)):
        thick = R_DRY * np.log(P0 / p)
        alpha = np.float32(0.3 + 0.7 * np.log(P0 / p) / np.log(P0 / 500.0))
        z[:, i] = thick * t_v + alpha * phi_wave
        dz_dphi = thick * 0.58 * dtzm + alpha * dphi_wave_dphi
        u[:, i] = -dz_dphi * inv_f / EARTH_RADIUS
        v[:, i] = alpha * dphi_wave_dlam * inv_f / (EARTH_RADIUS * cos_phi)
        u[:, i] += _ar1(rng, nt, (nlon, nlat), rho_t, std=1.0)
        v[:, i] += _ar1(rng, nt, (nlon, nlat), rho_t, std=1.0)
        # 6. humidity from the level temperature (no diurnal cycle aloft).
        t_p = t_free * np.float32((p / P0) ** 0.19)
        e_s = 6.112 * np.exp(17.67 * (t_p - 273.15) / (t_p - 29.65))
        rh = np.minimum((0.3 + 0.5 * p / 1000.0) * (1 + 0.2 * np.tanh(v[:, i] / 10.0)), 0.98)
        q[:, i] = 0.622 * rh * e_s / p

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
            "SYNTHETIC ERA5-like data generated by geofusion.synthetic.synthetic_era5, NOT "
            "real observations: zonal-mean climate with opposite-phase seasons in the two "
            "hemispheres, travelling AR(1) Rossby-like waves, geostrophic winds, "
            "Clausius-Clapeyron humidity and a diurnal cycle in 2 m temperature, stored in "
            "the WeatherBench 2 ERA5 layout."
        ),
    }
    return ds
