"""geofusion.grids: one orientation everywhere, conservative regridding that conserves."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geofusion import data, grids
from geofusion.data.streaming import prepare_out_of_core
from geofusion.world.synthetic import synthetic_era5


@pytest.fixture(scope="module")
def small():
    """Six days 6-hourly on a 16x32 grid (WB2 layout, already normalised)."""
    return synthetic_era5(start="2000-01-01", end="2000-01-06", seed=4, nlat=16, nlon=32)


def wrap_to_180(ds):
    lon = (ds.longitude.values + 180.0) % 360.0 - 180.0
    return ds.assign_coords(longitude=("longitude", lon, ds.longitude.attrs)).sortby("longitude")


@pytest.mark.parametrize("variant", ["north_to_south", "minus180_180", "both", "descending_lon"])
def test_orientations_normalise_to_the_wb2_one(small, variant):
    ds = small
    if variant in ("north_to_south", "both"):
        ds = ds.isel(latitude=slice(None, None, -1))
    if variant in ("minus180_180", "both"):
        ds = wrap_to_180(ds)
        assert ds.longitude.values[0] == -180.0
    if variant == "descending_lon":
        ds = ds.isel(longitude=slice(None, None, -1))
    normalised = grids.normalise_orientation(ds)
    xr.testing.assert_identical(normalised, small)


def test_prepare_and_streaming_see_the_same_arrays_for_any_orientation(small, tmp_path):
    """The issue's case: a WB2-layout store north to south (and -180..180) must not flip."""
    flipped = wrap_to_180(small.isel(latitude=slice(None, None, -1)))
    reference = data.prepare(small, train_fraction=0.5)
    prepared = data.prepare(flipped, train_fraction=0.5)
    np.testing.assert_array_equal(prepared.train, reference.train)
    np.testing.assert_array_equal(prepared.lat, reference.lat)
    np.testing.assert_array_equal(prepared.lon, reference.lon)
    # Through a zarr store, opened lazily and streamed out of core: the same.
    flipped.to_zarr(tmp_path / "flipped.zarr", zarr_format=2, consolidated=True)
    opened = data.open_era5(tmp_path / "flipped.zarr")
    assert opened.latitude.values[0] < 0 and opened.longitude.values[0] == 0.0
    store = prepare_out_of_core(flipped, tmp_path / "prepared.zarr", train_fraction=0.5,
                                time_chunk=2)
    np.testing.assert_allclose(store.to_prepared().train, reference.train, atol=1e-6)
    np.testing.assert_array_equal(store.lat, reference.lat)


def test_orientation_errors(small):
    doubled = small.isel(longitude=[*range(32), 0])
    doubled = doubled.assign_coords(longitude=[*small.longitude.values, 360.0])
    with pytest.raises(data.DataError, match=r"longitude coordinate is not strictly increasing "
                                             r"\(1 duplicate.*isel\(longitude=slice\(0, -1\)\)"):
        grids.normalise_orientation(doubled)
    with pytest.raises(data.DataError, match=r"latitudes outside \[-90, 90\]"):
        grids.normalise_orientation(small.assign_coords(latitude=small.latitude * 2))
    with pytest.raises(data.DataError, match=r"no 'latitude' dimension"):
        grids.normalise_orientation(small.rename({"latitude": "y"}))


def field(lat, lon, values):
    return xr.Dataset({"f": (("longitude", "latitude"), values)},
                      coords={"latitude": lat, "longitude": lon})


def area_mean(ds):
    weights = grids.cell_areas(ds.latitude.values, ds.longitude.values)  # (lat, lon)
    return float((ds["f"].values.T * weights).sum() / weights.sum())


def nested_2x(lat, lon):
    """The 2x finer grid whose cells split every cell of ``lat x lon`` in four.

    In latitude that is the equiangular grid of twice the size; in longitude the fine centres
    sit a quarter step either side of the coarse ones (the equiangular grid of twice the size,
    which starts at 0, is not nested: its odd cells straddle two coarse cells).
    """
    fine_lat, _ = grids.equiangular_grid(2 * len(lat), 2 * len(lon))
    quarter = (lon[1] - lon[0]) / 4
    fine_lon = np.stack([lon - quarter, lon + quarter], axis=1).ravel()
    return fine_lat, fine_lon


def test_a_field_duplicated_on_a_2x_finer_grid_regrids_back_to_itself():
    rng = np.random.default_rng(0)
    lat, lon = grids.equiangular_grid(16, 32)
    coarse = rng.standard_normal((32, 16))
    fine_lat, fine_lon = nested_2x(lat, lon)
    duplicated = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)
    fine = grids.normalise_orientation(field(fine_lat, fine_lon, duplicated))
    assert fine.longitude.values[0] == 2.8125  # -2.8125 wrapped to 357.1875, rolled last
    back = grids.regrid_conservative(fine, lat, lon)
    np.testing.assert_allclose(back["f"].values, coarse, rtol=1e-12, atol=1e-12)
    assert back["f"].dims == ("longitude", "latitude")


def era5_grid_with_poles(step):
    """ERA5 / WB2 grids with points on the poles (1.5 deg: 121 x 240; 0.25 deg: 721 x 1440)."""
    lat = np.linspace(-90.0, 90.0, int(round(180 / step)) + 1)
    lon = np.arange(int(round(360 / step))) * step
    return lat, lon


@pytest.mark.parametrize("step", [1.5, 1.0, 0.25])
def test_area_mean_preserved_and_constants_kept_for_era5_grids(step):
    rng = np.random.default_rng(1)
    lat, lon = era5_grid_with_poles(step)
    fine = field(lat, lon, rng.standard_normal((len(lon), len(lat))) + 3.0)
    assert abs(grids.cell_areas(lat, lon).sum() - 1.0) < 1e-12  # half-size polar cells
    out_lat, out_lon = grids.equiangular_grid(32, 64)
    coarse = grids.regrid_conservative(fine, out_lat, out_lon)
    assert coarse["f"].shape == (64, 32)
    assert area_mean(coarse) == pytest.approx(area_mean(fine), rel=1e-12)
    constant = grids.regrid_conservative(field(lat, lon, np.full((len(lon), len(lat)), 7.5)),
                                         out_lat, out_lon)
    np.testing.assert_allclose(constant["f"].values, 7.5, rtol=1e-13)


def test_regridding_equals_an_independent_area_integral():
    """Against a brute-force integral: piecewise-constant source sampled on a fine mesh of
    points, each weighted by cos(latitude) (not the sin-edge formula the code uses)."""
    rng = np.random.default_rng(2)
    lat, lon = era5_grid_with_poles(15.0)  # 13 x 24 with poles: no integer factor to 4x8
    values = rng.standard_normal((len(lon), len(lat)))
    out_lat, out_lon = grids.equiangular_grid(4, 8)
    got = grids.regrid_conservative(field(lat, lon, values), out_lat, out_lon)["f"].values
    lat_edges, lon_edges = grids.latitude_edges(lat), grids.longitude_edges(lon)
    t_lat_edges, t_lon_edges = grids.latitude_edges(out_lat), grids.longitude_edges(out_lon)
    n = 600
    expected = np.empty((len(out_lon), len(out_lat)))
    for j in range(len(out_lon)):
        plon = t_lon_edges[j] + (np.arange(n) + 0.5) / n * (t_lon_edges[j + 1] - t_lon_edges[j])
        b = np.searchsorted(lon_edges, np.mod(plon - lon_edges[0], 360.0) + lon_edges[0]) - 1
        for i in range(len(out_lat)):
            plat = t_lat_edges[i] + (np.arange(n) + 0.5) / n * (t_lat_edges[i + 1]
                                                                - t_lat_edges[i])
            a = np.clip(np.searchsorted(lat_edges, plat) - 1, 0, len(lat) - 1)
            w = np.cos(np.deg2rad(plat))
            expected[j, i] = (values[b][:, a] * w[None, :]).sum() / (n * w.sum())
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_nan_stays_local_and_dask_stays_lazy():
    lat, lon = grids.equiangular_grid(16, 32)
    values = np.random.default_rng(3).standard_normal((32, 16))
    # Fine cell (lon 4, lat 7) lies inside coarse cell (2, 3): fine longitude 45 +- 5.625 in
    # coarse 45 +- 11.25 (an odd fine longitude index would straddle two coarse cells).
    values[4, 7] = np.nan
    ds = field(lat, lon, values)
    out_lat, out_lon = grids.equiangular_grid(8, 16)
    eager = grids.regrid_conservative(ds, out_lat, out_lon)["f"].values
    assert np.isnan(eager).sum() == 1 and np.isnan(eager[2, 3])
    lazy = grids.regrid_conservative(ds.chunk({"longitude": 8}), out_lat, out_lon)["f"]
    assert lazy.chunks is not None
    np.testing.assert_array_equal(lazy.values, eager)


def test_regional_source_is_refused():
    lat, lon = grids.equiangular_grid(16, 32)
    regional = field(lat[8:], lon, np.zeros((32, 8)))  # northern hemisphere only
    with pytest.raises(data.DataError, match=r"does not cover 4 target latitude cells.*whole "
                                             r"globe \(no `area`"):
        grids.regrid_conservative(regional, *grids.equiangular_grid(8, 16))


def duplicate_2x(ds):
    """A WB2-layout dataset on the 2x finer equiangular grid, every value copied to 4 cells."""
    nlat, nlon = ds.sizes["latitude"], ds.sizes["longitude"]
    lat, lon = nested_2x(ds.latitude.values, ds.longitude.values)
    fine = ds.isel(latitude=np.repeat(np.arange(nlat), 2), longitude=np.repeat(np.arange(nlon), 2))
    return fine.assign_coords(latitude=lat, longitude=lon)


def test_prepare_regrids_a_finer_grid_only_on_request(small, tmp_path):
    fine = duplicate_2x(small)
    with pytest.raises(data.DataError, match=r"grid is 32x64 \(lat x lon\) but 16x32 was "
                                             r"expected; pass regrid='conservative'"):
        data.prepare(fine, expected_grid=(16, 32))
    regridded = data.prepare(fine, expected_grid=(16, 32), regrid="conservative")
    reference = data.prepare(small)
    np.testing.assert_allclose(regridded.train, reference.train, atol=1e-5)
    np.testing.assert_array_equal(regridded.lat, reference.lat)
    with pytest.raises(data.DataError, match=r"coarser than the expected 32x64"):
        data.prepare(small, expected_grid=(32, 64), regrid="conservative")
    with pytest.raises(ValueError, match=r"unknown regrid method 'bilinear'"):
        data.prepare(small, expected_grid=(16, 32), regrid="bilinear")
    # load: the run's grid is checked (64x32 by default) and a finer store is regridded.
    fine.to_zarr(tmp_path / "fine.zarr", zarr_format=2, consolidated=True)
    with pytest.raises(data.DataError, match=r"coarser than the expected 32x64"):
        small.to_zarr(tmp_path / "small.zarr", zarr_format=2, consolidated=True)
        data.load(tmp_path / "small.zarr", start=None, end=None, cache_dir=None)
    with pytest.raises(data.DataError, match=r"grid is 32x64 \(lat x lon\) but 16x32"):
        data.load(tmp_path / "fine.zarr", start=None, end=None, cache_dir=None, grid=(16, 32),
                  regrid=None)
    loaded = data.load(tmp_path / "fine.zarr", start=None, end=None, cache_dir=tmp_path,
                       grid=(16, 32))
    np.testing.assert_allclose(loaded.train, reference.train, atol=1e-5)
    assert data.load(tmp_path / "small.zarr", start=None, end=None, cache_dir=None,
                     grid=None).train.shape[-2:] == (16, 32)
