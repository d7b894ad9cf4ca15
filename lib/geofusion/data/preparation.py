"""WeatherBench 2 ERA5 data: opening stores, the synthetic default, preparation, torch datasets.

The report (section 3.1) uses five ERA5 variables of the WeatherBench 2 64x32 store, the
pressure-level ones at one level, resampled from 6-hourly to daily means, split 80/20 by time
(training = the earlier part) and standardised per channel with training statistics only.

- :func:`open_era5` lazily opens a WeatherBench 2 zarr store (``gs://`` with ``gcsfs`` or a
  local copy) keeping its names, dims ``(time, level, longitude, latitude)`` and coordinates,
  or ERA5 netCDF / GRIB files from the Climate Data Store (a file, directory or glob; see
  :mod:`geofusion.data.era5_files`) converted to that layout; the orientation is normalised
  (:func:`geofusion.grids.normalise_orientation`: latitude ascending, longitude 0..360).
- :func:`synthetic_era5` (from :mod:`geofusion.world.synthetic`) builds the ERA5-like default in the
  same layout; :func:`default_store` writes it once as a zarr store so it is read through the
  same :func:`open_era5` path as real data.
- :func:`prepare` turns a store into :class:`PreparedData`: arrays ``(time, channel, lat, lon)``
  float32, channels in :data:`VARIABLES` order, latitude ascending, longitude 0..360 east; with
  a ``cache_dir`` the result is cached (npz + JSON manifest of the inputs, written atomically).
  On request (``regrid="conservative"``) a finer grid is regridded conservatively to the run's
  grid (:func:`geofusion.grids.regrid_conservative`).
- :func:`load` is the one call notebooks make; it checks the grid against the run's (64x32 by
  default); :class:`FieldDataset` feeds the models.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tqdm
import tqdm.auto
import xarray as xr

from geofusion.data.anomalies import SPACES, to_space
from geofusion.data.era5_files import describe_cds_request
from geofusion.data.prepared import PreparedData
from geofusion.data.stores import default_store, open_era5
from geofusion.errors import DataError
from geofusion.grids import equiangular_grid, is_grid, normalise_orientation, regrid_conservative
from geofusion.io import atomic_path, atomic_write_text
from geofusion.variables import (
    VARIABLES,
)

__all__ = [
    "DEFAULT_GRID", "REGRID_METHODS", "BLOCK_BYTES", "PROGRESS_MIN_BYTES", "step_bytes",
    "time_blocks", "prepare", "load",
]


# The run's grid: WeatherBench 2's 64x32 equiangular grid, (nlat, nlon).
DEFAULT_GRID: tuple[int, int] = (32, 64)
REGRID_METHODS: tuple[str, ...] = ("conservative",)

# Bump when the prepared format or the preparation changes: old caches are then ignored.
_CACHE_VERSION = 1
# Bytes of selected data computed per block of time steps (a block is held in memory once;
# dask reads its source chunks concurrently).
BLOCK_BYTES = 256 * 2**20
# A progress bar is shown by default for sources of at least this many bytes.
PROGRESS_MIN_BYTES = 256 * 2**20


# --------------------------------------------------------------------------------------------
# Opening stores
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Prepared data
# --------------------------------------------------------------------------------------------


def _check_grid(ds: xr.Dataset, expected_grid: tuple[int, int] | None,
                regrid: str | None = None) -> xr.Dataset:
    """Normalised orientation, strictly increasing time, and the expected grid (or regridded)."""
    if "time" not in ds.dims:
        raise DataError(f"the store has no 'time' dimension (dims: {dict(ds.sizes)}); "
                        "pass a WeatherBench 2 ERA5 store with time/latitude/longitude")
    ds = normalise_orientation(ds)
    steps = np.diff(ds["time"].values)
    if np.any(steps <= np.zeros((), dtype=steps.dtype)):
        n_dup = int(np.sum(steps == np.zeros((), dtype=steps.dtype)))
        raise DataError(f"time coordinate is not strictly increasing ({n_dup} duplicate "
                        "values); fix the store (e.g. ds.sortby('time') and drop duplicates) "
                        "before preparing it")
    if regrid is not None and regrid not in REGRID_METHODS:
        raise ValueError(f"unknown regrid method {regrid!r}; use one of {REGRID_METHODS} or None")
    if expected_grid is None:
        return ds
    nlat, nlon = (int(n) for n in expected_grid)
    lat, lon = equiangular_grid(nlat, nlon)
    if is_grid(ds, lat, lon):
        return ds
    have = (ds.sizes["latitude"], ds.sizes["longitude"])
    if regrid is None:
        same = "with other grid points " if have == (nlat, nlon) else ""
        raise DataError(f"grid is {have[0]}x{have[1]} (lat x lon) {same}but {nlat}x{nlon} was "
                        "expected; pass regrid='conservative' to regrid it conservatively "
                        "(area-weighted) to the expected grid, or open the matching WeatherBench "
                        "2 store (e.g. 64x32_equiangular_conservative)")
    if have[0] < nlat or have[1] < nlon:
        raise DataError(f"grid is {have[0]}x{have[1]} (lat x lon), coarser than the expected "
                        f"{nlat}x{nlon}: conservative regridding would only repeat values; "
                        "use a source at least as fine as the run's grid, or run on the "
                        "source's grid (grid=None)")
    return regrid_conservative(ds, lat, lon)


def _resolve_level(ds: xr.Dataset, level: int | None, variables: Sequence[str]) -> int | None:
    needs_level = [v for v in variables if "level" in ds[v].dims]
    if not needs_level:
        return None if level is None else int(level)
    available = [int(v) for v in np.asarray(ds["level"].values)]
    if level is None and available:
        return available[0]
    if level is None or int(level) not in available:
        wanted = 500 if level is None else int(level)
        per_variable = ""
        if "geofusion_levels" in ds.attrs:
            per_variable = f" (levels per variable: {ds.attrs['geofusion_levels']})"
        raise DataError(f"level {wanted} hPa is not in the store; available levels (hPa) for "
                        f"all of {needs_level}: {available}{per_variable}; pass one of them "
                        f"(or level=None for the first), or download it from the CDS: "
                        f"{describe_cds_request(needs_level, [wanted])}")
    return int(level)


def _source_identity(ds: xr.Dataset, variables: Sequence[str]) -> dict[str, Any]:
    """What identifies the input data: source path, attributes, time range, a content sample."""
    times = ds["time"].values
    digest = hashlib.sha256()
    # First and last time step of every variable: cheap, and it tells apart in-memory
    # datasets (e.g. two synthetic seeds) that share attributes.
    for name in variables:
        da = ds[name].isel(time=[0, -1])
        digest.update(np.ascontiguousarray(da.values, dtype=np.float32).tobytes())
    return {
        "path": str(ds.encoding.get("geofusion_source", ds.encoding.get("source", ""))),
        "attrs": {k: str(v) for k, v in sorted(ds.attrs.items())},
        "time_first": str(times[0]),
        "time_last": str(times[-1]),
        "n_time": int(len(times)),
        "sizes": {k: int(v) for k, v in sorted(ds.sizes.items())},
        "sample_sha256": digest.hexdigest(),
    }


def step_bytes(ds: xr.Dataset, variables: Sequence[str]) -> int:
    """Bytes of one time step of ``variables`` at one pressure level (what preparation reads)."""
    total = 0
    for name in variables:
        array = ds[name]
        cells = int(np.prod([n for d, n in array.sizes.items() if d not in ("time", "level")]))
        total += cells * array.dtype.itemsize
    return total


def time_blocks(times: np.ndarray, chunk_bounds: Sequence[int] | None,
                steps_per_block: int) -> list[tuple[int, int]]:
    """Split the steps ``[0, len(times))`` into blocks ``(first, last)`` of whole days.

    Each block ends where a day starts, on a source chunk boundary (``chunk_bounds``, the
    cumulative dask chunk offsets along time; None = every step) when one lies within
    ``steps_per_block``: then every source chunk is read once. Otherwise the block ends at the
    last day start within the budget, or, when a single day exceeds it, after that day.

    >>> t = np.arange("2000-01-01", "2000-01-04", np.timedelta64(6, "h"), dtype="datetime64[ns]")
    >>> time_blocks(t, chunk_bounds=[0, 8, 12], steps_per_block=9)
    [(0, 8), (8, 12)]
    """
    n = len(times)
    days = np.asarray(times, dtype="datetime64[D]")
    day_starts = [0, *(np.flatnonzero(days[1:] != days[:-1]) + 1).tolist(), n]
    aligned = day_starts if chunk_bounds is None else sorted(
        set(day_starts) & {*map(int, chunk_bounds), n})
    blocks, first = [], 0
    while first < n:
        limit = first + max(1, int(steps_per_block))
        last = None
        for cuts in (aligned, day_starts):
            k = bisect.bisect_right(cuts, limit) - 1
            if k >= 0 and cuts[k] > first:
                last = cuts[k]
                break
        if last is None:
            last = day_starts[bisect.bisect_right(day_starts, first)]
        blocks.append((first, last))
        first = last
    return blocks


def _progress_bar(total_bytes: int, show: bool | None, desc: str) -> Any:
    """A tqdm bar counting bytes read (text under papermill / CI, a widget in Jupyter).

    ``show=None`` shows it for sources of at least :data:`PROGRESS_MIN_BYTES`. The pipeline
    sets ``GEOFUSION_PLAIN_PROGRESS=1`` (widgets do not survive into executed notebooks).
    """
    if show is None:
        show = total_bytes >= PROGRESS_MIN_BYTES
    bar = tqdm.tqdm if os.environ.get("GEOFUSION_PLAIN_PROGRESS") else tqdm.auto.tqdm
    return bar(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
               disable=not show, mininterval=1.0)


def _regular_daily_means(block: xr.Dataset
                         ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Daily means of ``block`` (variables ``(time, ...)``) by a reshape, or None.

    Only for consecutive calendar days with the same number of steps each (e.g. the 6-hourly
    default): then ``values.reshape(days, steps, ...).mean(axis=1)`` is what
    ``block.resample(time="1D").mean(skipna=False)`` computes (the same float additions in the
    same order, NaN propagated), without xarray's per-day group loop (about a fifth of the
    synthetic default's preparation). Any other block (missing steps, gaps) returns None and
    takes the resample path.
    """
    days = np.asarray(block["time"].values).astype("datetime64[D]")
    if len(days) == 0:
        return None
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    counts = np.diff(np.r_[starts, len(days)])
    unique = days[starts]
    if (counts != counts[0]).any() or (np.diff(unique) != np.timedelta64(1, "D")).any():
        return None
    values = {}
    for name in block.data_vars:
        array = block[name]
        if array.dims[0] != "time":
            return None
        raw = np.asarray(array.values)
        daily = raw.reshape(len(unique), int(counts[0]), *raw.shape[1:]).mean(axis=1)
        values[name] = np.asarray(daily, dtype=np.float32)
    return values, unique.astype("datetime64[ns]")


def _compute_block(ds_sel: xr.Dataset, first: int, last: int
                   ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, int]]:
    """Daily means of the steps ``[first, last)`` (whole days): arrays, days, NaN counts."""
    block = ds_sel.isel(time=slice(first, last)).compute()  # dask reads chunks concurrently
    n_nan = {name: int(block[name].isnull().sum()) for name in ds_sel.data_vars}
    fast = _regular_daily_means(block)
    if fast is not None:
        return fast[0], fast[1], n_nan
    # skipna=False: a NaN must not silently vanish into a daily mean.
    daily = block.resample(time="1D").mean(skipna=False)
    values = {name: np.asarray(daily[name].values, dtype=np.float32) for name in ds_sel.data_vars}
    return values, daily["time"].values.astype("datetime64[ns]"), n_nan


def _block_with_parts(ds_sel: xr.Dataset, first: int, last: int, parts_dir: Path | None
                      ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, int]]:
    """:func:`_compute_block`, saved to / reloaded from ``parts_dir`` (resume after a stop)."""
    names = list(ds_sel.data_vars)
    part = None if parts_dir is None else parts_dir / f"block_{first}_{last}.npz"
    if part is not None and part.exists():
        with np.load(part) as z:
            return ({name: z[f"v{i}"] for i, name in enumerate(names)},
                    z["times"].astype("datetime64[ns]"),
                    {name: int(z["nan"][i]) for i, name in enumerate(names)})
    values, times, n_nan = _compute_block(ds_sel, first, last)
    if part is not None:
        with atomic_path(part) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, times=times.astype(np.int64),
                     nan=np.asarray([n_nan[n] for n in names], dtype=np.int64),
                     **{f"v{i}": values[name] for i, name in enumerate(names)})
    return values, times, n_nan


def _compute_prepared(ds: xr.Dataset, level: int | None, variables: Sequence[str],
                      train_fraction: float, parts_dir: Path | None = None,
                      progress: bool | None = None,
                      read_bytes_per_step: int | None = None,
                      test_fraction: float = 0.0) -> PreparedData:
    """Daily means, split, standardisation (the work :func:`prepare` caches).

    The steps are computed in blocks of whole days (:func:`time_blocks`, about
    :data:`BLOCK_BYTES` each, aligned with the source chunks) with a progress bar in bytes
    read; with ``parts_dir`` each finished block is saved there, so an interrupted
    preparation resumes at the first missing block.
    """
    selected = {}
    for name in variables:
        da = ds[name]
        if "level" in da.dims:
            da = da.sel(level=level, drop=True)
        selected[name] = da.transpose("time", "latitude", "longitude")
    ds_sel = xr.Dataset(selected)
    held_per_step = step_bytes(ds_sel, variables)
    read_per_step = held_per_step if read_bytes_per_step is None else read_bytes_per_step
    chunks = ds_sel[variables[0]].chunks
    bounds = None if chunks is None else np.cumsum([0, *chunks[0]]).tolist()
    n_steps = ds_sel.sizes["time"]
    plan = time_blocks(ds_sel["time"].values, bounds, BLOCK_BYTES // max(1, held_per_step))
    blocks, times_blocks = {name: [] for name in variables}, []
    n_nan = dict.fromkeys(variables, 0)
    with _progress_bar(read_per_step * n_steps, progress, "preparing daily means") as bar:
        for first, last in plan:
            values, times, nans = _block_with_parts(ds_sel, first, last, parts_dir)
            for name in variables:
                blocks[name].append(values[name])
                n_nan[name] += nans[name]
            times_blocks.append(times)
            bar.update(read_per_step * (last - first))
            bar.set_postfix_str(f"step {last}/{n_steps}, {len(plan)} blocks, "
                                f"to {str(times[-1])[:10]}", refresh=False)
    times = np.concatenate(times_blocks)
    channels = []
    for name in variables:
        values = np.concatenate(blocks.pop(name), axis=0)
        if n_nan[name]:
            raise DataError(f"{name} has {n_nan[name]} NaN values in the selected times; choose "
                            "a time range without them or fill the store before preparing it")
        missing_days = int(np.isnan(values).any(axis=(1, 2)).sum())
        if missing_days:
            raise DataError(f"{name} has {missing_days} days without any data (gaps in the time "
                            "axis); choose a time range without gaps")
        channels.append(values)
    fields = np.stack(channels, axis=1)  # (T, C, lat, lon)
    n = fields.shape[0]
    n_train = int(round(n * train_fraction))
    n_test = int(round(n * test_fraction))
    if n_train < 1 or n_train >= n - n_test:
        raise DataError(f"train_fraction={train_fraction} of {n} days leaves "
                        f"{'no training' if n_train < 1 else 'no validation'} days; use a "
                        "longer time range or a train_fraction further from 0 and 1")
    if test_fraction and n_test < 1:
        raise DataError(f"test_fraction={test_fraction} of {n} days leaves no test days; use a "
                        "longer time range or a larger test_fraction")
    n_fit = n - n_test
    train, valid, test = fields[:n_train], fields[n_train:n_fit], fields[n_fit:]
    mean = train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = train.std(axis=(0, 2, 3), dtype=np.float64)
    constant = [variables[c] for c in np.flatnonzero(std == 0)]
    if constant:
        raise DataError(f"{constant} are constant over the training days (std 0) and cannot be "
                        "standardised; drop them from `variables` or use a longer time range")
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    scale = (1.0 / std32)[None, :, None, None]
    return PreparedData(
        train=((train - mean32[None, :, None, None]) * scale).astype(np.float32),
        valid=((valid - mean32[None, :, None, None]) * scale).astype(np.float32),
        test=((test - mean32[None, :, None, None]) * scale).astype(np.float32)
        if n_test else None,
        test_times=times[n_fit:] if n_test else None,
        train_times=times[:n_train],
        valid_times=times[n_train:n_fit],
        channels=tuple(variables),
        mean=mean32,
        std=std32,
        lat=np.asarray(ds["latitude"].values, dtype=np.float64),
        lon=np.asarray(ds["longitude"].values, dtype=np.float64),
        level=-1 if level is None else int(level),
        synthetic=bool(int(ds.attrs.get("synthetic", 0))),
    )


def _save_prepared(prepared: PreparedData, path: Path) -> None:
    test = {} if prepared.test is None else {
        "test": prepared.test,
        "test_times": prepared.test_times.astype("datetime64[ns]").astype(np.int64)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, train=prepared.train, valid=prepared.valid, **test,
                 train_times=prepared.train_times.astype("datetime64[ns]").astype(np.int64),
                 valid_times=prepared.valid_times.astype("datetime64[ns]").astype(np.int64),
                 channels=np.asarray(prepared.channels), mean=prepared.mean, std=prepared.std,
                 lat=prepared.lat, lon=prepared.lon, level=np.int64(prepared.level),
                 synthetic=np.bool_(prepared.synthetic))


def _load_prepared(path: Path) -> PreparedData:
    with np.load(path) as z:
        return PreparedData(
            train=z["train"], valid=z["valid"],
            train_times=z["train_times"].astype("datetime64[ns]"),
            valid_times=z["valid_times"].astype("datetime64[ns]"),
            channels=tuple(str(c) for c in z["channels"]), mean=z["mean"], std=z["std"],
            lat=z["lat"], lon=z["lon"], level=int(z["level"]), synthetic=bool(z["synthetic"]),
            test=z["test"] if "test" in z else None,
            test_times=z["test_times"].astype("datetime64[ns]") if "test" in z else None)


def prepare(ds: xr.Dataset, level: int | None = 500, train_fraction: float = 0.8,
            start: str | None = None, end: str | None = None,
            variables: Sequence[str] = VARIABLES, cache_dir: str | os.PathLike | None = None,
            expected_grid: tuple[int, int] | None = None,
            regrid: str | None = None, progress: bool | None = None,
            test_fraction: float = 0.0) -> PreparedData:
    """Select, resample to daily means, split by time and standardise a WB2-layout dataset.

    Parameters
    ----------
    ds: dataset in the WeatherBench 2 layout (from :func:`open_era5` or :func:`synthetic_era5`).
    level: hPa level of the pressure-level variables; None = the store's first level (the
        report's choice, 50 hPa in WB2 stores).
    train_fraction: share of the days (the earliest ones) used for training, in (0, 1).
    test_fraction: share of the days (the latest ones) held out as a test block, in [0, 1);
        0 (default) is the two-way split. E.g. ``train_fraction=0.6, test_fraction=0.2``
        gives train / validation / test blocks of 60/20/20 % in time; sweeps select on
        validation and the ``full`` profile's final scorecard can report test
        (:attr:`PreparedData.test`). The statistics are the training block's either way.
    start, end: optional time slice (inclusive, e.g. "2000-01-01", "2007-12-31").
    variables: variables to stack as channels, in this order.
    cache_dir: when given, the result is cached there (npz + JSON manifest of the inputs) and
        reused by a later call with the same inputs.
    expected_grid: optional ``(nlat, nlon)``: the data must be on the WeatherBench 2
        equiangular grid of that size (:func:`geofusion.grids.equiangular_grid`).
    regrid: what to do when it is not: None raises; ``"conservative"`` regrids a finer grid
        (e.g. 1.5, 1 or 0.25 deg) conservatively (:func:`geofusion.grids.regrid_conservative`).
    progress: show a progress bar (bytes read, steps); None = only for sources of at least
        :data:`PROGRESS_MIN_BYTES`. The source is read in blocks of whole days aligned with
        its chunks, each block's chunks concurrently (dask threads); with ``cache_dir`` every
        finished block is kept, so an interrupted preparation resumes where it stopped.

    Returns
    -------
    :class:`PreparedData` with ``train`` / ``valid`` float32 ``(T, C, lat, lon)``.

    Raises
    ------
    DataError (a ValueError) for a missing variable or level, an unexpected or non-monotonic
    grid, NaNs, an empty time range, a bad ``train_fraction`` or a split with an empty side.
    """
    if not 0.0 < float(train_fraction) < 1.0:
        raise DataError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}; "
                        "e.g. 0.8 for the report's 80/20 split")
    if not 0.0 <= float(test_fraction) < 1.0 - float(train_fraction):
        raise DataError(f"test_fraction must be >= 0 and leave validation days after "
                        f"train_fraction={train_fraction}, got {test_fraction}; e.g. 0.2 with "
                        "train_fraction=0.6 for a 60/20/20 split")
    variables = tuple(variables)
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(f"variables {missing} are not in the store, which has "
                        f"{sorted(map(str, ds.data_vars))}; pass `variables` from that list or "
                        "a store that contains them (from the CDS: "
                        f"{describe_cds_request(missing, [500 if level is None else level])})")
    read_bytes_per_step = step_bytes(ds, variables)  # before any regridding
    ds = _check_grid(ds, expected_grid, regrid)
    level = _resolve_level(ds, level, variables)
    if start is not None or end is not None:
        ds = ds.sel(time=slice(start, end))
    if ds.sizes["time"] == 0:
        raise DataError(f"no times between start={start!r} and end={end!r} in the store; pick a "
                        "range inside the store's time axis")

    if cache_dir is None:
        return _compute_prepared(ds, level, variables, train_fraction, progress=progress,
                                 read_bytes_per_step=read_bytes_per_step,
                                 test_fraction=test_fraction)
    manifest = {
        "cache_version": _CACHE_VERSION,
        "source": _source_identity(ds, variables),
        "level": level,
        "variables": list(variables),
        "train_fraction": float(train_fraction),
        "start": start,
        "end": end,
        "expected_grid": None if expected_grid is None else [int(n) for n in expected_grid],
        "regrid": regrid,
    }
    if test_fraction:
        # Only when set, so the two-way caches of earlier runs keep their keys.
        manifest["test_fraction"] = float(test_fraction)
    text = json.dumps(manifest, indent=2, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    cache = Path(cache_dir)
    npz_path, manifest_path = cache / f"prepared_{key}.npz", cache / f"prepared_{key}.json"
    if manifest_path.exists() and npz_path.exists():
        if json.loads(manifest_path.read_text()) == manifest:
            return _load_prepared(npz_path)
    # Finished blocks of an interrupted run with the same inputs are reused from here.
    parts_dir = cache / f"prepared_{key}.parts"
    prepared = _compute_prepared(ds, level, variables, train_fraction, parts_dir=parts_dir,
                                 progress=progress, read_bytes_per_step=read_bytes_per_step,
                                 test_fraction=test_fraction)
    # The manifest is written last: its presence means the npz next to it is complete.
    _save_prepared(prepared, npz_path)
    atomic_write_text(manifest_path, text + "\n")
    shutil.rmtree(parts_dir, ignore_errors=True)
    return prepared


def load(data_path: str | os.PathLike | None = None, level: int | None = 500,
         start: str | None = "2000-01-01", end: str | None = "2009-12-31",
         cache_dir: str | os.PathLike | None = "runs/cache", seed: int = 0,
         train_fraction: float = 0.8, grid: tuple[int, int] | None = DEFAULT_GRID,
         regrid: str | None = "conservative", progress: bool | None = None,
         test_fraction: float = 0.0, space: str = "report") -> PreparedData:
    """Prepared data for a notebook: the synthetic default (``data_path=None``) or ERA5.

    ``data_path``: None, a WeatherBench 2 zarr store, or CDS netCDF/GRIB files (a file,
    directory or glob; :func:`open_era5`). With ``data_path=None`` the synthetic default for
    ``start..end`` and ``seed`` is written once to ``cache_dir`` (:func:`default_store`, at
    ``level`` hPa, 500 when None) and read back through :func:`open_era5` like real data.

    ``grid``: the ``(nlat, nlon)`` equiangular grid the run expects (64x32 by default; None
    accepts any grid). Data on another grid is regridded with ``regrid`` (``"conservative"``,
    the default, for a finer source such as the CDS's 0.25 deg) or, with ``regrid=None``,
    refused. ``progress``, ``test_fraction`` (three-way split): see :func:`prepare`.
    ``space``: the representation the models read, "anomaly" (day-of-year anomalies scaled per
    variable; what every notebook and both profiles use) or "report" (the report's global
    standardisation; the default here, so code written before the anomaly space keeps its
    meaning),
    :func:`geofusion.data.anomalies.to_space`. Returns :func:`prepare`'s result (cached) in
    that space.

    >>> prepared = load(None, start="2000-01-01", end="2000-01-10",
    ...                 cache_dir=tmp_cache)  # doctest: +SKIP
    >>> prepared.train.shape, prepared.synthetic  # doctest: +SKIP
    ((8, 5, 32, 64), True)
    """
    if data_path is None:
        store_dir = cache_dir if cache_dir is not None else "runs/cache"
        if start is None or end is None:
            raise DataError("the synthetic default needs explicit start and end dates, e.g. "
                            "start='2000-01-01', end='2009-12-31'")
        path = default_store(store_dir, start=start, end=end, seed=seed,
                             levels=(500 if level is None else int(level),))
    else:
        path = data_path
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {SPACES}")
    ds = open_era5(path)
    prepared = prepare(ds, level=level, train_fraction=train_fraction, start=start, end=end,
                       cache_dir=cache_dir, expected_grid=grid, regrid=regrid,
                       progress=progress, test_fraction=test_fraction)
    return to_space(prepared, space)


# --------------------------------------------------------------------------------------------
# Diagnostics for the data notebook
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Torch dataset
# --------------------------------------------------------------------------------------------

