"""Methods with fusion encoders: any method of :mod:`geofusion.learning.methods` with a fusion
encoder,
training with missing modes, the mode-group objective, and missing-mode robustness.

- :func:`build_fusion_method`: a method of :func:`geofusion.learning.methods.build_method` (or
  "mode_group") whose encoder is a :class:`geofusion.models.fusion_encoders.FusionEncoder`,
  optionally
  wrapped in :class:`ModeDropoutMethod`.
- :class:`ModeDropoutMethod`: wraps any method so its encoder sees mode dropout (each mode of
  each view absent with probability ``p``, at least one kept) during the loss.
- :class:`ModeGroupContrastiveMethod`: the modes themselves make the two views, after Guo et
  al. 2025 (thermodynamic {T2m, q} vs dynamic {z, u, v}, :data:`MODE_GROUPS`).
- :func:`missing_mode_robustness`: how far an embedding moves when one mode is absent.

Every method here has ``inference_view(fields)`` and ``embed(fields, present=None)``: the
encoder sees at inference the input it was trained on (the canonical 72 x 144 view of the
contrastive methods, the native grid for the autoencoder and for a mode-group method trained
without augmentation). A decoder on a frozen fusion method is
:class:`geofusion.learning.decoders.FrozenEncoderDecoder`.

Example:
    >>> import torch
    >>> method = build_fusion_method("barlow_twins", kind="late", fusion="concat",
    ...                              p_mode_dropout=0.3, latent_dim=16, width=4, token_dim=8,
    ...                              proj_dim=8, proj_hidden_dim=16)
    >>> method.embed(torch.randn(2, 5, 32, 64)).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from geofusion.learning.augment import two_views
from geofusion.learning.losses import barlow_twins_loss, nt_xent_loss
from geofusion.learning.methods import build_method
from geofusion.models.eof_residual import EOFResidualFusionEncoder
from geofusion.models.fusion_encoders import FusionEncoder, build_encoder, random_mode_split
from geofusion.models.resnet import ProjectionHead

__all__ = [
    "MODE_GROUPS", "FUSION_METHODS", "ModeDropoutMethod", "ModeGroupContrastiveMethod",
    "build_fusion_method", "missing_mode_robustness", "FUSION_ENCODERS",
]

# Thermodynamic (2m temperature, specific humidity) vs dynamic (geopotential, u, v) modes,
# as channel indices in geofusion.variables.VARIABLES order.
MODE_GROUPS: tuple[tuple[int, ...], tuple[int, ...]] = ((0, 4), (1, 2, 3))


def _fusion_encoder(method: nn.Module) -> FusionEncoder:
    encoder = getattr(method, "encoder", None)
    if not isinstance(encoder, FusionEncoder):
        raise ValueError(f"{type(method).__name__}.encoder is {type(encoder).__name__}, not a "
                         "FusionEncoder; build it with "
                         "geofusion.models.fusion_encoders.build_encoder")
    return encoder


class ModeDropoutMethod(nn.Module):
    """Wrap any method so that, during its loss, every encoder call drops modes at random.

    Each mode of each encoded sample (so each view independently) is absent with probability
    ``p`` (at least one kept), drawn from a generator seeded from the loop's generator, so runs
    stay reproducible and resumable. Attributes of the wrapped method (``augmentation``,
    ``projector``, ...) are reachable on the wrapper; ``encoder`` is the wrapped one.
    """

    def __init__(self, method: nn.Module, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"mode dropout p must be in [0, 1), got {p}")
        _fusion_encoder(method)
        self.method = method
        self.p = p

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "method":
                raise
            return getattr(self._modules["method"], name)

    @property
    def encoder(self) -> FusionEncoder:
        return self.method.encoder

    def inference_view(self, fields: Tensor) -> Tensor:
        """The wrapped method's inference view of ``fields`` (B, C, H, W)."""
        view = getattr(self.method, "inference_view", None)
        return view(fields) if view is not None else fields

    def embed(self, fields: Tensor, present: Tensor | None = None) -> Tensor:
        """(B, C, H, W), optional presence (B, C) -> (B, latent_dim) of the inference view."""
        return self.encoder(self.inference_view(fields), present)

    def loss(self, batch: tuple[Tensor, ...], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        seed = int(torch.randint(2**62, (1,), generator=generator))
        device = batch[0].device
        dropout_generator = torch.Generator(device=device).manual_seed(seed)
        with self.encoder.dropping_modes(self.p, dropout_generator):
            return self.method.loss(batch, generator)


class ModeGroupContrastiveMethod(nn.Module):
    """Contrastive learning where the two views are two groups of modes (after Guo et al.).

    View A of a day keeps the modes of group A (the others absent), view B those of group B;
    the fusion encoder embeds both, a projection head maps them, and Barlow Twins or NT-Xent
    pulls the two views of a day together. ``groups`` is a pair of channel-index tuples
    (default :data:`MODE_GROUPS`: thermodynamic {T2m, q} vs dynamic {z, u, v}) or "random" (a
    fresh per-sample split each batch, :func:`random_mode_split`). With an ``augmentation``
    the two views are also two augmentations of the day
    (:func:`geofusion.learning.augment.two_views`).

    Args:
        encoder: a :class:`FusionEncoder` ``(B, M, H, W), present -> (B, latent_dim)``.
        projector: ``(B, latent_dim) -> (B, proj_dim)``.
        objective: "barlow_twins" or "nt_xent".
        groups: two disjoint non-empty groups of channel indices, or "random".
        augmentation: optional ``(fields, generator) -> fields``.
        lambd: Barlow Twins off-diagonal weight.
        temperature: NT-Xent temperature.

    ``gather_distributed`` (set by :func:`geofusion.learning.distributed.fit_distributed`) makes the
    losses use the global batch of all processes.
    """

    def __init__(self, encoder: FusionEncoder, projector: nn.Module,
                 objective: str = "barlow_twins",
                 groups: Sequence[Sequence[int]] | str = MODE_GROUPS,
                 augmentation: Any | None = None, lambd: float = 0.01,
                 temperature: float = 0.3) -> None:
        super().__init__()
        if not isinstance(encoder, FusionEncoder):
            raise ValueError(f"encoder must be a FusionEncoder, got {type(encoder).__name__}; "
                             "build it with geofusion.models.fusion_encoders.build_encoder")
        if objective not in ("barlow_twins", "nt_xent"):
            raise ValueError(f"objective must be 'barlow_twins' or 'nt_xent', got {objective!r}")
        self.encoder = encoder
        self.projector = projector
        self.objective = objective
        self.augmentation = augmentation
        self.lambd = lambd
        self.temperature = temperature
        self.gather_distributed = False
        if isinstance(groups, str):
            if groups != "random":
                raise ValueError(f"groups must be two index groups or 'random', got {groups!r}")
            self.groups: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        else:
            a, b = (tuple(int(i) for i in g) for g in groups)
            valid = range(encoder.n_modes)
            if not a or not b or set(a) & set(b) or not set(a) | set(b) <= set(valid):
                raise ValueError(f"groups {groups} must be two disjoint, non-empty groups of "
                                 f"channel indices in 0..{encoder.n_modes - 1}")
            self.groups = (a, b)

    def inference_view(self, fields: Tensor) -> Tensor:
        """What the encoder sees at inference: the augmentation's deterministic ``canonical``
        view when the method trains on augmented views, else the fields themselves (the
        native grid it was trained on)."""
        canonical = getattr(self.augmentation, "canonical", None)
        return canonical(fields) if canonical is not None else fields

    def embed(self, fields: Tensor, present: Tensor | None = None) -> Tensor:
        """(B, M, H, W), optional presence (B, M) -> (B, latent_dim) of the inference view."""
        return self.encoder(self.inference_view(fields), present)

    def group_masks(self, batch_size: int, device: torch.device,
                    generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Presence masks ``(B, M)`` of views A and B."""
        n = self.encoder.n_modes
        if self.groups is None:
            group_a = random_mode_split(batch_size, n, generator).to(device)
            return group_a, ~group_a
        masks = []
        for group in self.groups:
            mask = torch.zeros(n, dtype=torch.bool, device=device)
            mask[list(group)] = True
            masks.append(mask.expand(batch_size, n))
        return masks[0], masks[1]

    def loss(self, batch: tuple[Tensor, ...], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields = batch[0]
        if self.augmentation is not None:
            view_a, view_b = two_views(fields, self.augmentation, generator)
        else:
            view_a, view_b = fields, fields
        present_a, present_b = self.group_masks(fields.shape[0], fields.device, generator)
        # One forward pass over both views, as in geofusion.learning.methods.ContrastiveMethod.
        z = self.projector(self.encoder(torch.cat([view_a, view_b]),
                                        torch.cat([present_a, present_b])))
        z1, z2 = z.float().chunk(2)
        if self.objective == "barlow_twins":
            loss = barlow_twins_loss(z1, z2, lambd=self.lambd,
                                     gather_distributed=self.gather_distributed)
        else:
            loss = nt_xent_loss(z1, z2, temperature=self.temperature,
                                gather_distributed=self.gather_distributed)
        return loss, {}


FUSION_METHODS: tuple[str, ...] = ("autoencoder", "barlow_twins", "simclr", "supcon",
                                   "mode_group")
#: Encoders of :func:`build_fusion_method`: the scheme alone, or the all-mode EOF code of the
#: zero-filled input plus the scheme as a residual that starts at zero.
FUSION_ENCODERS: tuple[str, ...] = ("resnet", "eof_residual")


def build_fusion_method(name: str, kind: str = "early", fusion: str = "concat",
                        p_mode_dropout: float = 0.0, in_channels: int = 5,
                        grid: tuple[int, int] = (32, 64), latent_dim: int = 1000,
                        width: int = 64, mode_width: int | None = None, token_dim: int = 128,
                        heads: int = 4, proj_dim: int = 128, proj_hidden_dim: int = 1024,
                        objective: str = "barlow_twins",
                        groups: Sequence[Sequence[int]] | str = MODE_GROUPS,
                        augmentation: Any | None = None, encoder: str = "resnet",
                        eof_basis: dict[str, Any] | None = None,
                        **loss_params: float) -> nn.Module:
    """Any method of :func:`geofusion.learning.methods.build_method` (or "mode_group") with a fusion
    encoder from :func:`build_encoder`, optionally wrapped in :class:`ModeDropoutMethod`.

    ``kind="early", fusion="concat"`` with ``p_mode_dropout=0`` is architecturally the method
    ``build_method`` makes. ``objective``, ``groups`` and ``augmentation`` apply to
    "mode_group" only; ``loss_params`` are ``lambd`` / ``temperature``.

    ``encoder``: "resnet" (the scheme as built by :func:`build_encoder`) or "eof_residual":
    the scheme wrapped in :class:`geofusion.models.eof_residual.EOFResidualFusionEncoder`
    (the ``latent_dim`` leading all-mode EOFs of the zero-filled input plus the scheme, whose
    final layer starts at zero). "eof_residual" needs ``eof_basis`` = ``{"components",
    "sqrt_weights", "mean"}`` fitted on the training days
    (:func:`geofusion.learning.model_cache.data_dependent_parameters`). The other heads (the
    autoencoder's decoder) stay as ``build_method`` makes them with its ResNet.
    """
    if encoder not in FUSION_ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {FUSION_ENCODERS}")
    if (encoder == "eof_residual") != (eof_basis is not None):
        raise ValueError('encoder="eof_residual" needs eof_basis (and only it takes one): pass '
                         "model_cache.data_dependent_parameters(prepared, {'encoder': "
                         "'eof_residual', 'latent_dim': latent_dim})")
    fusion_encoder: FusionEncoder = build_encoder(
        kind, fusion, in_channels=in_channels, latent_dim=latent_dim, width=width,
        mode_width=mode_width, token_dim=token_dim, heads=heads)
    if eof_basis is not None:
        fusion_encoder = EOFResidualFusionEncoder(fusion_encoder, **eof_basis)
    if name == "mode_group":
        projector = ProjectionHead(latent_dim, proj_hidden_dim, proj_dim,
                                   final_batchnorm=objective == "barlow_twins")
        method: nn.Module = ModeGroupContrastiveMethod(
            fusion_encoder, projector, objective=objective, groups=groups,
            augmentation=augmentation,
            **loss_params)
    elif name in FUSION_METHODS:
        method = build_method(name, in_channels=in_channels, grid=grid, latent_dim=latent_dim,
                              width=width, proj_dim=proj_dim, proj_hidden_dim=proj_hidden_dim,
                              **loss_params)
        # build_method's own ResNet is discarded: the heads (and the autoencoder's decoder at
        # ``width``) stay exactly as build_method makes them.
        method.encoder = fusion_encoder
    else:
        raise ValueError(f"unknown method {name!r}; choose one of {FUSION_METHODS}")
    return ModeDropoutMethod(method, p_mode_dropout) if p_mode_dropout > 0 else method


@torch.no_grad()
def missing_mode_robustness(model: nn.Module, fields: np.ndarray | Tensor,
                            generator: torch.Generator, mode_names: Sequence[str] | None = None,
                            batch_size: int = 256) -> pd.DataFrame:
    """How far the embedding of a day moves when one mode is absent.

    For each mode m, the cosine similarity between the embedding of ``fields`` (N, M, H, W)
    with all modes and with mode m absent, per day. The last row, ``(different day)``, is the
    cosine between the full embeddings of two different days (a random pairing drawn from
    ``generator``): a mode whose loss keeps the embedding far above that row is redundant given
    the others.

    Args:
        model: a trained fusion *method* (its ``encoder`` a :class:`FusionEncoder`, e.g. from
            :func:`build_fusion_method`): each day is embedded through the method's own
            ``inference_view``, as it is everywhere else; or a bare :class:`FusionEncoder`,
            called on the fields as given.
        fields: (N, M, H, W) standardised, N >= 2.
        generator: draws the different-day pairing.
        mode_names: the M row names (default "mode 0", ...).
        batch_size: days embedded at once.

    Returns:
        DataFrame indexed by mode name with ``cosine_mean``, ``cosine_p10`` (10th percentile
        over days) and ``cosine_min``.
    """
    if len(fields) < 2:
        raise ValueError(f"need at least 2 days, got {len(fields)}")
    encoder = model if isinstance(model, FusionEncoder) else _fusion_encoder(model)
    view = getattr(model, "inference_view", None)

    def embed(batch: Tensor, present: Tensor | None = None) -> Tensor:
        return encoder(view(batch) if view is not None else batch, present)
    n_modes = encoder.n_modes
    names = list(mode_names) if mode_names is not None else [f"mode {m}" for m in range(n_modes)]
    if len(names) != n_modes:
        raise ValueError(f"{len(names)} mode names for {n_modes} modes")
    was_training = model.training
    model.eval()
    device = next(encoder.parameters()).device
    fields = torch.as_tensor(np.asarray(fields) if not isinstance(fields, Tensor) else fields,
                             dtype=torch.float32)
    cosines: list[list[Tensor]] = [[] for _ in range(n_modes)]
    full_chunks = []
    for start in range(0, len(fields), batch_size):
        batch = fields[start:start + batch_size].to(device)
        full = nn.functional.normalize(embed(batch).float(), dim=1)
        full_chunks.append(full.cpu())
        for m in range(n_modes):
            present = torch.ones(len(batch), n_modes, dtype=torch.bool, device=device)
            present[:, m] = False
            dropped = nn.functional.normalize(embed(batch, present).float(), dim=1)
            cosines[m].append((full * dropped).sum(1).cpu())
    model.train(was_training)
    full = torch.cat(full_chunks)
    # A random derangement-free pairing: shift a permutation by one so no day meets itself.
    order = torch.randperm(len(full), generator=generator)
    other = (full[order] * full[order.roll(1)]).sum(1)
    rows = {}
    for name, values in [*zip(names, (torch.cat(c) for c in cosines), strict=True),
                         ("(different day)", other)]:
        v = values.double().numpy()
        rows[name] = {"cosine_mean": v.mean(), "cosine_p10": np.quantile(v, 0.1),
                      "cosine_min": v.min()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("absent mode")
