"""Fusion operators: per-mode tokens with a presence mask -> one representation.

Used by the late and hybrid encoders of :mod:`geofusion.fusion_encoders`: tokens ``(B, T, d)``
(``T = M`` modes for late fusion, ``M + 1`` with the shared token for hybrid fusion) and a
presence mask ``(B, T)`` map to ``(B, D)``, ``D = latent_dim``. An absent token never counts as
data: it is excluded (masked attention, masked mean) or replaced by a learned *absent*
embedding. Multiply-adds per sample (the encoders dominate: a ResNet-18 at width 64 on 32x64
is ~0.6 G multiply-adds, the operators below are < 1 M for ``d = 128``, ``T = 6``):

- ``concat`` (:class:`ConcatFusion`): absent tokens -> learned absent embedding, flatten,
  linear: ``T d D`` multiply-adds, ``T d D + T d + D`` parameters.
- ``self_attention`` (:class:`SelfAttentionFusion`, Dufumier et al.): a learned fusion token
  joins the ``T`` mode tokens (plus learned mode embeddings); one pre-norm transformer encoder
  layer with a key padding mask for absent modes; the fusion token's output (or the masked
  mean) -> linear to ``D``. With ``S = T + 1`` and a feed-forward of ``f = 2d``: ``4 S d^2``
  (projections) ``+ 2 S^2 d`` (scores, values) ``+ 2 S d f`` (feed-forward) ``+ d D``
  multiply-adds.
- ``cross_attention`` (:class:`CrossAttentionFusion`): every token attends to the tokens of all
  *other* present modes in one multi-head attention block (attention mask = self and absent
  modes excluded), so all ``M (M - 1)`` directed interactions of Saioni et al.'s pairwise
  cross-attention are covered by one block instead of ``M (M - 1)`` blocks (20 for 5 modes);
  residual connections keep each mode's own information; masked mean over present tokens ->
  linear. Cost as self-attention with ``S = T``. A sample with a single present mode attends to
  itself (nothing else to attend to).

Every operator has ``attention_macs(n_tokens)``: the score and value multiply-adds per sample,
which ``torch.utils.flop_counter`` does not see on CPU
(:func:`geofusion.fusion_encoders.fusion_cost` adds them).

Example:
    >>> import torch
    >>> fuse = OPERATORS["cross_attention"](n_tokens=5, token_dim=8, out_dim=16, heads=2)
    >>> present = torch.tensor([[True, False, True, True, True]])
    >>> fuse(torch.randn(1, 5, 8), present).shape
    torch.Size([1, 16])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FUSIONS", "OPERATORS", "ConcatFusion", "SelfAttentionFusion",
           "CrossAttentionFusion", "masked_mean"]

FUSIONS: tuple[str, ...] = ("concat", "self_attention", "cross_attention")


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


def masked_mean(tokens: Tensor, present: Tensor) -> Tensor:
    """Mean of ``tokens`` (B, T, d) over the present ones (``present`` bool (B, T)) -> (B, d)."""
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
        pooled = out[:, 0] if self.pool == "token" else masked_mean(out[:, 1:], present)
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
        return self.proj(self.norm(masked_mean(x, present)))

    def attention_macs(self, n_tokens: int) -> int:
        return 2 * n_tokens * n_tokens * self.mode_embedding.shape[1]


OPERATORS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion, "self_attention": SelfAttentionFusion,
    "cross_attention": CrossAttentionFusion}
