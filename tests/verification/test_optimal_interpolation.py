"""Optimal interpolation cycled with a damped-persistence background: B from the one-day errors
of damped persistence on training days, each day the BLUE update of yesterday's damped
analysis (checked against a dense loop), training days only. (The climatology-background OI
is tested in test_baselines.py.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from geofusion.data.climatology import day_of_year
from geofusion.verification.baselines import fit_damped_persistence
from geofusion.verification.optimal_interpolation import (
    PersistenceOptimalInterpolation,
    background_error_statistics,
    fit_optimal_interpolation,
    fit_persistence_optimal_interpolation,
)
from tests.verification.test_baselines import (
    GRID,
    LAT8,
    LON16,
    gaussian_fields,
    make_prepared,
    perturb_valid,
)


@pytest.fixture(scope="module")
def persistent_world():
    """Seasonal cycle plus a spatially correlated AR(1) anomaly (rho 0.8 in channel 0, 0.5 in
    channel 1), 3 training years and 60 validation days."""
    days = 3 * 365 + 60
    rng_fields = [gaussian_fields(days, np.ones(GRID), 2500.0, seed=s) for s in (10, 11)]
    a = np.zeros((days, 2, *GRID))
    for c, rho in enumerate((0.8, 0.5)):
        for t in range(1, days):
            a[t, c] = rho * a[t - 1, c] + np.sqrt(1 - rho**2) * rng_fields[c][t]
    times = np.arange("2001-01-01", days, dtype="datetime64[D]")
    season = np.sin(2 * np.pi * day_of_year(times) / 365.25)[:, None, None, None]
    prepared = make_prepared((season + a).astype(np.float32), times, 3 * 365, LAT8, LON16)
    return prepared, fit_persistence_optimal_interpolation(prepared, 0.3, 1.0, window=61)


def test_background_error_is_that_of_damped_persistence_on_training_days(persistent_world):
    prepared, pers = persistent_world
    damped = fit_damped_persistence(prepared, max_lead=1, window=61)
    np.testing.assert_array_equal(pers.rho, damped.rho[0])
    np.testing.assert_allclose(pers.rho.mean(axis=(1, 2)), [0.8, 0.5], atol=0.05)
    # Independent loop over consecutive training days for the error std.
    clim = damped.climatology
    x, t = prepared.train.astype(np.float64), prepared.train_times
    errors = np.stack([damped.rho[0] * (x[i] - clim[day_of_year(t[i:i + 1])[0] - 1])
                       - (x[i + 1] - clim[day_of_year(t[i + 1:i + 2])[0] - 1])
                       for i in range(len(x) - 1)])
    std, length, share = background_error_statistics(errors, LAT8, LON16)
    np.testing.assert_allclose(pers.interpolator.background_std, std, rtol=1e-10)
    np.testing.assert_allclose(pers.interpolator.length_scale_km, length, rtol=1e-8)
    # One-day persistence errors of an AR(1): std sqrt(1 - rho^2) of the unit anomaly.
    np.testing.assert_allclose(std.mean(axis=(1, 2)), [0.6, 0.87], rtol=0.1)
    climatology_oi = fit_optimal_interpolation(prepared, 0.3, 1.0, window=61)
    assert (pers.interpolator.background_std < climatology_oi.background_std).all()
    # Training days only: other validation days change nothing, bit for bit.
    other = fit_persistence_optimal_interpolation(perturb_valid(prepared), 0.3, 1.0, window=61)
    np.testing.assert_array_equal(other.rho, pers.rho)
    for f in dataclasses.fields(pers.interpolator):
        np.testing.assert_array_equal(getattr(other.interpolator, f.name),
                                      getattr(pers.interpolator, f.name), err_msg=f.name)


def test_cycle_matches_a_dense_loop(persistent_world):
    prepared, pers = persistent_world
    oi = pers.interpolator
    t, e = 6, 2
    times = prepared.valid_times[:t]
    truth = prepared.valid[:t].astype(np.float64)
    rng = np.random.default_rng(0)
    y = np.stack([truth + 0.3 * rng.normal(size=truth.shape) for _ in range(e)], axis=1)
    mask = rng.random((t, e, *GRID)) < 0.3
    mask[3] = mask[1]                                   # a repeated pattern (cached factor)
    mask[2, 1] = False                                  # a day without observations
    inflation = [1.0, 2.0]
    out = pers.cycle(y, mask, times, inflation)
    clim = oi.background(times).astype(np.float64)
    n = GRID[0] * GRID[1]
    for k in range(e):
        anomaly = np.zeros((2, *GRID))
        for day in range(t):
            xb = clim[day] + pers.rho * anomaly
            xa = xb.copy()
            for c in range(2):
                h = np.eye(n)[mask[day, k].reshape(-1)]
                if len(h):
                    b = inflation[k] * oi.background_covariance(c)
                    r = oi.observation_covariance(c)
                    innov = h @ (y[day, k, c] - xb[c]).reshape(-1)
                    xa[c] += (b @ h.T @ np.linalg.solve(h @ b @ h.T + h @ r @ h.T, innov)
                              ).reshape(GRID)
            # float32 output of float64 sums of O(1) values, Cholesky vs dense solve.
            np.testing.assert_allclose(out[day, k], xa, rtol=1e-5, atol=1e-5)
            anomaly = xa - clim[day]
    # Without observations the anomaly only decays: a climatological spin-up stays there.
    none = pers.cycle(y, np.zeros_like(mask), times)
    np.testing.assert_allclose(none, np.repeat(clim[:, None], e, axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="consecutive"):
        pers.cycle(y[[0, 2]], mask[[0, 2]], times[[0, 2]])
    with pytest.raises(ValueError, match="inflation"):
        pers.cycle(y, mask, times, inflation=0.0)


def test_memory_helps_on_a_persistent_anomaly(persistent_world):
    prepared, pers = persistent_world
    times = prepared.valid_times[:30]
    truth = prepared.valid[:30].astype(np.float64)
    rng = np.random.default_rng(1)
    y = (truth + 0.3 * rng.normal(size=truth.shape))[:, None]
    mask = rng.random((30, 1, *GRID)) < 0.1
    climatology_oi = fit_optimal_interpolation(prepared, 0.3, 1.0, window=61)
    cycled = pers.cycle(y, mask, times)[:, 0]
    static = climatology_oi.analyse(y[:, 0], mask[:, 0], times)
    rmse = lambda x: float(np.sqrt(np.mean((x[5:, 0] - truth[5:, 0]) ** 2)))  # noqa: E731
    assert rmse(cycled) < rmse(static)        # channel 0: rho 0.8, yesterday's analysis helps


def test_background_product_by_fft_equals_the_dense_product(persistent_world):
    _, pers = persistent_world
    weights = torch.from_numpy(np.random.default_rng(3).normal(size=(2, GRID[0] * GRID[1], 3)))
    dense = pers.interpolator._covariances()[0] @ weights
    # FFT along longitude vs the dense float64 product: rounding of O(1) sums only.
    torch.testing.assert_close(pers.background_product(weights), dense, rtol=1e-9, atol=1e-9)
    # Longitudes not around the whole circle: the dense product is used.
    partial = PersistenceOptimalInterpolation(
        dataclasses.replace(pers.interpolator, lon=LON16 / 2), pers.rho)
    torch.testing.assert_close(partial.background_product(weights),
                               partial.interpolator._covariances()[0] @ weights,
                               rtol=0, atol=0)
