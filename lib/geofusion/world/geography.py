r"""The surface of the simulated world: land fraction and orography on any latitude-longitude grid.

- **Land fraction** from the vendored 1-degree grid ``resources/land_fraction_1deg.npz``, derived
  from the vendored Natural Earth 1:110m coastline by ``scripts/make_land_mask.py`` (share of
  0.25-degree sub-points inside the coastline rings). :func:`land_fraction` averages its 1-degree
  cells whose centres fall in each target cell (area-weighted by cos(latitude)).
- **Orography** (metres) is a smooth analytic field at the real positions of the major ranges and
  ice sheets, not a digital elevation model: elliptic Gaussian hills
  :math:`h_0\exp(-(\Delta\varphi/\sigma_\varphi)^2 - (\Delta\lambda/\sigma_\lambda)^2)` for the
  Tibetan Plateau and Himalaya, Rockies, Andes, East African and Ethiopian highlands, Iranian
  plateau, Alps, plus the ice sheets as land-masked domes: Antarctica
  :math:`h = 2800\,\mathrm{m}\cdot\min(1, (-62^\circ - \varphi)/14^\circ)^{1/2}` over land south
  of 62 S and Greenland :math:`2500\,\mathrm{m}` times a dome centred on 73 N, 40 W. Heights
  are what a 5-degree model sees (peaks of ~4.5 km over Tibet, ~3 km on the ice sheets).

Example:
    >>> import numpy as np
    >>> lat, lon = -87.1875 + 5.625 * np.arange(32), 5.625 * np.arange(64)  # WeatherBench 2
    >>> h = orography(lat, lon)  # (lat, lon) metres
    >>> bool(h[22, 16] > 2500 and h[1, 0] > 2000)  # Tibet (36.6 N, 90 E), Antarctica (81.6 S)
    True
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = ["land_fraction", "orography", "MOUNTAINS"]

# (name, centre lat, centre lon (deg E), height m, half-width lat deg, half-width lon deg)
MOUNTAINS = (
    ("Tibetan Plateau", 33.0, 88.0, 4500.0, 6.0, 14.0),
    ("Himalaya-Karakoram", 30.0, 78.0, 2500.0, 3.5, 8.0),
    ("Rocky Mountains", 42.0, -110.0, 2500.0, 12.0, 6.0),
    ("Mexican Plateau", 23.0, -103.0, 1500.0, 5.0, 4.0),
    ("Andes north", -5.0, -76.0, 2500.0, 12.0, 3.0),
    ("Andes south", -25.0, -68.0, 3500.0, 12.0, 3.0),
    ("Ethiopian Highlands", 9.0, 39.0, 2000.0, 5.0, 4.0),
    ("East African Plateau", -5.0, 33.0, 1200.0, 9.0, 6.0),
    ("Southern African Plateau", -26.0, 26.0, 1200.0, 6.0, 8.0),
    ("Iranian Plateau", 33.0, 55.0, 1500.0, 5.0, 9.0),
    ("Alps", 46.0, 10.0, 1200.0, 2.0, 4.0),
    ("Mongolian Plateau", 46.0, 103.0, 1500.0, 5.0, 12.0),
)


@lru_cache(maxsize=1)
def _land_percent_1deg() -> np.ndarray:
    """The vendored ``(180, 360)`` land percent grid (lat from -89.5, lon from -179.5)."""
    ref = resources.files("geofusion") / "resources" / "land_fraction_1deg.npz"
    with resources.as_file(ref) as path, np.load(path) as z:
        return np.asarray(z["land_percent"], dtype=np.float64)


def _cell_edges(centres: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Edges midway between sorted centres, closed by ``lo`` and ``hi``."""
    mid = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[lo], mid, [hi]])


def land_fraction(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Land fraction in [0, 1] of the cells centred on ``lat`` x ``lon`` (degrees): ``(lat, lon)``.

    Cells span midway between neighbouring centres (to the poles at the ends; longitudes
    periodic). Each 1-degree source cell counts for the target cell containing its centre,
    weighted by cos(latitude). Any order of ``lat`` is accepted (ascending, or north to south).
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    src = _land_percent_1deg() / 100.0
    src_lat = -89.5 + np.arange(180.0)
    src_lon = -179.5 + np.arange(360.0)
    order = np.argsort(lat)
    edges = _cell_edges(lat[order], -90.0, 90.0)
    row = np.clip(np.searchsorted(edges, src_lat) - 1, 0, len(lat) - 1)
    lon_sorted = np.sort(np.mod(lon, 360.0))
    # Periodic longitude cells: assign each source centre to the nearest target centre.
    dist = np.abs(np.mod(src_lon[:, None] - lon_sorted[None, :] + 180.0, 360.0) - 180.0)
    col = np.argmin(dist, axis=1)
    w = np.cos(np.deg2rad(src_lat))[:, None] * np.ones((1, 360))
    num = np.zeros((len(lat), len(lon)))
    den = np.zeros((len(lat), len(lon)))
    rr, cc = np.meshgrid(row, col, indexing="ij")
    np.add.at(num, (rr, cc), w * src)
    np.add.at(den, (rr, cc), w)
    if np.any(den == 0):
        raise ValueError(f"a target cell holds no 1-degree source cell: the grid ({len(lat)} x "
                         f"{len(lon)}) is finer than the vendored 1-degree land mask; use a "
                         f"grid coarser than 1 degree")
    frac_sorted = num / den
    out = np.empty_like(frac_sorted)
    out[order] = frac_sorted
    # Back to the caller's longitude order.
    lon_rank = np.argsort(np.argsort(np.mod(lon, 360.0)))
    return out[:, lon_rank]


def orography(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Surface height in metres ``(lat, lon)`` of the analytic orography (module docstring)."""
    lat = np.asarray(lat, dtype=np.float64)[:, None]
    lon = np.asarray(lon, dtype=np.float64)[None, :]
    h = np.zeros((lat.shape[0], lon.shape[1]))
    for _, clat, clon, height, wlat, wlon in MOUNTAINS:
        dlon = np.mod(lon - clon + 180.0, 360.0) - 180.0
        h += height * np.exp(-(((lat - clat) / wlat) ** 2) - (dlon / wlon) ** 2)
    land = land_fraction(lat[:, 0], lon[0])
    antarctic = 2800.0 * np.sqrt(np.clip((-62.0 - lat) / 14.0, 0.0, 1.0))
    dlon_g = np.mod(lon + 40.0 + 180.0, 360.0) - 180.0
    greenland = 2500.0 * np.exp(-(((lat - 73.0) / 9.0) ** 2) - (dlon_g / 22.0) ** 2)
    greenland = greenland * (lat > 58.0)
    # Hills count where there is land (the Andes Gaussian must not raise the Pacific).
    return np.maximum(h * np.clip(land * 1.5, 0.0, 1.0), 0.0) + land * (antarctic + greenland)
