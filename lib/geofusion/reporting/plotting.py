"""Maps of gridded fields on a cartopy projection with coastlines that never touch the network.

geofusion ships the Natural Earth 110m coastline under
``geofusion/resources/natural_earth/shapefiles/natural_earth/physical/``. Importing this module
points ``cartopy.config['pre_existing_data_dir']`` at ``resources/natural_earth`` (cartopy looks
there first, under ``shapefiles/natural_earth/{category}/ne_{resolution}_{name}.shp``) and
replaces the Natural Earth downloader by one whose download step raises, so a missing file is
an error, never a download. If cartopy or the coastline is unavailable, the maps fall back to
a plain latitude/longitude ``pcolormesh`` with a warning.

Fields are ``(lat, lon)`` with latitude ascending and longitude 0..360 east (geofusion's
layout). Cells are drawn between edges half a grid step either side of each centre, so the
longitudes cover exactly 360 degrees and there is no seam at 0/360 (the periodic longitude).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from geofusion.data import observations
from geofusion.io import package_resource
from geofusion.variables import UNITS, VARIABLES

NATURAL_EARTH_DIR = package_resource("natural_earth")

# Colour maps per variable: diverging for winds (signed), sequential otherwise.
CMAPS = {
    "2m_temperature": "RdYlBu_r",
    "geopotential": "viridis",
    "u_component_of_wind": "RdBu_r",
    "v_component_of_wind": "RdBu_r",
    "specific_humidity": "YlGnBu",
}
_DIVERGING = {"RdBu_r", "RdBu", "coolwarm", "bwr", "seismic"}


class OfflineDataError(FileNotFoundError):
    """A cartopy resource that is not packaged with geofusion (it is never downloaded)."""


def _configure_cartopy(data_dir: Path) -> bool:
    """Point cartopy at the packaged Natural Earth files and disable downloads; False if absent."""
    try:
        import cartopy
        from cartopy.io.shapereader import NEShpDownloader
    except ImportError:
        return False

    class OfflineNEShpDownloader(NEShpDownloader):
        """Natural Earth lookups that read packaged files only: downloading raises."""

        def acquire_resource(self, target_path, format_dict):
            raise OfflineDataError(
                f"Natural Earth file {self.pre_downloaded_path(format_dict)} is not packaged "
                "with geofusion and downloads are disabled; add the shapefile to "
                f"{data_dir} or use the 110m coastline")

    cartopy.config["pre_existing_data_dir"] = data_dir
    template = str(Path("{config[pre_existing_data_dir]}", "shapefiles", "natural_earth",
                        "{category}", "ne_{resolution}_{name}.shp"))
    cartopy.config["downloaders"][("shapefiles", "natural_earth")] = OfflineNEShpDownloader(
        target_path_template=template, pre_downloaded_path_template=template)
    return True


_CARTOPY = _configure_cartopy(NATURAL_EARTH_DIR)


@functools.lru_cache(maxsize=4)
def _coastline_geometries(data_dir: str) -> tuple[Any, ...]:
    """Coastline geometries read through cartopy's (offline) Natural Earth lookup."""
    import cartopy
    from cartopy.io import shapereader

    cartopy.config["pre_existing_data_dir"] = Path(data_dir)
    path = shapereader.natural_earth(resolution="110m", category="physical", name="coastline")
    return tuple(shapereader.Reader(path).geometries())


def coastline_feature() -> Any | None:
    """A cartopy feature of the packaged 110m coastline, or None (with a warning) if missing."""
    if not _CARTOPY:
        warnings.warn("cartopy is not installed: maps fall back to plain lat/lon plots "
                      "without coastlines (pip install cartopy)", stacklevel=3)
        return None
    try:
        geometries = _coastline_geometries(str(NATURAL_EARTH_DIR))
    except (OSError, ValueError) as err:
        warnings.warn(f"coastlines unavailable ({err}); maps fall back to plain lat/lon plots",
                      stacklevel=3)
        return None
    import cartopy.crs as ccrs
    import cartopy.feature as cfeature

    return cfeature.ShapelyFeature(geometries, ccrs.PlateCarree(), facecolor="none",
                                   edgecolor="black", linewidth=0.5)


def _edges(centres: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Cell edges half a step either side of (regular) centres, clipped to [lo, hi]."""
    centres = np.asarray(centres, dtype=np.float64)
    step = np.diff(centres).mean() if len(centres) > 1 else 1.0
    edges = np.concatenate([centres - step / 2, [centres[-1] + step / 2]])
    return np.clip(edges, lo if lo is not None else -np.inf, hi if hi is not None else np.inf)


def _dateline_split(field: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude edges in [-180, 180] and the matching columns of ``field`` (lat, lon).

    A global grid with a column centred on 180 E (WeatherBench 2's 0, 5.625, ... 354.375) has
    one cell straddling the edge of a map centred on Greenwich; cartopy then falls back to
    drawing every wrapped cell as a projected polygon, about ten times slower. Re-ordering the
    columns to run from -180 and drawing the straddling cell as two half cells (its value at
    both map edges) keeps the fast quad-mesh path and draws the same picture. Regional grids
    are returned unchanged.
    """
    lon_e = _edges(lon)
    if not np.isclose(lon_e[-1] - lon_e[0], 360.0):
        return lon_e, field
    centres = (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0
    order = np.argsort(centres)
    field, lon_e = field[:, order], _edges(centres[order])
    if lon_e[0] < -180.0:
        field = np.concatenate([field, field[:, :1]], axis=1)
        lon_e = np.concatenate([[-180.0], lon_e[1:], [180.0]])
    return lon_e, field


def _label(title: str, synthetic: bool) -> str:
    if not synthetic:
        return title
    return f"{title} (synthetic)" if title else "(synthetic)"


def _draw(ax: Axes, field: np.ndarray, lat: np.ndarray, lon: np.ndarray, title: str, cmap: str,
          units: str, coast: Any, vmin: float | None, vmax: float | None,
          colorbar: bool = True) -> None:
    field = np.asarray(field, dtype=np.float64)
    if field.shape != (len(lat), len(lon)):
        raise ValueError(f"field must be (lat, lon) = ({len(lat)}, {len(lon)}), got "
                         f"{field.shape}; transpose WB2 (longitude, latitude) arrays first")
    lat_e = _edges(lat, -90.0, 90.0)
    if cmap in _DIVERGING and vmin is None and vmax is None:
        # Signed quantities: white at zero.
        vmax = float(np.nanmax(np.abs(field))) or 1.0
        vmin = -vmax
    kwargs: dict[str, Any] = {"cmap": cmap, "vmin": vmin, "vmax": vmax}
    if coast is not None:
        import cartopy.crs as ccrs

        map_lon_e, map_field = _dateline_split(field, lon)
        mesh = ax.pcolormesh(map_lon_e, lat_e, map_field, transform=ccrs.PlateCarree(),
                             **kwargs)
        ax.add_feature(coast)
        ax.set_global()
    else:
        lon_e = _edges(lon)
        mesh = ax.pcolormesh(lon_e, lat_e, field, **kwargs)
        ax.set_xlim(lon_e[0], lon_e[-1])
        ax.set_ylim(-90, 90)
        ax.set_xlabel("longitude (deg E)")
        ax.set_ylabel("latitude (deg N)")
    ax.set_title(title, fontsize=9)
    if colorbar:
        bar = ax.figure.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.8, pad=0.05)
        bar.set_label(units, fontsize=8)
        bar.ax.tick_params(labelsize=7)
        # Few ticks: long values such as geopotential (5e4) otherwise overlap.
        bar.ax.xaxis.set_major_locator(MaxNLocator(4))


def _axes_grid(nrows: int, ncols: int, coast: Any, width: float = 3.6,
               height: float = 2.6) -> tuple[Figure, np.ndarray]:
    kwargs = {}
    if coast is not None:
        import cartopy.crs as ccrs

        kwargs = {"subplot_kw": {"projection": ccrs.Robinson()}}
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6),
                             squeeze=False, layout="constrained", **kwargs)
    return fig, axes


def plot_field(ax: Axes | None, field: np.ndarray, lat: np.ndarray, lon: np.ndarray,
               title: str = "", cmap: str = "viridis", units: str = "",
               synthetic: bool = False, vmin: float | None = None,
               vmax: float | None = None) -> Figure:
    """Map one field ``(lat, lon)`` (degrees: ``lat`` ascending, ``lon`` 0..360 east).

    ``ax``: a cartopy GeoAxes to draw into, a plain Axes (plain lat/lon plot), or None for a new
    figure on a Robinson projection with coastlines. ``units`` labels the colour bar;
    ``synthetic=True`` adds "(synthetic)" to the title. Returns the Figure.
    """
    coast = coastline_feature()
    if ax is None:
        fig, axes = _axes_grid(1, 1, coast, width=6.0, height=3.4)
        ax = axes[0, 0]
    elif not hasattr(ax, "projection"):
        coast = None  # a plain Axes cannot take projected coastlines
    _draw(ax, field, np.asarray(lat), np.asarray(lon), _label(title, synthetic), cmap, units,
          coast, vmin, vmax)
    return ax.figure


def plot_modes(sample: np.ndarray, lat: np.ndarray, lon: np.ndarray,
               channels: Sequence[str] = VARIABLES, units: Sequence[str] | None = None,
               suptitle: str = "", synthetic: bool = False, ncols: int = 3) -> Figure:
    """Maps of every mode of one sample ``(C, lat, lon)`` in physical units; returns the Figure.

    ``units`` defaults to :data:`geofusion.variables.UNITS` of each channel.
    """
    sample = np.asarray(sample)
    if sample.ndim != 3 or sample.shape[0] != len(channels):
        raise ValueError(f"sample must be (C={len(channels)}, lat, lon), got {sample.shape}")
    units = list(units) if units is not None else [UNITS.get(c, "") for c in channels]
    coast = coastline_feature()
    ncols = min(ncols, len(channels))
    nrows = -(-len(channels) // ncols)
    fig, axes = _axes_grid(nrows, ncols, coast)
    for c, name in enumerate(channels):
        _draw(axes.flat[c], sample[c], np.asarray(lat), np.asarray(lon), name,
              CMAPS.get(name, "viridis"), units[c], coast, None, None)
    for ax in axes.flat[len(channels):]:
        ax.remove()
    fig.suptitle(_label(suptitle, synthetic))
    return fig


def plot_comparison(truth: np.ndarray, prediction: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                    channels: Sequence[str] = VARIABLES, units: Sequence[str] | None = None,
                    suptitle: str = "", synthetic: bool = False) -> Figure:
    """Rows truth / prediction / difference (prediction - truth), one column per mode.

    ``truth``, ``prediction``: ``(C, lat, lon)`` in the same (physical) units. Truth and
    prediction of a mode share one colour scale; the difference is on a zero-centred one.
    Returns the Figure.
    """
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    if truth.shape != prediction.shape or truth.ndim != 3 or truth.shape[0] != len(channels):
        raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} must both be "
                         f"(C={len(channels)}, lat, lon)")
    units = list(units) if units is not None else [UNITS.get(c, "") for c in channels]
    coast = coastline_feature()
    fig, axes = _axes_grid(3, len(channels), coast, width=3.2, height=2.1)
    lat, lon = np.asarray(lat), np.asarray(lon)
    for c, name in enumerate(channels):
        both = np.concatenate([truth[c].ravel(), prediction[c].ravel()])
        cmap = CMAPS.get(name, "viridis")
        if cmap in _DIVERGING:
            vmax = float(np.nanmax(np.abs(both))) or 1.0
            vmin = -vmax
        else:
            vmin, vmax = float(np.nanmin(both)), float(np.nanmax(both))
        _draw(axes[0, c], truth[c], lat, lon, f"{name}\ntruth", cmap, units[c], coast, vmin, vmax)
        _draw(axes[1, c], prediction[c], lat, lon, "prediction", cmap, units[c], coast, vmin,
              vmax)
        _draw(axes[2, c], prediction[c] - truth[c], lat, lon, "difference", "RdBu_r", units[c],
              coast, None, None)
    fig.suptitle(_label(suptitle, synthetic))
    return fig


def draw_latlon(ax: Axes, field: np.ndarray, lat: np.ndarray, lon: np.ndarray, title: str = "",
                cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None
                ) -> Any:
    """Plain latitude/longitude map of one field ``(lat, lon)``, missing points (NaN) in grey.

    The quick panel of small multiples (notebook 06's observations and reconstructions): no
    projection, no coastlines, no ticks, the title in a small font. Cells are centred on the
    grid points (``shading="nearest"``). Returns the QuadMesh, for a shared colour bar.

    Example:
        >>> import matplotlib.pyplot as plt, numpy as np
        >>> fig, ax = plt.subplots()
        >>> field = np.ones((4, 8)); field[0, 0] = np.nan
        >>> mesh = draw_latlon(ax, field, np.linspace(-60, 60, 4), np.arange(0, 360, 45), "one")
        >>> bool(mesh.get_array().mask[0, 0]), ax.get_title()
        (True, 'one')
    """
    field = np.asarray(field, dtype=np.float64)
    if field.shape != (len(lat), len(lon)):
        raise ValueError(f"field must be (lat, lon) = ({len(lat)}, {len(lon)}), got "
                         f"{field.shape}; pass one channel of one day")
    colour_map = plt.get_cmap(cmap).with_extremes(bad="0.8")
    mesh = ax.pcolormesh(np.asarray(lon), np.asarray(lat), np.ma.masked_invalid(field),
                         cmap=colour_map, vmin=vmin, vmax=vmax, shading="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return mesh


def plot_latlon_grid(panels: Sequence[Sequence[tuple[np.ndarray, str]]], lat: np.ndarray,
                     lon: np.ndarray, row_labels: Sequence[str] | None = None,
                     colorbar_label: str = "", suptitle: str = "", synthetic: bool = False,
                     cmap: str = "viridis", vmin: float | None = None,
                     vmax: float | None = None) -> Figure:
    """Small multiples of :func:`draw_latlon` panels on one colour scale.

    ``panels``: rows of ``(field (lat, lon), title)``, all rows as long as the first; NaN
    points are drawn grey (missing). ``vmin``/``vmax`` default to the range of all panels.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import numpy as np
        >>> f = np.zeros((4, 8))
        >>> fig = plot_latlon_grid([[(f, "a"), (f + 1, "b")]], np.linspace(-60, 60, 4),
        ...                        np.arange(0, 360, 45), suptitle="two")
        >>> [ax.get_title() for ax in fig.axes[:2]], fig.axes[1].collections[0].get_clim()
        (['a', 'b'], (0.0, 1.0))
    """
    ncols = len(panels[0]) if panels else 0
    if not ncols or any(len(row) != ncols for row in panels):
        raise ValueError("panels must be a non-empty list of rows of equal length, each a "
                         "list of (field, title) pairs")
    values = np.concatenate([np.ravel(f) for row in panels for f, _ in row])
    vmin = float(np.nanmin(values)) if vmin is None else vmin
    vmax = float(np.nanmax(values)) if vmax is None else vmax
    fig, axes = plt.subplots(len(panels), ncols, figsize=(2.7 * ncols, 1.6 * len(panels) + 0.6),
                             layout="constrained", squeeze=False)
    for i, row in enumerate(panels):
        for j, (field, title) in enumerate(row):
            mesh = draw_latlon(axes[i, j], field, lat, lon, title, cmap, vmin, vmax)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    fig.colorbar(mesh, ax=axes, shrink=0.6, label=colorbar_label)
    fig.suptitle(_label(suptitle, synthetic))
    return fig


def plot_correlated_noise(day: np.ndarray, channel: int, lat: np.ndarray, lon: np.ndarray,
                          to_physical: Any, channel_std: float, lengths: Sequence[float],
                          noise_std: float, kind: str = "pixel", units: str = "",
                          seed: int = 0, synthetic: bool = False) -> Figure:
    """Correlated observation noise at several correlation lengths, one row each.

    Columns: a noise field of std ``noise_std`` (standardised) and length ``L`` grid points
    (:func:`geofusion.data.observations.correlated_noise`) in physical units (times
    ``channel_std``);
    an observation of ``day`` ``(C, lat, lon)`` (standardised) through a ``kind`` mask at 30 %
    missing plus that noise; the measured autocorrelation along longitude of 64 draws against
    the Gaussian ``exp(-d^2 / 2 L^2)`` they are drawn from, titled with the realised length.
    """
    day_t = torch.as_tensor(np.asarray(day, dtype=np.float32))[None]
    truth = np.asarray(to_physical(day_t.numpy()))[0, channel]
    limits = {"vmin": float(truth.min()), "vmax": float(truth.max())}
    km_per_point = 1.0 / observations.km_to_gridpoints(1.0)
    grid = tuple(day_t.shape[-2:])
    fig, axes = plt.subplots(len(lengths), 3, figsize=(11, 2.3 * len(lengths) + 0.4),
                             layout="constrained", squeeze=False)
    for i, length in enumerate(lengths):
        observation = observations.Observation(kind=kind, min_ratio=0.3, max_ratio=0.3,
                                           noise_std=noise_std, noise_length=length)
        noisy, observed = observation(day_t, torch.Generator().manual_seed(seed))
        noise = observations.correlated_noise((64, *grid), length, noise_std,
                                          torch.Generator().manual_seed(seed + 1))
        noise_physical = noise[0].numpy() * channel_std
        scale = float(np.abs(noise_physical).max())
        mesh = draw_latlon(axes[i, 0], noise_physical, lat, lon,
                           f"noise, L = {length:g} points (~{length * km_per_point:.0f} km)",
                           "RdBu_r", -scale, scale)
        fig.colorbar(mesh, ax=axes[i, 0], shrink=0.8, label=units)
        seen = np.asarray(to_physical(noisy.numpy()))[0, channel]
        mesh = draw_latlon(axes[i, 1], np.where(observed[0].numpy(), seen, np.nan), lat, lon,
                           "observation: 30 % missing + noise", **limits)
        fig.colorbar(mesh, ax=axes[i, 1], shrink=0.8, label=units)
        lags = np.arange(12)
        axes[i, 2].plot(lags, observations.autocorrelation_lon(noise).numpy()[:12], "o",
                        label="measured")
        axes[i, 2].plot(lags, observations.gaussian_correlation(lags, length), "-",
                        label="exp(-d^2 / 2L^2)")
        axes[i, 2].set(xlabel="lag (longitude points)", ylabel="correlation",
                       title=f"realised L = {observations.realised_correlation_length(noise):.2f} "
                             "points")
        axes[i, 2].legend(fontsize=7)
    fig.suptitle(_label(f"Correlated noise, std {noise_std:g} (standardised) = "
                        f"{noise_std * channel_std:.2g} {units}", synthetic))
    return fig
