"""The EOF-residual encoder / decoder start as the EOF code and learn from there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofusion.data.eof import fit_eof
from geofusion.models.eof_residual import EOFResidualDecoder, EOFResidualEncoder

LAT = np.linspace(-80, 80, 16)


def basis(k=6, seed=0):
    a = np.random.default_rng(seed).normal(size=(40, 5, 16, 32)).astype("float32")
    code = fit_eof(a, LAT, k)
    return a, code, (torch.from_numpy(code.components), torch.from_numpy(code.sqrt_weights),
                     torch.from_numpy(code.mean))


def test_at_initialisation_the_pair_is_the_eof_code():
    a, code, args = basis()
    enc, dec = EOFResidualEncoder(*args, width=2), EOFResidualDecoder(*args, width=2)
    with torch.no_grad():
        z = enc(torch.from_numpy(a[:4]))
        out = dec(z)
    np.testing.assert_allclose(z.numpy(), code.encode(a[:4]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.numpy(), code.decode(code.encode(a[:4])), rtol=1e-4,
                               atol=1e-4)


def test_mask_channel_reaches_only_the_residual_and_other_grids_are_resampled():
    a, code, args = basis()
    enc = EOFResidualEncoder(*args, in_channels=6, width=2)
    x = torch.from_numpy(a[:2])
    with_mask = torch.cat([x, torch.ones(2, 1, 16, 32)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(enc(with_mask), EOFResidualEncoder(*args, width=2)(x),
                                   rtol=1e-5, atol=1e-5)
        assert enc(torch.nn.functional.interpolate(with_mask, size=(24, 48))).shape == (2, 6)


def test_residual_and_basis_receive_gradients():
    a, _, args = basis()
    enc, dec = EOFResidualEncoder(*args, width=2), EOFResidualDecoder(*args, width=2)
    loss = ((dec(enc(torch.from_numpy(a[:4]))) - torch.from_numpy(a[:4])) ** 2).mean()
    loss.backward()
    assert enc.basis.grad.abs().sum() > 0 and dec.basis.grad.abs().sum() > 0
    assert enc.residual.fc.weight.grad.abs().sum() > 0


def test_mismatched_basis_is_refused():
    _, _, (components, sqrt_weights, mean) = basis()
    with pytest.raises(ValueError, match="components must be"):
        EOFResidualEncoder(components[:, :10], sqrt_weights)
    with pytest.raises(ValueError, match="mean must be"):
        EOFResidualDecoder(components, sqrt_weights, mean[:, :3])


# ---- EOFResidualFusionEncoder: every fusion scheme starts as the EOF code (issue 24) ----

FUSION_SCHEMES = ["early", "late_concat", "late_self_attention", "late_cross_attention",
                  "late_graph_attention", "hybrid_self_attention"]


def fusion_encoder(scheme, args, k=6):
    from geofusion.models.eof_residual import EOFResidualFusionEncoder
    from geofusion.models.fusion_encoders import build_encoder, parse_scheme

    torch.manual_seed(0)
    base = build_encoder(*parse_scheme(scheme), latent_dim=k, width=4, mode_width=2,
                         token_dim=8, heads=2)
    return EOFResidualFusionEncoder(base, *args)


@pytest.mark.parametrize("scheme", FUSION_SCHEMES)
def test_fusion_encoder_at_initialisation_is_the_eof_code_of_the_zero_filled_input(scheme):
    a, code, args = basis()
    enc = fusion_encoder(scheme, args).train()  # batch-norm batch statistics too: still exact
    present = torch.tensor([[True] * 5, [True, False, True, True, True],
                            [False, False, True, False, True], [True] * 5])
    filled = a[:4].copy()
    filled[~present.numpy()] = 0.0  # an absent mode is the climatology: zero anomaly
    with torch.no_grad():
        z_present = enc(torch.from_numpy(a[:4]), present)
        z_full = enc(torch.from_numpy(a[:4]))
    np.testing.assert_allclose(z_present.numpy(), code.encode(filled), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z_full.numpy(), code.encode(a[:4]), rtol=1e-4, atol=1e-4)
    assert enc.kind == enc.base.kind and enc.fusion == enc.base.fusion


@pytest.mark.parametrize("scheme", ["early", "late_graph_attention", "hybrid_self_attention"])
def test_fusion_encoder_gradients_reach_the_residual_and_the_basis(scheme):
    a, _, args = basis()
    enc = fusion_encoder(scheme, args)
    present = torch.tensor([[True, False, True, True, True]] * 4)
    enc(torch.from_numpy(a[:4]), present).pow(2).sum().backward()
    last = enc.base.backbone.fc if scheme == "early" else enc.base.fuse.proj
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    assert enc.basis.grad is not None and enc.basis.grad.abs().sum() > 0
    # After one step the residual is no longer zero: the scheme's machinery is trained.
    with torch.no_grad():
        last.weight -= 0.1 * last.weight.grad
        enc.eval()
        x = torch.from_numpy(a[:4])
        assert (enc(x) - enc.eof_code(x, None)).abs().max() > 0


def test_fusion_encoder_resamples_other_grids_for_the_linear_path():
    a, code, args = basis()
    enc = fusion_encoder("late_concat", args).eval()
    x = torch.from_numpy(a[:2])
    fine = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear",
                                           align_corners=False)
    back = torch.nn.functional.interpolate(fine, size=(16, 32), mode="bilinear",
                                           align_corners=False)
    with torch.no_grad():
        np.testing.assert_allclose(enc(fine).numpy(), code.encode(back.numpy()), rtol=1e-4,
                                   atol=1e-4)


def test_fusion_encoder_rejects_a_basis_of_the_wrong_shape():
    from geofusion.models.eof_residual import EOFResidualFusionEncoder
    from geofusion.models.fusion_encoders import build_encoder

    _, _, (components, sqrt_weights, mean) = basis(k=6)
    base = build_encoder("early", latent_dim=8, width=4)
    with pytest.raises(ValueError, match="k = latent_dim"):
        EOFResidualFusionEncoder(base, components, sqrt_weights, mean)
    base = build_encoder("early", in_channels=4, latent_dim=6, width=4)
    with pytest.raises(ValueError, match="k = latent_dim"):
        EOFResidualFusionEncoder(base, components, sqrt_weights, mean)
    base = build_encoder("early", latent_dim=6, width=4)
    with pytest.raises(ValueError, match="components must be"):
        EOFResidualFusionEncoder(base, components[:, :-1], sqrt_weights, mean)
    with pytest.raises(ValueError, match="mean must be"):
        EOFResidualFusionEncoder(base, components, sqrt_weights, mean[:, :-1])
    with pytest.raises(ValueError, match="must be a FusionEncoder"):
        EOFResidualFusionEncoder(torch.nn.Linear(2, 2), components, sqrt_weights, mean)
