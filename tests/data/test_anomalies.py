"""The anomaly space: fitted on training days only, exact inverse, unit weighted variance,
persistence and the climatology baseline unchanged in physical units."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geofusion.data.anomalies import to_space
from geofusion.data.climatology import climatology, day_of_year
from geofusion.data.eof import area_weights
from geofusion.data.prepared import PreparedData
from geofusion.verification.baselines import climatology_forecast, training_climatology

DAYS = np.arange("2001-01-01", "2004-01-01", dtype="datetime64[D]").astype("datetime64[ns]")
LAT = np.array([-60.0, 0.0, 60.0])


def report_space(seed=0):
    rng = np.random.default_rng(seed)
    doy = day_of_year(DAYS)
    amplitude = np.array([10.0, 1.0])[:, None, None]
    cycle = np.sin(2 * np.pi * doy / 365.25)[:, None, None, None] * amplitude
    x = (cycle + rng.normal(size=(len(DAYS), 2, 3, 4)) * np.array([0.5, 2.0])[:, None, None])
    mean, std = x[:700].mean(axis=(0, 2, 3)), x[:700].std(axis=(0, 2, 3))
    z = ((x - mean[:, None, None]) / std[:, None, None]).astype("float32")
    return PreparedData(z[:700], z[700:900], DAYS[:700], DAYS[700:900], ("a", "b"),
                        mean.astype("float32"), std.astype("float32"), LAT,
                        np.arange(4) * 90.0, 500, True, test=z[900:], test_times=DAYS[900:])


def test_inverse_is_exact_and_weighted_variance_is_one_per_variable():
    p = report_space()
    a = to_space(p, "anomaly")
    for split in ("train", "valid", "test"):
        np.testing.assert_allclose(a.destandardise(a.fields(split), a.times(split)),
                                   p.destandardise(p.fields(split)), rtol=1e-5, atol=1e-4)
    w = area_weights(LAT)[None, None, :, None]
    np.testing.assert_allclose((w * a.train.astype(np.float64) ** 2).mean(axis=(0, 2, 3)), 1.0,
                               rtol=1e-4)
    # the seasonal cycle is gone: variable "a" was 97 % cycle
    assert abs(np.corrcoef(a.train[:, 0].mean(axis=(1, 2)),
                           np.sin(2 * np.pi * day_of_year(DAYS[:700]) / 365.25))[0, 1]) < 0.2


def test_statistics_come_from_training_days_only():
    p = report_space()
    other = dataclasses.replace(p, valid=p.valid[::-1] * 3.0, test=np.full_like(p.test, np.nan))
    a, b = to_space(p, "anomaly"), to_space(other, "anomaly")
    np.testing.assert_array_equal(a.climatology, b.climatology)
    np.testing.assert_array_equal(a.std, b.std)
    np.testing.assert_array_equal(a.train, b.train)


def test_destandardise_needs_the_days_and_report_space_is_unchanged():
    p = report_space()
    assert to_space(p, "report") is p
    a = to_space(p, "anomaly")
    with pytest.raises(ValueError, match="pass the day of each field"):
        a.destandardise(a.valid)
    with pytest.raises(ValueError, match="one time per field"):
        a.destandardise(a.valid, a.valid_times[:3])
    with pytest.raises(ValueError, match="unknown space"):
        to_space(p, "pca")
    with pytest.raises(ValueError, match="already in the 'anomaly' space"):
        to_space(a, "anomaly")


def test_climatology_baseline_and_persistence_are_the_same_physical_forecasts():
    p = report_space()
    a = to_space(p, "anomaly")
    clim_report = p.destandardise(climatology_forecast(training_climatology(p), p.valid_times))
    clim_anomaly = a.destandardise(climatology_forecast(training_climatology(a), a.valid_times),
                                   a.valid_times)
    np.testing.assert_allclose(clim_anomaly, clim_report, rtol=1e-5, atol=1e-4)
    expected = climatology(p.destandardise(p.train), p.train_times)[day_of_year(p.valid_times) - 1]
    np.testing.assert_allclose(clim_anomaly, expected, rtol=1e-5, atol=1e-4)
    # persistence: yesterday's physical field, re-expressed for today
    moved = a.as_valid_at(a.valid[:-1], a.valid_times[:-1], a.valid_times[1:])
    np.testing.assert_allclose(a.destandardise(moved, a.valid_times[1:]),
                               p.destandardise(p.valid[:-1]), rtol=1e-5, atol=1e-4)
    assert p.as_valid_at(p.valid, p.valid_times, p.valid_times) is p.valid


def test_evenly_spaced_days_cover_the_block_and_keep_its_ends():
    from geofusion.data.prepared import evenly_spaced_days

    idx = evenly_spaced_days(804, 256)
    assert idx[0] == 0 and idx[-1] == 803 and len(idx) == 256
    assert np.all(np.diff(idx) >= 3) and np.all(np.diff(idx) <= 4)
    np.testing.assert_array_equal(evenly_spaced_days(5, None), np.arange(5))
    np.testing.assert_array_equal(evenly_spaced_days(5, 9), np.arange(5))
    with pytest.raises(ValueError, match="positive number of days"):
        evenly_spaced_days(5, 0)
