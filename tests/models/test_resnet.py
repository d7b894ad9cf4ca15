"""Shapes, parameter counts and gradient flow of geofusion.models.resnet."""

from __future__ import annotations

import pytest
import torch

from geofusion.learning.methods import build_method
from geofusion.models.resnet import (
    ENCODER_POOLS,
    ENCODER_STEMS,
    Autoencoder,
    FieldDecoder,
    LinearFieldDecoder,
    ProjectionHead,
    ResNetEncoder,
    count_parameters,
    resnet18_encoder,
)

# torchvision's resnet18 (3 input channels, 1000-way fc) has 11,689,512 parameters; five input
# channels add 2 * 64 * 7 * 7 first-conv weights.
RESNET18_5CH_PARAMS = 11_689_512 + 2 * 64 * 7 * 7


def test_resnet18_parameter_count_matches_torchvision() -> None:
    encoder = resnet18_encoder(in_channels=5, latent_dim=1000, width=64)
    assert count_parameters(encoder) == RESNET18_5CH_PARAMS == 11_695_784
    # Three input channels reproduce torchvision's own count.
    assert count_parameters(ResNetEncoder(in_channels=3)) == 11_689_512


@pytest.mark.parametrize("grid", [(32, 64), (72, 144), (16, 16)])
def test_encoder_shapes(grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    encoder = ResNetEncoder(in_channels=5, latent_dim=24, width=4)
    assert encoder(torch.randn(2, 5, *grid)).shape == (2, 24)


def test_encoder_full_width_default_grid() -> None:
    encoder = resnet18_encoder().eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 5, 32, 64))
    assert out.shape == (2, 1000)
    assert torch.isfinite(out).all()


def test_encoder_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        ResNetEncoder(in_channels=5, width=4)(torch.randn(2, 6, 32, 64))


def test_width_changes_parameter_count() -> None:
    counts = [count_parameters(ResNetEncoder(width=w, latent_dim=10)) for w in (4, 8, 16)]
    assert counts[0] < counts[1] < counts[2]
    decoder_counts = [count_parameters(FieldDecoder(latent_dim=10, width=w)) for w in (4, 8)]
    assert decoder_counts[0] < decoder_counts[1]


def test_gradients_reach_first_conv() -> None:
    torch.manual_seed(0)
    encoder = ResNetEncoder(width=4, latent_dim=8)
    encoder(torch.randn(2, 5, 32, 64)).pow(2).sum().backward()
    grad = encoder.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def _final_map(encoder: ResNetEncoder, x: torch.Tensor) -> torch.Tensor:
    """The encoder's last feature map (before pooling or flattening)."""
    seen: list[torch.Tensor] = []
    handle = encoder.layer4.register_forward_hook(lambda m, i, o: seen.append(o))
    encoder(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize(("stem", "final"), [("imagenet", (1, 2)), ("cifar_stride2", (2, 4)),
                                             ("cifar", (4, 8))])
def test_stems_set_the_final_map(stem: str, final: tuple[int, int]) -> None:
    torch.manual_seed(0)
    encoder = ResNetEncoder(width=2, latent_dim=6, stem=stem)
    assert tuple(_final_map(encoder, torch.randn(2, 5, 32, 64)).shape) == (2, 16, *final)
    # An odd grid: every stride-2 step maps n to ceil(n / 2).
    flat = ResNetEncoder(width=2, latent_dim=6, stem=stem, pool="flatten", grid=(20, 30))
    out_map = _final_map(flat, torch.randn(2, 5, 20, 30))
    assert tuple(out_map.shape[-2:]) == flat.final_map
    assert flat.fc.in_features == 16 * flat.final_map[0] * flat.final_map[1]
    assert flat(torch.randn(2, 5, 20, 30)).shape == (2, 6)


def test_flatten_lifts_the_latent_rank_above_the_channels() -> None:
    # Global pooling over 16 final channels confines the (centred) latents to 16 dimensions,
    # whatever latent_dim; flattening the final map does not.
    torch.manual_seed(0)
    x = torch.randn(64, 5, 32, 64)
    ranks = {}
    for pool in ENCODER_POOLS:
        torch.manual_seed(0)
        encoder = ResNetEncoder(width=2, latent_dim=48, stem="cifar_stride2", pool=pool,
                                grid=(32, 64)).eval()
        with torch.no_grad():
            z = encoder(x).double()
        ranks[pool] = int(torch.linalg.matrix_rank(z - z.mean(0), rtol=1e-7))
    assert ranks["mean"] <= 16
    assert ranks["flatten"] > 16


def test_stage_channels_widen_one_stage() -> None:
    torch.manual_seed(0)
    encoder = ResNetEncoder(width=2, latent_dim=6, stage_channels=(2, 4, 8, 32))
    assert _final_map(encoder, torch.randn(2, 5, 32, 64)).shape[1] == 32
    assert encoder.fc.in_features == 32
    # The default is width * (1, 2, 4, 8): same parameters as not passing it.
    assert (count_parameters(ResNetEncoder(width=2, latent_dim=6, stage_channels=(2, 4, 8, 16)))
            == count_parameters(ResNetEncoder(width=2, latent_dim=6)))


def test_encoder_options_reject_unknown_or_missing_values() -> None:
    with pytest.raises(ValueError, match="unknown stem"):
        ResNetEncoder(width=2, stem="vit")
    with pytest.raises(ValueError, match="unknown pool"):
        ResNetEncoder(width=2, pool="max")
    with pytest.raises(ValueError, match="needs the input grid"):
        ResNetEncoder(width=2, pool="flatten")
    with pytest.raises(ValueError, match="stage_channels"):
        ResNetEncoder(width=2, stage_channels=(2, 4, 8))
    flat = ResNetEncoder(width=2, latent_dim=6, pool="flatten", grid=(32, 64))
    with pytest.raises(ValueError, match="takes only the grid"):
        flat(torch.randn(2, 5, 36, 72))
    assert set(ENCODER_STEMS) == {"imagenet", "cifar", "cifar_stride2"}


def test_build_method_passes_encoder_options() -> None:
    torch.manual_seed(0)
    ae = build_method("autoencoder", grid=(32, 64), width=2, latent_dim=8,
                      encoder_stem="cifar_stride2", encoder_pool="flatten",
                      encoder_stage_channels=(2, 4, 8, 8))
    assert (ae.encoder.stem, ae.encoder.pool, ae.encoder.stage_channels) == (
        "cifar_stride2", "flatten", (2, 4, 8, 8))
    assert ae.encoder.fc.in_features == 8 * 2 * 4
    assert ae(torch.randn(2, 5, 32, 64)).shape == (2, 5, 32, 64)
    default = build_method("autoencoder", width=2, latent_dim=8).encoder
    assert (default.stem, default.pool) == ("imagenet", "mean")
    with pytest.raises(ValueError, match="unknown pool"):
        build_method("autoencoder", width=2, latent_dim=8, encoder_pool="attention")


def test_linear_decoder_spans_an_affine_subspace_of_latent_dim() -> None:
    torch.manual_seed(0)
    decoder = LinearFieldDecoder(latent_dim=6, out_channels=5, grid=(20, 30))
    assert count_parameters(decoder) == 6 * 5 * 20 * 30 + 5 * 20 * 30
    out = decoder(torch.randn(40, 6))
    assert out.shape == (40, 5, 20, 30)
    centred = (out - out.mean(0)).flatten(1).double()
    assert int(torch.linalg.matrix_rank(centred, rtol=1e-7)) == 6
    with pytest.raises(ValueError, match="expected latents"):
        decoder(torch.randn(2, 7))
    with pytest.raises(ValueError, match="positive"):
        LinearFieldDecoder(latent_dim=0)


def test_build_method_autoencoder_decoder_options() -> None:
    linear = build_method("autoencoder", grid=(16, 32), width=2, latent_dim=8, ae_decoder="linear")
    assert isinstance(linear.decoder, LinearFieldDecoder)
    assert linear(torch.randn(2, 5, 16, 32)).shape == (2, 5, 16, 32)
    conv = build_method("autoencoder", grid=(16, 32), width=2, latent_dim=8)
    wide = build_method("autoencoder", grid=(16, 32), width=2, latent_dim=8, ae_decoder_width=4)
    assert isinstance(conv.decoder, FieldDecoder)
    assert (conv.decoder.coarse_channels, wide.decoder.coarse_channels) == (16, 32)
    with pytest.raises(ValueError, match="unknown ae_decoder"):
        build_method("autoencoder", width=2, latent_dim=8, ae_decoder="transformer")
    with pytest.raises(ValueError, match="has no decoder"):
        build_method("barlow_twins", width=2, latent_dim=8, ae_decoder="linear")


@pytest.mark.parametrize("grid", [(32, 64), (121, 240), (20, 30)])
def test_decoder_shapes(grid: tuple[int, int]) -> None:
    decoder = FieldDecoder(latent_dim=16, out_channels=5, grid=grid, width=4)
    assert decoder(torch.randn(2, 16)).shape == (2, 5, *grid)


def test_decoder_is_periodic_in_longitude() -> None:
    # Circular padding: rolling the coarse map by one cell in longitude rolls the output by 8
    # (three x2 upsamplings) when no cropping happens.
    torch.manual_seed(0)
    decoder = FieldDecoder(latent_dim=8, out_channels=2, grid=(16, 32), width=2).eval()
    z = torch.randn(1, 8)
    coarse = decoder.fc(z).view(1, decoder.coarse_channels, *decoder.coarse)
    out = decoder.head(decoder.upsample(coarse))
    rolled = decoder.head(decoder.upsample(coarse.roll(1, dims=-1)))
    torch.testing.assert_close(rolled, out.roll(8, dims=-1))


def test_autoencoder_round_trip_shapes() -> None:
    model = Autoencoder(ResNetEncoder(latent_dim=12, width=4),
                        FieldDecoder(latent_dim=12, grid=(32, 64), width=4))
    x = torch.randn(2, 5, 32, 64)
    assert model(x).shape == x.shape
    assert model.encode(x).shape == (2, 12)
    model(x).pow(2).mean().backward()
    assert model.encoder.conv1.weight.grad is not None


@pytest.mark.parametrize("final_batchnorm", [False, True])
def test_projection_head(final_batchnorm: bool) -> None:
    torch.manual_seed(0)
    head = ProjectionHead(in_dim=20, hidden_dim=32, out_dim=8, final_batchnorm=final_batchnorm)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    out = head(torch.randn(6, 20) * 3 + 5)
    assert out.shape == (6, 8)
    if final_batchnorm:
        torch.testing.assert_close(out.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
        assert not any(p.requires_grad for p in head.net[-1].parameters())
    else:
        assert out.mean(0).abs().max() > 1e-3


def test_projection_head_default_sizes() -> None:
    head = ProjectionHead(final_batchnorm=True)
    assert head(torch.randn(4, 1000)).shape == (4, 128)


def test_autoencoder_channel_weights_weigh_the_per_channel_errors() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, 32)
    weights = [1.0, 0.0, 2.0, 0.0, 1.0]
    ae = build_method("autoencoder", grid=(16, 32), width=2, latent_dim=8,
                      ae_channel_weights=weights).eval()
    with torch.no_grad():
        loss, _ = ae.loss((x,))
        per_channel = (ae(x) - x).pow(2).mean(dim=(0, 2, 3))
    expected = (per_channel * torch.tensor(weights)).sum() / sum(weights)
    assert torch.allclose(loss, expected)
    # Scaling every weight changes nothing; the unweighted loss is the plain MSE.
    scaled = build_method("autoencoder", grid=(16, 32), width=2, latent_dim=8,
                          ae_channel_weights=[10 * w for w in weights])
    scaled.load_state_dict(ae.state_dict())
    with torch.no_grad():
        assert torch.allclose(scaled.eval().loss((x,))[0], loss)
        plain = build_method("autoencoder", grid=(16, 32), width=2, latent_dim=8).eval()
        assert torch.allclose(plain.loss((x,))[0], (plain(x) - x).pow(2).mean())
    with pytest.raises(ValueError, match="non-negative"):
        build_method("autoencoder", width=2, latent_dim=8, ae_channel_weights=[1, -1, 1, 1, 1])
    with pytest.raises(ValueError, match="channel_weights for"):
        build_method("autoencoder", grid=(16, 32), width=2, latent_dim=8,
                     ae_channel_weights=[1, 1]).loss((x,))


def test_decoders_name_the_size_that_is_not_positive():
    with pytest.raises(ValueError, match=r"width must be positive, got grid=\(32, 64\), "
                                         r"latent_dim=8, out_channels=5, width=0"):
        FieldDecoder(latent_dim=8, out_channels=5, grid=(32, 64), width=0)
    with pytest.raises(ValueError, match=r"got grid=\(0, 64\), latent_dim=8, out_channels=5$"):
        LinearFieldDecoder(latent_dim=8, out_channels=5, grid=(0, 64))
