"""Embedding evaluation: the Table 3.1 figures on hand-checkable encoders, 2-D projections."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from geofusion.downstream import embeddings
from geofusion.learning.augment import ReportAugmentation

matplotlib.use("Agg")


class Flatten(nn.Module):
    """A parameter-carrying encoder whose embedding is the flattened field (times a weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * x.flatten(1)


def identity_augmentation(x, generator):
    return x.clone()


def noisy_augmentation(x, generator):
    return x + 0.1 * torch.randn(x.shape, generator=generator)


def test_identical_views_give_positive_cosine_one_and_hand_computed_negatives():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 3, 4, generator=g)
    out = embeddings.embedding_metrics(Flatten(), x, identity_augmentation,
                                       torch.Generator().manual_seed(1), batch_size=6)
    e = nn.functional.normalize(x.flatten(1), dim=1)
    cosine = e @ e.T
    expected_negative = (cosine.sum() - cosine.diagonal().sum()) / (6 * 5)
    assert out["positive_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert out["negative_cosine"] == pytest.approx(expected_negative.item(), abs=1e-6)
    assert out["embedding_variance"] == pytest.approx(x.flatten(1).var(0).mean().item(), rel=1e-5)


def _loop_negative_cosine(e1, e2):
    """Mean cosine over all ordered pairs i != j, by an explicit double loop."""
    total, count = 0.0, 0
    for i in range(len(e1)):
        for j in range(len(e2)):
            if i != j:
                total += float(nn.functional.cosine_similarity(e1[i], e2[j], dim=0))
                count += 1
    return total / count


def test_negative_cosine_is_the_all_pairs_mean_on_slowly_drifting_days():
    # Embeddings that drift slowly in time (a point going once round a circle over 40 days):
    # consecutive days are near-identical, so a mean over pairs within batches of 4 consecutive
    # days is ~0.9, while the all-pairs mean is ~0 (every direction as often as its opposite).
    t = torch.arange(40, dtype=torch.float64) * 2 * torch.pi / 40
    x = torch.stack([torch.cos(t), torch.sin(t)], dim=1).float()[:, None, :, None]  # (40,1,2,1)
    out = embeddings.embedding_metrics(Flatten(), x, identity_augmentation,
                                       torch.Generator(), batch_size=4)
    e = x.flatten(1)
    expected = _loop_negative_cosine(e, e)
    within_batches = np.mean([_loop_negative_cosine(e[i:i + 4], e[i:i + 4])
                              for i in range(0, 40, 4)])
    assert within_batches > 0.8
    assert abs(expected) < 0.05
    assert out["negative_cosine"] == pytest.approx(expected, abs=1e-6)


def test_figures_do_not_depend_on_the_batch_size():
    x = torch.randn(9, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    a = embeddings.embedding_metrics(Flatten(), x, noisy_augmentation,
                                     torch.Generator().manual_seed(0), batch_size=9)
    # Noise drawn per batch differs with the batch size; identity views isolate the pairing.
    b = embeddings.embedding_metrics(Flatten(), x, identity_augmentation, torch.Generator(),
                                     batch_size=2)
    c = embeddings.embedding_metrics(Flatten(), x, identity_augmentation, torch.Generator(),
                                     batch_size=100)
    assert b == pytest.approx(c, abs=1e-9)
    assert a["negative_cosine"] != pytest.approx(b["negative_cosine"], abs=1e-9)


def test_native_grid_view_resizes_each_augmented_view_back_to_the_fields_grid():
    seen = []

    class Recording(Flatten):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return super().forward(x).mean(1, keepdim=True) + x.flatten(1)[:, :3]

    def upsampling(x, generator):
        return torch.nn.functional.interpolate(x, size=(8, 16), mode="bilinear")

    x = torch.randn(4, 2, 4, 8, generator=torch.Generator().manual_seed(0))
    embeddings.embedding_metrics(Recording(), x, upsampling, torch.Generator(), view="augmented")
    assert set(seen) == {(8, 16)}
    seen.clear()
    embeddings.embedding_metrics(Recording(), x, upsampling, torch.Generator(), view="native_grid")
    assert set(seen) == {(4, 8)}
    with pytest.raises(ValueError, match="unknown view 'canonical'.*native_grid"):
        embeddings.embedding_metrics(Flatten(), x, upsampling, torch.Generator(), view="canonical")


def test_collapsed_encoder_has_zero_variance_and_negative_cosine_one():
    class Collapsed(Flatten):
        def forward(self, x):
            return self.scale * torch.ones(len(x), 7)

    x = torch.randn(5, 1, 2, 2)
    out = embeddings.embedding_metrics(Collapsed(), x, noisy_augmentation,
                                       torch.Generator().manual_seed(0))
    assert out["embedding_variance"] == pytest.approx(0.0, abs=1e-12)
    assert out["negative_cosine"] == pytest.approx(1.0, abs=1e-6)


def test_noisier_views_lower_the_positive_cosine():
    x = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    clean = embeddings.embedding_metrics(Flatten(), x, identity_augmentation, torch.Generator())
    noisy = embeddings.embedding_metrics(Flatten(), x, noisy_augmentation,
                                         torch.Generator().manual_seed(0))
    assert noisy["positive_cosine"] < clean["positive_cosine"] - 1e-3


def test_embedding_metrics_needs_two_samples_and_restores_training_mode():
    encoder = Flatten().train()
    with pytest.raises(ValueError, match="at least 2"):
        embeddings.embedding_metrics(encoder, torch.randn(1, 1, 2, 2), identity_augmentation,
                                     torch.Generator())
    embeddings.embedding_metrics(encoder, torch.randn(3, 1, 2, 2), identity_augmentation,
                                 torch.Generator())
    assert encoder.training


def test_embed_applies_the_transform_per_batch_and_is_batch_size_independent():
    x = np.random.default_rng(0).normal(size=(7, 2, 3, 3)).astype("float32")
    encoder = Flatten()
    a = embeddings.embed(encoder, x, batch_size=3, transform=lambda b: 2 * b)
    b = embeddings.embed(encoder, x, batch_size=100, transform=lambda b: 2 * b)
    assert a.shape == (7, 18) and a.dtype == np.float32
    np.testing.assert_allclose(a, 2 * x.reshape(7, -1), rtol=1e-6)
    np.testing.assert_allclose(a, b)


def test_pair_embeddings_stacks_first_then_second_views():
    x = torch.randn(4, 1, 2, 2)
    e = embeddings.pair_embeddings(Flatten(), x, identity_augmentation, torch.Generator())
    assert e.shape == (8, 4)
    np.testing.assert_allclose(e[:4], e[4:])


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_projections_are_two_dimensional_and_separate_distinct_clusters(method):
    rng = np.random.default_rng(0)
    centres = np.repeat(np.eye(2, 10) * 20, 15, axis=0)
    points = (centres + rng.normal(size=(30, 10))).astype("float32")
    xy = embeddings.project_2d(points, method, seed=0)
    assert xy.shape == (30, 2)
    a, b = xy[:15].mean(0), xy[15:].mean(0)
    spread = max(xy[:15].std(0).max(), xy[15:].std(0).max())
    assert np.linalg.norm(a - b) > 2 * spread


def test_projection_errors():
    with pytest.raises(ValueError, match="at least 3"):
        embeddings.project_2d(np.zeros((2, 4)), "pca")
    with pytest.raises(ValueError, match="unknown projection 'mds'"):
        embeddings.project_2d(np.zeros((5, 4)), "mds")


def test_plot_projections_draws_one_panel_per_projection_and_pair_lines():
    points = np.random.default_rng(0).normal(size=(12, 5))
    fig = embeddings.plot_projections(points, np.arange(12) % 4, ["DJF", "MAM", "JJA", "SON"],
                                      methods=("pca", "tsne"), paired=True, title="t")
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 6  # one line per positive pair
    matplotlib.pyplot.close(fig)


def test_comparison_table_puts_the_reports_values_beside_ours():
    ours = {"simclr": {"positive_cosine": 0.9, "negative_cosine": 0.1, "embedding_variance": 1.0},
            "autoencoder": {"positive_cosine": 0.5, "negative_cosine": 0.4,
                            "embedding_variance": 2.0}}
    table = embeddings.comparison_table(ours)
    assert table.loc["simclr", "report_positive_cosine"] == 0.999
    assert np.isnan(table.loc["autoencoder", "report_positive_cosine"])
    assert table.loc["autoencoder", "embedding_variance"] == 2.0


def test_table_3_1_scores_each_method_on_its_training_input():
    from geofusion.learning.methods import build_method

    tiny = dict(latent_dim=4, width=2, proj_dim=4, proj_hidden_dim=8)
    x = torch.randn(6, 5, 32, 64, generator=torch.Generator().manual_seed(0))
    for name, view, grid in (("autoencoder", "native_grid", (32, 64)),
                             ("simclr", "augmented", (72, 144))):
        method = build_method(name, **tiny)
        seen = []
        method.encoder.register_forward_pre_hook(lambda m, a, s=seen: s.append(a[0].shape[-2:]))
        out = embeddings.table_3_1(method, x, torch.Generator().manual_seed(1))
        assert embeddings.training_view(method) == view and set(seen) == {grid}
        by_hand = embeddings.embedding_metrics(
            method.encoder, x, getattr(method, "augmentation", None) or ReportAugmentation(),
            torch.Generator().manual_seed(1), view=view)
        assert out == pytest.approx(by_hand, rel=1e-6)


def test_cosine_intervals_are_the_block_bootstrap_of_the_per_day_cosines():
    from geofusion.verification.bootstrap import bootstrap_mean

    x = torch.randn(30, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    out = embeddings.embedding_metrics(Flatten(), x, noisy_augmentation,
                                       torch.Generator().manual_seed(0), batch_size=7,
                                       intervals=True, seed=3)
    # The same views again, the per-day cosines by an explicit loop.
    g = torch.Generator().manual_seed(0)
    e1, e2 = [], []
    for start in range(0, 30, 7):
        batch = x[start:start + 7]
        e1.append(noisy_augmentation(batch, g).flatten(1))
        e2.append(noisy_augmentation(batch, g).flatten(1))
    e1, e2 = torch.cat(e1).double(), torch.cat(e2).double()
    cos = lambda a, b: float(nn.functional.cosine_similarity(a, b, dim=0))  # noqa: E731
    positive = np.array([cos(e1[i], e2[i]) for i in range(30)])
    negative = np.array([np.mean([cos(e1[i], e2[j]) for j in range(30) if j != i])
                         for i in range(30)])
    assert out["negative_cosine"] == pytest.approx(negative.mean(), abs=1e-9)
    for name, per_day in (("positive_cosine", positive), ("negative_cosine", negative)):
        ci = bootstrap_mean(per_day, seed=3)
        assert out[f"{name}_low"] == pytest.approx(float(ci.low), abs=1e-9)
        assert out[f"{name}_high"] == pytest.approx(float(ci.high), abs=1e-9)
        assert out[f"{name}_low"] <= out[name] <= out[f"{name}_high"]


def test_umap_projection_saves_its_compiled_functions_to_numba_disk_cache():
    # Each notebook kernel would otherwise recompile umap's numba functions (~15 s).
    from pathlib import Path

    points = np.random.default_rng(1).normal(size=(20, 6)).astype("float32")
    embeddings.project_2d(points, "umap", seed=0)
    import umap.layouts

    epoch = umap.layouts._nb_optimize_layout_euclidean_single_epoch  # a numba dispatcher
    assert type(epoch._cache).__name__ == "FunctionCache"  # not numba's NullCache
    index = Path(epoch._cache._cache_path)
    assert any(p.name.startswith("layouts._optimize_layout_euclidean_single_epoch")
               and p.suffix == ".nbi" for p in index.iterdir())


def test_umap_projection_runs_uncached_where_numba_cannot_write_a_cache(monkeypatch):
    import umap.layouts
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    def nowhere(self):
        raise RuntimeError("cannot cache function: no locator available")

    epoch = umap.layouts._nb_optimize_layout_euclidean_single_epoch
    monkeypatch.setattr(epoch, "_cache", NullCache())
    monkeypatch.setattr(Dispatcher, "enable_caching", nowhere)
    points = np.random.default_rng(2).normal(size=(20, 6)).astype("float32")
    assert embeddings.project_2d(points, "umap", seed=0).shape == (20, 2)
    assert isinstance(epoch._cache, NullCache)
