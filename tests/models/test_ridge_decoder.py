"""The closed-form ridge decoder against independent references (scikit-learn, numpy SVD)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge

from geofusion.models.ridge_decoder import RidgeDecoder, fit_ridge_decoder


def _data(n: int = 120, d: int = 5, shape: tuple[int, int, int] = (2, 3, 4), seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d) + rng.normal(size=d)
    x = (np.tanh(z) @ rng.normal(size=(d, int(np.prod(shape))))).reshape(n, *shape)
    return z, x + 0.1 * rng.normal(size=x.shape) + 2.0


@pytest.mark.parametrize("ridge", [0.0, 3.0, 100.0])
def test_ridge_decoder_equals_scikit_learn_ridge_on_standardised_latents(ridge):
    z, x = _data()
    decoder = fit_ridge_decoder(z, x, ridge=ridge)
    zs = (z - z.mean(0)) / z.std(0)  # population std, as the decoder documents
    reference = Ridge(alpha=ridge, fit_intercept=True, solver="svd").fit(
        zs, x.reshape(len(x), -1))
    fresh = np.random.default_rng(1).normal(size=(7, z.shape[1])) * 2
    expected = reference.predict((fresh - z.mean(0)) / z.std(0)).reshape(7, *x.shape[1:])
    got = decoder(torch.as_tensor(fresh, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert got.shape == (7, 2, 3, 4) and got.dtype == np.float32


def test_a_larger_penalty_shrinks_the_decoder_towards_the_training_mean():
    z, x = _data()
    spread = [float(fit_ridge_decoder(z, x, ridge=r)(torch.as_tensor(z, dtype=torch.float32))
                    .std(0).mean()) for r in (0.0, 10.0, 1e6)]
    assert spread[0] > spread[1] > spread[2]
    flat = fit_ridge_decoder(z, x, ridge=1e9)(torch.as_tensor(z[:3], dtype=torch.float32))
    np.testing.assert_allclose(flat.numpy(), np.broadcast_to(x.mean(0), flat.shape), atol=1e-3)


def test_principal_component_decoder_is_ridge_onto_the_leading_pca_scores():
    z, x = _data(d=6)
    k = 4
    decoder = fit_ridge_decoder(z, x, ridge=2.0, n_components=k)
    flat = x.reshape(len(x), -1)
    pca = PCA(n_components=k, svd_solver="full").fit(flat)
    zs = (z - z.mean(0)) / z.std(0)
    scores = Ridge(alpha=2.0).fit(zs, pca.transform(flat))
    expected = pca.inverse_transform(scores.predict(zs)).reshape(x.shape)
    np.testing.assert_allclose(decoder(torch.as_tensor(z, dtype=torch.float32)).numpy(),
                               expected, rtol=1e-4, atol=1e-4)
    # with every component it is the ridge onto the fields themselves
    full = fit_ridge_decoder(z, x, ridge=2.0, n_components=min(flat.shape))
    np.testing.assert_allclose(full(torch.as_tensor(z, dtype=torch.float32)).numpy(),
                               fit_ridge_decoder(z, x, ridge=2.0)(
                                   torch.as_tensor(z, dtype=torch.float32)).numpy(), atol=1e-4)


def test_constant_latent_dimensions_and_bad_arguments():
    z, x = _data()
    z[:, 2] = 5.0  # a dead latent dimension: no division by zero, it carries nothing
    out = fit_ridge_decoder(z, x, ridge=1.0)(torch.as_tensor(z, dtype=torch.float32))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="same N"):
        fit_ridge_decoder(z[:5], x)
    with pytest.raises(ValueError, match="ridge"):
        fit_ridge_decoder(z, x, ridge=-1.0)
    with pytest.raises(ValueError, match="n_components"):
        fit_ridge_decoder(z, x, n_components=0)
    with pytest.raises(ValueError, match="weight"):
        RidgeDecoder(torch.zeros(3), torch.ones(3), torch.zeros(3, 24), (2, 3, 4))
