"""Sparse, noisy observations and the methods trained on them (report chapter 4, step 4)."""

from __future__ import annotations

import json

import pytest
import torch

from geofusion.data import FieldDataset
from geofusion.data.observations import (
    MASK_KINDS,
    Observation,
    apply_mask,
    make_mask,
    missing_count,
    random_ratios,
    realised_correlation_length,
)
from geofusion.learning.augment import ReportAugmentation
from geofusion.learning.config import TrainConfig
from geofusion.learning.decoders import reconstruct
from geofusion.learning.losses import barlow_twins_loss, nt_xent_loss, supcon_loss
from geofusion.learning.methods import (
    BarlowTwinsMethod,
    DenoisingAutoencoderMethod,
    SparseBarlowTwinsMethod,
    SparseViewMethod,
    build_method,
    embed_observed,
    observe,
)
from geofusion.learning.model_cache import model_dir
from geofusion.learning.training import fit

TINY = dict(latent_dim=16, width=8, proj_dim=8, proj_hidden_dim=16)
SETTINGS = {"kind": "patch", "min_ratio": 0.1, "max_ratio": 0.8, "noise_std": 0.3,
            "noise_length": 2.0, "both_views": False}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_fields(n: int, seed: int = 0) -> torch.Tensor:
    coarse = torch.randn(n, 5, 4, 8, generator=gen(seed))
    return torch.nn.functional.interpolate(coarse, size=(32, 64), mode="bilinear")


def identity() -> ReportAugmentation:
    """An augmentation that changes nothing on the 32 x 64 grid (no resize, full crop, 1 x 1)."""
    return ReportAugmentation(resize=(32, 64), crop=(32, 64), kernel_size=1)


# --------------------------------------------------------------------------------------------
# Observation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", MASK_KINDS)
def test_observation_misses_the_exact_count_of_its_per_sample_ratio(kind):
    observation = Observation(kind=kind, min_ratio=0.2, max_ratio=0.7)
    x = torch.randn(32, 5, 32, 64, generator=gen(0))
    corrupted, observed = observation(x, gen(1))
    assert observed.shape == (32, 32, 64) and observed.dtype == torch.bool
    # The ratios are the generator's first draw: the counts are exactly theirs.
    ratios = random_ratios(32, 0.2, 0.7, gen(1))
    missing = (~observed).sum(dim=(1, 2))
    assert torch.equal(missing, missing_count(ratios, 32, 64))
    fraction = missing / (32 * 64)
    assert (fraction >= 0.2 - 1e-3).all() and (fraction <= 0.7 + 1e-3).all()
    assert fraction.std() > 0.05  # one ratio per sample, not one per batch
    # Without noise: the field where observed, 0 (the standardised mean) where missing.
    torch.testing.assert_close(corrupted, apply_mask(x, observed))


def test_observation_is_reproducible_under_a_seed_and_differs_between_seeds():
    observation = Observation.from_dict(SETTINGS)
    x = torch.randn(4, 5, 32, 64, generator=gen(0))
    a, mask_a = observation(x, gen(3))
    b, mask_b = observation(x, gen(3))
    c, mask_c = observation(x, gen(4))
    assert torch.equal(a, b) and torch.equal(mask_a, mask_b)
    assert not torch.equal(mask_a, mask_c) and not torch.equal(a, c)


def test_noise_is_only_where_observed_with_the_requested_std_and_length():
    observation = Observation(kind="pixel", min_ratio=0.4, max_ratio=0.4, noise_std=0.5,
                              noise_length=3.0)
    x = torch.randn(16, 5, 32, 64, generator=gen(0))
    corrupted, observed = observation(x, gen(2))
    where = observed[:, None].expand_as(x)
    assert (corrupted[~where] == 0).all()
    noise = (corrupted - x)[where]
    assert abs(noise.std().item() - 0.5) < 0.05, noise.std()
    assert abs(noise.mean().item()) < 0.05
    # The noise is spatially correlated with the requested length (measured without gaps).
    full = Observation(min_ratio=0.0, max_ratio=0.0, noise_std=0.5, noise_length=3.0)
    noisy, _ = full(x, gen(5))
    assert abs(realised_correlation_length(noisy - x) - 3.0) < 0.3


@pytest.mark.parametrize("settings, problem", [
    ({"min_ratio": -0.1}, "\\[0, 1\\)"),
    ({"max_ratio": 1.0}, "\\[0, 1\\)"),
    ({"min_ratio": 0.6, "max_ratio": 0.5}, "min_ratio <= max_ratio"),
    ({"noise_std": -1.0}, "noise_std must be >= 0"),
    ({"noise_length": -1.0}, "noise_length must be >= 0"),
    ({"kind": "cloud"}, "kind must be one of"),
    ({"ratio": 0.5}, "unknown observation settings \\['ratio'\\]"),
    ({"both_views": "yes"}, "both_views must be True or False"),
])
def test_observation_refuses_bad_settings_with_the_problem_named(settings, problem):
    with pytest.raises(ValueError, match=problem):
        Observation.from_dict(settings)


def test_observation_needs_a_generator_and_fields():
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        Observation()(torch.zeros(2, 5, 8, 16), None)
    with pytest.raises(ValueError, match="\\(B, C, H, W\\)"):
        Observation()(torch.zeros(5, 8, 16), gen(0))


def test_settings_round_trip_through_json_and_key_a_model():
    observation = Observation.from_dict(SETTINGS)
    assert Observation.from_dict(json.loads(json.dumps(observation.to_dict()))) == observation
    assert observation.to_dict() == SETTINGS
    config = TrainConfig(epochs=1)
    describe = lambda obs: {"name": "barlow_twins", "params": {"observation": obs}}  # noqa: E731
    same = model_dir("runs", describe(dict(SETTINGS)), config)
    assert same == model_dir("runs", describe(json.loads(json.dumps(SETTINGS))), config)
    assert same != model_dir("runs", describe({**SETTINGS, "max_ratio": 0.5}), config)
    assert same != model_dir("runs", describe(None), config)


# --------------------------------------------------------------------------------------------
# Sparse-view contrastive methods
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["barlow_twins", "simclr", "supcon"])
def test_build_method_with_observation_gives_a_mask_channel_variant(name):
    plain = build_method(name, **TINY)
    sparse = build_method(name, observation=SETTINGS, **TINY)
    assert isinstance(sparse, SparseViewMethod) and isinstance(sparse, type(plain))
    assert sparse.mask_channel and not plain.mask_channel
    assert sparse.encoder.in_channels == 6 and plain.encoder.in_channels == 5
    assert sparse.observation == Observation.from_dict(SETTINGS)
    x = torch.randn(3, 5, 32, 64, generator=gen(0))
    observed = make_mask((3, 32, 64), 0.5, generator=gen(1))
    sparse.eval()
    inputs = observe(sparse, x, observed)
    assert sparse.inference_view(inputs).shape == (3, 6, 72, 144)
    assert sparse.embed(inputs).shape == (3, 16)
    torch.testing.assert_close(embed_observed(sparse, x, observed), sparse.embed(inputs))
    with pytest.raises(ValueError, match="mask channel"):
        sparse.embed(x)  # five channels: the mask is missing


@pytest.mark.parametrize("both_views", [False, True])
def test_views_pair_the_complete_field_with_a_corrupted_one(both_views):
    observation = Observation(kind="swath", min_ratio=0.3, max_ratio=0.6, noise_std=0.2,
                              noise_length=1.0, both_views=both_views)
    torch.manual_seed(0)
    method = build_method("barlow_twins", observation=observation.to_dict(), **TINY)
    method.augmentation = identity()  # views on the native grid, to read them directly
    x = torch.randn(6, 5, 32, 64, generator=gen(0))
    view1, view2 = method.make_views(x, gen(9))
    assert view1.shape == view2.shape == (6, 6, 32, 64)
    g = gen(9)
    if both_views:  # two independent corruptions, in order
        first, second = observation(x, g), observation(x, g)
        torch.testing.assert_close(view1, apply_mask(*first, mask_channel=True))
        assert not torch.equal(first[1], second[1])
    else:  # view 1 complete, mask channel all ones
        second = observation(x, g)
        torch.testing.assert_close(view1[:, :5], x)
        assert (view1[:, 5] == 1).all()
    torch.testing.assert_close(view2, apply_mask(*second, mask_channel=True))
    assert (view2[:, 5] == second[1].float()).all() and (view2[:, :5][~second[1][:, None]
                                                                      .expand_as(x)] == 0).all()
    assert 0.3 <= 1 - view2[:, 5].mean().item() <= 0.6


@pytest.mark.parametrize("name, objective", [
    ("barlow_twins", lambda z1, z2, y: barlow_twins_loss(z1, z2, lambd=0.02)),
    ("simclr", lambda z1, z2, y: nt_xent_loss(z1, z2, temperature=0.2)),
    ("supcon", lambda z1, z2, y: supcon_loss(torch.stack([z1, z2], 1), y, temperature=0.2)),
])
@pytest.mark.parametrize("both_views", [False, True])
def test_sparse_loss_is_the_objective_on_corrupted_then_augmented_views(name, objective,
                                                                         both_views):
    params = {"lambd": 0.02} if name == "barlow_twins" else {"temperature": 0.2}
    settings = {**SETTINGS, "both_views": both_views}
    torch.manual_seed(0)
    method = build_method(name, observation=settings, **TINY, **params)
    x, y = smooth_fields(8), torch.arange(8) % 4
    loss, _ = method.loss((x, y), gen(7))
    # By hand: corruption on the native grid first (generator order: view 1 if both_views,
    # view 2), then the report augmentation of the 6-channel inputs (view 1, view 2).
    observation, augmentation, g = Observation.from_dict(settings), ReportAugmentation(), gen(7)
    if both_views:
        first = apply_mask(*observation(x, g), mask_channel=True)
    else:
        first = torch.cat([x, torch.ones(8, 1, 32, 64)], dim=1)
    second = apply_mask(*observation(x, g), mask_channel=True)
    view1, view2 = augmentation(first, g), augmentation(second, g)
    z1, z2 = method.projector(method.encoder(torch.cat([view1, view2]))).chunk(2)
    torch.testing.assert_close(loss, objective(z1, z2, y))
    # The mask channel went through the augmentation: resized and smoothed, within [0, 1].
    assert view2[:, 5].min() >= 0 and view2[:, 5].max() <= 1 + 1e-6
    if not both_views:
        torch.testing.assert_close(view1[:, 5], torch.ones_like(view1[:, 5]))


def test_sparse_barlow_twins_learns_and_pulls_masked_days_to_their_full_embedding(tmp_path):
    """60 Adam steps on 32 smooth fields: the sparse objective falls, and on unseen days the
    embedding of a half-masked field moves towards the embedding of the complete field.

    The cosine is taken on latents centred on the mean latent of the complete fields: raw
    cosines of a freshly initialised encoder are ~0.98 between *any* two days (the shared mean
    direction dominates), so only the centred cosine says whether a masked day points at its
    own day. It is also checked against the distance between different days.
    """
    torch.manual_seed(0)
    method = build_method("barlow_twins", observation={"kind": "pixel", "max_ratio": 0.9},
                          **TINY)
    assert isinstance(method, SparseBarlowTwinsMethod)
    x, y = smooth_fields(32, seed=0), torch.arange(32) % 4
    unseen = smooth_fields(16, seed=100)
    half = make_mask((16, 32, 64), 0.5, "pixel", gen(5))

    def alignment() -> tuple[float, float]:
        method.eval()
        with torch.no_grad():
            full = embed_observed(method, unseen)
            masked = embed_observed(method, unseen, half)
        centre = full.mean(dim=0)
        cosine = torch.nn.functional.cosine_similarity(full - centre, masked - centre).mean()
        between_days = torch.cdist(full, full).sum() / (16 * 15)
        return cosine.item(), ((full - masked).norm(dim=1).mean() / between_days).item()

    with torch.no_grad():
        method.train()
        loss_before = method.loss((x, y), gen(99))[0].item()
    cosine_before, distance_before = alignment()
    fit(method, FieldDataset(x, y), TrainConfig(epochs=30, batch_size=16, lr=3e-3,
                                               device="cpu", seed=0), progress=False)
    with torch.no_grad():
        method.train()
        loss_after = method.loss((x, y), gen(99))[0].item()
    cosine_after, distance_after = alignment()
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert cosine_after > cosine_before + 0.2, (cosine_before, cosine_after)
    assert distance_after < 0.6 * distance_before, (distance_before, distance_after)


# --------------------------------------------------------------------------------------------
# Denoising autoencoder
# --------------------------------------------------------------------------------------------

def test_denoising_autoencoder_reconstructs_the_full_field_from_the_observation(tmp_path):
    torch.manual_seed(0)
    method = build_method("autoencoder", observation=SETTINGS, **TINY)
    assert isinstance(method, DenoisingAutoencoderMethod) and method.mask_channel
    assert method.encoder.in_channels == 6
    x = smooth_fields(16)
    loss, metrics = method.loss((x,), gen(3))
    corrupted, observed = Observation.from_dict(SETTINGS)(x, gen(3))
    reconstruction = method.decoder(method.encoder(apply_mask(corrupted, observed,
                                                              mask_channel=True)))
    assert reconstruction.shape == x.shape
    torch.testing.assert_close(loss, ((reconstruction - x) ** 2).mean())  # full clean target
    assert metrics["missing_fraction"] == pytest.approx((~observed).float().mean().item())
    before = loss.item()
    fit(method, FieldDataset(x), TrainConfig(epochs=8, batch_size=8, lr=3e-3, device="cpu"),
        run_dir=tmp_path, progress=False)
    method.train()
    with torch.no_grad():
        after = method.loss((x,), gen(3))[0].item()
    assert after < 0.9 * before, (before, after)
    # reconstruct() serves it like a frozen-encoder decoder: fields plus their mask.
    torch.testing.assert_close(torch.from_numpy(reconstruct(method, corrupted, observed)),
                               method.eval()(corrupted, observed))
    torch.testing.assert_close(method(x), method(x, torch.ones(16, 32, 64, dtype=torch.bool)))


def test_plain_methods_are_unchanged_and_both_views_is_refused_for_the_autoencoder():
    assert type(build_method("barlow_twins", **TINY)) is BarlowTwinsMethod
    assert type(build_method("barlow_twins", observation=None, **TINY)) is BarlowTwinsMethod
    with pytest.raises(ValueError, match="both_views"):
        build_method("autoencoder", observation={**SETTINGS, "both_views": True}, **TINY)
    with pytest.raises(ValueError, match="unknown observation settings"):
        build_method("simclr", observation={"mask_ratio": 0.5}, **TINY)
