"""The linear inverse model: M is the least-squares one-step propagator of the EOF
coefficients, recovers a known linear dynamics, iterates for longer leads, and reads the
training days only."""

from __future__ import annotations

import numpy as np
import pytest

from geofusion.data.climatology import day_of_year
from geofusion.data.eof import fit_eof
from geofusion.verification.linear_inverse_model import (
    fit_linear_inverse_model,
    linear_inverse_model_source,
)
from tests.verification.test_baselines import make_prepared, perturb_valid


def _ar1_world(n_days: int = 1500, k: int = 4, seed: int = 0):
    """Fields ``(T, 2, 6, 8)`` whose anomaly is ``k`` fixed orthogonal patterns with
    coefficients following ``z_{t+1} = A z_t + noise`` (A known, stable, non-normal)."""
    rng = np.random.default_rng(seed)
    a_true = np.diag([0.9, 0.7, 0.5, 0.3])[:k, :k]
    a_true[0, 1] = 0.2
    patterns = np.linalg.qr(rng.normal(size=(2 * 6 * 8, k)))[0].T * 10.0
    z = np.zeros((n_days, k))
    for t in range(1, n_days):
        z[t] = a_true @ z[t - 1] + rng.normal(size=k)
    fields = (z @ patterns).reshape(n_days, 2, 6, 8).astype(np.float32)
    times = np.datetime64("2000-01-01") + np.arange(n_days).astype("timedelta64[D]")
    prepared = make_prepared(fields, times, n_train=1200, lat=np.zeros(6))
    return prepared, a_true, z


def test_propagator_is_the_least_squares_fit_of_consecutive_coefficients():
    prepared, _, _ = _ar1_world()
    lim = fit_linear_inverse_model(prepared, k=4)
    # Independent path: the training anomalies through the same EOFs, then an explicit
    # least-squares solve of z_{t+1} = M z_t over consecutive days.
    times = prepared.train_times
    a = prepared.train.astype(np.float64) - lim.climatology[day_of_year(times) - 1]
    z = lim.code.encode(a).astype(np.float64)
    m_ref, *_ = np.linalg.lstsq(z[:-1], z[1:], rcond=None)
    np.testing.assert_allclose(lim.propagator, m_ref.T, rtol=1e-6, atol=1e-8)
    residual = z[1:] - z[:-1] @ m_ref
    np.testing.assert_allclose(lim.error_covariance, residual.T @ residual / len(residual),
                               rtol=1e-6, atol=1e-8)


def test_recovers_known_linear_dynamics():
    prepared, a_true, _ = _ar1_world(n_days=6000, k=4)
    prepared = make_prepared(np.concatenate([prepared.train, prepared.valid]),
                             np.concatenate([prepared.train_times, prepared.valid_times]),
                             n_train=5500, lat=np.zeros(6))
    lim = fit_linear_inverse_model(prepared, k=4)
    # The EOF basis is the pattern basis up to rotation R: M = R A R^T; compare invariants.
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(lim.propagator).real),
                               np.sort(np.linalg.eigvals(a_true).real), atol=0.05)
    assert abs(np.trace(lim.propagator) - np.trace(a_true)) < 0.06


def test_longer_leads_iterate_the_propagator():
    prepared, _, _ = _ar1_world()
    lim = fit_linear_inverse_model(prepared, k=4)
    inits = np.array([3, 10])
    fc = lim.forecast(prepared.valid, prepared.valid_times, inits, steps=3)
    start_times = prepared.valid_times[inits]
    anomaly = prepared.valid[inits] - lim.climatology[day_of_year(start_times) - 1]
    z3 = lim.code.encode(anomaly).astype(np.float64) @ np.linalg.matrix_power(
        lim.propagator, 3).T
    valid_times = start_times + np.timedelta64(3, "D")
    expected = lim.code.decode(z3) + lim.climatology[day_of_year(valid_times) - 1]
    assert fc.shape == (2, 3, 2, 6, 8)
    np.testing.assert_allclose(fc[:, 2], expected, rtol=1e-4, atol=1e-4)


def test_beats_persistence_on_a_linear_world():
    prepared, _, _ = _ar1_world()
    lim = fit_linear_inverse_model(prepared, k=4)
    inits = np.arange(len(prepared.valid) - 2)
    fc = linear_inverse_model_source(lim, prepared.valid, prepared.valid_times)(inits, 1)
    truth = prepared.valid[inits + 1]
    lim_mse = float(((fc[:, 0].numpy() - truth) ** 2).mean())
    persistence_mse = float(((prepared.valid[inits] - truth) ** 2).mean())
    assert lim_mse < 0.8 * persistence_mse


def test_reads_the_training_days_only():
    prepared, _, _ = _ar1_world()
    a = fit_linear_inverse_model(prepared, k=3)
    b = fit_linear_inverse_model(perturb_valid(prepared), k=3)
    np.testing.assert_array_equal(a.propagator, b.propagator)


def test_gaps_in_the_training_days_are_not_paired():
    prepared, _, _ = _ar1_world()
    keep = np.ones(len(prepared.train), bool)
    keep[::2] = False                      # every other day: no consecutive pair at all
    gappy = make_prepared(prepared.train[keep], prepared.train_times[keep], n_train=keep.sum(),
                          lat=np.zeros(6))
    with pytest.raises(ValueError, match="pairs of consecutive training days"):
        fit_linear_inverse_model(gappy, k=3)


def test_rejects_a_code_of_another_size_and_bad_coefficients():
    prepared, _, _ = _ar1_world()
    code = fit_eof(prepared.train, prepared.lat, 4)
    with pytest.raises(ValueError, match="code has 4 modes"):
        fit_linear_inverse_model(prepared, k=3, code=code)
    lim = fit_linear_inverse_model(prepared, k=4, code=code)
    with pytest.raises(ValueError, match=r"z must be \(B, 4\)"):
        lim.step(np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="steps must be"):
        lim.step(np.zeros((2, 4)), 0)
