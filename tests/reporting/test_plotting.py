"""geofusion.reporting.plotting: offline coastlines from the packaged file, fallback, figure
layout."""

from __future__ import annotations

import socket
import urllib.request
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from geofusion.reporting import plotting  # noqa: E402
from geofusion.world.synthetic import grid  # noqa: E402


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("plotting tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def field():
    lat, lon = grid(32, 64)
    values = np.cos(np.deg2rad(lat))[:, None] * np.sin(np.deg2rad(lon))[None, :]
    return values, lat, lon


def test_map_renders_offline_with_packaged_coastlines(no_network, field, tmp_path, monkeypatch):
    import cartopy
    from cartopy.io import shapereader
    from cartopy.mpl.feature_artist import FeatureArtist
    from cartopy.mpl.geoaxes import GeoAxes

    # An empty user data dir: the coastline must come from the package, not from a download.
    monkeypatch.setitem(cartopy.config, "data_dir", tmp_path / "cartopy")
    plotting._coastline_geometries.cache_clear()
    path = shapereader.natural_earth(resolution="110m", category="physical", name="coastline")
    assert path.resolve().is_relative_to(plotting.NATURAL_EARTH_DIR.resolve())
    values, lat, lon = field
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fig = plotting.plot_field(None, values, lat, lon, title="test", units="K", synthetic=True)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert isinstance(ax, GeoAxes)
    coast = [a for a in ax.artists + ax.collections if isinstance(a, FeatureArtist)]
    assert len(coast) == 1
    assert len(list(coast[0]._feature.geometries())) > 100  # the 110m coastline has 134
    assert ax.get_title() == "test (synthetic)"
    plt.close(fig)


def test_missing_file_raises_instead_of_downloading(no_network, monkeypatch, tmp_path):
    import cartopy
    from cartopy.io import shapereader

    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", tmp_path)
    monkeypatch.setitem(cartopy.config, "data_dir", tmp_path)
    with pytest.raises(plotting.OfflineDataError, match="downloads are disabled"):
        shapereader.natural_earth(resolution="50m", category="physical", name="coastline")


def test_fallback_warns_when_data_dir_missing(no_network, field, tmp_path, monkeypatch):
    import cartopy

    monkeypatch.setattr(plotting, "NATURAL_EARTH_DIR", tmp_path / "missing")
    monkeypatch.setitem(cartopy.config, "data_dir", tmp_path / "cartopy")
    values, lat, lon = field
    with pytest.warns(UserWarning, match="coastlines unavailable"):
        fig = plotting.plot_field(None, values, lat, lon, title="plain")
    ax = fig.axes[0]
    assert not hasattr(ax, "projection") and ax.get_xlabel() == "longitude (deg E)"
    # The cells cover the full circle: edges half a step beyond 0 and 354.375.
    assert ax.get_xlim() == pytest.approx((-2.8125, 357.1875))
    plt.close(fig)


def test_modes_and_comparison_figures(no_network, field):
    values, lat, lon = field
    sample = np.stack([values * (c + 1) for c in range(5)])
    fig = plotting.plot_modes(sample, lat, lon, suptitle="one day", synthetic=True)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 5
    assert fig._suptitle.get_text() == "one day (synthetic)"
    plt.close(fig)
    fig = plotting.plot_comparison(sample, sample + 1.0, lat, lon, suptitle="recon")
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled.count("prediction") == 5 and titled.count("difference") == 5
    # The difference panel shows prediction - truth = 1 everywhere.
    diff_ax = [ax for ax in fig.axes if ax.get_title() == "difference"][0]
    np.testing.assert_allclose(diff_ax.collections[0].get_array(), 1.0)
    plt.close(fig)
    with pytest.raises(ValueError, match=r"must both be \(C=5, lat, lon\)"):
        plotting.plot_comparison(sample, sample[:4], lat, lon)


def test_dateline_split_keeps_every_cell_where_it_was():
    """The re-ordered mesh shows each grid column over the same longitudes as before."""
    lat, lon = grid(32, 64)
    field = np.arange(64, dtype=float)[None, :].repeat(len(lat), axis=0)  # value = column index
    edges, split = plotting._dateline_split(field, lon)
    assert edges[0] == -180.0 and edges[-1] == 180.0 and np.all(np.diff(edges) > 0)
    assert split.shape == (len(lat), 65)  # the column on 180 E is drawn at both map edges
    centres = (edges[:-1] + edges[1:]) / 2
    expected_column = np.round((centres % 360.0) / 5.625).astype(int) % 64
    np.testing.assert_array_equal(split[0], expected_column)


def test_dateline_split_leaves_regional_grids_alone():
    lon = np.arange(10.0, 60.0, 5.0)
    field = np.random.default_rng(0).normal(size=(3, len(lon)))
    edges, same = plotting._dateline_split(field, lon)
    np.testing.assert_array_equal(same, field)
    np.testing.assert_allclose(edges, np.arange(7.5, 60.0, 5.0))


def test_draw_latlon_greys_missing_points_and_checks_the_shape(field):
    values, lat, lon = field
    values = values.copy()
    values[3, 5] = np.nan
    fig, ax = plt.subplots()
    mesh = plotting.draw_latlon(ax, values, lat, lon, "observation", vmin=-1, vmax=1)
    array = mesh.get_array()
    assert array.mask[3, 5] and array.mask.sum() == 1
    assert mesh.get_cmap().get_bad()[:3] == pytest.approx((0.8, 0.8, 0.8))
    assert mesh.get_clim() == (-1, 1) and ax.get_title() == "observation"
    with pytest.raises(ValueError, match="pass one channel of one day"):
        plotting.draw_latlon(ax, values.T, lat, lon)
    plt.close(fig)
