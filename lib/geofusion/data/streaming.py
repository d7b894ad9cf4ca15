"""Out-of-core preparation and a lazily read dataset, for grids that do not fit in memory.

:func:`geofusion.data.prepare` holds the whole prepared array (and one year of 6-hourly input)
in memory and caches it as one npz: right for the 64x32 grid (5 variables x 40 years of days is
~1.2 GB), not for WeatherBench 2 at 1.5 deg (240x121, ~17 GB of daily fields for 40 years) or
0.25 deg (1440x721, ~300 GB). Here the same preparation streams through dask, one chunk of days
at a time, into a zarr store:

1. select the variables (and level) as in ``prepare``;
2. daily means: the 6-hourly steps are regular and start at 00 UTC, so a day is a block of
   ``steps_per_day`` consecutive steps and the daily mean is a block mean inside dask chunks of
   whole days (equal to ``resample(time="1D").mean()`` on whole days, without one task per day);
3. write the daily fields ``(time, channel, lat, lon)`` float32 in *physical* units to a zarr
   store in chunks of ``time_chunk`` days, block by block (each block a few chunks, computed
   concurrently by dask's threads) with a progress bar in bytes read and days written. The
   store is written at ``<path>.partial`` with the finished blocks listed in
   ``<path>.partial.json`` (written atomically, with the inputs): an interrupted preparation
   resumes at the first unfinished block when called again with the same inputs, and
   restarts from scratch when the inputs differ. Only the complete store is renamed to
   ``path``, so a half-written store never appears there;
4. training mean/std per channel (float64, first ``round(train_fraction * days)`` days) and a
   NaN count, in one chunked pass over the written store; saved as store attributes.

Memory holds a few chunks at a time (``tests/test_out_of_core.py`` checks that no task result
is larger than a chunk). :class:`ZarrFieldDataset` then reads samples lazily and standardises
them on the fly with the training statistics, with exactly the arithmetic of ``prepare``, so a
prepared store and ``prepare`` give the same arrays (the test compares them).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import torch
import xarray as xr
import zarr

from geofusion.data.era5_files import describe_cds_request
from geofusion.data.preparation import (
    BLOCK_BYTES,
    _check_grid,
    _progress_bar,
    _resolve_level,
    _source_identity,
    step_bytes,
)
from geofusion.data.prepared import PreparedData
from geofusion.errors import DataError
from geofusion.io import atomic_write_text
from geofusion.variables import VARIABLES, season_labels

__all__ = ["PreparedStore", "prepare_out_of_core", "open_prepared", "ZarrFieldDataset"]

FORMAT = "geofusion-prepared-zarr-v1"


@dataclass
class PreparedStore:
    """A prepared zarr store: daily physical fields plus the split and training statistics.

    Attributes: ``path``; ``channels``; ``mean``, ``std`` float32 ``(C,)`` (training days,
    physical units); ``times`` datetime64 ``(T,)``; ``n_train`` (the first ``n_train`` days are
    the training split); ``lat``, ``lon``; ``level``; ``synthetic``.
    """

    path: Path
    channels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    times: np.ndarray
    n_train: int
    lat: np.ndarray
    lon: np.ndarray
    level: int
    synthetic: bool

    @property
    def grid(self) -> tuple[int, int]:
        return len(self.lat), len(self.lon)

    def split_slice(self, split: str) -> slice:
        if split not in ("train", "valid"):
            raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
        return slice(0, self.n_train) if split == "train" else slice(self.n_train, None)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """Physical ``(..., C, lat, lon)`` -> standardised float32, as ``prepare`` computes it."""
        scale = (1.0 / self.std)[:, None, None]
        return ((x - self.mean[:, None, None]) * scale).astype(np.float32)

    def destandardise(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Standardised ``(..., C, lat, lon)`` -> physical units (numpy or torch)."""
        if isinstance(x, torch.Tensor):
            std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
            mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
            return x * std + mean
        return np.asarray(x) * self.std[:, None, None] + self.mean[:, None, None]

    def dataset(self, split: str = "train", cache_chunks: int = 2) -> ZarrFieldDataset:
        """A lazily read torch dataset of ``split``."""
        return ZarrFieldDataset(self, split, cache_chunks=cache_chunks)

    def to_prepared(self) -> PreparedData:
        """Load everything into a :class:`geofusion.data.PreparedData` (only if it fits)."""
        fields = zarr.open_array(str(self.path / "fields"), mode="r")
        train = self.standardise(fields[: self.n_train])
        valid = self.standardise(fields[self.n_train:])
        return PreparedData(
            train=train, valid=valid, train_times=self.times[: self.n_train],
            valid_times=self.times[self.n_train:], channels=self.channels, mean=self.mean,
            std=self.std, lat=self.lat, lon=self.lon, level=self.level,
            synthetic=self.synthetic)


def _steps_per_day(times: np.ndarray) -> int:
    times = pd.DatetimeIndex(times)
    if len(times) < 2:
        raise DataError("need at least two time steps to form daily means")
    steps = np.diff(times.asi8)
    day = pd.Timedelta(days=1).value
    if np.any(steps != steps[0]) or day % steps[0]:
        raise DataError("the time axis is not regular with a whole number of steps per day; "
                        "use geofusion.data.prepare (in memory) for irregular data")
    per_day = int(day // steps[0])
    if times[0] != times[0].normalize() or len(times) % per_day:
        raise DataError(f"the selected times do not cover whole days (first {times[0]}, "
                        f"{len(times)} steps of {per_day} per day); select from 00 UTC of the "
                        "first day to the last step of the last day")
    return per_day


def prepare_out_of_core(ds: xr.Dataset, path: str | os.PathLike, level: int | None = 500,
                        train_fraction: float = 0.8, start: str | None = None,
                        end: str | None = None, variables: Sequence[str] = VARIABLES,
                        time_chunk: int = 8, expected_grid: tuple[int, int] | None = None,
                        overwrite: bool = False, regrid: str | None = None,
                        progress: bool | None = None) -> PreparedStore:
    """:func:`geofusion.data.prepare` streamed through dask into a zarr store at ``path``.

    Same arguments and checks as ``prepare`` (level, split, time slice, variables, grid and
    ``regrid``, NaNs, constant channels); ``time_chunk`` days per zarr chunk (and per dask
    task). An existing complete store at ``path`` is reused unless ``overwrite``; an
    interrupted preparation with the same inputs resumes (see the module docstring).
    ``progress``: bar in bytes read (None = for sources of at least
    :data:`geofusion.data.PROGRESS_MIN_BYTES`).

    Returns:
        :class:`PreparedStore` describing the store.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        return open_prepared(path)
    if not 0.0 < float(train_fraction) < 1.0:
        raise DataError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}")
    if time_chunk < 1:
        raise ValueError(f"time_chunk must be >= 1 day, got {time_chunk}")
    variables = tuple(variables)
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(f"variables {missing} are not in the store, which has "
                        f"{sorted(map(str, ds.data_vars))} (from the CDS: "
                        f"{describe_cds_request(missing, [500 if level is None else level])})")
    read_per_step = step_bytes(ds, variables)
    ds = _check_grid(ds, expected_grid, regrid)
    level = _resolve_level(ds, level, variables)
    if start is not None or end is not None:
        ds = ds.sel(time=slice(start, end))
    if ds.sizes["time"] == 0:
        raise DataError(f"no times between start={start!r} and end={end!r} in the store")
    per_day = _steps_per_day(ds["time"].values)

    channels = []
    for name in variables:
        array = ds[name]
        if "level" in array.dims:
            array = array.sel(level=level, drop=True)
        array = array.transpose("time", "latitude", "longitude")
        # Chunks of whole days, whole grids: every coarsen window lies inside one chunk.
        array = array.chunk({"time": per_day * time_chunk, "latitude": -1, "longitude": -1})
        steps = array.data
        # A mean over consecutive blocks of steps, NaN-propagating like resample(skipna=False).
        daily = steps.reshape(steps.shape[0] // per_day, per_day, *steps.shape[1:],
                              merge_chunks=False).mean(axis=1)
        channels.append(daily.astype(np.float32))
    fields = da.stack(channels, axis=1).rechunk((time_chunk, -1, -1, -1))
    n_days = fields.shape[0]
    n_train = int(round(n_days * train_fraction))
    if n_train < 1 or n_train >= n_days:
        raise DataError(f"train_fraction={train_fraction} of {n_days} days leaves an empty "
                        "split; use a longer time range")
    day_times = ds["time"].values[::per_day].astype("datetime64[D]").astype("datetime64[ns]")

    inputs = {"format": FORMAT, "source": _source_identity(ds, variables), "level": level,
              "variables": list(variables), "start": start, "end": end,
              "time_chunk": int(time_chunk), "shape": list(fields.shape),
              "expected_grid": None if expected_grid is None else list(expected_grid),
              "regrid": regrid}
    partial = path.with_name(path.name + ".partial")
    state_path = path.with_name(path.name + ".partial.json")
    done = _resume_state(partial, state_path, inputs)
    if done is None:  # nothing to resume: start from scratch
        shutil.rmtree(partial, ignore_errors=True)
        root = zarr.open_group(str(partial), mode="w", zarr_format=2)
        root.create_array("fields", shape=fields.shape, dtype="float32",
                          chunks=(time_chunk, *fields.shape[1:]))
        done = set()
        _save_state(state_path, inputs, done)
    target = zarr.open_array(str(partial / "fields"), mode="r+")
    # Blocks of whole chunks (so concurrent writes never share a zarr chunk), about
    # BLOCK_BYTES of source each: the unit of progress and of resuming.
    chunks_per_block = max(1, BLOCK_BYTES // max(1, read_per_step * per_day * time_chunk))
    block_days = chunks_per_block * time_chunk
    bytes_per_day = read_per_step * per_day
    with _progress_bar(bytes_per_day * n_days, progress, "preparing daily means") as bar:
        for first in range(0, n_days, block_days):
            last = min(first + block_days, n_days)
            if first not in done:
                _store_block(fields, target, first, last)
                done.add(first)
                _save_state(state_path, inputs, done)
            bar.update(bytes_per_day * (last - first))
            bar.set_postfix_str(f"day {last}/{n_days}", refresh=False)

    written = da.from_zarr(str(partial / "fields"))
    train = written[:n_train]
    mean, sq, n_nan = dask.compute(
        train.mean(axis=(0, 2, 3), dtype=np.float64),
        ((train.astype(np.float64) - train.mean(axis=(0, 2, 3), dtype=np.float64)[
            None, :, None, None]) ** 2).mean(axis=(0, 2, 3)),
        da.isnan(written).sum(axis=(0, 2, 3)))
    std = np.sqrt(sq)
    bad = {variables[c]: int(k) for c, k in enumerate(n_nan) if k}
    if bad:
        raise DataError(f"NaN values in the daily means {bad}; choose a time range without "
                        "them or fill the store before preparing it")
    constant = [variables[c] for c in np.flatnonzero(std == 0)]
    if constant:
        raise DataError(f"{constant} are constant over the training days (std 0)")
    zarr.open_group(str(partial), mode="r+").attrs.update({
        "format": FORMAT,
        "channels": list(variables),
        "mean": mean.astype(np.float32).tolist(),
        "std": std.astype(np.float32).tolist(),
        "times": [str(t) for t in day_times],
        "n_train": n_train,
        "lat": np.asarray(ds["latitude"].values, dtype=np.float64).tolist(),
        "lon": np.asarray(ds["longitude"].values, dtype=np.float64).tolist(),
        "level": -1 if level is None else int(level),
        "synthetic": bool(int(ds.attrs.get("synthetic", 0))),
    })
    _publish(partial, path)
    state_path.unlink(missing_ok=True)
    return open_prepared(path)


def _store_block(fields: da.Array, target: Any, first: int, last: int) -> None:
    """Compute and write days ``[first, last)`` (whole chunks; dask computes them concurrently)."""
    da.store(fields[first:last], target, regions=(slice(first, last),), lock=False)


def _resume_state(partial: Path, state_path: Path, inputs: dict[str, Any]) -> set[int] | None:
    """First days of the blocks an earlier run with the same ``inputs`` finished, or None."""
    try:
        state = json.loads(state_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if state.get("inputs") != json.loads(json.dumps(inputs)) or not (partial / "fields").exists():
        return None
    return {int(d) for d in state.get("done", [])}


def _save_state(state_path: Path, inputs: dict[str, Any], done: set[int]) -> None:
    atomic_write_text(state_path, json.dumps({"inputs": inputs, "done": sorted(done)}) + "\n")


def _publish(partial: Path, path: Path) -> None:
    """Move the complete store onto ``path``; an old store is replaced only afterwards."""
    if path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(partial, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, path)


def open_prepared(path: str | os.PathLike) -> PreparedStore:
    """Open a store written by :func:`prepare_out_of_core` (metadata only, no field data)."""
    path = Path(path)
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise DataError(f"{path} is not a prepared zarr store ({error}); run "
                        "prepare_out_of_core to create it") from error
    if attrs.get("format") != FORMAT:
        raise DataError(f"{path} is not a geofusion prepared store (format "
                        f"{attrs.get('format')!r}); delete it and run prepare_out_of_core")
    return PreparedStore(
        path=path, channels=tuple(attrs["channels"]),
        mean=np.asarray(attrs["mean"], dtype=np.float32),
        std=np.asarray(attrs["std"], dtype=np.float32),
        times=np.asarray(attrs["times"], dtype="datetime64[ns]"), n_train=int(attrs["n_train"]),
        lat=np.asarray(attrs["lat"]), lon=np.asarray(attrs["lon"]), level=int(attrs["level"]),
        synthetic=bool(attrs["synthetic"]))


class ZarrFieldDataset(torch.utils.data.Dataset):
    """Samples ``(x, season)`` read lazily from a prepared store, like ``FieldDataset``.

    ``x`` is float32 ``(C, H, W)`` standardised with the store's training statistics, season an
    int64 scalar (0=DJF .. 3=SON). Reads go through the zarr chunk (``time_chunk`` days) holding
    the sample; the last ``cache_chunks`` chunks are kept, so sequential or sampler-blocked
    access reads each chunk once. The zarr handle is opened lazily in each DataLoader worker.
    """

    def __init__(self, store: PreparedStore | str | os.PathLike, split: str = "train",
                 cache_chunks: int = 2) -> None:
        self.store = store if isinstance(store, PreparedStore) else open_prepared(store)
        span = self.store.split_slice(split)
        self.offset = span.start
        self.length = (self.store.n_train if split == "train"
                       else len(self.store.times) - self.store.n_train)
        self.labels = torch.as_tensor(
            season_labels(self.store.times[span]), dtype=torch.int64)
        self.cache_chunks = max(1, cache_chunks)
        self._array: Any = None
        self._cache: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"], state["_cache"] = None, {}
        return state

    def __len__(self) -> int:
        return self.length

    def _chunk(self, index: int) -> tuple[np.ndarray, int]:
        if self._array is None:
            self._array = zarr.open_array(str(self.store.path / "fields"), mode="r")
        size = self._array.chunks[0]
        number = index // size
        if number not in self._cache:
            if len(self._cache) >= self.cache_chunks:
                self._cache.pop(next(iter(self._cache)))
            self._cache[number] = self.store.standardise(
                self._array[number * size:(number + 1) * size])
        return self._cache[number], index - number * size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        index %= self.length
        chunk, row = self._chunk(self.offset + index)
        return torch.from_numpy(chunk[row].copy()), self.labels[index]
