"""Fusion encoders of the five modes: early, late and hybrid fusion, and their cost.

Each ERA5 variable is a *mode* (report section 2.1.3). Every encoder here is a
:class:`FusionEncoder`: ``forward(fields (B, C, H, W), present=None) -> (B, latent_dim)``, where
``present`` is an optional ``torch.bool`` ``(B, C)`` saying which modes a sample has (a sensor
may be down at inference). Without ``present`` all modes are used, so a fusion encoder drops in
wherever a ``geofusion.models.resnet.ResNetEncoder`` is used
(:func:`geofusion.learning.fusion_methods.build_fusion_method` swaps it into any method of
:mod:`geofusion.learning.methods`).

Schemes (:func:`build_encoder`, by name :func:`parse_scheme`):

- **early** (the report's default): the modes are stacked as channels into one ResNet. An
  absent mode is *zero-filled*, i.e. set to its training mean in standardised units (the same
  convention as :mod:`geofusion.data.observations`); the network cannot tell "absent" from
  "average".
- **late** (Dufumier et al. 2025): one narrow ResNet per mode (``mode_width`` channels, one input
  channel) gives a token per mode, ``(B, M, d)``; a fusion operator
  (:mod:`geofusion.models.fusion_operators`) maps the tokens to the representation. An absent mode
  never passes through its encoder.
- **graph** fusion is late (or hybrid) fusion with the ``graph_attention`` operator: the mode
  tokens are nodes of a graph of physical couplings, one graph-attention layer
  (:class:`geofusion.models.fusion_operators.GraphAttentionFusion`), e.g.
  ``"late_graph_attention"``.
- **hybrid** (Wang et al. 2025): the per-mode tokens plus the token of a *shared* ResNet over the
  stacked (zero-filled) modes, ``M + 1`` tokens fused by the same operators; the shared token is
  always present.

:func:`fusion_cost` measures parameters and FLOPs of a built encoder; :func:`mode_dropout`
draws random presence masks (>= 1 mode kept) and :func:`random_mode_split` two complementary
groups of modes.

Example:
    >>> import torch
    >>> encoder = build_encoder(*parse_scheme("late_self_attention"), latent_dim=16, width=4,
    ...                         token_dim=8, heads=2)
    >>> present = torch.tensor([[True, True, False, True, True]])
    >>> encoder(torch.randn(1, 5, 32, 64), present).shape
    torch.Size([1, 16])
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from geofusion.models.fusion_operators import FUSIONS, OPERATORS
from geofusion.models.resnet import ResNetEncoder

__all__ = [
    "KINDS", "FUSIONS", "FusionEncoder", "EarlyFusionEncoder", "TokenFusionEncoder",
    "check_present", "zero_fill", "build_encoder", "parse_scheme", "fusion_cost",
    "mode_dropout", "random_mode_split",
]

KINDS: tuple[str, ...] = ("early", "late", "hybrid")


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
        if fusion not in OPERATORS:
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
        self.fuse = OPERATORS[fusion](n_tokens, token_dim, latent_dim, **kwargs)

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
        fusion: "concat", "self_attention", "cross_attention" or "graph_attention"; early
            fusion is channel concatenation, so it takes only "concat".
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
