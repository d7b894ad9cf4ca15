"""Training objectives: wiring of views, encoder, projector and loss; learning on a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofusion.data import FieldDataset
from geofusion.learning.augment import ReportAugmentation, mean_filter, resize, two_views
from geofusion.learning.config import TrainConfig
from geofusion.learning.losses import barlow_twins_loss, nt_xent_loss, supcon_loss
from geofusion.learning.methods import METHODS, build_method, embed_observed, observe
from geofusion.learning.training import fit

TINY = dict(latent_dim=16, width=8, proj_dim=8, proj_hidden_dim=16)


def fields(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, 32, 64, generator=g)


def seasons(n: int = 8) -> torch.Tensor:
    return torch.arange(n) % 4


@pytest.mark.parametrize("name", METHODS)
def test_every_method_gives_a_finite_scalar_loss_and_latent_embeddings(name):
    torch.manual_seed(0)
    method = build_method(name, **TINY)
    loss, metrics = method.loss((fields(), seasons()), torch.Generator().manual_seed(1))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert isinstance(metrics, dict)
    assert method.embed(fields(3)).shape == (3, 16)


def test_contrastive_inference_view_is_the_deterministic_canonical_view():
    method = build_method("simclr", **TINY)
    x = fields(2)
    view = method.inference_view(x)
    assert view.shape == (2, 5, 72, 144)
    torch.testing.assert_close(view, mean_filter(resize(x, (72, 144)), 5, periodic_lon=True))
    torch.testing.assert_close(method.inference_view(x), view)
    method.eval()
    torch.testing.assert_close(method.embed(x), method.encoder(view))


def test_autoencoder_embeds_and_reconstructs_the_native_grid():
    method = build_method("autoencoder", **TINY).eval()
    x = fields(2)
    assert method.inference_view(x) is x
    assert method(x).shape == x.shape
    torch.testing.assert_close(method.embed(x), method.encoder(x))


@pytest.mark.parametrize("name, loss_fn", [
    ("barlow_twins", lambda z1, z2, y: barlow_twins_loss(z1, z2, lambd=0.02)),
    ("simclr", lambda z1, z2, y: nt_xent_loss(z1, z2, temperature=0.2)),
    ("supcon", lambda z1, z2, y: supcon_loss(torch.stack([z1, z2], 1), y, temperature=0.2)),
])
def test_method_loss_is_its_loss_function_on_the_projections_of_two_views(name, loss_fn):
    params = {"barlow_twins": {"lambd": 0.02}}.get(name, {"temperature": 0.2})
    torch.manual_seed(0)
    method = build_method(name, **TINY, **params)
    x, y = fields(), seasons()
    loss, _ = method.loss((x, y), torch.Generator().manual_seed(7))
    view1, view2 = two_views(x, ReportAugmentation(), torch.Generator().manual_seed(7))
    z1, z2 = method.projector(method.encoder(torch.cat([view1, view2]))).chunk(2)
    torch.testing.assert_close(loss, loss_fn(z1, z2, y))
    assert method.gather_distributed is False


def test_autoencoder_loss_is_the_reconstruction_mse():
    torch.manual_seed(0)
    method = build_method("autoencoder", **TINY)
    x = fields(4)
    loss, _ = method.loss((x, seasons(4)))
    torch.testing.assert_close(loss, ((method(x) - x) ** 2).mean())


def test_bad_names_and_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown method 'vae'"):
        build_method("vae", **TINY)
    with pytest.raises(ValueError, match="no loss parameters"):
        build_method("autoencoder", temperature=0.1, **TINY)
    with pytest.raises(TypeError):
        build_method("simclr", lambd=0.1, **TINY)


@pytest.mark.parametrize("name, params, lr", [
    ("autoencoder", {}, 3e-3),
    ("barlow_twins", {"lambd": 0.01}, 1e-3),
    ("simclr", {"temperature": 0.3}, 3e-3),
    ("supcon", {"temperature": 0.1}, 3e-3),
])
def test_a_few_epochs_of_training_lower_the_loss(tmp_path, name, params, lr):
    """On a fixed set of 16 smooth fields, 16 Adam steps lower the loss.

    The same views are compared: the loss is measured before and after training on one batch
    with one fixed augmentation seed.
    """
    torch.manual_seed(0)
    x = mean_filter(fields(16, seed=3), 5)
    batch = (x, seasons(16))
    method = build_method(name, **TINY, **params)
    method.train()
    with torch.no_grad():
        before = method.loss(batch, torch.Generator().manual_seed(99))[0].item()
    config = TrainConfig(epochs=8, batch_size=8, lr=lr, device="cpu", seed=0)
    fit(method, FieldDataset(x, seasons(16)), config, run_dir=tmp_path, progress=False)
    with torch.no_grad():
        after = method.loss(batch, torch.Generator().manual_seed(99))[0].item()
    assert after < before - 0.05 * abs(before), (before, after)


def test_observe_zeroes_missing_points_and_adds_the_mask_only_for_mask_channel_methods():
    x = fields(2)
    observed = torch.ones(2, 32, 64, dtype=torch.bool)
    observed[:, :4] = False
    plain = build_method("simclr", **TINY)
    out = observe(plain, x, observed)
    assert out.shape == x.shape and (out[:, :, :4] == 0).all()
    torch.testing.assert_close(out[:, :, 4:], x[:, :, 4:])
    assert observe(plain, x) is x
    plain.mask_channel = True  # as the sparse-view methods set it
    with_mask = observe(plain, x, observed)
    assert with_mask.shape == (2, 6, 32, 64)
    assert (with_mask[:, 5, :4] == 0).all() and (with_mask[:, 5, 4:] == 1).all()
    assert (observe(plain, x)[:, 5] == 1).all()


def test_embed_observed_is_the_embedding_of_the_observed_input():
    method = build_method("autoencoder", **TINY).eval()
    x = fields(2)
    observed = torch.rand(2, 32, 64, generator=torch.Generator().manual_seed(0)) > 0.5
    torch.testing.assert_close(embed_observed(method, x, observed),
                               method.encoder(torch.where(observed[:, None], x, 0.0)))


@pytest.mark.parametrize("name", ["simclr", "supcon"])
def test_simclr_and_supcon_take_the_barlow_twins_projection_head_on_request(name):
    tiny = dict(latent_dim=8, width=2, proj_dim=4, proj_hidden_dim=8)
    plain = build_method(name, **tiny)
    report = build_method(name, proj_final_batchnorm=True, **tiny)
    barlow = build_method("barlow_twins", **tiny)
    assert not plain.projector.final_batchnorm and report.projector.final_batchnorm
    # The report's head (3.3.2) is Barlow Twins' layer for layer.
    assert [type(m) for m in report.projector.net] == [type(m) for m in barlow.projector.net]
    assert ({k: v.shape for k, v in report.projector.state_dict().items()}
            == {k: v.shape for k, v in barlow.projector.state_dict().items()})
    # Its projections are standardised over the batch (batch norm without affine parameters).
    z = report.projector.train()(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    loss, _ = report.loss((torch.randn(4, 5, 32, 64), torch.tensor([0, 0, 1, 1])),
                          torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


# --- anomaly space: the EOF-residual encoder and the latitude-weighted loss (issue 23) ---

def test_latitude_weighted_loss_equals_its_formula():
    """L = (1/C) sum_c mean_{b,i,j} w_i (x_hat - x)^2 with w = cos(lat) / mean(cos(lat))."""
    lat = np.array([-60.0, 0.0, 60.0, 80.0])
    method = build_method("autoencoder", grid=(4, 8), width=2, latent_dim=3,
                          reconstruction_loss="lat_weighted", latitudes=lat)
    x = torch.randn(2, 5, 4, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, _ = method.loss((x, None))
        err = (method(x) - x) ** 2
    w = np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean()
    expected = sum(float((err[b, c] * torch.tensor(w, dtype=torch.float32)[:, None]).mean())
                   for b in range(2) for c in range(5)) / 10
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="needs the grid's latitudes"):
        build_method("autoencoder", grid=(4, 8), width=2, latent_dim=3,
                     reconstruction_loss="lat_weighted")
    with pytest.raises(ValueError, match="unknown reconstruction_loss"):
        build_method("autoencoder", grid=(4, 8), width=2, latent_dim=3, reconstruction_loss="l1")


def test_eof_residual_methods_start_as_the_eof_code():
    from geofusion.data.eof import fit_eof

    lat = np.linspace(-80, 80, 8)
    a = np.random.default_rng(1).normal(size=(30, 5, 8, 16)).astype("float32")
    code = fit_eof(a, lat, 4)
    eof_basis = {"components": torch.from_numpy(code.components),
                 "sqrt_weights": torch.from_numpy(code.sqrt_weights),
                 "mean": torch.from_numpy(code.mean)}
    ae = build_method("autoencoder", grid=(8, 16), width=2, latent_dim=4,
                      encoder="eof_residual", eof_basis=eof_basis)
    with torch.no_grad():
        out = ae(torch.from_numpy(a[:3])).numpy()
    np.testing.assert_allclose(out, code.decode(code.encode(a[:3])), rtol=1e-4, atol=1e-4)
    bt = build_method("barlow_twins", grid=(8, 16), width=2, latent_dim=4, proj_dim=4,
                      proj_hidden_dim=8, augmentation="native", encoder="eof_residual",
                      eof_basis=eof_basis, lambd=0.01)
    assert bt.encoder.latent_dim == 4
    with pytest.raises(ValueError, match="needs eof_basis"):
        build_method("autoencoder", grid=(8, 16), width=2, latent_dim=4, encoder="eof_residual")
    with pytest.raises(ValueError, match="4 components for latent_dim=5"):
        build_method("autoencoder", grid=(8, 16), width=2, latent_dim=5,
                     encoder="eof_residual", eof_basis=eof_basis)
    with pytest.raises(ValueError, match="unknown encoder"):
        build_method("autoencoder", grid=(8, 16), width=2, latent_dim=4, encoder="vit")
