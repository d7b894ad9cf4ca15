"""Embedding evaluation as in the report's Table 3.1, and 2-D views of the latent space.

The report judges a representation by its ``latent_dim``-d embeddings (not the projections),
on validation data:

- **mean positive cosine similarity**: cos(e(v1_i), e(v2_i)) between the embeddings of two
  augmented views of the same day, averaged over days (high = invariant to augmentation);
- **mean negative cosine similarity**: cos(e(v1_i), e(v2_j)), i != j, between views of
  different days of the same batch (low = days are told apart);
- **mean variance of the embeddings**: the per-dimension variance of e(v1) across days,
  averaged over dimensions (near zero = collapse).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from geofusion.augment import two_views

# The report's Table 3.1 (real ERA5 64x32, full-size ResNet-18, 100 epochs), for reference.
REPORT_TABLE_3_1 = pd.DataFrame(
    {
        "positive_cosine": [0.989, 0.999, 0.931],
        "negative_cosine": [0.354, 0.30, 0.23],
        "embedding_variance": [45.6, 0.68, 44.24],
    },
    index=pd.Index(["barlow_twins", "simclr", "supcon"], name="method"),
)


def _as_tensor(fields: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(fields, dtype=torch.float32)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def embed(encoder: nn.Module, fields: np.ndarray | Tensor, batch_size: int = 256,
          transform: Callable[[Tensor], Tensor] | None = None) -> np.ndarray:
    """Embeddings of ``fields`` (N, C, H, W) -> (N, latent_dim) float32, in eval mode.

    ``transform`` is applied to each batch on the encoder's device before encoding (e.g. a
    mask), so callers never hold a transformed copy of the whole set.
    """
    was_training = encoder.training
    encoder.eval()
    device = _device_of(encoder)
    fields = _as_tensor(fields)
    chunks = []
    for start in range(0, len(fields), batch_size):
        batch = fields[start:start + batch_size].to(device)
        if transform is not None:
            batch = transform(batch)
        chunks.append(encoder(batch).float().cpu())
    encoder.train(was_training)
    return torch.cat(chunks).numpy()


@torch.no_grad()
def embedding_metrics(encoder: nn.Module, fields: np.ndarray | Tensor,
                      augmentation: Callable, generator: torch.Generator,
                      batch_size: int = 128) -> dict[str, float]:
    """The report's Table 3.1 figures for ``encoder`` on ``fields`` (N, C, H, W).

    Each batch of days is augmented twice; see the module docstring for the definitions.
    Negative pairs are taken within a batch, as in training.

    Returns:
        ``positive_cosine``, ``negative_cosine``, ``embedding_variance``.
    """
    if len(fields) < 2:
        raise ValueError(f"need at least 2 samples for negative pairs, got {len(fields)}")
    was_training = encoder.training
    encoder.eval()
    device = _device_of(encoder)
    fields = _as_tensor(fields)
    positive_sum, negative_sum, negative_count = 0.0, 0.0, 0
    first_views = []
    for start in range(0, len(fields), batch_size):
        batch = fields[start:start + batch_size].to(device)
        if len(batch) < 2:  # a last batch of one has no negative pair
            continue
        view1, view2 = two_views(batch, augmentation, generator)
        raw1 = encoder(view1).float()
        e1 = nn.functional.normalize(raw1, dim=1)
        e2 = nn.functional.normalize(encoder(view2).float(), dim=1)
        cosine = e1 @ e2.T
        n = len(batch)
        positive_sum += cosine.diagonal().sum().item()
        negative_sum += (cosine.sum() - cosine.diagonal().sum()).item()
        negative_count += n * (n - 1)
        first_views.append(raw1.cpu())
    encoder.train(was_training)
    embeddings = torch.cat(first_views)
    return {
        "positive_cosine": positive_sum / len(embeddings),
        "negative_cosine": negative_sum / negative_count,
        "embedding_variance": embeddings.var(dim=0).mean().item(),
    }


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project (N, D) embeddings to (N, 2) by "pca", "tsne" or "umap"."""
    n = len(embeddings)
    if n < 3:
        raise ValueError(f"need at least 3 embeddings for a 2-D projection, got {n}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(embeddings)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (n - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca",
                    random_state=seed).fit_transform(embeddings)
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed,
                            n_jobs=1)
        return reducer.fit_transform(embeddings)
    raise ValueError(f"unknown projection {method!r}; choose 'pca', 'tsne' or 'umap'")


@torch.no_grad()
def pair_embeddings(encoder: nn.Module, fields: np.ndarray | Tensor, augmentation: Callable,
                    generator: torch.Generator) -> np.ndarray:
    """Embeddings of two augmented views of each of N days: (2N, D), views 1 then views 2."""
    was_training = encoder.training
    encoder.eval()
    batch = _as_tensor(fields).to(_device_of(encoder))
    view1, view2 = two_views(batch, augmentation, generator)
    out = torch.cat([encoder(view1), encoder(view2)]).float().cpu().numpy()
    encoder.train(was_training)
    return out


def plot_projections(embeddings: np.ndarray, labels: Sequence[int] | np.ndarray,
                     label_names: Sequence[str], methods: Sequence[str] = ("pca", "tsne", "umap"),
                     paired: bool = False, title: str = "", seed: int = 0) -> plt.Figure:
    """Scatter the 2-D projections of ``embeddings`` (N, D), coloured by integer ``labels``.

    With ``paired=True`` the first and second halves are two views of the same days (as from
    :func:`pair_embeddings`); a line joins each positive pair, so tight pairs show as dots.
    """
    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, method in zip(axes[0], methods, strict=True):
        xy = project_2d(embeddings, method, seed=seed)
        if paired:
            half = len(xy) // 2
            for a, b in zip(xy[:half], xy[half:], strict=True):
                ax.plot([a[0], b[0]], [a[1], b[1]], color="0.6", lw=0.6, zorder=1)
        for index, name in enumerate(label_names):
            chosen = labels == index
            if chosen.any():
                ax.scatter(*xy[chosen].T, s=14, color=cmap(index), label=name, zorder=2)
        ax.set_title(method.upper() if method != "tsne" else "t-SNE")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def comparison_table(results: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Table 3.1 of several runs: one row per method, the report's values beside them."""
    ours = pd.DataFrame(results).T
    ours.index.name = "method"
    report = REPORT_TABLE_3_1.add_prefix("report_")
    return ours.join(report, how="left")
