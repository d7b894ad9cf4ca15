"""Decoders: a decoder on a frozen method learns while the method does not move."""

from __future__ import annotations

import pytest
import torch

from geofusion.data import FieldDataset
from geofusion.downstream.embeddings import encode_series
from geofusion.learning.config import TrainConfig
from geofusion.learning.decoders import FrozenEncoderDecoder, reconstruct
from geofusion.learning.fusion_methods import build_fusion_method
from geofusion.learning.methods import build_method, embed_observed
from geofusion.learning.training import fit
from geofusion.models.resnet import FieldDecoder

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


class ShapeRecorder(torch.nn.Module):
    """A bare encoder that records the grid it is fed: (B, C, H, W) -> (B, 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(5, 16)
        self.grids: list[tuple[int, int]] = []

    def forward(self, x):
        self.grids.append(tuple(x.shape[-2:]))
        return self.linear(x.mean((2, 3)))


def test_the_view_decides_which_input_the_frozen_encoder_sees():
    method = build_method("barlow_twins", **TINY)
    recorder = ShapeRecorder()
    method.encoder = recorder
    x = smooth_fields(2)
    decoder = FieldDecoder(16, 5, (32, 64), width=2)
    inference = FrozenEncoderDecoder(method, decoder)
    inference(x)
    assert recorder.grids[-1] == (72, 144)  # the canonical view the encoder was trained on
    torch.testing.assert_close(inference.embed(x), method.embed(x))
    FrozenEncoderDecoder(method, decoder, view="native")(x)
    assert recorder.grids[-1] == (32, 64)
    # A bare encoder has no inference view: only "native", and a message saying so otherwise.
    bare = FrozenEncoderDecoder(ShapeRecorder(), decoder, view="native")
    torch.testing.assert_close(bare.embed(x), bare.encoder(x))
    with pytest.raises(ValueError, match="bare encoder.*view='native'"):
        FrozenEncoderDecoder(ShapeRecorder(), decoder)
    with pytest.raises(ValueError, match="unknown view 'canonical'"):
        FrozenEncoderDecoder(method, decoder, view="canonical")


def test_a_fine_grid_decoder_on_a_frozen_fusion_encoder_trains_the_decoder_only():
    torch.manual_seed(0)
    method = build_fusion_method("autoencoder", kind="late", fusion="concat", latent_dim=12,
                                 width=4, mode_width=2, token_dim=8)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    fine = torch.randn(16, 5, 32, 64, generator=torch.Generator().manual_seed(0))
    # Input on the coarse grid, target on a finer one: a decoder for another resolution.
    coarse = torch.nn.functional.avg_pool2d(fine, 2)
    model = FrozenEncoderDecoder(method, FieldDecoder(12, 5, (32, 64), width=2), target_index=1)
    history = fit(model, torch.utils.data.TensorDataset(coarse, fine),
                  TrainConfig(epochs=3, batch_size=8, lr=1e-2, device="cpu"), progress=False)
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    for key, value in method.state_dict().items():  # weights and batch-norm statistics
        torch.testing.assert_close(value, before[key], msg=key)
    assert reconstruct(model, coarse[:3]).shape == (3, 5, 32, 64)


def test_a_sparse_method_gets_its_mask_channel_through_the_frozen_decoder():
    method = build_method("barlow_twins", observation={"kind": "pixel"}, **TINY)
    model = FrozenEncoderDecoder(method, FieldDecoder(16, 5, (32, 64), width=2))
    assert model.mask_channel
    x = smooth_fields(3)
    observed = torch.rand(3, 32, 64, generator=torch.Generator().manual_seed(1)) > 0.5
    torch.testing.assert_close(encode_series(model, x, observed=observed),
                               embed_observed(method.eval(), x, observed))


def test_frozen_decoder_latitude_weighted_loss_and_observed_latents():
    from geofusion.data.eof import area_weights
    from geofusion.learning.decoders import reconstruction_error
    torch.manual_seed(0)
    lat = torch.linspace(-80, 80, 32).numpy()
    method = build_method("barlow_twins", observation={"kind": "pixel", "min_ratio": 0.5,
                                                       "max_ratio": 0.5}, **TINY)
    weights = area_weights(lat)
    model = FrozenEncoderDecoder(method, FieldDecoder(16, 5, (32, 64), width=2),
                                 latitude_weights=weights,
                                 observation={"kind": "pixel", "min_ratio": 0.9, "max_ratio": 0.9})
    fields = smooth_fields(4)
    loss, _ = model.loss((fields,), torch.Generator().manual_seed(1))
    # The loss is the latitude-weighted error of the decoded latent of the *masked* day.
    gen = torch.Generator().manual_seed(1)
    observed_fields, observed = model.observation(fields, gen)
    expected = reconstruction_error(model(observed_fields, observed), fields,
                                    torch.as_tensor(weights, dtype=torch.float32))
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    assert not torch.equal(model(observed_fields, observed), model(fields))
    with pytest.raises(ValueError, match="generator"):
        model.loss((fields,), None)
