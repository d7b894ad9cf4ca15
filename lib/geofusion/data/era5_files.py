"""ERA5 as the Copernicus Climate Data Store (CDS) delivers it, read into the WeatherBench 2 layout.

Users who download ERA5 themselves get netCDF or GRIB files from two CDS datasets:
``reanalysis-era5-single-levels`` (``2m_temperature``) and ``reanalysis-era5-pressure-levels``
(``geopotential``, ``u_component_of_wind``, ``v_component_of_wind``, ``specific_humidity``).
Those files differ from the WeatherBench 2 zarr stores the rest of geofusion reads:

=====================  ========================================  ==========================
                       CDS files                                  WeatherBench 2 layout
=====================  ========================================  ==========================
variable names         short names ``t2m``, ``z``, ``u``, ``v``,   ``2m_temperature``, ...
                       ``q``
time dimension         ``valid_time`` (netCDF since 2024), ``time``  ``time``
                       (older netCDF, GRIB)
level dimension        ``pressure_level`` / ``level`` /          ``level`` (int hPa,
                       ``isobaricInhPa`` (GRIB), any order        ascending)
extra coordinates      ``number``, ``expver``, ``step``, ...      none
latitude               90 .. -90 (descending)                    ascending
longitude              0 .. 360 or -180 .. 180                   0 .. 360
dims of a variable     ``(time, level, latitude, longitude)``    ``(time, level, longitude,
                                                                  latitude)``
=====================  ========================================  ==========================

:func:`open_cds` takes one file, a directory or a glob of them (surface and pressure-level
requests arrive as separate files, often one per year or month), renames and transposes every
file's variables, normalises the orientation (:func:`geofusion.grids.normalise_orientation`),
concatenates each variable's files along time (overlaps dropped) and merges the variables on
the time steps and levels they share: hourly ``2m_temperature`` with 6-hourly pressure levels
gives the 6-hourly steps, exactly as the WeatherBench 2 store holds them. ERA5/ERA5T
(``expver``) mixtures are combined, ERA5 first.

The format is recognised from the first bytes, not the file name: netCDF-4 (HDF5) through
``h5netcdf``, netCDF-3 through ``scipy``, GRIB through ``cfgrib`` (optional:
``pip install -e ".[grib]"``, which brings the ecCodes library as a wheel). A zip archive (what
the CDS returns when a request mixes kinds of fields) is refused with the fix.

:func:`cds_request` builds the exact CDS API requests for a set of variables, and
:func:`describe_cds_request` turns them into the sentence error messages use.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geofusion.errors import DataError
from geofusion.grids import normalise_orientation

__all__ = [
    "SHORT_NAMES",
    "CDS_SINGLE_LEVELS",
    "CDS_PRESSURE_LEVELS",
    "CDS_DATASETS",
    "FILE_SUFFIXES",
    "cds_request",
    "describe_cds_request",
    "find_era5_files",
    "open_cds",
]

# CDS / GRIB short name -> WeatherBench 2 name (the CDS API variable name is the WB2 name).
SHORT_NAMES: dict[str, str] = {
    "t2m": "2m_temperature",
    "z": "geopotential",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "q": "specific_humidity",
}
CDS_SINGLE_LEVELS = "reanalysis-era5-single-levels"
CDS_PRESSURE_LEVELS = "reanalysis-era5-pressure-levels"
# WeatherBench 2 name -> the CDS dataset that delivers it.
CDS_DATASETS: dict[str, str] = {
    "2m_temperature": CDS_SINGLE_LEVELS,
    "geopotential": CDS_PRESSURE_LEVELS,
    "u_component_of_wind": CDS_PRESSURE_LEVELS,
    "v_component_of_wind": CDS_PRESSURE_LEVELS,
    "specific_humidity": CDS_PRESSURE_LEVELS,
}
FILE_SUFFIXES: tuple[str, ...] = (".nc", ".nc4", ".netcdf", ".cdf", ".grib", ".grib1",
                                  ".grib2", ".grb", ".grb1", ".grb2")
_SIX_HOURLY = ("00:00", "06:00", "12:00", "18:00")
_LEVEL_DIMS = ("pressure_level", "isobaricInhPa", "level", "plev")
# Size-1 dimensions cfgrib keeps with squeeze=False, and the CDS ensemble member.
_SINGLETON_DIMS = ("number", "step", "surface", "heightAboveGround")
_GRIB_EXTRA = 'pip install -e ".[grib]" (or pip install "geofusion[grib]")'


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------

def cds_request(variables: Iterable[str], levels: Sequence[int] = (500,),
                years: Sequence[int | str] = (2000,), grid: float | None = None,
                data_format: str = "netcdf") -> dict[str, dict[str, Any]]:
    """The CDS API requests (``{dataset: request}``) that deliver ``variables``.

    Every day of ``years`` at 00, 06, 12 and 18 UTC (the WeatherBench 2 steps); pressure-level
    variables at ``levels`` hPa; ``grid`` in degrees (None = the native 0.25 deg); one
    unarchived netCDF (or GRIB) file per dataset. Pass each item to ``cdsapi.Client().retrieve``.

    >>> req = cds_request(["2m_temperature", "geopotential"], levels=[500], years=[2000])
    >>> sorted(req)
    ['reanalysis-era5-pressure-levels', 'reanalysis-era5-single-levels']
    >>> req["reanalysis-era5-pressure-levels"]["variable"], req[
    ...     "reanalysis-era5-pressure-levels"]["pressure_level"]
    (['geopotential'], ['500'])
    """
    if data_format not in ("netcdf", "grib"):
        raise ValueError(f"data_format must be 'netcdf' or 'grib', got {data_format!r}")
    requests: dict[str, dict[str, Any]] = {}
    for name in variables:
        if name not in CDS_DATASETS:
            raise DataError(f"{name!r} is not an ERA5 variable geofusion knows how to request; "
                            f"known: {sorted(CDS_DATASETS)}")
        dataset = CDS_DATASETS[name]
        request = requests.setdefault(dataset, {
            "product_type": ["reanalysis"],
            "variable": [],
            "year": [str(y) for y in years],
            "month": [f"{m:02d}" for m in range(1, 13)],
            "day": [f"{d:02d}" for d in range(1, 32)],
            "time": list(_SIX_HOURLY),
            "data_format": data_format,
            "download_format": "unarchived",
        })
        if dataset == CDS_PRESSURE_LEVELS:
            request["pressure_level"] = [str(int(lv)) for lv in levels]
        if grid is not None:
            request["grid"] = [float(grid), float(grid)]
        if name not in request["variable"]:
            request["variable"].append(name)
    return requests


def describe_cds_request(variables: Iterable[str], levels: Sequence[int] | None = None) -> str:
    """One sentence naming the CDS dataset(s) and fields that provide ``variables``.

    >>> describe_cds_request(["specific_humidity"], [850])
    "reanalysis-era5-pressure-levels with variable=['specific_humidity'], pressure_level=['850']"
    """
    known = [v for v in variables if v in CDS_DATASETS]
    if not known:
        return "no CDS request (unknown variables)"
    requests = cds_request(known, levels=tuple(levels or (500,)))
    parts = []
    for dataset, request in requests.items():
        fields = f"variable={request['variable']}"
        if "pressure_level" in request:
            fields += f", pressure_level={request['pressure_level']}"
        parts.append(f"{dataset} with {fields}")
    return " and ".join(parts)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def find_era5_files(path: str | os.PathLike) -> list[Path]:
    """The files behind ``path``: one file, every netCDF/GRIB file under a directory, or a glob.

    Directories are searched recursively for :data:`FILE_SUFFIXES`; glob matches are taken as
    given (cfgrib ``.idx`` index files and hidden files skipped). Sorted by path.
    """
    text = os.fspath(path)
    if glob.has_magic(text):
        files = [Path(p) for p in glob.glob(text, recursive=True)]
        files = [p for p in files if p.is_file() and p.suffix != ".idx"
                 and not p.name.startswith(".")]
        where = f"matching {text!r}"
    elif Path(text).is_dir():
        files = [p for p in Path(text).rglob("*") if p.is_file()
                 and p.suffix.lower() in FILE_SUFFIXES and not p.name.startswith(".")]
        where = f"under {text!r} (looked for {', '.join(FILE_SUFFIXES)})"
    elif Path(text).is_file():
        files, where = [Path(text)], text
    else:
        raise DataError(f"no ERA5 data at {text!r}: pass a WeatherBench 2 zarr store, a netCDF or "
                        "GRIB file from the Climate Data Store, a directory or a glob of them "
                        "(e.g. 'era5/*.nc'), or data_path=None for the synthetic default")
    if not files:
        raise DataError(f"no netCDF or GRIB files {where}; point data_path at the CDS downloads")
    return sorted(files)


def _sniff(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "netcdf4"
    if head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02"):
        return "netcdf3"
    if b"GRIB" in head:
        return "grib"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return "unknown"


def _open_grib(path: Path) -> list[xr.Dataset]:
    try:
        # Imported here, not at module level: cfgrib is an optional extra and importing it
        # loads the ecCodes C library, which netCDF and zarr users never need.
        cfgrib = importlib.import_module("cfgrib")
    except (ImportError, RuntimeError) as error:
        raise DataError(f"{path} is a GRIB file; reading GRIB needs the optional cfgrib package "
                        f"and the ecCodes library ({error}); install them with {_GRIB_EXTRA}, "
                        "or download netCDF instead (CDS request field data_format: "
                        "'netcdf')") from error
    # indexpath="": no .idx files written next to the user's data; squeeze=False keeps every
    # dimension so that single times and levels are handled like many.
    with warnings.catch_warnings():
        # cfgrib's own xr.merge call triggers xarray's FutureWarning about merge defaults.
        warnings.simplefilter("ignore", FutureWarning)
        return cfgrib.open_datasets(str(path), chunks={},
                                    backend_kwargs={"indexpath": "", "squeeze": False})


def _open_file(path: Path) -> list[xr.Dataset]:
    kind = _sniff(path)
    if kind == "zip":
        raise DataError(f"{path} is a zip archive (the CDS zips several files when a request "
                        "mixes kinds of fields); unzip it and pass the directory, or request "
                        "download_format 'unarchived' with only the variables geofusion uses")
    if kind == "grib":
        return _open_grib(path)
    if kind == "unknown":
        raise DataError(f"{path} is neither netCDF nor GRIB (unrecognised first bytes); pass "
                        "only the files downloaded from the Climate Data Store")
    engine = "h5netcdf" if kind == "netcdf4" else "scipy"
    return [xr.open_dataset(path, engine=engine, chunks={})]


def _combine_expver(ds: xr.Dataset) -> xr.Dataset:
    """ERA5 (expver 1) where present, ERA5T (expver 5) elsewhere: one value per time step."""
    order = np.argsort(np.asarray(ds["expver"].values).astype(str))
    combined = ds.isel(expver=int(order[0]), drop=True)
    for index in order[1:]:
        combined = combined.combine_first(ds.isel(expver=int(index), drop=True))
    return combined


def _to_wb2_names(ds: xr.Dataset, path: Path) -> xr.Dataset | None:
    """One file's content with WeatherBench 2 names and dims (orientation not yet normalised);
    None when it holds none of the variables geofusion uses."""
    ds = ds.rename({k: v for k, v in {"lat": "latitude", "lon": "longitude"}.items()
                    if k in ds.dims})
    if "expver" in ds.dims:
        ds = _combine_expver(ds)
    for dim in _SINGLETON_DIMS:
        if dim in ds.dims:
            if ds.sizes[dim] != 1:
                raise DataError(f"{path} has {ds.sizes[dim]} values of {dim!r}; geofusion reads "
                                "ERA5 reanalysis analyses: request product_type 'reanalysis' "
                                "(not ensemble members or forecast steps)")
            ds = ds.isel({dim: 0})
    if "valid_time" in ds.dims:
        ds = ds.drop_vars("time", errors="ignore").rename({"valid_time": "time"})
    elif "valid_time" in ds.coords and "time" in ds.dims:
        # cfgrib: analysis time + step; the valid time is what a day is made of.
        ds = ds.assign_coords(time=("time", np.asarray(ds["valid_time"].values).reshape(-1)))
    elif "time" in ds.coords and "time" not in ds.dims:
        ds = ds.expand_dims("time")
    if "time" not in ds.dims:
        raise DataError(f"{path} has no time axis (dims {dict(ds.sizes)}); pass ERA5 hourly "
                        "data from the CDS")
    for name in _LEVEL_DIMS:
        if name in ds.coords and name != "level":
            ds = ds.drop_vars("level", errors="ignore").rename({name: "level"})
    ds = ds.reset_coords(drop=True)  # number, expver, step, valid_time, surface, ...
    renamed = {}
    for name, array in ds.data_vars.items():
        wb2 = SHORT_NAMES.get(str(name), str(name))
        if wb2 in CDS_DATASETS:
            renamed[wb2] = array
    if not renamed:
        return None
    out = {}
    for name, array in renamed.items():
        surface = CDS_DATASETS[name] == CDS_SINGLE_LEVELS
        if not surface and "level" not in array.dims:
            if "level" not in ds.coords:
                raise DataError(f"{name} in {path} has no pressure level; download it from "
                                f"{CDS_PRESSURE_LEVELS} with the field pressure_level")
            array = array.expand_dims("level")
        if surface and "level" in array.dims:
            array = array.isel(level=0, drop=True)
        extra = set(array.dims) - {"time", "level", "latitude", "longitude"}
        if extra:
            raise DataError(f"{name} in {path} has unexpected dimensions {sorted(extra)}; pass "
                            "ERA5 reanalysis on a latitude/longitude grid")
        order = ("time", "longitude", "latitude") if surface else (
            "time", "level", "longitude", "latitude")
        out[name] = array.transpose(*order)
    result = xr.Dataset(out)
    if "level" in result.dims:
        result = result.assign_coords(level=_levels_hpa(result["level"], path)).sortby("level")
    return result


def _levels_hpa(level: xr.DataArray, path: Path) -> np.ndarray:
    values = np.asarray(level.values, dtype=np.float64)
    if str(level.attrs.get("units", "")).strip().lower() == "pa":
        values = values / 100.0
    rounded = np.round(values)
    if np.any(np.abs(values - rounded) > 1e-6) or np.any(rounded <= 0):
        raise DataError(f"pressure levels {values.tolist()} in {path} are not whole hPa; pass "
                        "ERA5 on its standard pressure levels")
    return rounded.astype(np.int64)


def _grid_text(array: xr.DataArray) -> str:
    lat, lon = array["latitude"].values, array["longitude"].values
    step = f", {abs(float(lon[1] - lon[0])):g} deg" if len(lon) > 1 else ""
    return f"{len(lat)}x{len(lon)} (lat x lon{step})"


def _concat_variable(name: str, pieces: list[tuple[xr.DataArray, Path]]) -> xr.DataArray:
    """One variable's files along time: same grid and levels required, overlaps dropped."""
    first, first_path = pieces[0]
    for array, path in pieces[1:]:
        if not (np.array_equal(array["latitude"].values, first["latitude"].values)
                and np.array_equal(array["longitude"].values, first["longitude"].values)):
            raise DataError(f"mixed grids: {name} is on {_grid_text(first)} in {first_path} but "
                            f"on {_grid_text(array)} in {path}; download every file with the "
                            "same grid (the same `grid` field in every CDS request)")
        if "level" in first.dims and not np.array_equal(array["level"].values,
                                                        first["level"].values):
            raise DataError(f"{name} has pressure levels {first['level'].values.tolist()} in "
                            f"{first_path} but {array['level'].values.tolist()} in {path}; "
                            "request the same pressure_level list in every CDS request")
    if len(pieces) == 1:
        combined = first
    else:
        ordered = sorted(pieces, key=lambda item: item[0]["time"].values[0])
        combined = xr.concat([array for array, _ in ordered], dim="time", coords="minimal",
                             compat="override", join="override")
    times = combined["time"].values
    _, first_index = np.unique(times, return_index=True)
    if len(first_index) != len(times):
        # Overlapping downloads (e.g. a month fetched twice): keep each step once.
        combined = combined.isel(time=np.sort(first_index))
    return combined


def open_cds(path: str | os.PathLike) -> xr.Dataset:
    """Open CDS ERA5 netCDF/GRIB files (a file, directory or glob) in the WeatherBench 2 layout.

    Returns a lazy (dask-backed) dataset with the WeatherBench 2 names of the variables found,
    dims ``(time, level, longitude, latitude)`` (surface: ``(time, longitude, latitude)``),
    ``level`` in whole hPa ascending, latitude ascending, longitude 0..360 ascending, the time
    steps and levels common to all variables. The attribute ``geofusion_levels`` records each
    variable's levels before merging (JSON), so that a missing level can be named. Files
    holding none of the five variables (e.g. other ERA5 fields in the same directory) are
    skipped with a warning.

    Raises :class:`DataError` for unreadable files, zip archives, GRIB without the ``grib``
    extra, mixed grids, inconsistent levels, or variables that share no time step.
    """
    pieces: dict[str, list[tuple[xr.DataArray, Path]]] = {}
    files = find_era5_files(path)
    unused: dict[Path, list[str]] = {}
    for file in files:
        for raw in _open_file(file):
            converted = _to_wb2_names(raw, file)
            if converted is None:
                unused.setdefault(file, []).extend(map(str, raw.data_vars))
                continue
            ds = normalise_orientation(converted)
            for name in ds.data_vars:
                pieces.setdefault(str(name), []).append((ds[name], file))
    unused = {f: v for f, v in unused.items() if not any(f == p for items in pieces.values()
                                                         for _, p in items)}
    listing = "; ".join(f"{f.name}: {sorted(v)}" for f, v in unused.items())
    if not pieces:
        raise DataError(f"no file holds a variable geofusion uses ({listing}); expected the "
                        f"CDS short names {sorted(SHORT_NAMES)} (or {sorted(SHORT_NAMES.values())}"
                        f"): download them with {describe_cds_request(CDS_DATASETS)}")
    if unused:
        warnings.warn(f"skipped {len(unused)} files without ERA5 variables geofusion uses "
                      f"({listing})", stacklevel=2)
    arrays = {name: _concat_variable(name, items) for name, items in pieces.items()}
    names = list(arrays)
    reference = arrays[names[0]]
    for name in names[1:]:
        array = arrays[name]
        if not (np.array_equal(array["latitude"].values, reference["latitude"].values)
                and np.array_equal(array["longitude"].values, reference["longitude"].values)):
            raise DataError(f"mixed grids: {names[0]} is on {_grid_text(reference)} "
                            f"({pieces[names[0]][0][1]}) but {name} is on {_grid_text(array)} "
                            f"({pieces[name][0][1]}); download the single-level and the "
                            "pressure-level files with the same `grid` field (e.g. grid: "
                            "[1.5, 1.5], or none for the native 0.25 deg)")
    common = None
    for array in arrays.values():
        times = array["time"].values
        common = times if common is None else np.intersect1d(common, times)
    if common is None or len(common) == 0:
        ranges = "; ".join(f"{n}: {a['time'].values[0]} .. {a['time'].values[-1]}"
                           for n, a in arrays.items())
        raise DataError(f"the variables share no time step ({ranges}); download the same "
                        "years, months, days and times for every variable")
    merged = xr.merge([array.sel(time=common).rename(name) for name, array in arrays.items()],
                      join="inner", compat="override", combine_attrs="drop")
    levels = {name: a["level"].values.tolist() for name, a in arrays.items() if "level" in a.dims}
    merged.attrs["geofusion_levels"] = json.dumps(levels, sort_keys=True)
    merged.attrs["source_files"] = len(files)
    merged.encoding["geofusion_source"] = os.fspath(path)
    return merged
