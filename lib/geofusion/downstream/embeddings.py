"""Embedding evaluation as in the report's Table 3.1, and 2-D views of the latent space.

The report judges a representation by its ``latent_dim``-d embeddings (not the projections),
on validation data:

- **mean positive cosine similarity**: cos(e(v1_i), e(v2_i)) between the embeddings of two
  augmented views of the same day, averaged over days (high = invariant to augmentation);
- **mean negative cosine similarity**: cos(e(v1_i), e(v2_j)), i != j, averaged over *all*
  ordered pairs of different days of the evaluated set (low = days are told apart). Not within
  batches of consecutive days: neighbouring days are similar, so a within-batch mean would be
  inflated by the slow drift of the weather rather than measure the representation;
- **mean variance of the embeddings**: the per-dimension variance of e(v1) across days,
  averaged over dimensions (near zero = collapse).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from geofusion.learning.augment import ReportAugmentation, resize, two_views
from geofusion.learning.methods import embed_observed
from geofusion.verification.bootstrap import bootstrap_mean

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
def encode_series(encoder: nn.Module, fields: np.ndarray | Tensor, batch_size: int = 256,
                  device: torch.device | str | None = None,
                  observed: np.ndarray | Tensor | None = None,
                  transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Latents of a field series with a frozen encoder or method, in eval mode.

    Args:
        encoder: a trained *method* (anything with ``embed``, e.g. from
            :func:`geofusion.learning.methods.build_method`): its representation
            :func:`geofusion.learning.methods.embed_observed` is used, as everywhere in the
            project; or
            a bare encoder module ``(B, C, H, W) -> (B, D)``, called directly.
        fields: ``(T, C, H, W)`` standardised.
        batch_size: days encoded at once.
        device: where to encode (default: the device of the module's parameters).
        observed: optional bool ``(T, H, W)`` observation mask (True = observed), only for a
            method; None = complete fields.
        transform: applied to each batch on the encoder's device before encoding (e.g. an
            inference view), so callers never hold a transformed copy of the whole set.

    Returns:
        ``(T, latent_dim)`` float32 on the CPU.
    """
    is_method = hasattr(encoder, "embed")
    if observed is not None and not is_method:
        raise ValueError("an observation mask needs a method (with embed / mask_channel), not "
                         "a bare encoder; pass the trained method")
    if device is None:
        param = next(encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    x = torch.as_tensor(np.asarray(fields) if not isinstance(fields, Tensor) else fields,
                        dtype=torch.float32)
    mask = None
    if observed is not None:
        mask = torch.as_tensor(np.asarray(observed) if not isinstance(observed, Tensor)
                               else observed, dtype=torch.bool)
        if len(mask) != len(x):
            raise ValueError(f"observed has {len(mask)} masks for {len(x)} fields; pass one "
                             "(H, W) mask per day")
    was_training = encoder.training
    encoder.eval()
    try:
        out = []
        for i in range(0, len(x), batch_size):
            batch = x[i:i + batch_size].to(device)
            if transform is not None:
                batch = transform(batch)
            if is_method:
                m = None if mask is None else mask[i:i + batch_size].to(device)
                out.append(embed_observed(encoder, batch, m).float().cpu())
            else:
                out.append(encoder(batch).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def embed(encoder: nn.Module, fields: np.ndarray | Tensor, batch_size: int = 256,
          transform: Callable[[Tensor], Tensor] | None = None) -> np.ndarray:
    """Embeddings of ``fields`` (N, C, H, W) -> (N, latent_dim) float32 numpy, in eval mode:
    :func:`encode_series` as a numpy array (``transform`` applied to each batch on the
    encoder's device before encoding, e.g. a mask or an inference view)."""
    return encode_series(encoder, fields, batch_size=batch_size, transform=transform).numpy()


#: Inputs :func:`embedding_metrics` can score an encoder on: "augmented" = the augmentation's
#: output (what the contrastive encoders are trained on, e.g. 72 x 144 views); "native_grid" =
#: each augmented view resized back to the grid of the fields (what the autoencoder is trained
#: on: the native grid, here perturbed by the same crop and smoothing).
EMBEDDING_VIEWS: tuple[str, ...] = ("augmented", "native_grid")


@torch.no_grad()
def embedding_metrics(encoder: nn.Module, fields: np.ndarray | Tensor,
                      augmentation: Callable, generator: torch.Generator,
                      batch_size: int = 128, view: str = "augmented", intervals: bool = False,
                      seed: int = 0) -> dict[str, float]:
    """The report's Table 3.1 figures for ``encoder`` on ``fields`` (N, C, H, W).

    Each day is augmented twice (``two_views``, batch by batch, in eval mode so the batch size
    does not change the embeddings) and the embeddings ``e`` (N, D) of both views are kept.
    With unit vectors ``u = e / |e|``:

    - ``positive_cosine`` = mean_i u1_i . u2_i;
    - ``negative_cosine`` = mean over all N (N - 1) ordered pairs i != j of u1_i . u2_j,
      computed exactly as ``((sum_i u1_i) . (sum_j u2_j) - sum_i u1_i . u2_i) / (N (N - 1))``.
      All pairs of the set, never pairs within a batch of consecutive days (whose similarity
      inflates the figure);
    - ``embedding_variance`` = mean over dimensions of the variance of ``e1`` across days.

    Args:
        encoder: ``(B, C, h, w) -> (B, D)``.
        fields: (N, C, H, W) standardised, N >= 2 (e.g. the validation days).
        augmentation: ``(x, generator) -> view``, e.g. ``ReportAugmentation()``.
        generator: seeds the views (the same seed gives the same figures).
        batch_size: days encoded at once (memory only; the result does not depend on it).
        view: one of :data:`EMBEDDING_VIEWS`: score the encoder on the input it was trained on,
            "augmented" for the contrastive methods, "native_grid" for the autoencoder (the
            views resized back to (H, W)).
        intervals: also 95 % block-bootstrap intervals over the days
            (:func:`geofusion.verification.bootstrap.bootstrap_mean`, blocks of 7 consecutive days,
            seeded
            by ``seed``; ``fields`` must be consecutive days) of the two cosines, from the
            per-day values: ``u1_i . u2_i`` and day i's mean cosine to every other day
            (whose mean over days is ``negative_cosine``). The pairs stay those of the
            original set (a resample reweights days, it does not form new pairs).

    Returns:
        ``positive_cosine``, ``negative_cosine``, ``embedding_variance``; with ``intervals``
        also ``positive_cosine_low``, ``positive_cosine_high``, ``negative_cosine_low``,
        ``negative_cosine_high``.

    Example:
        >>> import torch
        >>> from geofusion.learning.augment import ReportAugmentation
        >>> encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
        >>> _ = encoder(torch.zeros(1, 5 * 72 * 144))
        >>> figures = embedding_metrics(encoder, torch.randn(6, 5, 32, 64), ReportAugmentation(),
        ...                             torch.Generator().manual_seed(0))
        >>> sorted(figures)
        ['embedding_variance', 'negative_cosine', 'positive_cosine']
    """
    if view not in EMBEDDING_VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {EMBEDDING_VIEWS} "
                         "(the input the encoder was trained on)")
    if len(fields) < 2:
        raise ValueError(f"need at least 2 samples for negative pairs, got {len(fields)}")
    was_training = encoder.training
    encoder.eval()
    device = _device_of(encoder)
    fields = _as_tensor(fields)
    grid = tuple(fields.shape[-2:])
    first, second = [], []
    for start in range(0, len(fields), batch_size):
        batch = fields[start:start + batch_size].to(device)
        view1, view2 = two_views(batch, augmentation, generator)
        if view == "native_grid":
            view1, view2 = resize(view1, grid), resize(view2, grid)
        first.append(encoder(view1).float().cpu())
        second.append(encoder(view2).float().cpu())
    encoder.train(was_training)
    e1, e2 = torch.cat(first).double(), torch.cat(second).double()
    u1, u2 = nn.functional.normalize(e1, dim=1), nn.functional.normalize(e2, dim=1)
    positive = (u1 * u2).sum(1)
    n = len(e1)
    negative = (u1.sum(0) @ u2.sum(0) - positive.sum()) / (n * (n - 1))
    figures = {
        "positive_cosine": positive.mean().item(),
        "negative_cosine": negative.item(),
        "embedding_variance": e1.var(dim=0).mean().item(),
    }
    if intervals:
        # Day i's mean cosine to the other days: (u1_i . sum_j u2_j - u1_i . u2_i) / (n - 1).
        negative_per_day = (u1 @ u2.sum(0) - positive) / (n - 1)
        for name, per_day in (("positive_cosine", positive), ("negative_cosine",
                                                               negative_per_day)):
            ci = bootstrap_mean(per_day.numpy(), seed=seed)
            figures[f"{name}_low"], figures[f"{name}_high"] = float(ci.low), float(ci.high)
    return figures


def training_view(method: nn.Module) -> str:
    """The :data:`EMBEDDING_VIEWS` entry of the input ``method``'s encoder was trained on.

    "augmented" for a method trained on augmented views (it has an ``augmentation``: the
    contrastive methods, a mode-group method given one); "native_grid" otherwise (the
    autoencoder, a mode-group method trained on the fields themselves).
    """
    return "augmented" if getattr(method, "augmentation", None) is not None else "native_grid"


def table_3_1(method: nn.Module, fields: np.ndarray | Tensor, generator: torch.Generator,
              augmentation: Callable | None = None, batch_size: int = 128,
              intervals: bool = False, seed: int = 0) -> dict[str, float]:
    """Table 3.1 of a trained *method*, scored on the input its encoder was trained on.

    :func:`embedding_metrics` of ``method.encoder`` with the method's own augmentation (or
    ``augmentation``; :class:`~geofusion.learning.augment.ReportAugmentation` for a method without
    one)
    and ``view=training_view(method)``: the contrastive methods on their augmented views, the
    autoencoder on the same augmented views resized back to its native grid. ``intervals``,
    ``seed``: as :func:`embedding_metrics`.

    Example:
        >>> import torch
        >>> from geofusion.learning.methods import build_method
        >>> ae = build_method("autoencoder", latent_dim=4, width=2)
        >>> figures = table_3_1(ae, torch.randn(4, 5, 32, 64), torch.Generator().manual_seed(0))
        >>> training_view(ae), sorted(figures)[0]
        ('native_grid', 'embedding_variance')
    """
    if augmentation is None:
        augmentation = getattr(method, "augmentation", None) or ReportAugmentation()
    return embedding_metrics(method.encoder, fields, augmentation, generator,
                             batch_size=batch_size, view=training_view(method),
                             intervals=intervals, seed=seed)


def _umap_with_disk_cache() -> Any:
    """The ``umap`` module with numba's on-disk cache enabled for its jitted functions.

    umap-learn compiles its numba functions without ``cache=True``, so every fresh kernel
    (each notebook) compiled them again on its first projection: ~15 s on two cores, most of
    a UMAP of 128 points. :meth:`numba.core.dispatcher.Dispatcher.enable_caching` (what
    ``cache=True`` calls) makes numba save the compiled code beside umap's sources (or in the
    user's cache when those are read-only) and reload it in later processes; the machine code,
    hence the projection, is the same. Dispatchers already caching (pynndescent's) are left
    alone; where numba finds no writable cache directory, umap runs uncached as before.
    """
    import umap
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    for name, module in list(sys.modules.items()):
        if module is None or not (name == "umap" or name.startswith("umap.")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and isinstance(value._cache, NullCache):
                try:
                    value.enable_caching()
                except RuntimeError:  # nowhere writable to cache: compile in memory as before
                    return umap
    return umap


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project (N, D) embeddings to (N, 2) by "pca", "tsne" or "umap"."""
    # The projection libraries are imported on use, not at module level: importing umap
    # (numba) and sklearn.manifold takes ~15 s, which every notebook and test importing this
    # module would pay although most never draw a projection.
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
        umap = _umap_with_disk_cache()
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
