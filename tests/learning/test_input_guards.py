"""Inputs that cannot hurt: NaN never reaches an encoder silently; lambd < 0 is refused."""

from __future__ import annotations

import math

import pytest
import torch

from geofusion.data.observations import apply_mask, fill_missing
from geofusion.learning.losses import BarlowTwinsLoss, barlow_twins_loss
from geofusion.models.resnet import ResNetEncoder


def fields(channels=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, channels, 16, 16, generator=generator)


def test_nan_in_the_input_names_the_variable_and_the_fix():
    encoder = ResNetEncoder(in_channels=5, latent_dim=8, width=4).eval()
    x = fields()
    x[1, 1, 3, 4] = math.nan
    x[2, 1, 0, 0] = math.nan
    x[2, 4, 5, 5] = math.nan
    with pytest.raises(ValueError, match=(
            r"NaN in the encoder input: geopotential \(channel 1, 2 of 3 samples\), "
            r"specific_humidity \(channel 4, 1 of 3 samples\)\. NaNs never reach a model.*"
            r"fill_missing\(x\).*apply_mask\(filled, observed, mask_channel=True\)")):
        encoder(x)
    # The fix the message gives: zero the gaps, add the mask channel, use a 6-channel encoder.
    filled, observed = fill_missing(x)
    masked = ResNetEncoder(in_channels=6, latent_dim=8, width=4).eval()
    with torch.no_grad():
        out = masked(apply_mask(filled, observed, mask_channel=True))
    assert torch.isfinite(out).all()
    bad = apply_mask(filled, observed, mask_channel=True)
    bad[0, 5, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"mask channel \(channel 5, 1 of 3 samples\)"):
        masked(bad)
    # Other channel counts (per-mode encoders of fusion) are named by index.
    single = ResNetEncoder(in_channels=1, latent_dim=8, width=4)
    with pytest.raises(ValueError, match=r"input: channel 0 \(2 of 3 samples\)\. NaNs"):
        single(x[:, 1:2])


def test_finite_input_passes_unchanged():
    torch.manual_seed(0)
    encoder = ResNetEncoder(in_channels=5, latent_dim=8, width=4).eval()
    x = fields()
    with torch.no_grad():
        assert torch.isfinite(encoder(x)).all()


@pytest.mark.parametrize("lambd", [-0.005, -1.0, math.nan])
def test_negative_lambd_is_refused_like_a_non_positive_temperature(lambd):
    z = fields().flatten(1)
    with pytest.raises(ValueError, match=r"lambd must be >= 0 .*report uses 0\.005"):
        barlow_twins_loss(z, z.flip(0), lambd=lambd)
    with pytest.raises(ValueError, match=r"lambd must be >= 0"):
        BarlowTwinsLoss(lambd=lambd)


def test_zero_lambd_is_allowed():
    z = fields().flatten(1)
    assert torch.isfinite(barlow_twins_loss(z, z.flip(0), lambd=0.0))
    assert BarlowTwinsLoss(lambd=0.0).lambd == 0.0
