"""Block bootstrap over days: iid limit, determinism, RMSE reduction, width under
autocorrelation, coverage on simulated data."""

from __future__ import annotations

import doctest
from statistics import NormalDist

import numpy as np
import pytest
import torch

from geofusion.verification import bootstrap, metrics
from geofusion.verification.bootstrap import (
    BootstrapInterval,
    acc_interval,
    block_bootstrap_counts,
    block_bootstrap_indices,
    bootstrap_acc,
    bootstrap_mean,
    bootstrap_rmse,
    interval_table,
    rmse_interval,
)


def ar1(n_series: int, length: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """``(n_series, length)`` stationary AR(1) with unit marginal variance and mean 0."""
    x = np.empty((n_series, length))
    x[:, 0] = rng.standard_normal(n_series)
    innov = rng.standard_normal((n_series, length)) * np.sqrt(1 - phi**2)
    for t in range(1, length):
        x[:, t] = phi * x[:, t - 1] + innov[:, t]
    return x


def test_docstring_examples_run():
    result = doctest.testmod(bootstrap)
    assert result.attempted >= 5 and result.failed == 0


def test_block_one_is_the_iid_bootstrap():
    idx = block_bootstrap_indices(20, block=1, n_resamples=50, seed=3)
    np.testing.assert_array_equal(idx, np.random.default_rng(3).integers(0, 20, (50, 20)))
    # And the interval equals an independent loop over iid resamples of the same draws.
    values = np.random.default_rng(0).normal(size=(20, 2))
    ci = bootstrap_mean(values, block=1, n_resamples=50, seed=3, level=0.9)
    means = np.array([values[row].mean(axis=0) for row in idx])
    np.testing.assert_allclose(ci.low, np.quantile(means, 0.05, axis=0))
    np.testing.assert_allclose(ci.high, np.quantile(means, 0.95, axis=0))


def test_blocks_are_consecutive_days_wrapping_around():
    idx = block_bootstrap_indices(10, block=4, n_resamples=30, seed=0)
    assert idx.shape == (30, 10) and idx.min() >= 0 and idx.max() < 10
    # Within each block of 4 the days follow each other modulo 10; blocks start at 0, 4, 8.
    for start in (0, 4):
        step = (idx[:, start + 1:start + 4] - idx[:, start:start + 3]) % 10
        assert np.all(step == 1)
    assert np.any(idx[:, :4] == 9) and np.any(idx[:, :4] == 0)  # some block wraps 9 -> 0
    moving = block_bootstrap_indices(10, block=4, n_resamples=200, seed=0, circular=False)
    assert np.all(moving[:, 0] <= 6)  # starts in 0 .. T - block, no wrap
    counts = block_bootstrap_counts(10, block=4, n_resamples=30, seed=0)
    np.testing.assert_array_equal(counts, np.stack([np.bincount(r, minlength=10) for r in idx]))


def test_deterministic_by_seed_and_seed_matters():
    values = np.random.default_rng(1).normal(size=(40, 3))
    a = bootstrap_mean(values, seed=5, n_resamples=100)
    b = bootstrap_mean(values, seed=5, n_resamples=100)
    c = bootstrap_mean(values, seed=6, n_resamples=100)
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.high, b.high)
    assert not np.array_equal(a.low, c.low)
    g = bootstrap_mean(values, seed=np.random.default_rng(5), n_resamples=100)
    np.testing.assert_array_equal(a.low, g.low)


def test_interval_contains_point_estimate_and_day_axis():
    rng = np.random.default_rng(2)
    mse = rng.gamma(2.0, 1.0, size=(64, 5))
    ci = bootstrap_rmse(mse, seed=0)
    np.testing.assert_allclose(ci.estimate, np.sqrt(mse.mean(axis=0)))
    assert np.all(ci.low < ci.estimate) and np.all(ci.estimate < ci.high)
    # The day axis can be anywhere; torch input is accepted.
    moved = bootstrap_rmse(torch.from_numpy(mse.T.copy()), seed=0, axis=1)
    np.testing.assert_allclose(moved.low, ci.low)
    acc = bootstrap_acc(rng.uniform(0.5, 0.9, size=(64, 7, 5)), seed=0)
    assert acc.estimate.shape == (7, 5)
    assert np.all(acc.low <= acc.estimate) and np.all(acc.estimate <= acc.high)


def test_rmse_resamples_mse_then_takes_the_root():
    # Two days with MSE 0 and 4: RMSE = sqrt(2), not the mean of the per-day RMSEs (1).
    mse = np.array([0.0, 4.0] * 10)
    ci = bootstrap_rmse(mse, block=1, n_resamples=300, seed=0)
    assert ci.estimate == pytest.approx(np.sqrt(2.0))
    idx = block_bootstrap_indices(20, block=1, n_resamples=300, seed=0)
    roots = np.sqrt(mse[idx].mean(axis=1))
    assert ci.low == pytest.approx(np.quantile(roots, 0.025))
    assert ci.high == pytest.approx(np.quantile(roots, 0.975))
    with pytest.raises(ValueError, match="negative"):
        bootstrap_rmse(-mse)


def test_field_helpers_match_metrics():
    rng = np.random.default_rng(4)
    lat = np.linspace(-78.75, 78.75, 8)
    truth = rng.normal(size=(21, 2, 8, 16))
    forecast = truth + rng.normal(scale=0.5, size=truth.shape)
    clim = np.zeros_like(truth)
    r = rmse_interval(forecast, truth, lat, n_resamples=100)
    np.testing.assert_allclose(r.estimate, metrics.lat_weighted_rmse(forecast, truth, lat, 0))
    a = acc_interval(forecast, truth, clim, lat, n_resamples=100)
    np.testing.assert_allclose(a.estimate,
                               metrics.lat_weighted_acc(forecast, truth, clim, lat, 0))
    table = interval_table({"model": r}, ["t2m", "z500"])
    assert list(table["variable"]) == ["t2m", "z500"]
    np.testing.assert_allclose(table["low"], r.low)
    assert r.by_name(["t2m", "z500"])["z500"] == [r.low[1], r.high[1]]
    assert r.pairs() == [[r.low[0], r.high[0]], [r.low[1], r.high[1]]]


def test_block_interval_wider_than_iid_under_strong_autocorrelation():
    x = ar1(1, 512, 0.9, np.random.default_rng(0))[0]
    iid = bootstrap_mean(x, block=1, seed=0)
    blocked = bootstrap_mean(x, block=7, seed=0)
    long = bootstrap_mean(x, block=30, seed=0)
    width = {k: float(v.high - v.low) for k, v in
             {"iid": iid, "week": blocked, "month": long}.items()}
    # Theory: the variance of the mean grows by (1 + phi) / (1 - phi) = 19 (width x4.4) and the
    # block bootstrap recovers part of it (blocks of 7 days capture lags < 7).
    assert width["week"] > 1.8 * width["iid"]
    assert width["month"] > width["week"]


def expected_coverage(phi: float, block: int, level: float) -> float:
    """Large-sample coverage of the block bootstrap of an AR(1) mean.

    The circular block bootstrap estimates the variance of the mean with Bartlett weights,
    ``sum_{|k| < b} (1 - |k| / b) phi^|k|`` (times ``sigma^2 / T``), against the true
    ``(1 + phi) / (1 - phi)``; the interval's half-width shrinks by the root of the ratio.
    """
    k = np.arange(1, block)
    estimated = 1 + 2 * np.sum((1 - k / block) * phi**k)
    true = (1 + phi) / (1 - phi)
    z = NormalDist().inv_cdf((1 + level) / 2) * np.sqrt(estimated / true)
    return 2 * NormalDist().cdf(z) - 1


@pytest.mark.parametrize("phi, block", [(0.0, 1), (0.5, 7)])
def test_coverage_close_to_nominal(phi, block):
    # 300 simulated 256-day periods with true mean 0 (one vectorised call for all of them).
    # The 90 % interval should contain 0 as often as theory says: 0.90 for iid days and the
    # iid bootstrap; ~0.86 for phi = 0.5 and weekly blocks (blocks shorter than the memory
    # miss part of the variance). Binomial s.e. of the estimate ~0.02.
    rng = np.random.default_rng(10)
    series = ar1(300, 256, phi, rng).T
    ci = bootstrap_mean(series, block=block, n_resamples=400, level=0.9, seed=1)
    coverage = float(np.mean((ci.low <= 0) & (0 <= ci.high)))
    assert abs(coverage - expected_coverage(phi, block, 0.9)) < 0.06
    if phi > 0:
        iid = bootstrap_mean(series, block=1, n_resamples=400, level=0.9, seed=1)
        iid_coverage = float(np.mean((iid.low <= 0) & (0 <= iid.high)))
        assert iid_coverage < expected_coverage(phi, 1, 0.9) + 0.03  # theory ~0.66
        assert coverage > iid_coverage + 0.1


def test_bad_settings_raise_with_fix():
    values = np.zeros(10)
    with pytest.raises(ValueError, match="longer than"):
        bootstrap_mean(values, block=11)
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean(values, level=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_mean(values, n_resamples=1)
    with pytest.raises(ValueError, match="block"):
        bootstrap_mean(values, block=0)
    with pytest.raises(ValueError, match="seed"):
        bootstrap_mean(values, seed=1.5)
    with pytest.raises(ValueError, match="day axis"):
        bootstrap_mean(np.float64(1.0))
    ci = BootstrapInterval(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3)), 0.95, 7, 10, 20)
    with pytest.raises(ValueError, match="1-D"):
        ci.by_name(["a", "b"])


def test_rmse_ratio_is_paired_and_matches_the_two_rmses():
    from geofusion.verification.bootstrap import bootstrap_rmse_ratio
    rng = np.random.default_rng(3)
    weather = rng.gamma(2.0, size=(70, 2))            # shared day-to-day difficulty
    mse_a, mse_b = 0.8 * weather, weather * rng.uniform(0.95, 1.05, size=(70, 2))
    ratio = bootstrap_rmse_ratio(mse_a, mse_b, n_resamples=300, seed=1)
    a = bootstrap_rmse(mse_a, n_resamples=300, seed=1)
    b = bootstrap_rmse(mse_b, n_resamples=300, seed=1)
    # Same days, same resamples: the estimate is the ratio of the two RMSEs (float64 roots).
    np.testing.assert_allclose(ratio.estimate, a.estimate / b.estimate, rtol=1e-12)
    # Paired: the shared weather cancels, so the ratio's interval is far narrower than the
    # ratio of the unpaired intervals' ends and lies below 1.
    assert np.all(ratio.high < 1)
    assert np.all(ratio.high - ratio.low < 0.5 * (a.high / b.low - a.low / b.high))
    # Independent loop for one resample set: the per-resample ratios' quantiles.
    idx = block_bootstrap_indices(70, 7, 300, seed=1)
    loop = np.sqrt(mse_a[idx].mean(1) / mse_b[idx].mean(1))
    np.testing.assert_allclose(ratio.low, np.quantile(loop, 0.025, axis=0), rtol=1e-10)
    with pytest.raises(ValueError, match="same days"):
        bootstrap_rmse_ratio(mse_a, mse_b[:-1])
