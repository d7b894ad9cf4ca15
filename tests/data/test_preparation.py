"""geofusion.data: resampling, split, standardisation, errors, cache, zarr round trip."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

from geofusion import data
from geofusion.data import preparation
from geofusion.world.synthetic import synthetic_era5


@pytest.fixture(scope="module")
def small():
    """Twenty days 6-hourly on the default 32x64 grid, levels 500 and 850 hPa."""
    return synthetic_era5(start="2000-01-01", end="2000-01-20", seed=3, levels=(500, 850))


def test_daily_means_equal_hand_computation(small):
    prepared = data.prepare(small, level=850, train_fraction=0.5)
    physical = np.concatenate([prepared.destandardise(prepared.train),
                               prepared.destandardise(prepared.valid)])
    assert physical.shape == (20, 5, 32, 64) and prepared.train.dtype == np.float32
    # WB2 stores (time, [level,] longitude, latitude): average each 4 steps of a day by hand.
    t2m = small["2m_temperature"].values.transpose(0, 2, 1).reshape(20, 4, 32, 64).mean(1)
    q = small["specific_humidity"].sel(level=850).values.transpose(0, 2, 1)
    q = q.reshape(20, 4, 32, 64).mean(1)
    np.testing.assert_allclose(physical[:, 0], t2m, rtol=1e-5)
    np.testing.assert_allclose(physical[:, 4], q, rtol=1e-4, atol=1e-8)
    # The diurnal cycle makes daily means differ from the 00 UTC value.
    at_00utc = small["2m_temperature"].values[::4].transpose(0, 2, 1)
    assert np.abs(physical[:, 0] - at_00utc).max() > 0.3
    assert prepared.level == 850 and prepared.channels == data.VARIABLES
    np.testing.assert_array_equal(prepared.lat, small.latitude.values)


def test_split_by_time_without_overlap(small):
    prepared = data.prepare(small, train_fraction=0.8)
    assert len(prepared.train) == 16 and len(prepared.valid) == 4
    assert prepared.train_times.max() < prepared.valid_times.min()
    assert len(np.intersect1d(prepared.train_times, prepared.valid_times)) == 0
    days = np.concatenate([prepared.train_times, prepared.valid_times])
    assert np.all(np.diff(days) == np.timedelta64(1, "D"))


def test_three_way_split_holds_out_the_last_block_and_keeps_the_two_way_default(small,
                                                                                 tmp_path):
    two = data.prepare(small, train_fraction=0.6)
    three = data.prepare(small, train_fraction=0.6, test_fraction=0.2, cache_dir=tmp_path)
    assert two.test is None and (len(two.train), len(two.valid)) == (12, 8)
    assert (len(three.train), len(three.valid), len(three.test)) == (12, 4, 4)
    days = np.concatenate([three.train_times, three.valid_times, three.test_times])
    assert np.all(np.diff(days) == np.timedelta64(1, "D"))
    # Same training block, so the same statistics and the same standardised days.
    np.testing.assert_array_equal(three.mean, two.mean)
    np.testing.assert_array_equal(np.concatenate([three.valid, three.test]), two.valid)
    assert three.fields("test") is three.test and len(three.season_labels("test")) == 4
    again = data.prepare(small, train_fraction=0.6, test_fraction=0.2, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.test, three.test)
    np.testing.assert_array_equal(again.test_times, three.test_times)
    with pytest.raises(ValueError, match="no test split"):
        two.times("test")
    with pytest.raises(data.DataError, match="test_fraction"):
        data.prepare(small, train_fraction=0.8, test_fraction=0.2)


def test_all_days_views_never_include_the_test_block(small):
    """``physical()``, ``times_all`` and the diagnostics built on them (seasonal cycle, mode
    correlations, point series: everything fitted on "all days") cover train and valid only;
    changing every test day changes none of them."""
    three = data.prepare(small, train_fraction=0.6, test_fraction=0.2)
    days = np.concatenate([three.train_times, three.valid_times])
    np.testing.assert_array_equal(three.times_all, days)
    assert len(np.intersect1d(three.times_all, three.test_times)) == 0
    # The same elementwise destandardisation of the same days: bit for bit.
    np.testing.assert_array_equal(
        three.physical(), three.destandardise(np.concatenate([three.train, three.valid])))
    other = dataclasses.replace(three, test=three.test + 5.0,
                                test_times=three.test_times + np.timedelta64(200, "D"))
    pd.testing.assert_frame_equal(data.seasonal_cycle(other), data.seasonal_cycle(three))
    pd.testing.assert_frame_equal(data.mode_correlations(other), data.mode_correlations(three))
    points = [(45.0, 10.0), (-30.0, 200.0)]
    pd.testing.assert_frame_equal(data.point_series(other, points),
                                  data.point_series(three, points))
    assert len(data.point_series(three, points)) == len(three.train) + len(three.valid)


def test_statistics_use_training_part_only(small):
    prepared = data.prepare(small, train_fraction=0.5)
    train_phys = prepared.destandardise(prepared.train)
    np.testing.assert_allclose(prepared.train.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(prepared.train.std(axis=(0, 2, 3)), 1, atol=1e-4)
    mean_error = (train_phys.mean(axis=(0, 2, 3), dtype=np.float64) - prepared.mean) / prepared.std
    np.testing.assert_allclose(mean_error, 0, atol=1e-4)
    changed = small.copy(deep=True)
    later = changed.time >= np.datetime64("2000-01-11")
    changed["2m_temperature"] = changed["2m_temperature"].where(~later, 1000.0)
    other = data.prepare(changed, train_fraction=0.5)
    np.testing.assert_array_equal(other.mean, prepared.mean)
    np.testing.assert_array_equal(other.std, prepared.std)
    np.testing.assert_allclose(other.destandardise(other.valid)[:, 0], 1000.0, rtol=1e-6)


def test_level_none_is_first_level(small):
    assert data.prepare(small, level=None).level == 500


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda ds: ds.drop_vars("specific_humidity"), {},
         r"\['specific_humidity'\] are not in the store, which has \[.*geopotential"),
        (lambda ds: ds, {"level": 700}, r"level 700 hPa is not in the store.*\[500, 850\]"),
        (lambda ds: ds, {"expected_grid": (16, 32)}, r"grid is 32x64 .* 16x32 was expected"),
        (lambda ds: ds.isel(longitude=[0, 0, *range(1, 64)]), {},
         r"longitude coordinate is not strictly increasing \(1 duplicate"),
        (lambda ds: ds.isel(latitude=[*range(16), *range(17, 32), 16]), {},
         r"latitude coordinate is neither strictly increasing nor strictly decreasing"),
        (lambda ds: ds, {"start": "1990-01-01", "end": "1990-12-31"},
         r"no times between start='1990-01-01'"),
        (lambda ds: ds, {"start": "2000-01-01", "end": "2000-01-01"}, r"leaves no validation"),
        (lambda ds: ds, {"train_fraction": 1.0}, r"train_fraction must be strictly between 0"),
        (lambda ds: ds, {"train_fraction": 0.0}, r"train_fraction must be strictly between 0"),
    ],
)
def test_errors_name_problem_and_fix(small, mutate, kwargs, match):
    with pytest.raises(data.DataError, match=match):
        data.prepare(mutate(small), **kwargs)


def test_nan_error_names_variable_and_count(small):
    broken = small.copy(deep=True)
    broken["geopotential"][5, 0, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"geopotential has 1 NaN values"):
        data.prepare(broken, level=500)


def test_cache_reused_and_equal_to_fresh(small, tmp_path, monkeypatch):
    fresh = data.prepare(small, cache_dir=tmp_path)
    manifests = list(tmp_path.glob("prepared_*.json"))
    assert len(manifests) == 1 and len(list(tmp_path.glob("prepared_*.npz"))) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["level"] == 500 and manifest["train_fraction"] == 0.8
    assert manifest["variables"] == list(data.VARIABLES)

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached result should have been reused")

    monkeypatch.setattr(preparation, "_compute_prepared", no_recompute)
    cached = data.prepare(small, cache_dir=tmp_path)
    for field in ("train", "valid", "train_times", "valid_times", "mean", "std", "lat", "lon"):
        np.testing.assert_array_equal(getattr(cached, field), getattr(fresh, field))
    assert (cached.channels, cached.level, cached.synthetic) == (fresh.channels, 500, True)
    # Other inputs (another level) are a different cache entry and are computed.
    with pytest.raises(AssertionError, match="cached result"):
        data.prepare(small, level=850, cache_dir=tmp_path)


def test_cache_tells_seeds_apart(tmp_path):
    a = synthetic_era5(start="2000-01-01", end="2000-01-05", seed=0)
    b = synthetic_era5(start="2000-01-01", end="2000-01-05", seed=1)
    pa = data.prepare(a, cache_dir=tmp_path)
    pb = data.prepare(b, cache_dir=tmp_path)
    assert not np.array_equal(pa.train, pb.train)
    assert len(list(tmp_path.glob("prepared_*.json"))) == 2


def test_zarr_round_trip_through_open_era5(tmp_path):
    path = data.default_store(tmp_path, start="2000-01-01", end="2000-01-04", seed=2)
    assert path.exists() and path.suffix == ".zarr"
    assert data.default_store(tmp_path, start="2000-01-01", end="2000-01-04", seed=2) == path
    ds = data.open_era5(path)
    expected = synthetic_era5(start="2000-01-01", end="2000-01-04", seed=2)
    assert ds["geopotential"].dims == ("time", "level", "longitude", "latitude")
    assert ds["2m_temperature"].chunks is not None  # lazy, dask-backed
    for name in data.VARIABLES:
        np.testing.assert_array_equal(ds[name].values, expected[name].values)
    assert int(ds.attrs["synthetic"]) == 1
    prepared = data.load(path, start="2000-01-01", end="2000-01-04", cache_dir=None)
    assert prepared.synthetic and prepared.train.shape == (3, 5, 32, 64)


def test_open_era5_errors(tmp_path, monkeypatch):
    with pytest.raises(data.DataError, match="no zarr store at .*data_path=None"):
        data.open_era5(tmp_path / "missing.zarr")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gcsfs" else real_find_spec(name, *a))
    with pytest.raises(data.DataError, match=r"pip install geofusion\[gcs\]"):
        data.open_era5(data.WB2_ERA5_64x32)


def test_load_default_is_synthetic(tmp_path):
    prepared = data.load(None, start="2000-01-01", end="2000-01-10", cache_dir=tmp_path)
    assert prepared.synthetic and len(prepared.train) == 8 and len(prepared.valid) == 2
    assert list(tmp_path.glob("synthetic_era5_*.zarr"))
    table = prepared.summary()
    assert list(table.index) == list(data.VARIABLES)
    assert 220 < table.loc["2m_temperature", "mean"] < 310
    assert table.loc["2m_temperature", "units"] == "K"


def test_season_labels_and_destandardise(small):
    times = np.array(["2000-12-15", "2001-01-01", "2001-04-01", "2001-07-31", "2001-10-10",
                      "2001-02-28"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(data.season_labels(times), [0, 0, 1, 2, 3, 0])
    assert data.season_labels(times).dtype == np.int64
    prepared = data.prepare(small, train_fraction=0.5)
    np.testing.assert_array_equal(prepared.season_labels("train"), 0)
    x = prepared.valid[:2]
    as_torch = prepared.destandardise(torch.from_numpy(x))
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), prepared.destandardise(x), rtol=1e-6)


def test_field_dataset_items():
    fields = np.random.default_rng(0).standard_normal((6, 5, 4, 8)).astype(np.float64)
    dataset = data.FieldDataset(fields, np.arange(6) % 4)
    x, season = dataset[5]
    assert len(dataset) == 6 and x.shape == (5, 4, 8) and x.dtype == torch.float32
    assert season.dtype == torch.int64 and season.ndim == 0 and int(season) == 1
    assert int(data.FieldDataset(fields)[0][1]) == 0
    with pytest.raises(ValueError, match="labels for 6 fields"):
        data.FieldDataset(fields, [0, 1])


def test_constants():
    assert data.WB2_LEVELS[0] == 50 and data.WB2_LEVELS[-1] == 1000 and len(data.WB2_LEVELS) == 13
    assert data.SURFACE_VARIABLES == ("2m_temperature",)
    assert set(data.UNITS) == set(data.VARIABLES)
    assert data.SEASONS == ("DJF", "MAM", "JJA", "SON")


def test_diagnostics(tmp_path):
    prepared = data.load(None, start="2000-01-01", end="2000-12-31", cache_dir=tmp_path)
    cycle = data.seasonal_cycle(prepared)
    assert list(cycle.index) == list(range(1, 13))
    t2m = cycle["2m_temperature"]
    # Opposite seasons: NH warmest in boreal summer, SH in austral summer.
    assert t2m["NH"][7] > t2m["NH"][1] + 10 and t2m["SH"][1] > t2m["SH"][7] + 10
    corr = data.mode_correlations(prepared)
    assert corr.shape == (5, 5)
    np.testing.assert_allclose(np.diag(corr.values), 1.0)
    np.testing.assert_allclose(corr.values, corr.values.T)
    assert corr.loc["2m_temperature", "specific_humidity"] > 0.3
    series = data.point_series(prepared, [(50.0, 0.0), (-50.0, -90.0)])
    assert list(series.columns) == ["47.8N 0.0E", "47.8S 270.0E"] and len(series) == 366
    np.testing.assert_allclose(series.iloc[:, 0], prepared.physical()[:, 0, 24, 0], rtol=1e-6)


def test_time_blocks_are_whole_days_on_chunk_boundaries():
    times = np.arange("2000-01-01", "2000-01-11", np.timedelta64(6, "h"), dtype="datetime64[ns]")
    # Chunks of 8 steps (2 days): blocks end on chunk boundaries, each chunk read once.
    blocks = data.time_blocks(times, list(range(0, 41, 8)), steps_per_block=20)
    assert blocks == [(0, 16), (16, 32), (32, 40)]
    # Chunks of 6 steps (1.5 days): only every other chunk boundary starts a day.
    blocks = data.time_blocks(times, list(range(0, 41, 6)), steps_per_block=14)
    assert blocks == [(0, 12), (12, 24), (24, 36), (36, 40)]
    # No chunk boundary within the budget: the last whole day inside it, never half a day.
    assert data.time_blocks(times, [0, 40], steps_per_block=9) == [
        (0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]
    # A budget smaller than a day still gives whole days; a partial first day stays alone.
    assert data.time_blocks(times[2:10], None, steps_per_block=1) == [(0, 2), (2, 6), (6, 8)]


class _Interrupt(Exception):
    """Stands for a kill in the middle of a preparation."""


def test_interrupted_prepare_resumes_from_finished_blocks(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(preparation, "BLOCK_BYTES", data.step_bytes(small, data.VARIABLES) * 4 * 3)
    real = preparation._compute_block
    calls = []

    def stop_after_two(ds, first, last):
        if len(calls) == 2:
            raise _Interrupt
        calls.append((first, last))
        return real(ds, first, last)

    monkeypatch.setattr(preparation, "_compute_block", stop_after_two)
    with pytest.raises(_Interrupt):
        data.prepare(small, cache_dir=tmp_path)
    assert not list(tmp_path.glob("prepared_*.json")) and not list(tmp_path.glob("*.npz"))
    assert len(list(tmp_path.glob("prepared_*.parts/block_*.npz"))) == 2

    resumed_calls = []

    def counting(ds, first, last):
        resumed_calls.append((first, last))
        return real(ds, first, last)

    monkeypatch.setattr(preparation, "_compute_block", counting)
    resumed = data.prepare(small, cache_dir=tmp_path, progress=True)
    assert calls == [(0, 12), (12, 24)]  # three days of 4 steps per block
    assert resumed_calls == [(24, 36), (36, 48), (48, 60), (60, 72), (72, 80)]
    fresh = data.prepare(small)
    np.testing.assert_array_equal(resumed.train, fresh.train)
    np.testing.assert_array_equal(resumed.valid, fresh.valid)
    np.testing.assert_array_equal(resumed.mean, fresh.mean)
    assert not list(tmp_path.glob("prepared_*.parts"))  # parts removed once complete
    err = capsys.readouterr().err
    assert "preparing daily means" in err and "step 80/80, 7 blocks, to 2000-01-20" in err
    assert "B/s" in err
    # Small sources stay quiet by default (progress=None).
    data.prepare(small, level=850)
    assert "preparing daily means" not in capsys.readouterr().err


def _as_block(ds, level=500):
    import xarray as xr

    return xr.Dataset({name: (ds[name].sel(level=level, drop=True) if "level" in ds[name].dims
                              else ds[name]).transpose("time", "latitude", "longitude")
                       for name in data.VARIABLES})


def test_regular_daily_means_are_the_resampled_means(small):
    block = _as_block(small)
    block["2m_temperature"][5, 3, 7] = np.nan  # a NaN spoils its day, as with skipna=False
    values, times = preparation._regular_daily_means(block)
    resampled = block.resample(time="1D").mean(skipna=False)
    np.testing.assert_array_equal(times, resampled["time"].values.astype("datetime64[ns]"))
    for name in data.VARIABLES:
        assert values[name].dtype == np.float32 and values[name].shape == (20, 32, 64)
        # Here the same float additions in the same order; but xarray may route resample
        # through flox / numbagg (another summation order) on other installs, and the mean of
        # 4 float32 steps then differs by at most a few float32 ulps (2**-23 ~ 1.2e-7 relative):
        # 1e-6 of each variable's largest magnitude (winds cross zero).
        expected = resampled[name].values.astype(np.float32)
        np.testing.assert_allclose(values[name], expected, rtol=1e-6,
                                   atol=1e-6 * float(np.nanmax(np.abs(expected))))
    assert np.isnan(values["2m_temperature"][1, 3, 7])
    assert np.isnan(values["2m_temperature"]).sum() == 1


def test_irregular_blocks_take_the_resample_path(small):
    block = _as_block(small)
    # A missing step (3 steps on day 2) and a missing day: no reshape, resample semantics.
    assert preparation._regular_daily_means(block.drop_isel(time=[5])) is None
    assert preparation._regular_daily_means(block.drop_isel(time=[4, 5, 6, 7])) is None
    values, times, _ = preparation._compute_block(_as_block(small).drop_isel(time=[5]), 0, 79)
    assert len(times) == 20
    kept = small["2m_temperature"].values.transpose(0, 2, 1)[[4, 6, 7]].mean(0)
    np.testing.assert_allclose(values["2m_temperature"][1], kept, rtol=1e-6)
