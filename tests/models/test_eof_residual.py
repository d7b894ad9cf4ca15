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
