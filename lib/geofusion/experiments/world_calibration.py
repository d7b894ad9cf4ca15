r"""Calibration statistics of the simulated world against ERA5, and the twin experiment.

Issue 9's targets, measured on daily means of a multi-year run (latitude-weighted, the
day-of-year climatology of the training years as reference, the later years as validation):

- :func:`forecast_ratios`: persistence / climatology RMSE at leads 1, 3, 5 days for
  geopotential and 2 m temperature. ERA5 at 5.625 deg (WeatherBench, weekly climatology):
  Z500 936/816 = 1.15 (3 d), 1033/816 = 1.27 (5 d); T2M 3.00/3.19 = 0.94, 3.27/3.19 = 1.03.
- :func:`zonal_std_t2m`: standard deviation of 2 m temperature along latitude circles,
  averaged over days and latitudes (ERA5 at this grid: 5.3 K).
- :func:`tropical_u_stats`: 15S-15N daily anomalies of u: standard deviation and lag-1
  autocorrelation.
- :func:`interannual_std`: standard deviation over years of annual-mean anomalies of the
  global-mean 2 m temperature and of a central-Pacific box (5S-5N, 170W-120W).
- :func:`twin_experiment`: two runs differing by a tiny initial perturbation; their
  geopotential difference grows (error-doubling time) and saturates.

:func:`calibration_table` gathers everything with the targets in one ``pandas.DataFrame``.

Example:
    >>> import numpy as np
    >>> x = np.arange(10.0)[:, None, None] * np.ones((1, 2, 3))  # (days, lat, lon)
    >>> persistence_rmse(x, np.array([-45.0, 45.0]), lead=2)
    2.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from geofusion.verification.baselines import climatology
from geofusion.world.atmosphere import WorldParameters, balanced_fields, simulate_twins

__all__ = ["TARGETS", "ERA5_REFERENCE", "daily_fields", "daily_fields_from_arrays",
           "persistence_rmse", "forecast_ratios",
           "zonal_std_t2m", "tropical_u_stats", "interannual_std", "hovmoller", "twin_experiment",
           "calibration_table"]

# (statistic, low, high); None: unbounded.
TARGETS = {
    "geopotential persistence/climatology lead 1": (0.35, 0.8),
    "geopotential persistence/climatology lead 3": (0.95, 1.35),
    "geopotential persistence/climatology lead 5": (1.05, 1.45),
    "2m_temperature persistence/climatology lead 3": (0.75, 1.15),
    "2m_temperature persistence/climatology lead 5": (0.85, 1.25),
    "2m_temperature zonal std (K)": (3.5, 8.0),
    "tropical u anomaly std (m/s)": (1.5, None),
    "tropical u anomaly lag-1 autocorrelation": (0.5, None),
    "global-mean t2m interannual std (K)": (0.05, None),
    "central-Pacific t2m interannual std (K)": (0.3, None),
    "geopotential error-doubling time (days)": (1.0, 4.0),
}
# ERA5 figures quoted in issue 9 (WeatherBench, 5.625 deg; weekly climatology reference).
ERA5_REFERENCE = {
    "geopotential persistence/climatology lead 3": 936 / 816,
    "geopotential persistence/climatology lead 5": 1033 / 816,
    "2m_temperature persistence/climatology lead 3": 3.00 / 3.19,
    "2m_temperature persistence/climatology lead 5": 3.27 / 3.19,
    "2m_temperature zonal std (K)": 5.3,
}


def _steps_per_day(times: np.ndarray) -> int | None:
    """Steps per day when ``times`` are whole days at a regular sub-daily step starting at
    00 UTC (then daily means are a reshape), else None."""
    t = np.asarray(times, dtype="datetime64[ns]")
    if len(t) < 2:
        return None
    step = t[1] - t[0]
    day = np.timedelta64(1, "D")
    if (not np.all(np.diff(t) == step) or step <= np.timedelta64(0, "ns") or day % step
            or t[0] != t[0].astype("datetime64[D]")):
        return None
    k = int(day // step)
    return k if len(t) % k == 0 else None


def daily_fields(ds: xr.Dataset, level: int = 500) -> dict[str, np.ndarray]:
    """Daily means ``(days, lat, lon)`` (float64, latitude ascending) of the five variables at
    ``level``, plus ``times`` (datetime64 days) and ``lat``, ``lon`` (deg).

    Whole days at a regular step (the synthetic default) are averaged by a reshape, anything
    else by ``xarray`` resampling (the same means, several times slower on years of data)."""
    out: dict[str, np.ndarray] = {}
    k = _steps_per_day(ds["time"].values)
    for name in ds.data_vars:
        da = ds[name]
        if "level" in da.dims:
            da = da.sel(level=level)
        if k is None:
            daily = da.resample(time="1D").mean()
            out[name] = daily.transpose("time", "latitude", "longitude").values.astype(np.float64)
            out["times"] = daily["time"].values
        else:
            x = da.transpose("time", "latitude", "longitude").values.astype(np.float64)
            out[name] = x.reshape(-1, k, *x.shape[1:]).mean(axis=1)
            out["times"] = ds["time"].values[::k].astype("datetime64[D]").astype("datetime64[ns]")
    out["lat"] = ds["latitude"].values.astype(np.float64)
    out["lon"] = ds["longitude"].values.astype(np.float64)
    return out


def daily_fields_from_arrays(fields: np.ndarray, channels: Sequence[str], times: np.ndarray,
                             lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`daily_fields`' dictionary from daily means already in memory: ``fields``
    ``(days, C, lat, lon)`` in physical units (latitude ascending, e.g.
    ``PreparedData.physical()``), ``channels`` their ``C`` names, ``times`` the days.

    Example:
        >>> x = np.zeros((3, 1, 2, 4), np.float32)
        >>> d = daily_fields_from_arrays(x, ["geopotential"], np.arange(3), [-45, 45], np.arange(4))
        >>> d["geopotential"].shape, d["geopotential"].dtype
        ((3, 2, 4), dtype('float64'))
    """
    fields = np.asarray(fields)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    expected = (len(times), len(channels), len(lat), len(lon))
    if fields.shape != expected:
        raise ValueError(f"fields must be (days, channels, lat, lon) = {expected} from the "
                         f"given times, channels, lat and lon, got {fields.shape}; pass "
                         f"matching coordinates")
    if len(lat) > 1 and not np.all(np.diff(lat) > 0):
        raise ValueError("lat must be ascending (the geofusion convention); flip the fields "
                         "and lat along the latitude axis")
    out: dict[str, np.ndarray] = {name: fields[:, c].astype(np.float64)
                                  for c, name in enumerate(channels)}
    out["times"] = np.asarray(times)
    out["lat"], out["lon"] = lat, lon
    return out


def _weights(lat: np.ndarray) -> np.ndarray:
    w = np.cos(np.deg2rad(lat))
    return (w / w.mean())[:, None]


def _wrmse(err: np.ndarray, lat: np.ndarray) -> float:
    """``sqrt(mean over days, lat, lon of w * err^2)`` with mean-1 cos(lat) weights."""
    return float(np.sqrt(np.mean(_weights(lat) * err**2)))


def persistence_rmse(x: np.ndarray, lat: np.ndarray, lead: int) -> float:
    """Latitude-weighted RMSE of persistence ``x[t] -> x[t + lead]`` over ``x (days, lat, lon)``."""
    return _wrmse(x[lead:] - x[:-lead], lat)


def _split(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of training years (the first 3/4, at least one) and validation years;
    within a single calendar year, the first 3/4 of the days and the rest."""
    years = pd.DatetimeIndex(times).year.to_numpy()
    uniq = np.unique(years)
    if len(times) < 20:
        raise ValueError(f"need at least 20 days to score forecasts, got {len(times)}; "
                         f"simulate a longer period")
    if len(uniq) < 2:
        train = np.arange(len(times)) < int(0.75 * len(times))
        return train, ~train
    n_train = max(1, int(round(0.75 * len(uniq))))
    n_train = min(n_train, len(uniq) - 1)
    train = years <= uniq[n_train - 1]
    return train, ~train


def forecast_ratios(daily: dict[str, np.ndarray], leads: tuple[int, ...] = (1, 3, 5),
                    variables: tuple[str, ...] = ("geopotential", "2m_temperature")
                    ) -> dict[str, dict[int, tuple[float, float]]]:
    """``{variable: {lead: (persistence RMSE, climatology RMSE)}}`` on the validation years.

    Climatology: :func:`geofusion.verification.baselines.climatology` (15-day window) of the
    training
    years; both forecasts are scored on the same target days (validation days with a
    validation initial day ``lead`` days earlier).
    """
    train, valid = _split(daily["times"])
    lat, times = daily["lat"], daily["times"]
    doy = pd.DatetimeIndex(times).day_of_year.to_numpy()
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for name in variables:
        x = daily[name]
        clim = climatology(x[train], times[train])
        xv, dv = x[valid], doy[valid]
        out[name] = {}
        for lead in leads:
            target, init = xv[lead:], xv[:-lead]
            pers = _wrmse(target - init, lat)
            clim_err = _wrmse(target - clim[dv[lead:] - 1], lat)
            out[name][lead] = (pers, clim_err)
    return out


def zonal_std_t2m(daily: dict[str, np.ndarray]) -> float:
    """Std of daily 2 m temperature along each latitude circle, averaged over days and
    latitudes (K)."""
    return float(daily["2m_temperature"].std(axis=2).mean())


def anomalies(x: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Anomalies from the all-years day-of-year climatology (15-day window)."""
    clim = climatology(x, times)
    doy = pd.DatetimeIndex(times).day_of_year.to_numpy()
    return x - clim[doy - 1]


def tropical_u_stats(daily: dict[str, np.ndarray], band: float = 15.0) -> tuple[float, float]:
    """(std, lag-1 autocorrelation) of daily u anomalies within ``band`` degrees of the
    equator, pooled over points (m/s, dimensionless)."""
    rows = np.abs(daily["lat"]) <= band
    a = anomalies(daily["u_component_of_wind"][:, rows], daily["times"])
    a = a - a.mean(axis=0)
    lag1 = float((a[1:] * a[:-1]).sum() / np.sqrt((a[1:] ** 2).sum() * (a[:-1] ** 2).sum()))
    return float(a.std()), lag1


def interannual_std(daily: dict[str, np.ndarray]) -> tuple[float, float]:
    """Std over complete calendar years of annual-mean 2 m temperature anomalies: global mean
    (latitude-weighted) and central-Pacific box 5S-5N, 170W-120W (K); NaN with fewer than 3
    complete years."""
    t, times, lat, lon = daily["2m_temperature"], daily["times"], daily["lat"], daily["lon"]
    a = anomalies(t, times)
    glob = (a * _weights(lat)).mean(axis=(1, 2))
    rows = np.abs(lat) <= 5.0
    cols = (lon >= 190.0) & (lon <= 240.0)
    box = a[:, rows][:, :, cols].mean(axis=(1, 2))
    years = pd.DatetimeIndex(times).year.to_numpy()
    full = [y for y in np.unique(years) if (years == y).sum() >= 365]
    if len(full) < 3:
        return float("nan"), float("nan")
    g = np.array([glob[years == y].mean() for y in full])
    b = np.array([box[years == y].mean() for y in full])
    return float(g.std(ddof=1)), float(b.std(ddof=1))


def hovmoller(daily: dict[str, np.ndarray], band: float = 10.0,
              name: str = "u_component_of_wind") -> np.ndarray:
    """``(days, lon)`` daily anomalies of ``name`` averaged over ``band`` degrees of the
    equator (latitude-weighted): eastward-moving stripes are the MJO-like mode."""
    rows = np.abs(daily["lat"]) <= band
    a = anomalies(daily[name][:, rows], daily["times"])
    w = np.cos(np.deg2rad(daily["lat"][rows]))[None, :, None]
    return (a * w).sum(axis=1) / w.sum()


def twin_experiment(start: str = "2000-01-01", days: int = 50, seed: int = 0,
                    perturbation: float = 1e-7, params: WorldParameters | None = None
                    ) -> dict[str, object]:
    """Integrate the world twice from the same spun-up state, once with a tiny vorticity
    perturbation (rms ``perturbation`` s^-1), and follow the 500 hPa geopotential difference.

    Returns ``{"days": (T,), "rmse": (T,)`` latitude-weighted RMSE (m^2/s^2) every 6 hours,
    ``"saturation"``: mean RMSE over the last quarter, ``"doubling_days"``: ln 2 / growth rate
    of ln(RMSE) fitted between day 1 and the first time the RMSE reaches a quarter of
    saturation}.

    Example:
        >>> out = twin_experiment(days=2, params=WorldParameters(spinup_days=2))
        >>> out["rmse"].shape
        (8,)
    """
    times = pd.date_range(start, periods=days * 4, freq="6h")
    runs = simulate_twins(times, seed=seed, params=params, perturbation=perturbation)
    phi = [balanced_fields(r)["phi"] for r in runs]
    w = runs[0].grid.quad_weights / runs[0].grid.quad_weights.mean()
    rmse = np.sqrt(np.mean(w[None, None, :] * (phi[1] - phi[0]) ** 2, axis=(1, 2)))
    t_days = np.arange(len(times)) / 4.0
    sat = float(rmse[-max(1, len(rmse) // 4):].mean())
    reach = np.flatnonzero(rmse >= sat / 4)
    stop = reach[0] if len(reach) else len(rmse)
    fit = (t_days >= 1.0) & (np.arange(len(rmse)) < stop) & (rmse > 0)
    doubling = float("nan")
    if fit.sum() >= 4:
        slope = np.polyfit(t_days[fit], np.log(rmse[fit]), 1)[0]
        doubling = float(np.log(2) / slope) if slope > 0 else float("inf")
    return {"days": t_days, "rmse": rmse, "saturation": sat, "doubling_days": doubling}


def calibration_table(daily: dict[str, np.ndarray], twin: dict[str, object] | None = None
                      ) -> pd.DataFrame:
    """Every calibration statistic of the daily means ``daily`` (:func:`daily_fields` of a
    multi-year run, or :func:`daily_fields_from_arrays`: the interannual ones need 3 complete
    years, NaN otherwise) with its target range, the ERA5 figure where quoted, and whether it
    is met.

    Columns: ``value``, ``low``, ``high``, ``era5``, ``met``; index: the statistic names of
    :data:`TARGETS` (the doubling time only when ``twin`` from :func:`twin_experiment` is
    given)."""
    if isinstance(daily, xr.Dataset):
        raise TypeError("calibration_table takes daily means: pass daily_fields(ds) (or "
                        "daily_fields_from_arrays(...)), not the 6-hourly dataset")
    values: dict[str, float] = {}
    for name, by_lead in forecast_ratios(daily).items():
        for lead, (pers, clim) in by_lead.items():
            key = f"{name} persistence/climatology lead {lead}"
            if key in TARGETS:
                values[key] = pers / clim
    values["2m_temperature zonal std (K)"] = zonal_std_t2m(daily)
    std, lag1 = tropical_u_stats(daily)
    values["tropical u anomaly std (m/s)"] = std
    values["tropical u anomaly lag-1 autocorrelation"] = lag1
    g, b = interannual_std(daily)
    values["global-mean t2m interannual std (K)"] = g
    values["central-Pacific t2m interannual std (K)"] = b
    if twin is not None:
        values["geopotential error-doubling time (days)"] = float(twin["doubling_days"])
    rows = []
    for key, value in values.items():
        low, high = TARGETS[key]
        met = (low is None or value >= low) and (high is None or value <= high)
        rows.append({"statistic": key, "value": value, "low": low, "high": high,
                     "era5": ERA5_REFERENCE.get(key), "met": bool(met)})
    return pd.DataFrame(rows).set_index("statistic")
