"""Decoders: a decoder on a frozen method learns while the method does not move."""

from __future__ import annotations

import torch

from geofusion.data import FieldDataset
from geofusion.decoders import FrozenEncoderDecoder, reconstruct
from geofusion.methods import build_method
from geofusion.models import FieldDecoder
from geofusion.training import TrainConfig, fit

TINY = dict(latent_dim=16, width=8, proj_dim=8, proj_hidden_dim=16)


def smooth_fields(n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(n, 5, 4, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(32, 64), mode="bilinear")


def test_frozen_encoder_decoder_trains_the_decoder_only(tmp_path):
    torch.manual_seed(0)
    method = build_method("simclr", **TINY)
    frozen_state = {k: v.clone() for k, v in method.state_dict().items()}
    model = FrozenEncoderDecoder(method, FieldDecoder(16, 5, (32, 64), width=8))
    x = smooth_fields()
    before = model.loss((x,))[0].item()
    fit(model, FieldDataset(x), TrainConfig(epochs=8, batch_size=8, lr=3e-3, device="cpu"),
        run_dir=tmp_path, progress=False)
    after = model.loss((x,))[0].item()
    assert after < 0.9 * before
    for key, value in method.state_dict().items():  # weights and batch-norm statistics
        torch.testing.assert_close(value, frozen_state[key], msg=key)
    assert not method.training


def test_reconstruct_matches_forward_in_batches_and_accepts_a_mask():
    torch.manual_seed(0)
    model = FrozenEncoderDecoder(build_method("autoencoder", **TINY),
                                 FieldDecoder(16, 5, (32, 64), width=8))
    x = smooth_fields(5)
    out = reconstruct(model, x, batch_size=2)
    assert out.shape == (5, 5, 32, 64)
    torch.testing.assert_close(torch.from_numpy(out), model.eval()(x))
    observed = torch.zeros(5, 32, 64, dtype=torch.bool)
    blind = reconstruct(model, x, observed)
    torch.testing.assert_close(torch.from_numpy(blind),
                               model(torch.zeros_like(x)))  # nothing seen = a zero input
