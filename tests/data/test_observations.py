"""Masks (exact counts, shapes, reproducibility) and correlated noise (variance, length)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geofusion.data.observations import (
    MASK_KINDS,
    add_noise,
    apply_mask,
    autocorrelation_lon,
    correlated_noise,
    fill_missing,
    gaussian_correlation,
    km_to_gridpoints,
    make_mask,
    missing_count,
    random_ratios,
    realised_correlation_length,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("shape", [(3, 32, 64), (2, 2, 8, 16), (5, 7)])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.37, 0.5, 0.9])
def test_mask_missing_count_exact(kind, shape, ratio):
    mask = make_mask(shape, ratio, kind=kind, generator=gen(0))
    assert mask.dtype == torch.bool and mask.shape == shape
    h, w = shape[-2:]
    missing = (~mask).reshape(-1, h * w).sum(dim=1)
    assert (missing == round(ratio * h * w)).all(), (kind, shape, ratio, missing)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_per_sample_ratios_exact(kind):
    ratios = torch.tensor([0.0, 0.25, 0.6, 0.95])
    mask = make_mask((4, 3, 16, 32), ratios, kind=kind, generator=gen(1))
    missing = (~mask).sum(dim=(-2, -1))  # (4, 3)
    expected = torch.tensor([round(float(r) * 512) for r in ratios])
    assert (missing == expected[:, None]).all()
    r = random_ratios(64, 0.2, 0.7, gen(2))
    assert r.shape == (64,) and (r >= 0.2).all() and (r <= 0.7).all() and r.std() > 0.05
    assert torch.equal(r, random_ratios(64, 0.2, 0.7, gen(2)))
    mask = make_mask((64, 32, 64), r, kind=kind, generator=gen(3))
    assert torch.equal((~mask).sum(dim=(-2, -1)), missing_count(r, 32, 64))
    # numpy ratios work the same as a tensor.
    same = make_mask((64, 32, 64), r.numpy(), kind=kind, generator=gen(3))
    assert torch.equal(same, mask)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mask_reproducible_under_seed(kind):
    a = make_mask((4, 32, 64), 0.5, kind=kind, generator=gen(7))
    b = make_mask((4, 32, 64), 0.5, kind=kind, generator=gen(7))
    c = make_mask((4, 32, 64), 0.5, kind=kind, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Independent masks per sample.
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_ratio_raises(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        make_mask((2, 8, 8), bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        make_mask((2, 8, 8), torch.tensor([0.5, bad]))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        make_mask((2, 8, 8), 0.5, kind="cloud")
    with pytest.raises(ValueError, match="one ratio per sample"):
        make_mask((3, 8, 8), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="low"):
        random_ratios(4, 0.5, 1.0)


def _neighbour_agreement(mask: torch.Tensor) -> float:
    """Fraction of lon neighbours (wrapping) sharing their state, among missing points."""
    missing = ~mask
    same = missing & torch.roll(missing, 1, dims=-1)
    return float(same.sum() / missing.sum())


def test_patch_and_swath_masks_are_structured():
    g = gen(4)
    pixel = make_mask((8, 32, 64), 0.3, "pixel", g)
    patch = make_mask((8, 32, 64), 0.3, "patch", g, patch_size=4)
    swath = make_mask((8, 32, 64), 0.3, "swath", g, swath_width=4)
    # Random points: a missing point's neighbour is missing with probability ~0.3.
    assert _neighbour_agreement(pixel) < 0.4
    assert _neighbour_agreement(patch) > 0.6
    assert _neighbour_agreement(swath) > 0.6
    # Swaths cross the globe: every latitude row has gaps, in every sample.
    assert ((~swath).sum(dim=-1) > 0).all()
    # 16 missing points with 4x4 patches: a whole square unless the first one is clipped at
    # a pole (anchors in 13 of 19 rows are interior), then 16 points filling 4 rows x 4 cols.
    one = make_mask((100, 16, 16), 16 / 256, "patch", gen(5), patch_size=4)
    rows = (~one).any(dim=-1).sum(dim=-1)
    cols = (~one).any(dim=-2).sum(dim=-1)
    first_row = (~one).any(dim=-1).float().argmax(dim=-1)
    last_row = 15 - (~one).any(dim=-1).flip(-1).float().argmax(dim=-1)
    square = (rows == 4) & (cols == 4) & (last_row - first_row == 3)
    assert 0.5 < square.float().mean() < 0.85
    # Those squares are contiguous in lon too, modulo the wrap.
    for m in (~one)[square]:
        assert any(m.any(dim=-2).roll(-s)[:4].all() for s in range(16))


def test_apply_mask_zeros_and_no_nan():
    x = torch.randn(3, 5, 8, 16, generator=gen(0))
    x[0, 1, 2, 3] = float("nan")
    mask = make_mask((3, 8, 16), 0.4, generator=gen(1))
    out = apply_mask(x, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out.permute(1, 0, 2, 3)[:, ~mask] == 0).all()
    keep = mask[:, None].expand_as(x) & torch.isfinite(x)
    assert torch.equal(out[keep], x[keep])
    with_channel = apply_mask(x[1:], mask[1:], mask_channel=True)
    assert with_channel.shape == (2, 6, 8, 16)
    assert torch.equal(with_channel[:, -1], mask[1:].float())
    # Per-channel mask: the extra channel is the fraction of channels observed.
    per_channel = make_mask((3, 5, 8, 16), 0.5, generator=gen(2))
    out = apply_mask(x, per_channel, mask_channel=True)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1:, -1], per_channel[1:].float().mean(dim=1))
    with pytest.raises(ValueError, match="mask shape"):
        apply_mask(x, mask[:, :4])


def test_fill_missing():
    x = np.array([[1.0, np.nan], [np.inf, -2.0]], dtype=np.float32)
    filled, mask = fill_missing(x)
    assert torch.equal(mask, torch.tensor([[True, False], [False, True]]))
    assert torch.equal(filled, torch.tensor([[1.0, 0.0], [0.0, -2.0]]))


@pytest.mark.parametrize("length_scale", [2.0, 4.0])
def test_noise_variance_and_correlation_length(length_scale):
    std = 0.5
    noise = correlated_noise((300, 32, 64), length_scale, std, generator=gen(10))
    assert noise.shape == (300, 32, 64) and noise.dtype == torch.float32
    assert noise.var().item() == pytest.approx(std**2, rel=0.04)
    # Variance is the same at the poles as at the equator; latitude is padded, not wrapped,
    # so the two pole rows are uncorrelated.
    assert noise[:, [0, -1]].var().item() == pytest.approx(std**2, rel=0.08)
    poles = torch.corrcoef(torch.stack([noise[:, 0].flatten(), noise[:, -1].flatten()]))
    assert abs(poles[0, 1].item()) < 0.05
    assert realised_correlation_length(noise) == pytest.approx(length_scale, rel=0.15)
    # Neighbour correlation, along lon and along lat, matches the Gaussian kernel.
    expected = gaussian_correlation(1.0, length_scale)
    rho_lon = autocorrelation_lon(noise)[1].item()
    n = noise.double()
    rho_lat = ((n[:, 1:] * n[:, :-1]).mean() / (n**2).mean()).item()
    assert rho_lon == pytest.approx(expected, abs=0.02)
    assert rho_lat == pytest.approx(expected, abs=0.02)
    # Far apart points are uncorrelated.
    assert abs(autocorrelation_lon(noise)[32].item()) < 0.05


def test_noise_reproducible_white_and_errors():
    a = correlated_noise((2, 16, 32), 3.0, 1.0, generator=gen(0))
    assert torch.equal(a, correlated_noise((2, 16, 32), 3.0, 1.0, generator=gen(0)))
    assert not torch.equal(a, correlated_noise((2, 16, 32), 3.0, 1.0, generator=gen(1)))
    white = correlated_noise((200, 16, 32), 0.0, 2.0, generator=gen(2))
    assert white.var().item() == pytest.approx(4.0, rel=0.03)
    assert abs(autocorrelation_lon(white)[1].item()) < 0.03
    assert realised_correlation_length(white) == 0.0
    nonperiodic = correlated_noise((200, 16, 32), 2.0, 1.0, generator=gen(3), periodic_lon=False)
    assert nonperiodic.var().item() == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="length_scale"):
        correlated_noise((4, 4), -1.0, 1.0)
    with pytest.raises(ValueError, match="std"):
        correlated_noise((4, 4), 1.0, -1.0)


def test_add_noise_and_km():
    x = torch.zeros(4, 5, 16, 32, dtype=torch.float64)
    y = add_noise(x, 2.0, 0.1, generator=gen(0))
    assert y.dtype == torch.float64 and y.shape == x.shape
    assert torch.equal(y, correlated_noise(x.shape, 2.0, 0.1, gen(0), dtype=torch.float64))
    one_point = 6371.0088 * math.radians(5.625)
    assert km_to_gridpoints(one_point) == pytest.approx(1.0)
    assert km_to_gridpoints(1000.0) == pytest.approx(1.599, abs=1e-3)


def test_correlated_noise_covariance_matches_the_sampled_noise():
    # The analytic covariance must equal the empirical covariance of many noise draws.
    from geofusion.data.observations import correlated_noise, correlated_noise_covariance

    grid, length, std = (6, 12), 1.5, 0.7
    cov = correlated_noise_covariance(grid, length, std)
    samples = correlated_noise((20000, *grid), length, std,
                               torch.Generator().manual_seed(0), dtype=torch.float64)
    flat = samples.reshape(len(samples), -1)
    empirical = flat.T @ flat / len(flat)
    assert torch.allclose(cov, cov.T)
    assert torch.allclose(torch.diagonal(cov), torch.full((72,), std**2, dtype=torch.float64),
                          atol=1e-9)
    assert (empirical - cov).abs().max() < 0.03
    # white noise: diagonal covariance
    white = correlated_noise_covariance(grid, 0.0, std)
    assert torch.allclose(white, std**2 * torch.eye(72, dtype=torch.float64))
