"""Early, late and hybrid fusion of the five modes, missing modes, and mode-group contrast.

Each ERA5 variable is a *mode* (report section 2.1.3). Every encoder here is a
:class:`FusionEncoder`: ``forward(fields (B, C, H, W), present=None) -> (B, latent_dim)``, where
``present`` is an optional ``torch.bool`` ``(B, C)`` saying which modes a sample has (a sensor
may be down at inference). Without ``present`` all modes are used, so a fusion encoder drops in
wherever a ``geofusion.models.ResNetEncoder`` is used (:func:`build_fusion_method` swaps it into
any method of :mod:`geofusion.methods`).

Schemes (:func:`build_encoder`):

- **early** (the report's default): the modes are stacked as channels into one ResNet. An
  absent mode is *zero-filled*, i.e. set to its training mean in standardised units (the same
  convention as :mod:`geofusion.sparsity`); the network cannot tell "absent" from "average".
- **late** (Dufumier et al. 2025): one narrow ResNet per mode (``mode_width`` channels, one input
  channel) gives a token per mode, ``(B, M, d)``; a fusion operator maps the tokens to the
  representation. An absent mode never passes through its encoder: its token is excluded from
  the fusion (masked attention, masked mean) or replaced by a learned *absent* embedding
  (concatenation), never by zeros pretending to be data.
- **hybrid** (Wang et al. 2025): the per-mode tokens plus the token of a *shared* ResNet over the
  stacked (zero-filled) modes, ``M + 1`` tokens fused by the same operators; the shared token is
  always present.

Fusion operators on ``T`` tokens of size ``d`` (``T = M`` late, ``M + 1`` hybrid) with a presence
mask, output size ``D = latent_dim``; multiply-adds per sample (the encoders dominate: a
ResNet-18 at width 64 on 32x64 is ~0.6 G multiply-adds, the operators below are < 1 M for
``d = 128``, ``T = 6``):

- ``concat``: absent tokens -> learned absent embedding, flatten, linear:
  ``T d D`` multiply-adds, ``T d D + T d + D`` parameters.
- ``self_attention`` (Dufumier et al.): a learned fusion token joins the ``T`` mode tokens (plus
  learned mode embeddings); one pre-norm transformer encoder layer with a key padding mask for
  absent modes; the fusion token's output (or the masked mean) -> linear to ``D``. With
  ``S = T + 1`` and a feed-forward of ``f = 2d``: ``4 S d^2`` (projections) ``+ 2 S^2 d``
  (scores, values) ``+ 2 S d f`` (feed-forward) ``+ d D`` multiply-adds.
- ``cross_attention``: every token attends to the tokens of all *other* present modes in one
  multi-head attention block (attention mask = self and absent modes excluded), so all
  ``M (M - 1)`` directed interactions of Saioni et al.'s pairwise cross-attention are covered
  by one block instead of ``M (M - 1)`` blocks (20 for 5 modes); residual connections keep each
  mode's own information; masked mean over present tokens -> linear. Cost as self-attention with
  ``S = T``. A sample with a single present mode attends to itself (nothing else to attend to).

:func:`fusion_cost` measures parameters and FLOPs of a built encoder. Training helpers:
:func:`mode_dropout` (random presence masks keeping >= 1 mode), :class:`ModeDropoutMethod`
(wraps any method so its encoder sees mode dropout), :class:`ModeGroupContrastiveMethod` (the
modes themselves make the two views, after Guo et al. 2025) and
:func:`missing_mode_robustness` (how far an embedding moves when one mode is absent). A decoder
on a frozen fusion encoder is :class:`geofusion.decoders.FrozenEncoderDecoder`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from geofusion.augment import two_views
from geofusion.losses import barlow_twins_loss, nt_xent_loss
from geofusion.models import ProjectionHead, ResNetEncoder

__all__ = [
    "KINDS", "FUSIONS", "MODE_GROUPS", "FusionEncoder", "EarlyFusionEncoder",
    "TokenFusionEncoder", "ConcatFusion", "SelfAttentionFusion", "CrossAttentionFusion",
    "build_encoder", "parse_scheme", "fusion_cost", "mode_dropout", "random_mode_split",
    "ModeDropoutMethod", "ModeGroupContrastiveMethod", "build_fusion_method",
    "missing_mode_robustness",
]

KINDS: tuple[str, ...] = ("early", "late", "hybrid")
FUSIONS: tuple[str, ...] = ("concat", "self_attention", "cross_attention")
# Thermodynamic (2m temperature, specific humidity) vs dynamic (geopotential, u, v) modes,
# as channel indices in geofusion.data.VARIABLES order.
MODE_GROUPS: tuple[tuple[int, ...], tuple[int, ...]] = ((0, 4), (1, 2, 3))


def check_present(present: Tensor | None, batch_size: int, n_modes: int,
                  device: torch.device) -> Tensor | None:
    """Validate a presence mask: bool ``(B, M)`` with at least one present mode per sample."""
    if present is None:
        return None
    if present.dtype != torch.bool or tuple(present.shape) != (batch_size, n_modes):
        raise ValueError(f"present must be a torch.bool tensor of shape ({batch_size}, "
                         f"{n_modes}), got {present.dtype} {tuple(present.shape)}; "
                         "True marks an available mode")
    if not bool(present.any(dim=1).all()):
        raise ValueError("present has a sample with no mode at all; every sample needs at "
                         "least one available mode (mode_dropout keeps one)")
    return present.to(device)


class FusionEncoder(nn.Module):
    """Common interface: ``(B, C, H, W)``, optional ``present`` ``(B, C)`` -> ``(B, latent_dim)``.

    Attributes: ``n_modes`` (= input channels, one mode each), ``latent_dim``, ``kind``,
    ``fusion``. Inside :meth:`dropping_modes`, a training-mode forward without ``present``
    draws a :func:`mode_dropout` mask from the given generator.
    """

    kind: str = ""
    fusion: str = ""

    def __init__(self, n_modes: int, latent_dim: int) -> None:
        super().__init__()
        if n_modes < 1:
            raise ValueError(f"n_modes must be >= 1, got {n_modes}")
        self.n_modes = n_modes
        self.latent_dim = latent_dim
        self._dropout: tuple[float, torch.Generator] | None = None

    @contextlib.contextmanager
    def dropping_modes(self, p: float, generator: torch.Generator | None) -> Iterator[None]:
        """Within the block, training forwards without ``present`` drop each mode w.p. ``p``."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"mode dropout p must be in [0, 1), got {p}")
        previous = self._dropout
        self._dropout = (p, generator if generator is not None else torch.Generator())
        try:
            yield
        finally:
            self._dropout = previous

    def forward(self, fields: Tensor, present: Tensor | None = None) -> Tensor:
        if fields.ndim != 4 or fields.shape[1] != self.n_modes:
            raise ValueError(f"expected fields (B, {self.n_modes}, H, W), got "
                             f"{tuple(fields.shape)}")
        present = check_present(present, fields.shape[0], self.n_modes, fields.device)
        if present is None and self.training and self._dropout is not None:
            p, generator = self._dropout
            if p > 0:
                present = mode_dropout(fields.shape[0], self.n_modes, p,
                                       generator).to(fields.device)
        return self.encode(fields, present)

    def encode(self, fields: Tensor, present: Tensor | None) -> Tensor:
        raise NotImplementedError


def zero_fill(fields: Tensor, present: Tensor | None) -> Tensor:
    """``fields`` with absent modes set to 0 (the training mean in standardised units)."""
    if present is None:
        return fields
    return fields * present[:, :, None, None].to(fields.dtype)


class EarlyFusionEncoder(FusionEncoder):
    """Modes stacked as channels into one ResNet; absent modes are zero-filled.

    Without ``present`` it computes exactly ``ResNetEncoder(in_channels, latent_dim, width)``.
    """

    kind = "early"
    fusion = "concat"

    def __init__(self, in_channels: int = 5, latent_dim: int = 1000, width: int = 64) -> None:
        super().__init__(in_channels, latent_dim)
        self.backbone = ResNetEncoder(in_channels=in_channels, latent_dim=latent_dim,
                                      width=width)

    def encode(self, fields: Tensor, present: Tensor | None) -> Tensor:
        return self.backbone(zero_fill(fields, present))


class ConcatFusion(nn.Module):
    """Tokens ``(B, T, d)`` -> ``(B, D)``: absent tokens replaced by learned absent embeddings,
    flattened, one linear layer."""

    def __init__(self, n_tokens: int, token_dim: int, out_dim: int) -> None:
        super().__init__()
        self.absent = nn.Parameter(0.02 * torch.randn(n_tokens, token_dim))
        self.proj = nn.Linear(n_tokens * token_dim, out_dim)

    def forward(self, tokens: Tensor, present: Tensor) -> Tensor:
        tokens = torch.where(present[:, :, None], tokens, self.absent.to(tokens.dtype))
        return self.proj(tokens.flatten(1))

    def attention_macs(self, n_tokens: int) -> int:
        return 0


def _masked_mean(tokens: Tensor, present: Tensor) -> Tensor:
    weights = present.to(tokens.dtype)[:, :, None]
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class SelfAttentionFusion(nn.Module):
    """Dufumier et al.: a fusion token and the mode tokens through one transformer layer.

    Tokens ``(B, T, d)`` + learned mode embeddings, a learned fusion token prepended; a pre-norm
    ``nn.TransformerEncoderLayer`` (no dropout: all randomness stays explicit) with a key padding
    mask for absent tokens; ``pool="token"`` reads the fusion token, ``"mean"`` the masked mean of
    the present tokens; layer norm and a linear map to ``(B, D)``.
    """

    def __init__(self, n_tokens: int, token_dim: int, out_dim: int, heads: int = 4,
                 pool: str = "token") -> None:
        super().__init__()
        if pool not in ("token", "mean"):
            raise ValueError(f"pool must be 'token' or 'mean', got {pool!r}")
        self.pool = pool
        self.heads = heads
        self.mode_embedding = nn.Parameter(0.02 * torch.randn(n_tokens, token_dim))
        self.fusion_token = nn.Parameter(0.02 * torch.randn(1, 1, token_dim))
        self.layer = nn.TransformerEncoderLayer(
            token_dim, heads, dim_feedforward=2 * token_dim, dropout=0.0, batch_first=True,
            norm_first=True)
        self.norm = nn.LayerNorm(token_dim)
        self.proj = nn.Linear(token_dim, out_dim)

    def forward(self, tokens: Tensor, present: Tensor) -> Tensor:
        batch = tokens.shape[0]
        tokens = tokens + self.mode_embedding.to(tokens.dtype)
        sequence = torch.cat([self.fusion_token.to(tokens.dtype).expand(batch, -1, -1), tokens],
                             dim=1)
        padding = torch.cat([present.new_zeros(batch, 1), ~present], dim=1)
        out = self.layer(sequence, src_key_padding_mask=padding)
        pooled = out[:, 0] if self.pool == "token" else _masked_mean(out[:, 1:], present)
        return self.proj(self.norm(pooled))

    def attention_macs(self, n_tokens: int) -> int:
        """Score and value products per sample (not seen by FlopCounterMode on CPU)."""
        s = n_tokens + 1
        return 2 * s * s * self.mode_embedding.shape[1]


class CrossAttentionFusion(nn.Module):
    """Every token attends to all *other* present tokens in one multi-head attention block.

    Tokens ``(B, T, d)`` + learned mode embeddings; pre-norm attention whose mask excludes each
    token itself and the absent tokens (a token with no other present token attends to itself),
    residual, pre-norm feed-forward, residual; masked mean over the present tokens, layer norm,
    linear to ``(B, D)``.
    """

    def __init__(self, n_tokens: int, token_dim: int, out_dim: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.mode_embedding = nn.Parameter(0.02 * torch.randn(n_tokens, token_dim))
        self.norm1 = nn.LayerNorm(token_dim)
        self.attention = nn.MultiheadAttention(token_dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(token_dim)
        self.feedforward = nn.Sequential(nn.Linear(token_dim, 2 * token_dim), nn.GELU(),
                                         nn.Linear(2 * token_dim, token_dim))
        self.norm = nn.LayerNorm(token_dim)
        self.proj = nn.Linear(token_dim, out_dim)

    def attention_mask(self, present: Tensor) -> Tensor:
        """Bool ``(B * heads, T, T)``, True = query i may NOT attend to key j."""
        n = present.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=present.device)
        allowed = present[:, None, :] & ~eye  # (B, T, T): other, present modes
        alone = ~allowed.any(dim=2, keepdim=True)  # rows with nothing to attend to
        allowed = allowed | (alone & eye)
        return (~allowed).repeat_interleave(self.heads, dim=0)

    def forward(self, tokens: Tensor, present: Tensor) -> Tensor:
        x = tokens + self.mode_embedding.to(tokens.dtype)
        q = self.norm1(x)
        attended, _ = self.attention(q, q, q, attn_mask=self.attention_mask(present),
                                     need_weights=False)
        x = x + attended
        x = x + self.feedforward(self.norm2(x))
        return self.proj(self.norm(_masked_mean(x, present)))

    def attention_macs(self, n_tokens: int) -> int:
        return 2 * n_tokens * n_tokens * self.mode_embedding.shape[1]


_OPERATORS = {"concat": ConcatFusion, "self_attention": SelfAttentionFusion,
              "cross_attention": CrossAttentionFusion}


class TokenFusionEncoder(FusionEncoder):
    """Late (``shared=False``) or hybrid (``shared=True``) fusion of per-mode tokens.

    Args:
        in_channels: number of modes M (one input channel each).
        latent_dim: output size D.
        fusion: one of :data:`FUSIONS`.
        mode_width: base width of each per-mode ResNet.
        token_dim: size d of each token.
        shared: add a shared ResNet (``width``) over the stacked, zero-filled modes (hybrid).
        width: base width of the shared ResNet.
        heads: attention heads (``token_dim`` must be divisible by it).
        pool: self-attention readout, "token" or "mean".
    """

    def __init__(self, in_channels: int = 5, latent_dim: int = 1000, fusion: str = "concat",
                 mode_width: int = 32, token_dim: int = 128, shared: bool = False,
                 width: int = 64, heads: int = 4, pool: str = "token") -> None:
        super().__init__(in_channels, latent_dim)
        if fusion not in _OPERATORS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
        if fusion != "concat" and token_dim % heads:
            raise ValueError(f"token_dim={token_dim} is not divisible by heads={heads}; "
                             "pick heads that divide token_dim")
        self.kind = "hybrid" if shared else "late"
        self.fusion = fusion
        self.token_dim = token_dim
        self.mode_encoders = nn.ModuleList(
            ResNetEncoder(in_channels=1, latent_dim=token_dim, width=mode_width)
            for _ in range(in_channels))
        self.shared = (ResNetEncoder(in_channels=in_channels, latent_dim=token_dim, width=width)
                       if shared else None)
        n_tokens = in_channels + int(shared)
        kwargs: dict[str, Any] = {} if fusion == "concat" else {"heads": heads}
        if fusion == "self_attention":
            kwargs["pool"] = pool
        self.fuse = _OPERATORS[fusion](n_tokens, token_dim, latent_dim, **kwargs)

    @property
    def n_tokens(self) -> int:
        return self.n_modes + int(self.shared is not None)

    def tokens(self, fields: Tensor, present: Tensor | None) -> tuple[Tensor, Tensor]:
        """Tokens ``(B, T, d)`` and their presence ``(B, T)``; absent tokens are 0 (unused)."""
        batch = fields.shape[0]
        if present is None:
            present = torch.ones(batch, self.n_modes, dtype=torch.bool, device=fields.device)
        columns = []
        for m, encoder in enumerate(self.mode_encoders):
            keep = present[:, m]
            if bool(keep.all()):
                columns.append(encoder(fields[:, m:m + 1]))
                continue
            # Only samples that have the mode pass through its encoder: batch-norm statistics
            # and compute never see a mode that is not there.
            token = fields.new_zeros(batch, self.token_dim)
            if bool(keep.any()):
                encoded = encoder(fields[keep, m:m + 1])
                token = token.to(encoded.dtype).index_put((keep.nonzero()[:, 0],), encoded)
            columns.append(token)
        if self.shared is not None:
            columns.append(self.shared(zero_fill(fields, present)))
            present = torch.cat([present, present.new_ones(batch, 1)], dim=1)
        dtype = functools.reduce(torch.promote_types, (c.dtype for c in columns))
        return torch.stack([c.to(dtype) for c in columns], dim=1), present

    def encode(self, fields: Tensor, present: Tensor | None) -> Tensor:
        tokens, token_present = self.tokens(fields, present)
        return self.fuse(tokens, token_present)


def build_encoder(kind: str = "early", fusion: str = "concat", in_channels: int = 5,
                  latent_dim: int = 1000, width: int = 64, mode_width: int | None = None,
                  token_dim: int = 128, heads: int = 4, pool: str = "token") -> FusionEncoder:
    """Build a fusion encoder ``(B, in_channels, H, W)`` -> ``(B, latent_dim)``.

    Args:
        kind: "early", "late" or "hybrid" (see the module docstring).
        fusion: "concat", "self_attention" or "cross_attention"; early fusion is channel
            concatenation, so it takes only "concat".
        in_channels: number of modes (one per channel).
        latent_dim: representation size.
        width: base width of the early / shared ResNet (64 = ResNet-18).
        mode_width: base width of each per-mode ResNet (default ``max(4, width // 2)``).
        token_dim: per-mode token size (late, hybrid).
        heads: attention heads of the attention operators.
        pool: self-attention readout: "token" (fusion token) or "mean".
    """
    if kind not in KINDS:
        raise ValueError(f"unknown fusion kind {kind!r}; choose one of {KINDS}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion operator {fusion!r}; choose one of {FUSIONS}")
    if kind == "early":
        if fusion != "concat":
            raise ValueError(f"early fusion stacks the modes as channels and has no {fusion!r} "
                             "operator; use kind='late' or 'hybrid' for attention fusion")
        return EarlyFusionEncoder(in_channels, latent_dim, width)
    mode_width = max(4, width // 2) if mode_width is None else mode_width
    return TokenFusionEncoder(in_channels, latent_dim, fusion=fusion, mode_width=mode_width,
                              token_dim=token_dim, shared=kind == "hybrid", width=width,
                              heads=heads, pool=pool)


def parse_scheme(name: str) -> tuple[str, str]:
    """``"early"`` -> ``("early", "concat")``; ``"late_self_attention"`` ->
    ``("late", "self_attention")``; ``"hybrid_concat"`` -> ``("hybrid", "concat")``: the
    string form notebooks and scripts use to pick a scheme for :func:`build_encoder`."""
    kind, _, operator = name.partition("_")
    operator = operator or "concat"
    if kind not in KINDS or operator not in FUSIONS or (kind == "early" and operator != "concat"):
        valid = ["early"] + [f"{k}_{f}" for k in KINDS[1:] for f in FUSIONS]
        raise ValueError(f"unknown fusion scheme {name!r}; choose one of {valid}")
    return kind, operator


def fusion_cost(module: nn.Module, input_shape: Sequence[int] = (1, 5, 32, 64),
                present: Tensor | None = None) -> dict[str, int]:
    """Parameters and forward FLOPs of ``module`` on one input of ``input_shape`` (B, C, H, W).

    FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add;
    convolutions and matrix products). Attention score/value products, which the counter does
    not see when scaled-dot-product attention runs on CPU, are added analytically.

    Returns:
        ``parameters``, ``flops`` (whole batch), ``flops_per_sample``.
    """
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    fields = torch.zeros(*input_shape, device=device)
    counter = FlopCounterMode(display=False)
    # The eval-mode transformer fast path is one fused op the counter does not see.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            module(fields) if present is None else module(fields, present)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        module.train(was_training)
    flops = int(counter.get_total_flops())
    counted = {str(op) for ops in counter.get_flop_counts().values() for op in ops}
    fuse = getattr(module, "fuse", None)
    if fuse is not None and not any("scaled_dot_product" in op for op in counted):
        flops += 2 * input_shape[0] * fuse.attention_macs(module.n_tokens)
    return {"parameters": sum(p.numel() for p in module.parameters()), "flops": flops,
            "flops_per_sample": flops // max(1, int(input_shape[0]))}


# --------------------------------------------------------------------------------------------
# Training with missing modes
# --------------------------------------------------------------------------------------------

def mode_dropout(batch_size: int, n_modes: int, p: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """Random presence mask, bool ``(B, M)`` on the generator's device: each mode is dropped
    independently with probability ``p``; a sample left with none keeps one mode chosen
    uniformly (so the kept-mode count is never 0)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"mode dropout p must be in [0, 1), got {p}")
    device = generator.device if generator is not None else torch.device("cpu")
    present = torch.rand(batch_size, n_modes, generator=generator, device=device) >= p
    rescue = torch.randint(n_modes, (batch_size,), generator=generator, device=device)
    empty = ~present.any(dim=1)
    present[empty, rescue[empty]] = True
    return present


def random_mode_split(batch_size: int, n_modes: int,
                      generator: torch.Generator | None = None) -> Tensor:
    """Per-sample random split of the modes into two non-empty groups: bool ``(B, M)``, True =
    group A (group B is the complement)."""
    if n_modes < 2:
        raise ValueError(f"need >= 2 modes to split into two groups, got {n_modes}")
    device = generator.device if generator is not None else torch.device("cpu")
    # Uniform over the 2^M - 2 proper non-empty subsets: draw an index and read its bits.
    code = torch.randint(1, 2**n_modes - 1, (batch_size,), generator=generator, device=device)
    bits = 2 ** torch.arange(n_modes, device=device)
    return (code[:, None] & bits) > 0


def _fusion_encoder(method: nn.Module) -> FusionEncoder:
    encoder = getattr(method, "encoder", None)
    if not isinstance(encoder, FusionEncoder):
        raise ValueError(f"{type(method).__name__}.encoder is {type(encoder).__name__}, not a "
                         "FusionEncoder; build it with geofusion.fusion.build_encoder")
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
    the two views are also two augmentations of the day (:func:`geofusion.augment.two_views`).

    Args:
        encoder: a :class:`FusionEncoder` ``(B, M, H, W), present -> (B, latent_dim)``.
        projector: ``(B, latent_dim) -> (B, proj_dim)``.
        objective: "barlow_twins" or "nt_xent".
        groups: two disjoint non-empty groups of channel indices, or "random".
        augmentation: optional ``(fields, generator) -> fields``.
        lambd: Barlow Twins off-diagonal weight.
        temperature: NT-Xent temperature.

    ``gather_distributed`` (set by :func:`geofusion.distributed.fit_distributed`) makes the
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
                             "build it with geofusion.fusion.build_encoder")
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
        # One forward pass over both views, as in geofusion.methods.ContrastiveMethod.
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


def build_fusion_method(name: str, kind: str = "early", fusion: str = "concat",
                        p_mode_dropout: float = 0.0, in_channels: int = 5,
                        grid: tuple[int, int] = (32, 64), latent_dim: int = 1000,
                        width: int = 64, mode_width: int | None = None, token_dim: int = 128,
                        heads: int = 4, proj_dim: int = 128, proj_hidden_dim: int = 1024,
                        objective: str = "barlow_twins",
                        groups: Sequence[Sequence[int]] | str = MODE_GROUPS,
                        augmentation: Any | None = None, **loss_params: float) -> nn.Module:
    """Any method of :func:`geofusion.methods.build_method` (or "mode_group") with a fusion
    encoder from :func:`build_encoder`, optionally wrapped in :class:`ModeDropoutMethod`.

    ``kind="early", fusion="concat"`` with ``p_mode_dropout=0`` is architecturally the method
    ``build_method`` makes. ``objective``, ``groups`` and ``augmentation`` apply to
    "mode_group" only; ``loss_params`` are ``lambd`` / ``temperature``.
    """
    from geofusion.methods import build_method

    encoder = build_encoder(kind, fusion, in_channels=in_channels, latent_dim=latent_dim,
                            width=width, mode_width=mode_width, token_dim=token_dim,
                            heads=heads)
    if name == "mode_group":
        projector = ProjectionHead(latent_dim, proj_hidden_dim, proj_dim,
                                   final_batchnorm=objective == "barlow_twins")
        method: nn.Module = ModeGroupContrastiveMethod(
            encoder, projector, objective=objective, groups=groups, augmentation=augmentation,
            **loss_params)
    elif name in FUSION_METHODS:
        method = build_method(name, in_channels=in_channels, grid=grid, latent_dim=latent_dim,
                              width=width, proj_dim=proj_dim, proj_hidden_dim=proj_hidden_dim,
                              **loss_params)
        # build_method's own ResNet is discarded: the heads (and the autoencoder's decoder at
        # ``width``) stay exactly as build_method makes them.
        method.encoder = encoder
    else:
        raise ValueError(f"unknown method {name!r}; choose one of {FUSION_METHODS}")
    return ModeDropoutMethod(method, p_mode_dropout) if p_mode_dropout > 0 else method


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

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
