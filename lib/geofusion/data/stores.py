"""Opening the stores geofusion reads: WeatherBench 2 zarr stores (``gs://`` with ``gcsfs`` or a
local copy), ERA5 netCDF / GRIB files from the Climate Data Store (a file, directory or glob;
:mod:`geofusion.data.era5_files`), and the synthetic default written once as a zarr store.

Every reader returns the WeatherBench 2 layout: variable names of
:data:`geofusion.variables.VARIABLES`, dims ``(time, level, longitude, latitude)``, latitude
ascending and longitude 0..360 (:func:`geofusion.grids.normalise_orientation`). Nothing is read
eagerly: preparation (:mod:`geofusion.data.preparation`) selects and computes blocks.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from geofusion.data.era5_files import open_cds
from geofusion.errors import DataError
from geofusion.grids import normalise_orientation
from geofusion.io import atomic_path
from geofusion.world.synthetic import MODEL_VERSION, synthetic_era5

__all__ = ["WB2_ERA5_64x32", "open_era5", "default_store"]


WB2_ERA5_64x32 = "gs://weatherbench2/datasets/era5/1959-2022-6h-64x32_equiangular_conservative.zarr"


def _is_zarr_store(path: Path) -> bool:
    return path.suffix == ".zarr" or (path.is_dir() and any(
        (path / marker).exists() for marker in (".zgroup", ".zmetadata", "zarr.json")))


def open_era5(path_or_url: str | os.PathLike) -> xr.Dataset:
    """Lazily open ERA5 in the WeatherBench 2 layout: a WB2 zarr store or CDS netCDF/GRIB files.

    - a zarr store (local path or ``gs://`` URL): names, dims and coordinates kept as
      published; pressure-level variables are ``(time, level, longitude, latitude)``, surface
      ones ``(time, longitude, latitude)``. ``gs://`` URLs need ``gcsfs``
      (``pip install geofusion[gcs]``) and are opened anonymously (the WB2 bucket is public).
    - a netCDF or GRIB file, a directory or a glob of them as downloaded from the Climate Data
      Store (:func:`geofusion.data.era5_files.open_cds`): short names, ``valid_time`` /
      ``pressure_level``, hourly or 6-hourly, surface and pressure levels in separate files,
      converted to the same layout. GRIB needs the ``grib`` extra (``pip install -e ".[grib]"``).

    Either way the orientation is normalised (latitude ascending, longitude 0..360 ascending;
    :func:`geofusion.grids.normalise_orientation`). Arrays are dask-backed; nothing is read
    until used.

    >>> ds = open_era5(default_store(tmp_cache, end="2000-01-03"))  # doctest: +SKIP
    >>> ds["geopotential"].dims  # doctest: +SKIP
    ('time', 'level', 'longitude', 'latitude')
    """
    path = os.fspath(path_or_url)
    if "://" in path:
        protocol = path.split("://", 1)[0]
        storage_options = None
        if protocol in ("gs", "gcs"):
            if importlib.util.find_spec("gcsfs") is None:
                raise DataError(f"opening {path} needs the optional gcsfs package; install it "
                                "with `pip install geofusion[gcs]` (or pass a local copy of "
                                "the store)")
            storage_options = {"token": "anon"}
        ds = _open_zarr(path, storage_options)
    elif _is_zarr_store(Path(path)):
        if not Path(path).exists():
            raise DataError(f"no zarr store at {path!r}; pass the path of a WeatherBench 2 ERA5 "
                            f"store (e.g. a local copy of {WB2_ERA5_64x32}), CDS netCDF/GRIB "
                            "files, or data_path=None for the synthetic default")
        ds = _open_zarr(path, None)
    else:
        ds = open_cds(path)
    ds = normalise_orientation(ds)
    ds.encoding["geofusion_source"] = path
    return ds


def _open_zarr(path: str, storage_options: dict[str, Any] | None) -> xr.Dataset:
    try:
        return xr.open_zarr(path, storage_options=storage_options, chunks={})
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise DataError(f"could not open {path!r} as a zarr store ({err}); check the path points "
                        "at the .zarr directory of a WeatherBench 2 ERA5 dataset") from err


def default_store(cache_dir: str | os.PathLike = "runs/cache", start: str = "2000-01-01",
                  end: str = "2009-12-31", seed: int = 0,
                  levels: Sequence[int] = (500,)) -> Path:
    """Write the synthetic default (:func:`synthetic_era5`) as a zarr store once; return its path.

    The store is named by its inputs and the synthetic model version, written atomically
    (a half-written store never appears) and reused by later calls.
    """
    levels = tuple(int(lv) for lv in levels)
    tag = f"{start}_{end}_seed{seed}_L{'-'.join(map(str, levels))}_v{MODEL_VERSION}"
    path = Path(cache_dir) / f"synthetic_era5_{tag}.zarr"
    if path.exists():
        return path
    ds = synthetic_era5(start=start, end=end, seed=seed, levels=levels)
    # One year of 6-hourly steps per chunk: small enough to resample lazily, few files.
    encoding = {name: {"chunks": (min(1464, ds.sizes["time"]), *ds[name].shape[1:])}
                for name in ds.data_vars}
    with atomic_path(path, is_dir=True) as tmp:
        ds.to_zarr(tmp, mode="w", encoding=encoding, zarr_format=2, consolidated=True)
    return path
