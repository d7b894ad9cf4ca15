"""Derive the vendored land fraction grid from the vendored Natural Earth 1:110m coastline.

Natural Earth ships land polygons separately; the package already vendors the 1:110m coastline,
so the land mask is derived from it instead of vendoring a second shapefile: the coastline
lines are merged into rings (pieces cut at the dateline are closed by a straight edge, the
Antarctic line, which runs from -180 to 180, along the South Pole), and a point is land when
it lies inside an odd number of rings (even-odd rule, so the Caspian Sea is water). Land
fraction is the share of 0.25-degree sub-points inside each 1-degree cell, stored as uint8
percent (180 x 360, latitude ascending from -89.5, longitude from -179.5) in
``lib/geofusion/resources/land_fraction_1deg.npz``.

Usage: ``python scripts/make_land_mask.py`` (seconds; deterministic).
"""

from __future__ import annotations

from pathlib import Path

import cartopy.io.shapereader as shpreader
import numpy as np
import shapely
from shapely.geometry import LineString, Polygon
from shapely.ops import linemerge

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "lib" / "geofusion" / "resources"
COASTLINE = (RESOURCES / "natural_earth" / "shapefiles" / "natural_earth" / "physical"
             / "ne_110m_coastline.shp")
OUT = RESOURCES / "land_fraction_1deg.npz"
SUB = 4  # sub-points per degree along each axis


def _snap(x: float, y: float) -> tuple[float, float]:
    """Round to 1e-4 degree and put points within 1e-3 of the dateline on it, so cut pieces
    share their end points exactly and merge."""
    if abs(abs(x) - 180) < 1e-3:
        x = 180.0 * np.sign(x)
    return round(float(x), 4), round(float(y), 4)


def coastline_rings() -> list[Polygon]:
    """Closed land rings from the coastline lines (see the module docstring)."""
    lines = [LineString([_snap(x, y) for x, y in g.coords])
             for g in shpreader.Reader(str(COASTLINE)).geometries()]
    merged = linemerge(lines)
    parts = list(merged.geoms) if hasattr(merged, "geoms") else [merged]
    rings = []
    for part in parts:
        coords = list(part.coords)
        if coords[0] != coords[-1]:
            (x0, _), (x1, _) = coords[0], coords[-1]
            if abs(x0 - x1) > 300:  # Antarctica runs from -180 to 180: close over the pole
                coords = [*coords, (x1, -90.0), (x0, -90.0), coords[0]]
            else:  # a piece cut by the dateline (Chukotka): close it with a straight edge
                coords = [*coords, coords[0]]
        if len(coords) >= 4:
            rings.append(Polygon(coords))
    return rings


def main() -> None:
    rings = coastline_rings()
    lat = -90 + (np.arange(180 * SUB) + 0.5) / SUB
    lon = -180 + (np.arange(360 * SUB) + 0.5) / SUB
    lon2, lat2 = np.meshgrid(lon, lat)
    inside = np.zeros(lat2.shape, dtype=np.int64)
    for ring in rings:
        inside += shapely.contains_xy(ring, lon2, lat2)
    land = (inside % 2).astype(np.float64)
    frac = land.reshape(180, SUB, 360, SUB).mean(axis=(1, 3))
    pct = np.round(100 * frac).astype(np.uint8)
    tmp = OUT.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, land_percent=pct)
    tmp.replace(OUT)
    print(f"{OUT}: {len(rings)} rings, land share {frac.mean():.3f} (unweighted), "
          f"{OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
