"""Temporal positives, latent smoothness and time-aware batches wired into the methods, the
training loop (``fit``, DDP shares) and the shared-model cache (issue 15, items 1-3)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geofusion.data.samplers import TemporalPairDataset
from geofusion.learning.config import TrainConfig
from geofusion.learning.methods import BarlowTwinsMethod, SparseBarlowTwinsMethod, build_method
from geofusion.learning.model_cache import model_dir, pretrained
from geofusion.learning.smoothness import latent_smoothness_loss
from geofusion.learning.training import fit, time_aware_batch_sampler
from geofusion.models.resnet import ProjectionHead
from tests.learning.test_model_cache import TINY, tiny_prepared


def _identity(x, generator):
    return x


class _Flatten(nn.Module):
    """A deterministic 'encoder' (B, C, H, W) -> (B, 4), so views can be checked exactly."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels * 4 * 8, 4)

    def forward(self, x):
        return self.linear(x.flatten(1))


def _barlow(channels=5, **kwargs):
    torch.manual_seed(0)
    return BarlowTwinsMethod(_Flatten(channels), ProjectionHead(4, 8, 4),
                             augmentation=_identity, **kwargs)


def _days(n=6, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 5, 4, 8)),
                           dtype=torch.float32)


def test_temporal_batch_pairs_the_day_with_its_partner_and_plain_batches_are_unchanged():
    method, x, partner = _barlow(), _days(), _days(seed=1)
    labels = torch.zeros(6, dtype=torch.long)
    view1, view2 = method.make_views(x, torch.Generator().manual_seed(0), partner)
    assert torch.equal(view1, x) and torch.equal(view2, partner)

    def loss(batch, m=method):
        return m.loss(batch, torch.Generator().manual_seed(0))[0]

    # Partner == day gives the same-day loss; another partner another loss.
    assert torch.allclose(loss((x, x, labels)), loss((x, labels)))
    assert not torch.allclose(loss((x, partner, labels)), loss((x, labels)))
    expected = method.objective(*method.projector(method.encoder(torch.cat([x, partner])))
                                .chunk(2), labels)
    assert torch.allclose(loss((x, partner, labels)), expected)
    # The switch off: the partner is ignored.
    same_day = _barlow(temporal_positives=False)
    assert torch.allclose(loss((x, partner, labels), same_day), loss((x, labels), same_day))


def test_sparse_method_masks_the_partner_day_not_the_anchor():
    torch.manual_seed(0)
    method = SparseBarlowTwinsMethod(
        _Flatten(6), ProjectionHead(4, 8, 4),
        {"kind": "pixel", "min_ratio": 0.5, "max_ratio": 0.5, "noise_std": 0.0},
        augmentation=_identity)
    x, partner = _days(), _days(seed=1)
    view1, view2 = method.make_views(x, torch.Generator().manual_seed(0), partner)
    assert torch.equal(view1[:, :5], x) and bool((view1[:, 5] == 1).all())
    observed = view2[:, 5].bool()
    assert 0.3 < float(observed.float().mean()) < 0.7
    assert torch.equal(view2[:, :5], partner * observed[:, None])


def test_smoothness_term_adds_weight_times_the_second_difference_of_the_three_days():
    x, following, previous = _days(), _days(seed=1), _days(seed=2)
    labels = torch.zeros(6, dtype=torch.long)
    plain, smooth = _barlow(), _barlow(smoothness_weight=0.5)
    base = plain.loss((x, following, labels), torch.Generator().manual_seed(0))[0]
    total, metrics = smooth.loss((x, following, previous, labels),
                                 torch.Generator().manual_seed(0))
    u = smooth.embed(torch.cat([previous, x, following])).chunk(3)
    term = latent_smoothness_loss(*u).detach()
    assert metrics["smoothness"] == pytest.approx(float(term), rel=1e-5)
    expected = float(base.detach()) + 0.5 * float(term)
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="with_mirror=True"):
        smooth.loss((x, following, labels), torch.Generator().manual_seed(0))


def test_mirrored_pairs_are_equally_spaced_inside_the_series():
    ds = TemporalPairDataset(np.arange(40, dtype=np.float32)[:, None, None, None]
                             * np.ones((1, 1, 2, 2), np.float32), max_shift=5, with_mirror=True)
    assert len(ds) == 30
    for index in range(len(ds)):
        day, partner, mirror, _ = (float(item.reshape(-1)[0]) for item in ds[index])
        assert 1 <= abs(partner - day) <= 5 and partner + mirror == 2 * day
        assert 0 <= min(partner, mirror) and max(partner, mirror) < 40


class _Recorder(nn.Module):
    """Records the day indices of every batch it is trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def loss(self, batch, generator):
        self.seen.append(batch[0].long().tolist())
        return ((batch[0].float() - self.m) ** 2).mean(), {}


class _EpochDays(TensorDataset):
    def __init__(self, n):
        super().__init__(torch.arange(n))
        self.epochs: list[int] = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def test_fit_draws_the_time_aware_batches_and_a_resumed_run_draws_the_same(tmp_path):
    config = TrainConfig(epochs=2, batch_size=9, device="cpu", seed=3,
                         batch_sampler={"hard": 1, "easy": 1, "hard_range": [10, 40],
                                        "easy_min": 60})
    # Interrupted after epoch 1 and resumed: the batches of both epochs are the sampler's.
    method, first, second = _Recorder(), _EpochDays(150), _EpochDays(150)
    fit(method, first, config, run_dir=tmp_path, progress=False, stop_after=1)
    fit(method, second, config, run_dir=tmp_path, progress=False)
    assert first.epochs == [0] and second.epochs == [1]
    expected = [b for e in range(2) for b in time_aware_batch_sampler(150, config, e)]
    assert method.seen == expected and len(expected) == 2 * (150 // 9)
    for batch in method.seen:
        for anchor, hard, easy in zip(batch[0::3], batch[1::3], batch[2::3], strict=True):
            assert 10 <= abs(hard - anchor) <= 40 and abs(easy - anchor) >= 60
    with pytest.raises(ValueError, match="multiple"):
        TrainConfig(batch_size=8, batch_sampler={"hard": 2, "easy": 0})
    with pytest.raises(ValueError, match="unknown batch_sampler"):
        TrainConfig(batch_size=8, batch_sampler={"anchors": 2})


def test_ranks_share_each_global_time_aware_batch():
    config = TrainConfig(batch_size=12, seed=1, batch_sampler={"hard": 2, "easy": 1,
                                                              "easy_min": 100})
    single = list(time_aware_batch_sampler(300, config, epoch=4))
    shares = [list(time_aware_batch_sampler(300, config, 4, rank=r, world_size=3))
              for r in range(3)]
    assert [sum((s[i] for s in shares), []) for i in range(len(single))] == single


def test_pretrained_trains_on_temporal_pairs_under_its_own_key(tmp_path):
    prepared = tiny_prepared()
    config = TrainConfig(epochs=1, batch_size=8, device="cpu")
    _, _, plain = pretrained("barlow_twins", prepared, tmp_path, config, progress=False,
                             augmentation="native", **TINY)
    _, history, temporal = pretrained(
        "barlow_twins", prepared, tmp_path, config, progress=False, augmentation="native",
        temporal_pairs={"max_shift": 2, "with_mirror": True}, smoothness_weight=1.0, **TINY)
    assert temporal != plain and "smoothness" in history.columns
    described = json.loads((temporal / "description.json").read_text())
    assert described["temporal_pairs"] == {"max_shift": 2, "scale": 10.0, "with_mirror": True}


def test_an_unset_batch_sampler_keeps_the_model_directories_of_earlier_runs():
    """Options added to TrainConfig later (the batch sampler, limit_batches) enter the model
    key only when set, so the directories of runs from before they existed stay valid."""
    config = TrainConfig(epochs=1, batch_size=8, device="cpu")
    description = {"name": "x"}
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("device", "num_workers", "batch_sampler", "limit_batches")}
    text = json.dumps([description, settings], sort_keys=True, default=str,
                      separators=(",", ":"))
    assert model_dir("r", description, config).name == \
        "x-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    sampled = dataclasses.replace(config, batch_sampler={"hard": 1, "easy": 0})
    assert model_dir("r", description, sampled) != model_dir("r", description, config)


def test_build_method_passes_the_temporal_options():
    method = build_method("simclr", latent_dim=8, width=2, proj_dim=4, proj_hidden_dim=8,
                          smoothness_weight=0.1, temporal_positives=False)
    assert method.smoothness_weight == 0.1 and method.temporal_positives is False
    with pytest.raises(ValueError, match="smoothness_weight"):
        build_method("simclr", latent_dim=8, width=2, proj_dim=4, proj_hidden_dim=8,
                     smoothness_weight=-1.0)
