r"""Latitude-longitude grids: the one orientation, cell geometry, conservative regridding.

**Orientation** (CONTRIBUTING): latitude ascending (south to north), longitude ascending in
``[0, 360)`` degrees east. :func:`normalise_orientation` is the only place where other
orientations are turned into this one: ERA5 from the Climate Data Store runs from 90 N down to
90 S and often from -180 to 180; every reader (:func:`geofusion.data.open_era5`) and every
preparation (:func:`geofusion.data.prepare`, :func:`geofusion.data.streaming.prepare_out_of_core`)
goes through it, so flipped arrays cannot reach a model.

**Cells.** A grid point stands for the cell between the midpoints to its neighbours; the first
and last latitude cells extend half a spacing outwards and are clipped at the poles (so a grid
with points *on* the poles, as ERA5's 0.25 deg or WeatherBench 2's 1.5 deg grids, has half-size
polar cells). On the unit sphere a cell spanning ``[phi_0, phi_1] x [lambda_0, lambda_1]`` has
the area :math:`(\sin\varphi_1 - \sin\varphi_0)(\lambda_1 - \lambda_0)` (radians), so the area
of the intersection of two cells factorises into a latitude part (in :math:`\sin\varphi`) and a
longitude part (in degrees, periodic).

**First-order conservative regridding** (:func:`regrid_conservative`): the value of a target
cell is the area-weighted mean of the source cells it overlaps,

.. math:: y_{ij} = \frac{\sum_{a,b} A(T_{ij} \cap S_{ab})\, x_{ab}}{A(T_{ij})}
          = \sum_{a,b} W^{\mathrm{lat}}_{ia} W^{\mathrm{lon}}_{jb} x_{ab},

with :math:`W^{\mathrm{lat}}_{ia} = |[\sin] T_i \cap S_a| / |[\sin] T_i|` and the same in
longitude. It preserves the area integral exactly (the global area-weighted mean of ``y`` equals
that of ``x``), maps a constant field to itself, and returns a coarse field that was duplicated
onto any finer grid unchanged. It works for any pair of rectilinear grids (integer factors or
not: 1.5, 1 or 0.25 deg to 5.625 deg), as the WeatherBench 2 ``*_conservative`` stores are made.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from geofusion.errors import DataError

__all__ = [
    "normalised_overlap_weights", "periodic_overlap_weights", "ConservativeRegridder",
    "equiangular_lat_edges",
    "normalise_orientation",
    "equiangular_grid",
    "latitude_edges",
    "longitude_edges",
    "cell_areas",
    "overlap_weights",
    "regrid_conservative",
    "is_grid",
]

# Coverage below this fraction of a target cell means the source does not cover it.
_COVERAGE_TOLERANCE = 1e-6


def normalise_orientation(ds: xr.Dataset) -> xr.Dataset:
    """Latitude ascending and longitude ascending in ``[0, 360)``, the data moved with them.

    A descending latitude axis is reversed; longitudes are wrapped with ``lon % 360`` and
    sorted (a -180..180 axis becomes a rotation of 0..360, done with ``roll`` so that dask
    chunks stay contiguous). Coordinates become float64. Lazy: nothing is read.

    Raises :class:`DataError` for a missing latitude/longitude dimension, latitudes outside
    [-90, 90], a latitude axis that is not strictly monotonic, or longitudes that collide
    after wrapping (e.g. both -180 and 180).

    >>> ds = xr.Dataset({"t": (("latitude", "longitude"), [[1.0, 2.0], [3.0, 4.0]])},
    ...                 coords={"latitude": [45.0, -45.0], "longitude": [-90.0, 90.0]})
    >>> out = normalise_orientation(ds)
    >>> out.latitude.values.tolist(), out.longitude.values.tolist()
    ([-45.0, 45.0], [90.0, 270.0])
    >>> out["t"].values.tolist()  # the south row first; 90 E before 270 E (= -90)
    [[4.0, 3.0], [2.0, 1.0]]
    """
    for dim in ("latitude", "longitude"):
        if dim not in ds.dims:
            raise DataError(f"the data has no {dim!r} dimension (dims: {dict(ds.sizes)}); pass "
                            "ERA5 on a latitude/longitude grid (WeatherBench 2 or CDS layout)")
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    if np.any(np.abs(lat) > 90.0):
        raise DataError(f"latitudes outside [-90, 90] (from {lat.min()} to {lat.max()}); the "
                        "latitude coordinate must be in degrees north")
    if len(lat) > 1:
        steps = np.diff(lat)
        if np.all(steps < 0):
            # ERA5 from the CDS runs north to south; the convention here is south to north.
            ds = ds.isel(latitude=slice(None, None, -1))
            lat = lat[::-1]
        elif not np.all(steps > 0):
            raise DataError(f"latitude coordinate is neither strictly increasing nor strictly "
                            f"decreasing ({int(np.sum(steps == 0))} duplicate values); fix the "
                            "data (e.g. ds.sortby('latitude') and drop duplicates) before "
                            "preparing it")
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    wrapped = np.mod(lon, 360.0)
    order = np.argsort(wrapped, kind="stable")
    ordered = wrapped[order]
    if len(ordered) > 1 and np.any(np.diff(ordered) <= 0):
        n_dup = int(np.sum(np.diff(ordered) == 0))
        raise DataError(f"longitude coordinate is not strictly increasing ({n_dup} duplicate "
                        "values after wrapping to 0..360, e.g. both -180 and 180 or a repeated "
                        "meridian); drop the duplicates, e.g. ds.isel(longitude=slice(0, -1)) "
                        "for a grid that repeats its first meridian at the end")
    shift = int(order[0])
    if np.array_equal(order, np.roll(np.arange(len(lon)), -shift)):
        if shift:
            ds = ds.roll(longitude=-shift, roll_coords=True)
    else:
        ds = ds.isel(longitude=order)
    return ds.assign_coords(
        latitude=("latitude", lat, ds["latitude"].attrs),
        longitude=("longitude", ordered, ds["longitude"].attrs))


def equiangular_grid(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the WeatherBench 2 equiangular grid without poles, degrees, float64.

    ``lat_i = -90 + (i + 1/2) 180 / nlat`` (ascending), ``lon_j = j 360 / nlon``; ``(32, 64)``
    is the 5.625 deg grid of ``64x32_equiangular_conservative``.

    >>> lat, lon = equiangular_grid(32, 64)
    >>> float(lat[0]), float(lat[-1]), float(lon[1]), float(lon[-1])
    (-87.1875, 87.1875, 5.625, 354.375)
    """
    if nlat < 1 or nlon < 1:
        raise ValueError(f"nlat and nlon must be positive, got {nlat}, {nlon}")
    lat = -90.0 + (np.arange(nlat) + 0.5) * 180.0 / nlat
    lon = np.arange(nlon) * 360.0 / nlon
    return lat, lon


def _midpoint_edges(centres: np.ndarray, name: str) -> np.ndarray:
    """Edges ``(n + 1,)`` halfway between ascending centres, the end cells mirrored outwards."""
    c = np.asarray(centres, dtype=np.float64)
    if len(c) < 2 or np.any(np.diff(c) <= 0):
        raise DataError(f"need at least two ascending {name} for cell edges, got {c}; "
                        "normalise the orientation first (grids.normalise_orientation)")
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def latitude_edges(lat: np.ndarray) -> np.ndarray:
    """Cell edges ``(nlat + 1,)`` of ascending latitude centres, degrees, clipped to [-90, 90]."""
    return np.clip(_midpoint_edges(lat, "latitudes"), -90.0, 90.0)


def longitude_edges(lon: np.ndarray) -> np.ndarray:
    """Cell edges ``(nlon + 1,)`` of ascending longitude centres, degrees (not wrapped)."""
    edges = _midpoint_edges(lon, "longitudes")
    if edges[-1] - edges[0] > 360.0 + 1e-9:
        raise DataError(f"longitude cells span {edges[-1] - edges[0]:.4f} > 360 degrees; the "
                        "longitude axis is irregular or repeats a meridian")
    return edges


def cell_areas(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Area of every cell as a fraction of the sphere, float64 ``(nlat, nlon)``.

    ``(sin phi_1 - sin phi_0) (lambda_1 - lambda_0) / (4 pi)``; a global grid sums to 1.
    """
    dsin = np.diff(np.sin(np.deg2rad(latitude_edges(lat))))
    dlon = np.deg2rad(np.diff(longitude_edges(lon)))
    return np.outer(dsin, dlon) / (4.0 * np.pi)


def overlap_weights(source_edges: np.ndarray, target_edges: np.ndarray,
                    period: float | None = None) -> np.ndarray:
    """Overlap length of every target interval with every source interval, ``(n_t, n_s)``.

    Intervals are ``[edges[k], edges[k + 1]]``; with ``period`` (360 for longitude) the source
    intervals also count shifted by ``-period`` and ``+period``. Lengths are in the units of
    the edges (pass ``sin(latitude)`` edges for areas).
    """
    s0, s1 = np.asarray(source_edges[:-1]), np.asarray(source_edges[1:])
    t0, t1 = np.asarray(target_edges[:-1])[:, None], np.asarray(target_edges[1:])[:, None]
    shifts = (0.0,) if period is None else (-period, 0.0, period)
    total = np.zeros((len(t0), len(s0)))
    for shift in shifts:
        total += np.clip(np.minimum(t1, s1 + shift) - np.maximum(t0, s0 + shift), 0.0, None)
    return total


def _normalised_weights(source_deg: np.ndarray, target_deg: np.ndarray, axis: str
                        ) -> np.ndarray:
    """Row-normalised overlaps ``(n_t, n_s)`` of cells given by their edges in degrees."""
    if axis == "latitude":
        source, target, period = (np.sin(np.deg2rad(source_deg)), np.sin(np.deg2rad(target_deg)),
                                  None)
    else:
        source, target, period = source_deg, target_deg, 360.0
    weights = overlap_weights(source, target, period)
    widths = np.diff(target)
    coverage = weights.sum(axis=1) / widths
    uncovered = np.flatnonzero(coverage < 1.0 - _COVERAGE_TOLERANCE)
    if len(uncovered):
        first = uncovered[0]
        raise DataError(f"the source grid does not cover {len(uncovered)} target {axis} cells "
                        f"(e.g. {target_deg[first]:.3f}..{target_deg[first + 1]:.3f} deg; "
                        f"source cells span {source_deg[0]:.3f}..{source_deg[-1]:.3f}); "
                        "regridding needs global data: download the whole globe (no `area` in "
                        "the CDS request)")
    return weights / widths[:, None]


def _apply_weights(x: np.ndarray, w_lon: np.ndarray, w_lat: np.ndarray) -> np.ndarray:
    """``x`` (..., lon_s, lat_s) -> (..., lon_t, lat_t); a target cell touching NaN is NaN."""
    finite = np.isfinite(x)
    values = np.where(finite, x, 0.0).astype(np.float64)
    out = np.matmul(w_lon, values @ w_lat.T)
    if not finite.all():
        # 0 * NaN is NaN, so NaNs are carried by a separate weight pass, not the matmul.
        touched = np.matmul(w_lon, (~finite).astype(np.float64) @ w_lat.T) > 0
        out[touched] = np.nan
    return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)


def regrid_conservative(ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> xr.Dataset:
    """First-order conservative (area-weighted) regridding onto the grid ``lat x lon``.

    Parameters
    ----------
    ds: dataset with ``latitude`` / ``longitude`` dims in the normalised orientation
        (:func:`normalise_orientation`); variables without both dims are kept as they are.
        Dask-backed variables stay lazy (one matrix product per chunk of the other dims).
    lat, lon: ascending target centres in degrees (e.g. :func:`equiangular_grid`).

    Returns
    -------
    The dataset on the target grid, dims in their original order, dtypes kept. A target cell
    overlapping any NaN source cell is NaN.

    Raises :class:`DataError` when the source does not cover every target cell (regional data).

    >>> src_lat, src_lon = equiangular_grid(4, 8)
    >>> fine = xr.Dataset({"t": (("latitude", "longitude"),
    ...                          np.arange(32.0).reshape(4, 8))},
    ...                   coords={"latitude": src_lat, "longitude": src_lon})
    >>> coarse = regrid_conservative(fine, *equiangular_grid(2, 4))
    >>> coarse["t"].shape
    (2, 4)
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    src_lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    src_lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    w_lat = _normalised_weights(latitude_edges(src_lat), latitude_edges(lat), "latitude")
    w_lon = _normalised_weights(longitude_edges(src_lon), longitude_edges(lon), "longitude")
    out = {}
    for name, array in ds.data_vars.items():
        if "latitude" not in array.dims or "longitude" not in array.dims:
            out[name] = array
            continue
        dims = array.dims
        if array.chunks is not None:
            array = array.chunk({"latitude": -1, "longitude": -1})
        regridded = xr.apply_ufunc(
            _apply_weights, array,
            kwargs={"w_lon": w_lon, "w_lat": w_lat},
            input_core_dims=[["longitude", "latitude"]],
            output_core_dims=[["longitude", "latitude"]],
            exclude_dims={"latitude", "longitude"},
            dask="parallelized",
            output_dtypes=[array.dtype],
            dask_gufunc_kwargs={"output_sizes": {"longitude": len(lon), "latitude": len(lat)}},
            keep_attrs=True,
        )
        out[name] = regridded.transpose(*dims)
    result = xr.Dataset(out, attrs=ds.attrs)
    result = result.assign_coords(
        latitude=("latitude", lat, ds["latitude"].attrs),
        longitude=("longitude", lon, ds["longitude"].attrs))
    for name, coord in ds.coords.items():
        if name not in result.coords and "latitude" not in coord.dims \
                and "longitude" not in coord.dims:
            result = result.assign_coords({name: coord})
    result.encoding.update(ds.encoding)
    return result


def is_grid(ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray, atol: float = 1e-6) -> bool:
    """True when ``ds``'s latitude/longitude centres equal ``lat`` / ``lon`` within ``atol``."""
    src_lat, src_lon = ds["latitude"].values, ds["longitude"].values
    return (src_lat.shape == np.shape(lat) and src_lon.shape == np.shape(lon)
            and np.allclose(src_lat, lat, atol=atol, rtol=0)
            and np.allclose(src_lon, lon, atol=atol, rtol=0))

# --------------------------------------------------------------------------------------------
# Separable weights in sin(latitude) for fields on any latitude edges (the simulated world's
# Gauss-Legendre grid to WeatherBench 2's 64 x 32): the same first-order conservative
# remapping, applied to bare arrays (..., lon, lat) instead of xarray datasets.
# --------------------------------------------------------------------------------------------

def normalised_overlap_weights(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """``(n_dst, n_src)`` weights: overlap of each target interval with each source interval
    (:func:`overlap_weights`), divided by the target width. Edges are
    monotonic (either direction), covering the same span; the weights follow the callers'
    cell orders.

    Example:
        >>> src = np.array([1.0, 0.0, -1.0])            # 3 edges in sin(lat): 2 cells
        >>> dst = np.array([1.0, -1.0])                 # 1 cell
        >>> normalised_overlap_weights(src, dst).tolist()
        [[0.5, 0.5]]
    """
    s = np.sort(np.asarray(src_edges, dtype=np.float64))
    d = np.sort(np.asarray(dst_edges, dtype=np.float64))
    if not (np.isclose(s[0], d[0]) and np.isclose(s[-1], d[-1])):
        raise ValueError(f"source span [{s[0]}, {s[-1]}] differs from target span "
                         f"[{d[0]}, {d[-1]}]; give edges covering the same interval")
    w = overlap_weights(s, d) / np.diff(d)[:, None]
    if src_edges[0] > src_edges[-1]:
        w = w[:, ::-1]
    if dst_edges[0] > dst_edges[-1]:
        w = w[::-1]
    return np.ascontiguousarray(w)


def periodic_overlap_weights(src_lon: np.ndarray, dst_lon: np.ndarray) -> np.ndarray:
    """``(n_dst, n_src)`` conservative weights between equally spaced periodic longitude grids
    given by their cell centres (degrees); cells are centred on their points."""
    src_lon, dst_lon = np.asarray(src_lon, np.float64), np.asarray(dst_lon, np.float64)
    ds, dd = 360.0 / len(src_lon), 360.0 / len(dst_lon)
    src_edges = np.concatenate([src_lon - ds / 2, [src_lon[-1] + ds / 2]])
    dst_edges = np.concatenate([dst_lon - dd / 2, [dst_lon[-1] + dd / 2]])
    return overlap_weights(src_edges, dst_edges, period=360.0) / dd


def equiangular_lat_edges(lat: np.ndarray) -> np.ndarray:
    """Edges in sin(latitude) of an equiangular grid without poles (cell centres ``lat``,
    ascending, spacing 180 / n): ``(n + 1,)`` from -1 to 1."""
    lat = np.asarray(lat, dtype=np.float64)
    step = 180.0 / len(lat)
    if not np.allclose(np.diff(lat), step):
        raise ValueError(f"latitudes must be ascending with spacing 180/n = {step} deg")
    return np.sin(np.deg2rad(np.concatenate([lat - step / 2, [lat[-1] + step / 2]])))


class ConservativeRegridder:
    """Apply the separable conservative weights to fields ``(..., lon_src, lat_src)`` (the
    WeatherBench 2 order, longitude before latitude), giving ``(..., lon_dst, lat_dst)``.

    Args:
        src_lat_edges: source cell edges in sin(latitude) (``n_src_lat + 1``, either order,
            matching the source rows' order).
        src_lon: source longitude centres (deg, equally spaced).
        dst_lat_edges: target edges in sin(latitude) (matching the target rows' order).
        dst_lon: target longitude centres (deg, equally spaced).
    """

    def __init__(self, src_lat_edges: np.ndarray, src_lon: np.ndarray,
                 dst_lat_edges: np.ndarray, dst_lon: np.ndarray) -> None:
        self.w_lat = normalised_overlap_weights(src_lat_edges, dst_lat_edges)
        self.w_lon = periodic_overlap_weights(src_lon, dst_lon)
        self.identity_lon = (self.w_lon.shape[0] == self.w_lon.shape[1]
                             and np.allclose(self.w_lon, np.eye(self.w_lon.shape[0])))

    def __call__(self, field: np.ndarray) -> np.ndarray:
        out = np.matmul(field, self.w_lat.T)
        if not self.identity_lon:
            out = np.matmul(self.w_lon, out)
        return out
