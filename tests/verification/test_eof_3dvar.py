"""Reduced-rank 3D-Var in EOF space: the closed-form analysis equals the Kalman update solved
densely, keeps the background without observations, fits perfect dense observations, cycles
with the LIM's forecast as background, and is fitted on training days only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofusion.data.climatology import day_of_year
from geofusion.downstream.assimilation import ObservationError
from geofusion.verification.eof_3dvar import EOF3DVar, fit_eof_3dvar, truncation_error_variance
from tests.verification.test_baselines import make_prepared, perturb_valid
from tests.verification.test_linear_inverse_model import _ar1_world

GRID = (6, 8)


@pytest.fixture(scope="module")
def world():
    """The LIM test's AR(1) world (4 patterns) plus white small-scale noise, so 3 modes
    leave a truncation error; uniform latitude weights (lat 0)."""
    prepared, _, _ = _ar1_world(n_days=1500, k=4)
    rng = np.random.default_rng(1)
    fields = np.concatenate([prepared.train, prepared.valid])
    fields = (fields + 0.3 * rng.normal(size=fields.shape)).astype(np.float32)
    times = np.concatenate([prepared.train_times, prepared.valid_times])
    prepared = make_prepared(fields, times, n_train=1200, lat=np.zeros(6))
    return prepared, fit_eof_3dvar(prepared, k=3, noise_std=0.2, noise_length=1.0)


def _anomaly(var: EOF3DVar, fields: np.ndarray, times: np.ndarray) -> np.ndarray:
    return fields.astype(np.float64) - var.model.climatology[day_of_year(times) - 1]


def test_analysis_equals_the_dense_kalman_update(world):
    prepared, var = world
    rng = np.random.default_rng(0)
    n = 4
    times = prepared.valid_times[:n]
    y = _anomaly(var, prepared.valid[:n], times)
    mask = rng.random((n, *GRID)) < 0.4
    mask[1] = mask[0]                                        # a shared pattern (cached)
    zb = rng.normal(size=(n, var.k)) * 3
    for inflation in (1.0, 2.5):
        za = var.analyse(zb, y, mask, inflation)
        b = inflation * var.model.error_covariance
        code = var.model.code
        zero = code.decode(np.zeros((1, var.k)))[0].astype(np.float64)
        # G by decoding unit vectors (independent of observation_operator); R the latent
        # 3D-Var's ObservationError with the truncation error as its representation error.
        columns = np.stack([code.decode(np.eye(var.k)[j:j + 1])[0].astype(np.float64) - zero
                            for j in range(var.k)], axis=-1)          # (C, H, W, k)
        r_model = ObservationError(0.2, 1.0, torch.as_tensor(var.representation_var))
        for t in range(n):
            g = columns[:, mask[t]].reshape(-1, var.k)                # (C m, k)
            chol = r_model.cholesky(torch.as_tensor(mask[t])).numpy()
            r = np.zeros((len(g), len(g)))
            m = mask[t].sum()
            for c in range(len(chol)):
                r[c * m:(c + 1) * m, c * m:(c + 1) * m] = chol[c] @ chol[c].T
            d = y[t][:, mask[t]].reshape(-1) - zero[:, mask[t]].reshape(-1) - g @ zb[t]
            expected = zb[t] + b @ g.T @ np.linalg.solve(g @ b @ g.T + r, d)
            # Two float64 solves of the same system in different forms: agree to ~1e-10
            # relative; the R factors were computed in float64 and match to rounding.
            np.testing.assert_allclose(za[t], expected, rtol=1e-7, atol=1e-7)


def test_without_observations_the_analysis_is_the_background(world):
    prepared, var = world
    zb = np.random.default_rng(1).normal(size=(3, var.k))
    y = _anomaly(var, prepared.valid[:3], prepared.valid_times[:3])
    out = var.analyse(zb, y, np.zeros((3, *GRID), bool))
    np.testing.assert_array_equal(out, zb)


def test_perfect_dense_observations_give_the_eof_projection_of_the_truth(world):
    prepared, var = world
    exact = EOF3DVar(var.model, np.full(2, 1e-10), 0.0, 0.0)
    y = _anomaly(var, prepared.valid[:3], prepared.valid_times[:3])
    zb = np.zeros((3, var.k))
    out = exact.analyse(zb, y, np.ones((3, *GRID), bool))
    # Uniform latitude weights: the least-squares fit of the observations is the projection.
    np.testing.assert_allclose(out, var.model.code.encode(y), rtol=1e-4, atol=1e-4)


def test_cycle_forecasts_each_analysis_with_the_lim(world):
    prepared, var = world
    t, days = 5, prepared.valid_times[:5]
    rng = np.random.default_rng(2)
    obs = np.stack([prepared.valid[:t], prepared.valid[:t]], axis=1)
    mask = rng.random((t, 2, *GRID)) < 0.3
    mask[:, 1] = False                                          # experiment 1: no observations
    out = var.cycle(obs, mask, days, inflation=[1.5, 1.0])
    code, m = var.model.code, var.model.propagator
    clim = var.model.climatology[day_of_year(days) - 1]
    z = code.encode(np.zeros((1, 2, *GRID), np.float32)).astype(np.float64)[0]
    z_free = z.copy()
    for day in range(t):
        z = var.analyse((m @ z)[None], _anomaly(var, obs[day, :1], days[day:day + 1]),
                        mask[day, :1], 1.5)[0]
        np.testing.assert_allclose(out[day, 0], clim[day] + code.decode(z[None])[0],
                                   rtol=1e-5, atol=1e-5)     # float32 output of float64
        z_free = m @ z_free
        np.testing.assert_allclose(out[day, 1], clim[day] + code.decode(z_free[None])[0],
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="consecutive"):
        var.cycle(obs[[0, 2]], mask[[0, 2]], days[[0, 2]])


def test_truncation_error_variance_and_training_days_only(world):
    prepared, var = world
    a = _anomaly(var, prepared.train, prepared.train_times)
    code = var.model.code
    residual = code.decode(code.encode(a)).astype(np.float64) - a
    np.testing.assert_allclose(truncation_error_variance(code, a, chunk=100),
                               (residual**2).mean(axis=(0, 2, 3)), rtol=1e-10)
    assert (var.representation_var > 0.05).all()                # the 0.3 white noise, ~0.09
    other = fit_eof_3dvar(perturb_valid(prepared), k=3, noise_std=0.2, noise_length=1.0)
    np.testing.assert_array_equal(other.model.propagator, var.model.propagator)
    np.testing.assert_array_equal(other.model.error_covariance, var.model.error_covariance)
    np.testing.assert_array_equal(other.representation_var, var.representation_var)
    with pytest.raises(ValueError, match="representation_var"):
        EOF3DVar(var.model, np.ones(3), 0.1, 1.0)


def test_a_singular_lim_error_covariance_still_gives_a_finite_analysis(world):
    """With fewer consecutive training days than about twice k the LIM's residuals span fewer
    than k directions and Q is singular (the full profile's k = 1000 on the smoke slice): the
    precision floors B's spectrum, so the analysis is finite and keeps the background where B
    has no variance, and a well-conditioned B is inverted as before."""
    import dataclasses

    from geofusion.verification.eof_3dvar import background_precision

    prepared, var = world
    q = var.model.error_covariance
    np.testing.assert_allclose(background_precision(q), np.linalg.inv(q), rtol=1e-8)
    values, vectors = np.linalg.eigh(q)
    singular = (vectors * np.r_[0.0, values[1:]]) @ vectors.T          # rank k - 1
    model = dataclasses.replace(var.model, error_covariance=singular)
    degenerate = dataclasses.replace(var, model=model)
    zb = np.random.default_rng(2).normal(size=(3, var.k))
    y = _anomaly(var, prepared.valid[:3], prepared.valid_times[:3])
    out = degenerate.analyse(zb, y, np.ones((3, *GRID), bool))
    assert np.isfinite(out).all()
    # No background variance along the null direction: the analysis keeps the background there.
    increment = out - zb
    assert np.abs(increment @ vectors[:, 0]).max() < 1e-4 * np.abs(increment).max()


def test_background_precision_is_q_inverse_over_the_inflation_from_one_decomposition(
        world, monkeypatch):
    _, var = world
    fresh = EOF3DVar(var.model, var.representation_var, var.noise_std, var.noise_length)
    calls = []
    eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda a: calls.append(a.shape) or eigh(a))
    for inflation in (1.0, 3.0, 9.0, 3.0):
        expected = np.linalg.inv(inflation * var.model.error_covariance.astype(np.float64))
        np.testing.assert_allclose(fresh.background_precision(inflation), expected,
                                   rtol=1e-8, atol=1e-10)
    assert calls == [(var.k, var.k)]  # one eigendecomposition of Q for every inflation
    with pytest.raises(ValueError, match="inflation must be > 0"):
        fresh.background_precision(0.0)
