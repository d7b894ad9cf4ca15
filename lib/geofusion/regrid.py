r"""First-order conservative regridding between latitude-longitude grids (separable).

WeatherBench 2's 64 x 32 ERA5 is a *conservative* regridding of the 0.25-degree reanalysis, so
the simulated world, integrated on a Gauss-Legendre grid, reaches the WeatherBench grid the same
way: each target cell takes the area-weighted mean of the source cells it overlaps. On the
sphere the area of a latitude band is proportional to its width in :math:`\sin\varphi`, so the
latitude weights are overlaps in :math:`\mu = \sin\varphi`, the longitude weights overlaps in
longitude (periodic):

.. math:: W^{lat}_{ij} = \frac{|[\mu^-_i, \mu^+_i] \cap [\mu^-_j, \mu^+_j]|}{\mu^+_i - \mu^-_i},
   \qquad y = W^{lon}\, x\, (W^{lat})^\top \quad (x \text{ longitude by latitude}).

Properties (tested): a constant is kept exactly, the area-weighted global mean is kept exactly,
and a smooth field is reproduced to within its variation across a cell (``tests/test_world.py``).

Example:
    >>> import numpy as np
    >>> src = np.array([1.0, 0.0, -1.0])            # 3 cells, edges in sin(lat)
    >>> dst = np.array([1.0, -1.0])                 # 1 cell
    >>> overlap_weights(src, dst).tolist()
    [[0.5, 0.5]]
"""

from __future__ import annotations

import numpy as np

from geofusion import grids

__all__ = ["overlap_weights", "periodic_overlap_weights", "ConservativeRegridder",
           "equiangular_lat_edges"]


def overlap_weights(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """``(n_dst, n_src)`` weights: overlap of each target interval with each source interval
    (:func:`geofusion.grids.overlap_weights`), divided by the target width. Edges are
    monotonic (either direction), covering the same span; the weights follow the callers'
    cell orders.
    """
    s = np.sort(np.asarray(src_edges, dtype=np.float64))
    d = np.sort(np.asarray(dst_edges, dtype=np.float64))
    if not (np.isclose(s[0], d[0]) and np.isclose(s[-1], d[-1])):
        raise ValueError(f"source span [{s[0]}, {s[-1]}] differs from target span "
                         f"[{d[0]}, {d[-1]}]; give edges covering the same interval")
    w = grids.overlap_weights(s, d) / np.diff(d)[:, None]
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
    return grids.overlap_weights(src_edges, dst_edges, period=360.0) / dd


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
        self.w_lat = overlap_weights(src_lat_edges, dst_lat_edges)
        self.w_lon = periodic_overlap_weights(src_lon, dst_lon)
        self.identity_lon = (self.w_lon.shape[0] == self.w_lon.shape[1]
                             and np.allclose(self.w_lon, np.eye(self.w_lon.shape[0])))

    def __call__(self, field: np.ndarray) -> np.ndarray:
        out = np.matmul(field, self.w_lat.T)
        if not self.identity_lon:
            out = np.matmul(self.w_lon, out)
        return out
