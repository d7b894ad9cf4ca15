"""Decoders trained jointly with a contrastive encoder: Kadeethum, Quetin, Yao/Dippel schemes."""

from __future__ import annotations

import pytest
import torch

from geofusion.data import FieldDataset
from geofusion.data.observations import make_mask
from geofusion.learning.augment import mean_filter
from geofusion.learning.config import TrainConfig
from geofusion.learning.decoders import (
    JOINT_SCHEMES,
    KadeethumJointDecoder,
    QuetinJointDecoder,
    YaoDippelJointDecoder,
    build_joint,
    reconstruct,
)
from geofusion.learning.losses import barlow_twins_loss
from geofusion.learning.methods import build_method, embed_observed
from geofusion.learning.training import fit
from geofusion.models.resnet import FieldDecoder

TINY = dict(latent_dim=16, width=8, proj_dim=8, proj_hidden_dim=16, decoder_width=8)
PARAMS = {"kadeethum": {"inner_batch": 4}, "quetin": {"alpha_start": 0.9, "alpha_end": 0.1},
          "yao_dippel": {"mask_ratio": 0.3}}


def smooth_fields(n: int = 16, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return mean_filter(torch.randn(n, 5, 32, 64, generator=g), 5)


def seasons(n: int) -> torch.Tensor:
    return torch.arange(n) % 4


def joint(scheme: str, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_joint(scheme, **TINY, **{**PARAMS[scheme], **params})


@torch.no_grad()
def terms(model, batch, seeds: tuple[int, ...] = (99, 100, 101)) -> dict[str, float]:
    """The loss terms on ``batch``, averaged over fixed augmentation/mask seeds (one batch of
    16 gives a noisy Barlow Twins loss; the mean over three draws is steady)."""
    model.train()
    runs = [model.loss(batch, torch.Generator().manual_seed(seed))[1] for seed in seeds]
    return {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}


@pytest.mark.parametrize("scheme", JOINT_SCHEMES)
def test_training_lowers_both_the_contrastive_and_the_reconstruction_loss(tmp_path, scheme):
    """Same batch and augmentation seeds before and after: both terms of the objective drop."""
    x = smooth_fields(16)
    batch = (x, seasons(16))
    model = joint(scheme)
    before = terms(model, batch)
    config = TrainConfig(epochs=10, batch_size=8, lr=2e-3, device="cpu", seed=0)
    history = fit(model, FieldDataset(x, seasons(16)), config, run_dir=tmp_path, progress=False)
    after = terms(model, batch)
    for key in ("contrastive", "reconstruction"):
        assert key in history.columns  # the history shows both terms
        assert after[key] < 0.9 * before[key], (key, before[key], after[key])
    if scheme == "yao_dippel":
        assert after["masked_contrastive"] < 0.9 * before["masked_contrastive"]


@pytest.mark.parametrize("scheme", JOINT_SCHEMES)
def test_shapes_embedding_and_reconstruction_follow_the_contrastive_inference_view(scheme):
    model = joint(scheme).eval()
    x = smooth_fields(3)
    assert model.encoder is model.method.encoder
    latent = model.embed(x)
    assert latent.shape == (3, 16)
    torch.testing.assert_close(latent, model.encoder(model.method.inference_view(x)))
    assert model(x).shape == (3, 5, 32, 64)
    torch.testing.assert_close(model(x), model.decoder(latent))
    observed = torch.rand(3, 32, 64, generator=torch.Generator().manual_seed(1)) > 0.3
    sparse = reconstruct(model, x, observed, batch_size=2)
    torch.testing.assert_close(torch.from_numpy(sparse),
                               model.decoder(embed_observed(model.method, x, observed)))
    torch.testing.assert_close(torch.from_numpy(sparse),
                               model(torch.where(observed[:, None], x, 0.0)))
    loss, metrics = model.loss((smooth_fields(8), seasons(8)), torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"contrastive", "reconstruction"} <= set(metrics)


def test_reconstruct_also_serves_the_autoencoder():
    torch.manual_seed(0)
    ae = build_method("autoencoder", latent_dim=16, width=8).eval()
    x = smooth_fields(3)
    torch.testing.assert_close(torch.from_numpy(reconstruct(ae, x, batch_size=2)), ae(x))


def test_kadeethum_reconstructs_exactly_inner_batch_non_augmented_days():
    model = joint("kadeethum", inner_batch=3, decoder_weight=0.7).train()
    x, y = smooth_fields(8), seasons(8)
    seen: list[torch.Tensor] = []
    model.decoder.register_forward_hook(lambda module, args, output: seen.append(output))
    loss, metrics = model.loss((x, y), torch.Generator().manual_seed(5))
    assert len(seen) == 1 and seen[0].shape == (3, 5, 32, 64)

    # By hand, with the same generator: the two views, then the inner positions.
    g = torch.Generator().manual_seed(5)
    view1, view2 = model.method.make_views(x, g)
    h = model.encoder(torch.cat([view1, view2]))
    z1, z2 = model.method.projector(h).chunk(2)
    contrastive = barlow_twins_loss(z1, z2, lambd=model.method.lambd)
    inner = torch.randperm(8, generator=g)[:3]
    canonical = model.method.augmentation.canonical(x[inner])  # no random crop: not augmented
    reconstruction = torch.mean((model.decoder(model.encoder(canonical)) - x[inner]) ** 2)
    torch.testing.assert_close(metrics["contrastive"], contrastive.item(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["reconstruction"], reconstruction.item(), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(loss, contrastive + 0.7 * reconstruction, rtol=1e-5, atol=1e-5)
    # Another subset of days would give another reconstruction error.
    others = torch.tensor([i for i in range(8) if i not in inner.tolist()][:3])
    other = torch.mean((model.decoder(model.method.embed(x[others])) - x[others]) ** 2)
    assert abs(other.item() - reconstruction.item()) > 1e-4


def test_kadeethum_rejects_an_inner_batch_larger_than_the_batch():
    model = joint("kadeethum", inner_batch=9)
    with pytest.raises(ValueError, match="inner_batch=9 exceeds the outer batch of 8"):
        model.loss((smooth_fields(8), seasons(8)), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="inner_batch"):
        joint("kadeethum", inner_batch=0)


def test_quetin_alpha_follows_its_schedule_across_epochs(tmp_path):
    x = smooth_fields(8)
    model = joint("quetin", alpha_start=0.8, alpha_end=0.2)
    config = TrainConfig(epochs=4, batch_size=4, lr=1e-3, device="cpu", seed=0)
    history = fit(model, FieldDataset(x, seasons(8)), config, run_dir=tmp_path, progress=False)
    assert history["alpha"].tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2])
    geometric = joint("quetin", alpha_start=0.8, alpha_end=0.1, schedule="exponential")
    alphas = [geometric.alpha_at(k, 4) for k in range(4)]
    assert alphas == pytest.approx([0.8, 0.4, 0.2, 0.1])
    assert joint("quetin").alpha_at(0, 1) == pytest.approx(0.9)


def test_quetin_loss_is_the_convex_combination_for_a_hand_set_alpha():
    model = joint("quetin").train()
    x, y = smooth_fields(8), seasons(8)
    model.alpha = 0.3
    loss, metrics = model.loss((x, y), torch.Generator().manual_seed(2))
    assert metrics["alpha"] == 0.3
    # The terms by hand: contrastive on the two views, MSE of the canonical-view reconstruction.
    g = torch.Generator().manual_seed(2)
    view1, view2 = model.method.make_views(x, g)
    h = model.encoder(torch.cat([view1, view2, model.method.inference_view(x)]))
    z1, z2 = model.method.projector(h[:16]).chunk(2)
    contrastive = barlow_twins_loss(z1, z2, lambd=model.method.lambd)
    reconstruction = torch.mean((model.decoder(h[16:]) - x) ** 2)
    torch.testing.assert_close(loss, 0.3 * contrastive + 0.7 * reconstruction, rtol=1e-5,
                               atol=1e-5)
    model.alpha = 1.0
    only_encoder = model.loss((x, y), torch.Generator().manual_seed(2))[0]
    torch.testing.assert_close(only_encoder, contrastive, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("params, match", [
    ({"alpha_start": 1.5}, "alpha_start must be in"),
    ({"alpha_end": -0.1}, "alpha_end must be in"),
    ({"schedule": "cosine"}, "unknown alpha schedule"),
    ({"alpha_end": 0.0, "schedule": "exponential"}, "exponential alpha schedule"),
])
def test_quetin_rejects_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        joint("quetin", **params)


def test_quetin_rejects_a_hand_set_alpha_outside_0_1():
    model = joint("quetin")
    with pytest.raises(ValueError, match="alpha must be in"):
        model.alpha = 1.2


def test_yao_dippel_masked_pair_equals_the_plain_pair_at_mask_ratio_0():
    model = joint("yao_dippel", mask_ratio=0.0).train()
    x, y = smooth_fields(8), seasons(8)
    loss, metrics = model.loss((x, y), torch.Generator().manual_seed(4))
    assert metrics["masked_contrastive"] == pytest.approx(metrics["contrastive"], rel=1e-5)
    masked = joint("yao_dippel", mask_ratio=0.6).train()
    _, metrics = masked.loss((x, y), torch.Generator().manual_seed(4))
    assert abs(metrics["masked_contrastive"] - metrics["contrastive"]) > 1e-3


def test_yao_dippel_decoder_reconstructs_the_full_field_from_the_masked_canonical_view():
    model = joint("yao_dippel", mask_ratio=0.5, decoder_weight=2.0).train()
    x, y = smooth_fields(8), seasons(8)
    seen: list[torch.Tensor] = []
    model.encoder.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    loss, metrics = model.loss((x, y), torch.Generator().manual_seed(6))
    inputs = seen[0].split(8)  # v1, v2, m1, m2, masked canonical view: one encoder pass
    assert len(inputs) == 5 and all(part.shape == (8, 5, 72, 144) for part in inputs)
    # By hand with the same generator: the two masks first, then each view and its masked
    # version under the same random draws (the mask zeroes points before augmenting).
    g = torch.Generator().manual_seed(6)
    masks = make_mask((2, 8, 32, 64), 0.5, "pixel", g)
    assert (~masks).float().mean().item() == pytest.approx(0.5)
    masked = [torch.where(masks[k][:, None], x, 0.0) for k in range(2)]
    augment = model.method.augmentation
    for k in range(2):
        replay = torch.Generator()
        replay.set_state(g.get_state())
        torch.testing.assert_close(inputs[k], augment(x, g))
        torch.testing.assert_close(inputs[2 + k], augment(masked[k], replay))
    torch.testing.assert_close(inputs[4], model.method.inference_view(masked[0]))
    assert not torch.equal(inputs[0], inputs[2])
    h = model.encoder(torch.cat(inputs))
    z = model.method.projector(h[:16]).chunk(2)
    zm = model.method.projector(h[16:32]).chunk(2)
    contrastive = barlow_twins_loss(*z, lambd=model.method.lambd)
    masked_contrastive = barlow_twins_loss(*zm, lambd=model.method.lambd)
    reconstruction = torch.mean((model.decoder(h[32:]) - x) ** 2)
    torch.testing.assert_close(loss, contrastive + masked_contrastive + 2.0 * reconstruction,
                               rtol=1e-5, atol=1e-5)
    assert metrics["reconstruction"] == pytest.approx(reconstruction.item(), rel=1e-5)


def test_yao_dippel_masked_view_shares_the_crop_of_its_plain_view():
    model = joint("yao_dippel", mask_ratio=0.3)
    full = smooth_fields(4)
    masked = torch.zeros_like(full)
    g = torch.Generator().manual_seed(0)
    view, masked_view = model._paired_view(full, full.clone(), g)
    torch.testing.assert_close(view, masked_view)  # same input, same draws: same view
    view2, _ = model._paired_view(full, masked, g)
    assert not torch.equal(view, view2)  # the generator moved on: a new crop


@pytest.mark.parametrize("params, match", [
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"mask_ratio": -0.1}, "mask_ratio"),
    ({"decoder_weight": -1.0}, "decoder_weight"),
    ({"mask_kind": "stripes"}, "unknown mask_kind"),
])
def test_yao_dippel_rejects_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        joint("yao_dippel", **params)


def test_build_joint_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown joint scheme 'mae'"):
        build_joint("mae", **TINY)
    with pytest.raises(ValueError, match=r"unknown parameters \['mask_ratio'\]"):
        build_joint("quetin", mask_ratio=0.5, **TINY)
    with pytest.raises(ValueError, match="contrastive method"):
        KadeethumJointDecoder(build_method("autoencoder", latent_dim=16, width=8),
                              FieldDecoder(16, 5, (32, 64), width=8))


def test_build_joint_makes_each_scheme_around_barlow_twins():
    for scheme, cls in zip(JOINT_SCHEMES, (KadeethumJointDecoder, QuetinJointDecoder,
                                           YaoDippelJointDecoder), strict=True):
        model = build_joint(scheme, lambd=0.02, **TINY)
        assert isinstance(model, cls)
        assert type(model.method).__name__ == "BarlowTwinsMethod" and model.method.lambd == 0.02
        assert model.decoder.grid == (32, 64) and model.decoder.coarse_channels == 8 * 8


LAT32 = torch.linspace(-87.19, 87.19, 32).numpy()


@pytest.mark.parametrize("scheme", JOINT_SCHEMES)
def test_lat_weighted_reconstruction_term_weights_latitudes_and_mse_stays_the_default(scheme):
    from geofusion.data.eof import area_weights
    from geofusion.learning.decoders import reconstruction_error
    fields = smooth_fields(8)
    target = torch.zeros_like(fields)
    target[:, :, :4] = 1.0  # error only near the south pole, where cos(lat) is small
    plain, weighted = joint(scheme), joint(scheme, reconstruction_loss="lat_weighted",
                                           latitudes=LAT32)
    assert plain.latitude_weights is None
    torch.testing.assert_close(weighted.latitude_weights,
                               torch.as_tensor(area_weights(LAT32), dtype=torch.float32))
    pred = torch.zeros_like(fields)
    assert float(plain.reconstruction_term(pred, target)) == pytest.approx(
        float(torch.nn.functional.mse_loss(pred, target)))
    lat_weighted = float(weighted.reconstruction_term(pred, target))
    assert lat_weighted == pytest.approx(float(reconstruction_error(
        pred, target, weighted.latitude_weights)))
    # Polar errors count less once the cell areas weigh them.
    assert lat_weighted < 0.5 * float(plain.reconstruction_term(pred, target))
    # The same weights in the scheme's objective: equal initial weights, different term.
    weighted.load_state_dict(plain.state_dict(), strict=False)
    batch = (fields, seasons(8))
    plain_terms, weighted_terms = terms(plain, batch), terms(weighted, batch)
    assert weighted_terms["contrastive"] == pytest.approx(plain_terms["contrastive"], rel=1e-4)
    assert weighted_terms["reconstruction"] != pytest.approx(plain_terms["reconstruction"])


def test_build_joint_takes_the_eof_residual_encoder_and_checks_the_loss():
    from geofusion.data.eof import fit_eof
    from geofusion.models.eof_residual import EOFResidualEncoder
    days = smooth_fields(24).numpy()
    code = fit_eof(days, LAT32, 16)
    basis = {"components": torch.from_numpy(code.components),
             "sqrt_weights": torch.from_numpy(code.sqrt_weights),
             "mean": torch.from_numpy(code.mean)}
    model = build_joint("kadeethum", encoder="eof_residual", eof_basis=basis,
                        augmentation="native", inner_batch=4, **TINY)
    assert isinstance(model.encoder, EOFResidualEncoder)
    # Zero-initialised residual: the latent starts as the EOF code of the canonical view.
    assert model.embed(torch.from_numpy(days[:3])).shape == (3, 16)
    with pytest.raises(ValueError, match="latitudes"):
        build_joint("quetin", reconstruction_loss="lat_weighted", **TINY)
    with pytest.raises(ValueError, match="reconstruction_loss"):
        build_joint("quetin", reconstruction_loss="l1", **TINY)
    with pytest.raises(ValueError, match="unknown parameters"):
        build_joint("quetin", latitude_weights=[1.0] * 32, **TINY)
