"""The SPARTA-inspired parts: samplers, latent smoothness, ensembles and CRPS, latent diffusion,
season probe. Each test checks what the part claims against a closed form or a count."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from geofusion.data.samplers import (
    TemporalPairDataset,
    TimeAwareBatchSampler,
    draw_shifts,
    shift_probabilities,
)
from geofusion.downstream.probes import season_probe
from geofusion.learning.smoothness import latent_smoothness, latent_smoothness_loss
from geofusion.models.diffusion import LatentDenoiser, LatentDiffusion
from geofusion.verification.ensembles import (
    climatological_ensemble,
    crps_ensemble,
    crps_gaussian,
    ensemble_scores,
)
from geofusion.verification.metrics import lat_weighted_rmse

# ---- samplers -----------------------------------------------------------------------------


def test_temporal_shifts_stay_in_range_and_follow_the_exponential_law():
    rng = np.random.default_rng(0)
    days = rng.integers(0, 200, size=40000)
    partners = draw_shifts(days, 200, rng, max_shift=5, scale=10.0)
    delta = np.abs(partners - days)
    assert delta.min() >= 1 and delta.max() <= 5
    assert partners.min() >= 0 and partners.max() < 200
    frequencies = np.bincount(delta, minlength=6)[1:] / len(delta)
    np.testing.assert_allclose(frequencies, shift_probabilities(5, 10.0), atol=0.01)
    # both directions in the interior, only the inside one at the edges
    interior = (days > 10) & (days < 190)
    assert 0.45 < (partners[interior] > days[interior]).mean() < 0.55
    assert (partners[days == 0] > 0).all() and (partners[days == 199] < 199).all()


def test_temporal_pair_dataset_is_reproducible_by_seed_and_epoch():
    fields = np.arange(30, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 3, 4),
                                                                              np.float32)
    a, b = TemporalPairDataset(fields, seed=1), TemporalPairDataset(fields, seed=1)
    assert [a.partner(t) for t in range(30)] == [b.partner(t) for t in range(30)]
    x, partner, _ = a[7]
    assert float(x[0, 0, 0]) == 7 and 1 <= abs(float(partner[0, 0, 0]) - 7) <= 5
    first = [a.partner(t) for t in range(30)]
    a.set_epoch(1)
    assert [a.partner(t) for t in range(30)] != first
    with pytest.raises(ValueError, match="max_shift"):
        TemporalPairDataset(fields, max_shift=0)


def test_time_aware_batches_hold_hard_and_easy_negatives_at_their_distances():
    sampler = TimeAwareBatchSampler(3000, anchors=4, hard=2, easy=1, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3000 // 16
    for batch in batches[:20]:
        assert len(batch) == 16 and len(set(batch)) == 16
        for group in range(4):
            anchor, h1, h2, easy = batch[4 * group:4 * group + 4]
            assert 10 <= abs(h1 - anchor) <= 40 and 10 <= abs(h2 - anchor) <= 40
            assert abs(easy - anchor) >= 1000
    again = TimeAwareBatchSampler(3000, anchors=4, hard=2, easy=1, seed=3)
    assert list(again) == batches
    again.set_epoch(1)
    assert list(again) != batches


def test_time_aware_batches_in_a_series_shorter_than_twice_easy_min():
    """1500 days with easy negatives 1000 days away: days 500-999 have no easy partner, so
    only the days at either end anchor (before, such an anchor stopped the epoch)."""
    sampler = TimeAwareBatchSampler(1500, anchors=8, hard=2, easy=1, seed=0)
    anchors = []
    for batch in sampler:
        assert len(batch) == 32 and len(set(batch)) == 32
        for group in range(8):
            anchor, _, _, easy = batch[4 * group:4 * group + 4]
            assert abs(easy - anchor) >= 1000
            anchors.append(anchor)
    anchors = np.array(anchors)
    assert ((anchors < 500) | (anchors >= 1000)).all()
    assert (anchors < 500).any() and (anchors >= 1000).any()


def test_time_aware_batches_split_across_ranks_into_the_global_batch():
    kwargs = dict(n_days=3000, anchors=4, hard=1, easy=1, seed=0, world_size=2)
    ranks = [list(TimeAwareBatchSampler(rank=r, **kwargs)) for r in range(2)]
    single = list(TimeAwareBatchSampler(3000, anchors=4, hard=1, easy=1, seed=0))
    assert [a + b for a, b in zip(*ranks, strict=True)] == single
    with pytest.raises(ValueError, match="easy_min"):
        TimeAwareBatchSampler(500, easy=1)


# ---- smoothness ---------------------------------------------------------------------------


def test_smoothness_loss_is_zero_for_embeddings_linear_in_time_and_positive_otherwise():
    t = torch.arange(5.0)[:, None]
    linear = 2.0 + t * torch.tensor([[0.5, -1.0, 3.0]])
    loss = latent_smoothness_loss(linear[:-2], linear[1:-1], linear[2:], normalise=False)
    assert float(loss) == pytest.approx(0.0, abs=1e-12)
    bent = linear.clone()
    bent[2] += torch.tensor([1.0, 0.0, 0.0])
    # second differences at t=1,2,3 are (1,0,0), (-2,0,0), (1,0,0): mean of 1, 4, 1
    loss = latent_smoothness_loss(bent[:-2], bent[1:-1], bent[2:], normalise=False)
    assert float(loss) == pytest.approx(2.0)


def test_latent_smoothness_measures_steps_on_the_unit_sphere():
    angles = torch.arange(10.0) * 0.1
    circle = torch.stack([angles.cos(), angles.sin()], dim=1) * 7.0  # scale must not matter
    scores = latent_smoothness(circle)
    assert scores["mean_step"] == pytest.approx(2 * math.sin(0.05), rel=1e-6)
    assert scores["mean_second_difference"] == pytest.approx(4 * math.sin(0.05) ** 2, rel=1e-6)
    zigzag = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 5)
    assert latent_smoothness(zigzag)["curvature"] == pytest.approx(2.0)


# ---- ensembles ----------------------------------------------------------------------------


def test_crps_of_a_large_gaussian_ensemble_equals_the_closed_form():
    rng = np.random.default_rng(0)
    truth = np.array([0.3, -1.2, 2.0])
    members = rng.normal(0.5, 1.5, size=(20000, 3))  # pwm form: fast even for M = 20000
    crps = crps_ensemble(truth, members, member_axis=0)
    # closed form for N(mu, s): s [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]
    z = (truth - 0.5) / 1.5
    phi = np.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    closed = 1.5 * (z * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi))
    np.testing.assert_allclose(crps_gaussian(truth, 0.5, 1.5), closed, rtol=1e-10)
    np.testing.assert_allclose(crps, closed, rtol=0.02)
    # the O(M log M) form equals the fair estimator E|X - y| - sum_{i != j}|x_i - x_j| / 2M(M-1)
    small = members[:7, 0]
    pairs = np.abs(small[:, None] - small[None, :]).sum() / (2 * 7 * 6)
    fair = np.abs(small - truth[0]).mean() - pairs
    assert float(crps_ensemble(truth[:1], small[:, None], member_axis=0)[0]) == \
        pytest.approx(fair, rel=1e-10)


def test_ensemble_scores_spread_skill_is_one_for_a_reliable_ensemble():
    rng = np.random.default_rng(1)
    lat = np.linspace(-60, 60, 4)
    truth_mean = rng.normal(size=(200, 2, 4, 6))
    truth = truth_mean + rng.normal(size=truth_mean.shape)
    ensemble = truth_mean[None] + rng.normal(size=(10, *truth_mean.shape))
    table = ensemble_scores(ensemble, truth, lat, ["a", "b"])
    assert list(table.index) == ["a", "b"]
    np.testing.assert_allclose(table["spread_skill"], 1.0, atol=0.05)
    np.testing.assert_allclose(table["rmse_mean"],
                               lat_weighted_rmse(ensemble.mean(0), truth, lat, time_axis=0))
    # one member: CRPS is the MAE
    single = ensemble_scores(ensemble[:1], truth, lat)
    mae = np.abs(ensemble[0] - truth)
    np.testing.assert_allclose(single["crps"], (mae * (np.cos(np.deg2rad(lat)) / np.cos(
        np.deg2rad(lat)).mean())[:, None]).mean(axis=(0, 2, 3)), rtol=1e-3)


def test_climatological_ensemble_draws_the_same_day_of_year_from_training_years():
    times = pd.date_range("2000-01-01", "2003-12-31", freq="D")
    fields = times.day_of_year.to_numpy()[:, None, None, None].astype(float)
    members = climatological_ensemble(fields, times, pd.to_datetime(["2004-03-10"]), window=2)
    doy = pd.Timestamp("2004-03-10").day_of_year
    assert members.shape[1:] == (1, 1, 1, 1)
    assert np.all(np.abs(members[:, 0, 0, 0, 0] - doy) <= 2)
    assert members.shape[0] >= 4 * 5 - 2  # ~5 days in each of 4 years


# ---- diffusion ----------------------------------------------------------------------------


class _GaussianOracle(nn.Module):
    """The exact noise predictor when z_0 | c ~ N(A c, s^2 I): E[eps | z_k, c]."""

    def __init__(self, a: torch.Tensor, s: float, abar: torch.Tensor) -> None:
        super().__init__()
        self.a, self.s, self.abar = a, s, abar
        self.latent_dim = a.shape[0]

    def forward(self, z, step, condition):
        abar = self.abar[step][:, None]
        mean = condition @ self.a.T
        return (1 - abar).sqrt() * (z - abar.sqrt() * mean) / (abar * self.s**2 + 1 - abar)


def test_diffusion_sampler_with_the_exact_denoiser_recovers_the_conditional_distribution():
    torch.manual_seed(0)
    a = torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 1.5]])
    model = LatentDiffusion(nn.Identity(), steps=200)
    model.denoiser = _GaussianOracle(a, 0.5, model.abar)
    condition = torch.tensor([[1.0, 0.5], [-1.0, 2.0]])
    members = model.sample(condition, 4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(members.mean(0), condition @ a.T, atol=0.05, rtol=0)
    torch.testing.assert_close(members.std(0), torch.full((2, 3), 0.5), atol=0.05, rtol=0)


def test_diffusion_training_learns_a_conditional_gaussian():
    gen = torch.Generator().manual_seed(0)
    model = LatentDiffusion(LatentDenoiser(2, 1, hidden_dim=64, layers=2), steps=50)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(800):
        c = torch.randn(256, 1, generator=gen)
        z = torch.cat([2 * c, -c], dim=1) + 0.3 * torch.randn(256, 2, generator=gen)
        loss, _ = model.loss((z, c), gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-100:]) < 0.7 * np.mean(losses[:100])
    members = model.sample(torch.tensor([[1.0]]), 2000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(members.mean((0, 1)), torch.tensor([2.0, -1.0]), atol=0.2,
                               rtol=0)


# ---- probes -------------------------------------------------------------------------------


def test_season_probe_reads_separable_seasons_and_not_random_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 800)
    separable = rng.normal(size=(800, 6)) + 4 * np.eye(6)[labels]
    good = season_probe(separable[:600], labels[:600], separable[600:], labels[600:])
    assert good["accuracy"] > 0.95 and good["n_classes"] == 4
    noise = rng.normal(size=(800, 6))
    bad = season_probe(noise[:600], labels[:600], noise[600:], labels[600:])
    assert bad["accuracy"] < 0.4
    assert bad["cross_entropy"] > good["cross_entropy"]
    assert 0.15 < bad["chance_accuracy"] < 0.35
