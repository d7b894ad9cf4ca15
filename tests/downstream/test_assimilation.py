"""Latent data assimilation: covariances, 3D-Var, blend and cycling on small hand-checkable
problems (linear decoders, where the analysis has a closed form)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from geofusion.data.observations import Observation, correlated_noise_covariance
from geofusion.downstream.assimilation import (
    EncodeOnly,
    FreeRun,
    Latent3DVar,
    LatentBlend,
    LatentCovariance,
    ObservationError,
    VariationalCost,
    cycle_rmse,
    decoder_error_variance,
    encoder_errors,
    latent_3dvar,
    latent_forecast_errors,
    run_cycle,
    shrunk_covariance,
)
from geofusion.downstream.forecasting import LatentForecaster, LatentSeq2Seq, LatentStandardiser
from geofusion.verification.metrics import lat_weighted_rmse

C, H, W, D = 2, 4, 8, 6


def linear_decoder(seed: int = 0, dtype=torch.float64):
    """D(z) = A z + c, as a callable and its matrices ((C*H*W, D), (C*H*W,))."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(C * H * W, D, generator=g, dtype=dtype)
    c = torch.randn(C * H * W, generator=g, dtype=dtype)
    return (lambda z: (z @ a.T.to(z.dtype) + c.to(z.dtype)).reshape(len(z), C, H, W)), a, c


def test_diagonal_covariance_is_the_sample_variance():
    x = np.random.default_rng(0).normal(size=(300, D)) * np.arange(1, D + 1)
    b = LatentCovariance.estimate(x)
    assert b.rank == 0
    np.testing.assert_allclose(b.diagonal.numpy(), x.var(axis=0, ddof=1), rtol=1e-5)


def test_low_rank_plus_diagonal_covariance_is_recovered_from_gaussian_samples():
    rng = np.random.default_rng(1)
    u = rng.normal(size=(D, 2))
    d = rng.uniform(0.2, 0.6, size=D)
    truth = np.diag(d) + u @ u.T
    x = rng.multivariate_normal(np.zeros(D), truth, size=20000)
    b = LatentCovariance.estimate(x, rank=2)
    dense = b.dense().double().numpy()
    assert np.linalg.norm(dense - truth) / np.linalg.norm(truth) < 0.05
    square_root = b.square_root
    assert square_root.shape == (D, D + 2)
    torch.testing.assert_close(square_root @ square_root.T, b.dense(), rtol=1e-5, atol=1e-5)


def test_covariance_rejects_bad_samples():
    with pytest.raises(ValueError, match="NaN"):
        LatentCovariance.estimate(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="rank"):
        LatentCovariance.estimate(np.ones((5, 3)), rank=3)


def test_observation_error_cholesky_reproduces_noise_plus_representation_covariance():
    observed = torch.zeros(H, W, dtype=torch.bool)
    observed[1, 2] = observed[1, 3] = observed[3, 7] = observed[0, 0] = True
    rep = torch.tensor([0.1, 0.3])
    r = ObservationError(noise_std=0.5, noise_length=1.0, representation_var=rep)
    chol = r.cholesky(observed)
    index = observed.reshape(-1).nonzero().squeeze(1)
    noise = correlated_noise_covariance((H, W), 1.0, 0.5)[index][:, index]
    for c in range(C):
        expected = noise + rep[c].double() * torch.eye(len(index), dtype=torch.float64)
        torch.testing.assert_close(chol[c] @ chol[c].T, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="singular"):
        ObservationError(0.0, 0.0, torch.tensor([0.0, 0.1]))


def test_observation_error_factorises_each_observed_pattern_once():
    rep = torch.tensor([0.1, 0.3])
    r = ObservationError(noise_std=0.5, noise_length=1.0, representation_var=rep)
    first = torch.zeros(H, W, dtype=torch.bool)
    first[0, :3] = True
    second = first.clone()
    second[2, 5] = True
    a = r.cholesky(first, torch.float32)
    assert a.dtype == torch.float32
    assert r.cholesky(first.clone(), torch.float32) is a      # same pattern: kept factor
    b = r.cholesky(second, torch.float32)
    assert b is not a and b.shape == (C, 4, 4)
    torch.testing.assert_close(a, r.cholesky(first).float())  # float64 factor, same values
    # an equal ObservationError built anew computes the same factor
    fresh = ObservationError(noise_std=0.5, noise_length=1.0, representation_var=rep)
    torch.testing.assert_close(fresh.cholesky(second, torch.float32), b)


def test_gradient_of_the_cost_equals_finite_differences():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, C * H * W)).double()
    decode = lambda z: net(z).reshape(len(z), C, H, W)  # noqa: E731
    b = LatentCovariance.estimate(np.random.default_rng(0).normal(size=(200, D)), rank=2)
    r = ObservationError(0.3, 1.0, torch.tensor([0.05, 0.1]))
    observed = torch.rand(2, H, W, generator=torch.Generator().manual_seed(1)) < 0.5
    y = torch.randn(2, C, H, W, dtype=torch.float64)
    cost = VariationalCost(torch.randn(2, D, dtype=torch.float64), y, observed, decode, b, r)
    v = torch.randn(cost.control_shape, dtype=torch.float64)
    grad = cost.gradient(v)
    eps = 1e-6
    basis = torch.eye(v.numel(), dtype=torch.float64).reshape(-1, *v.shape)
    numeric = torch.stack([(cost(v + eps * e) - cost(v - eps * e)) / (2 * eps) for e in basis])
    torch.testing.assert_close(grad, numeric.detach().reshape(v.shape), rtol=1e-6, atol=1e-7)


def test_3dvar_with_a_linear_decoder_equals_the_closed_form_blue_and_decreases_monotonically():
    decode, a, c = linear_decoder()
    b = LatentCovariance.estimate(np.random.default_rng(2).normal(size=(400, D)), rank=1)
    r = ObservationError(0.4, 1.0, torch.tensor([0.2, 0.2]))
    observed = torch.rand(H, W, generator=torch.Generator().manual_seed(3)) < 0.6
    zb = torch.randn(1, D, dtype=torch.float64)
    y = torch.randn(1, C, H, W, dtype=torch.float64)
    result = latent_3dvar(zb, y, observed[None], decode, b, r, max_iter=100, tolerance=0)
    # BLUE: z_b + B H^T (H B H^T + R)^-1 (y - H z_b), H = rows of A at observed points
    index = observed.reshape(-1).nonzero().squeeze(1)
    rows = torch.cat([index + k * H * W for k in range(C)])
    h_op = a[rows]
    chol = r.cholesky(observed)
    r_full = torch.block_diag(*[chol[k] @ chol[k].T for k in range(C)])
    bd = b.dense().double()
    innovation = y.reshape(-1)[rows] - (h_op @ zb[0] + c[rows])
    blue = zb[0] + bd @ h_op.T @ torch.linalg.solve(h_op @ bd @ h_op.T + r_full, innovation)
    torch.testing.assert_close(result.analysis[0], blue, rtol=1e-4, atol=1e-4)
    costs = np.array(result.costs)
    assert np.all(np.diff(costs) <= 1e-9 * costs[0]), costs
    assert costs[-1] < costs[0]


def test_joint_minimisation_of_independent_days_equals_separate_ones():
    decode, _, _ = linear_decoder(seed=6)
    b = LatentCovariance.estimate(np.random.default_rng(3).normal(size=(300, D)), rank=2)
    rs = [ObservationError(0.4, 1.0, torch.tensor([0.2, 0.1])),
          ObservationError(0.1, 0.0, torch.tensor([0.3, 0.3]))]
    observed = torch.rand(2, H, W, generator=torch.Generator().manual_seed(4)) < 0.4
    zb = torch.randn(2, D, dtype=torch.float64)
    y = torch.randn(2, C, H, W, dtype=torch.float64)
    joint = latent_3dvar(zb, y, observed, decode, b, rs, max_iter=200, tolerance=0)
    for n in range(2):
        alone = latent_3dvar(zb[n:n + 1], y[n:n + 1], observed[n:n + 1], decode, b, rs[n],
                             max_iter=200, tolerance=0)
        torch.testing.assert_close(joint.analysis[n], alone.analysis[0], rtol=1e-4, atol=1e-4)


def test_3dvar_without_observations_returns_the_background():
    decode, _, _ = linear_decoder()
    b = LatentCovariance.estimate(np.random.default_rng(0).normal(size=(50, D)))
    zb = torch.randn(2, D, dtype=torch.float64)
    result = latent_3dvar(zb, torch.randn(2, C, H, W, dtype=torch.float64),
                          torch.zeros(2, H, W, dtype=torch.bool), decode, b,
                          ObservationError(0.5, 1.0, torch.tensor([0.1, 0.1])))
    assert torch.equal(result.analysis, zb)


def test_3dvar_with_complete_exact_observations_and_tiny_r_finds_the_decoders_best_fit():
    decode, a, c = linear_decoder(seed=4)
    b = LatentCovariance.estimate(np.random.default_rng(0).normal(size=(200, D)))
    truth = torch.randn(C, H, W, dtype=torch.float64)
    best = torch.linalg.lstsq(a, truth.reshape(-1) - c).solution
    r = ObservationError(0.0, 0.0, torch.tensor([1e-6, 1e-6]))
    result = latent_3dvar(torch.zeros(1, D, dtype=torch.float64), truth[None],
                          torch.ones(1, H, W, dtype=torch.bool), decode, b, r, max_iter=200,
                          tolerance=0)
    torch.testing.assert_close(result.analysis[0], best, rtol=1e-3, atol=1e-3)


def test_blend_gain_matches_the_kalman_gain_and_beats_both_inputs():
    rng = np.random.default_rng(5)
    bt = np.diag([1.0, 0.5, 2.0])
    rt = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 0.5]])
    eb = rng.multivariate_normal(np.zeros(3), bt, size=20000)
    eo = rng.multivariate_normal(np.zeros(3), rt, size=20000)
    blend = LatentBlend.estimate(eb, eo)
    expected = bt @ np.linalg.inv(bt + rt)
    np.testing.assert_allclose(blend.gain.numpy(), expected, atol=0.03)
    truth = torch.as_tensor(rng.normal(size=(5000, 3)), dtype=torch.float32)
    draw = lambda cov: torch.as_tensor(rng.multivariate_normal(np.zeros(3), cov, 5000),  # noqa: E731
                                       dtype=torch.float32)
    zb, zo = truth + draw(bt), truth + draw(rt)
    za = blend.update(zb, zo)
    mse = lambda z: float(((z - truth) ** 2).mean())  # noqa: E731
    assert mse(za) < min(mse(zb), mse(zo))
    # one gain per experiment: each experiment's update uses its own
    stacked = LatentBlend(torch.stack([blend.gain, torch.eye(3)]), None,
                          torch.stack([blend.observation_bias, torch.zeros(3)]))
    both = stacked.update(torch.stack([zb[0], zb[1]]), torch.stack([zo[0], zo[1]]))
    torch.testing.assert_close(both[0], blend.update(zb[:1], zo[:1])[0])
    torch.testing.assert_close(both[1], zo[1])


def test_blend_corrects_a_biased_encoder_and_then_beats_both_inputs():
    """A Gaussian toy with a biased observation (the quick sparse-view encoder's error is
    mostly bias): the bias-corrected blend beats background and observation and reaches the
    Kalman analysis error tr((I - K) B); a gain without the correction is worse."""
    rng = np.random.default_rng(7)
    bt = np.diag([1.0, 0.5, 2.0])
    rt = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 0.5]])
    bias = np.array([2.0, -1.5, 1.0])
    draw = lambda cov, n: rng.multivariate_normal(np.zeros(3), cov, n)  # noqa: E731
    blend = LatentBlend.estimate(draw(bt, 20000), bias + draw(rt, 20000))
    np.testing.assert_allclose(blend.observation_bias.numpy(), bias, atol=0.05)
    naive = LatentBlend.estimate(draw(bt, 20000), bias + draw(rt, 20000), debias=False)
    assert naive.observation_bias is None
    truth = torch.as_tensor(rng.normal(size=(20000, 3)), dtype=torch.float32)
    zb = truth + torch.as_tensor(draw(bt, 20000), dtype=torch.float32)
    zo = truth + torch.as_tensor(bias + draw(rt, 20000), dtype=torch.float32)
    mse = lambda z: float(((z - truth) ** 2).sum(dim=1).mean())  # noqa: E731
    za = blend.update(zb, zo)
    kalman = np.trace((np.eye(3) - bt @ np.linalg.inv(bt + rt)) @ bt)
    assert mse(za) < min(mse(zb), mse(zo))
    assert abs(mse(za) - kalman) < 0.05 * kalman
    assert mse(naive.update(zb, zo)) > 1.3 * mse(za)


class LinearMethod(nn.Module):
    """A tiny 'method': embed = linear map of the flattened field (missing = 0); also used by
    tests/test_assimilation_experiment.py."""

    mask_channel = False

    def __init__(self, shape: tuple[int, int, int] = (C, H, W), latent_dim: int = D) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(int(np.prod(shape)), latent_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def persistence_forecaster(context: int = 3) -> LatentForecaster:
    # An untrained LatentSeq2Seq is persistence (its head starts at zero).
    decoder = nn.Sequential(nn.Linear(D, C * H * W), nn.Unflatten(1, (C, H, W)))
    standardiser = LatentStandardiser(torch.zeros(D), torch.ones(D))
    return LatentForecaster(LinearMethod(), decoder, LatentSeq2Seq(D, 8), standardiser, context)


def test_cycle_with_persistence_background_chains_the_analyses():
    forecaster = persistence_forecaster()
    initial = torch.randn(2, 3, D)  # two experiments side by side
    encoded = torch.randn(5, 2, D)
    free = run_cycle(forecaster, initial, FreeRun(), 5)
    torch.testing.assert_close(free.analysis, initial[:, -1].expand(5, 2, D))
    encode_only = run_cycle(forecaster, initial, EncodeOnly(encoded), 5)
    torch.testing.assert_close(encode_only.analysis, encoded)
    torch.testing.assert_close(encode_only.background[1:], encoded[:-1])
    torch.testing.assert_close(encode_only.background[0], initial[:, -1])
    single = run_cycle(forecaster, initial[0], EncodeOnly(encoded[:, :1]), 5)
    torch.testing.assert_close(single.analysis, encoded[:, :1])
    with pytest.raises(ValueError, match="initial_context"):
        run_cycle(forecaster, torch.randn(2, D), FreeRun(), 5)


def test_3dvar_scheme_cycles_and_records_costs():
    forecaster = persistence_forecaster()
    decode, _, _ = linear_decoder(dtype=torch.float32)
    b = LatentCovariance.estimate(np.random.default_rng(0).normal(size=(50, D)))
    observed = torch.rand(4, 2, H, W, generator=torch.Generator().manual_seed(0)) < 0.3
    scheme = Latent3DVar(torch.randn(4, 2, C, H, W), observed, decode, b,
                         ObservationError(0.3, 1.0, torch.tensor([0.1, 0.1])), max_iter=5)
    result = run_cycle(forecaster, torch.zeros(2, 3, D), scheme, 4)
    assert result.analysis.shape == (4, 2, D) and len(scheme.costs) == 4
    assert not torch.equal(result.analysis, result.background)


def test_error_estimates_follow_their_definitions():
    forecaster = persistence_forecaster(context=2)
    latents = torch.randn(10, D)
    errors = latent_forecast_errors(forecaster, latents)
    torch.testing.assert_close(errors, latents[1:-1] - latents[2:])
    fields = torch.randn(6, C, H, W)
    exact = Observation(kind="pixel", min_ratio=0.0, max_ratio=0.0)
    assert encoder_errors(forecaster, fields, exact, torch.Generator()).abs().max() < 1e-5
    sparse = Observation(kind="pixel", min_ratio=0.5, max_ratio=0.5)
    assert encoder_errors(forecaster, fields, sparse, torch.Generator()).abs().max() > 1e-3
    with torch.no_grad():
        recon = forecaster.decoder(forecaster.method.embed(fields))
    torch.testing.assert_close(decoder_error_variance(forecaster, fields),
                               ((recon - fields) ** 2).mean(dim=(0, 2, 3)))


def test_cycle_rmse_is_the_per_day_latitude_weighted_rmse_in_physical_units():
    lat = np.linspace(-80, 80, H)
    std, mean = np.array([2.0, 10.0]), np.array([280.0, 5.0])
    destandardise = lambda x: x * std[:, None, None] + mean[:, None, None]  # noqa: E731
    a, t = np.random.default_rng(0).normal(size=(2, 3, C, H, W))
    scores = cycle_rmse(a, t, lat, destandardise)
    for day in range(3):
        for ch in range(C):
            expected = lat_weighted_rmse((a[day, ch] - t[day, ch]) * std[ch], 0.0 * a[day, ch], lat)
            assert scores[day, ch] == pytest.approx(float(expected))


def test_shrunk_covariance_is_the_ledoit_wolf_shrinkage_of_the_sample_covariance():
    # N < D: the sample covariance is singular, the shrunk one (1 - d) S + d mu I is not.
    x = np.random.default_rng(0).normal(size=(20, 30)) * np.linspace(0.5, 2.0, 30)
    cov = shrunk_covariance(torch.as_tensor(x))
    centred = x - x.mean(0)
    sample = centred.T @ centred / len(x)
    mu = np.trace(sample) / 30
    off = cov - sample
    shrinkage = 1 - (cov[0, 1] / sample[0, 1])  # the same factor on every off-diagonal entry
    assert 0 < shrinkage < 1
    np.testing.assert_allclose(off, shrinkage * (mu * np.eye(30) - sample), atol=1e-10)
    assert np.linalg.eigvalsh(cov).min() > 0 and np.linalg.matrix_rank(sample) < 30


def test_differentiable_decoder_takes_a_closed_form_decoder_with_buffers_only():
    """Latent 3D-Var analyses through the decoder chosen on validation days, which may be the
    ridge decoder (buffers, no parameters): gradients must still reach the latent."""
    from types import SimpleNamespace

    from geofusion.downstream.assimilation import differentiable_decoder
    from geofusion.models.ridge_decoder import fit_ridge_decoder

    rng = np.random.default_rng(0)
    latents = rng.normal(size=(40, 3)).astype("float32")
    fields = rng.normal(size=(40, 2, 4, 8)).astype("float32")
    ridge = fit_ridge_decoder(latents, fields, ridge=0.1)
    assert not list(ridge.parameters())
    scaler = LatentStandardiser(torch.full((3,), 2.0), torch.full((3,), 3.0))
    decode = differentiable_decoder(SimpleNamespace(decoder=ridge, standardiser=scaler))
    z = torch.zeros(5, 3, requires_grad=True)
    out = decode(z)
    torch.testing.assert_close(out, ridge(scaler.inverse(z.detach())), rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
