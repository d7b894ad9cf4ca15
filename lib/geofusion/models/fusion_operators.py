"""Fusion operators: per-mode tokens with a presence mask -> one representation.

Used by the late and hybrid encoders of :mod:`geofusion.models.fusion_encoders`: tokens ``(B, T,
d)``
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
- ``graph_attention`` (:class:`GraphAttentionFusion`, SPARTA's graph fusion): the tokens are
  the nodes of a graph whose edges are physical couplings of the variables
  (:data:`VARIABLE_EDGES`: temperature-geopotential (hypsometric thickness), u-v (one wind
  vector), geopotential-u and geopotential-v (geostrophic balance), humidity-temperature
  (Clausius-Clapeyron)), plus self loops and, for hybrid fusion, the shared token linked to
  every mode; one graph-attention layer (Velickovic et al. 2018) where each node attends only
  to its present neighbours, residual and layer norm, masked mean over present nodes, linear.
  ``4 T d^2``-ish projections plus ``2 |E| d`` edge terms: negligible next to the encoders.

Every operator has ``attention_macs(n_tokens)``: the score and value multiply-adds per sample,
which ``torch.utils.flop_counter`` does not see on CPU
(:func:`geofusion.models.fusion_encoders.fusion_cost` adds them).

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
           "CrossAttentionFusion", "GraphAttentionFusion", "VARIABLE_EDGES", "masked_mean"]

FUSIONS: tuple[str, ...] = ("concat", "self_attention", "cross_attention", "graph_attention")

#: Undirected edges between the modes in :data:`geofusion.variables.VARIABLES` order (0
#: 2m_temperature, 1 geopotential, 2 u_component_of_wind, 3 v_component_of_wind, 4
#: specific_humidity): temperature-geopotential (the hypsometric equation ties layer thickness
#: to temperature), u-v (components of one wind vector), geopotential-u and geopotential-v
#: (geostrophic balance), humidity-temperature (Clausius-Clapeyron saturation).
VARIABLE_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (1, 2), (1, 3), (0, 4))


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


class GraphAttentionFusion(nn.Module):
    """One graph-attention layer over the mode tokens on a graph of physical couplings.

    Written in plain torch (dense ``T x T`` adjacency): torch-geometric installs beside torch
    2.13 (a dry run pulls aiohttp and eight other packages, not torch), but for graphs of five
    or six nodes a dense masked softmax is a few lines and masks absent modes per sample
    directly, without a dependency.

    Node features ``h = W (x + e_mode)`` per head (``heads`` heads of ``d / heads``); attention
    ``alpha_ij = softmax_{j in N(i), j present} LeakyReLU(a_src . h_i + a_dst . h_j)`` over the
    neighbours ``N(i)`` (edges and self loop); ``x_i' = x_i + W_o [sum_j alpha_ij h_j]_heads``,
    layer norm; masked mean over the present nodes; linear to ``(B, D)``. An absent node is
    neither attended to nor pooled, so it has no influence.

    Args:
        n_tokens: ``T``; 5 modes (late fusion) or 6 (hybrid: the shared token, last, is linked
            to every mode) use :data:`VARIABLE_EDGES`; other sizes need ``edges``.
        token_dim, out_dim, heads: ``d``, ``D`` and the attention heads (``d % heads == 0``).
        edges: undirected ``(i, j)`` node pairs, or None for the default above.

    Example:
        >>> fuse = GraphAttentionFusion(n_tokens=5, token_dim=8, out_dim=4, heads=2)
        >>> fuse.adjacency.int().tolist()[2]  # u: itself, geopotential and v
        [0, 1, 1, 1, 0]
    """

    def __init__(self, n_tokens: int, token_dim: int, out_dim: int, heads: int = 4,
                 edges: tuple[tuple[int, int], ...] | None = None) -> None:
        super().__init__()
        if token_dim % heads:
            raise ValueError(f"token_dim={token_dim} is not divisible by heads={heads}")
        if edges is None:
            if n_tokens not in (5, 6):
                raise ValueError(f"the default physical edges are for the 5 variables (6 "
                                 f"tokens with hybrid fusion), got {n_tokens} tokens; pass "
                                 "edges=[(i, j), ...]")
            edges = VARIABLE_EDGES + tuple((m, 5) for m in range(5) if n_tokens == 6)
        adjacency = torch.eye(n_tokens, dtype=torch.bool)
        for i, j in edges:
            if not (0 <= i < n_tokens and 0 <= j < n_tokens):
                raise ValueError(f"edge ({i}, {j}) names a node outside 0..{n_tokens - 1}")
            adjacency[i, j] = adjacency[j, i] = True
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.heads = heads
        self.mode_embedding = nn.Parameter(0.02 * torch.randn(n_tokens, token_dim))
        self.value = nn.Linear(token_dim, token_dim, bias=False)
        self.attend_source = nn.Parameter(0.1 * torch.randn(heads, token_dim // heads))
        self.attend_target = nn.Parameter(0.1 * torch.randn(heads, token_dim // heads))
        self.out = nn.Linear(token_dim, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.proj = nn.Linear(token_dim, out_dim)

    def forward(self, tokens: Tensor, present: Tensor) -> Tensor:
        return self.proj(masked_mean(self.node_features(tokens, present), present))

    def node_features(self, tokens: Tensor, present: Tensor) -> Tensor:
        """Node features ``(B, T, d)`` after the graph-attention layer (before pooling)."""
        batch, n, d = tokens.shape
        x = tokens + self.mode_embedding.to(tokens.dtype)
        h = self.value(x).view(batch, n, self.heads, d // self.heads)
        source = (h * self.attend_source.to(h.dtype)).sum(-1)  # (B, T, heads)
        target = (h * self.attend_target.to(h.dtype)).sum(-1)
        scores = nn.functional.leaky_relu(source[:, :, None] + target[:, None, :], 0.2)
        allowed = self.adjacency[None] & present[:, None, :]  # (B, T_i, T_j)
        # A node's self loop keeps every row non-empty (an absent node's row is never pooled).
        allowed = allowed | torch.eye(n, dtype=torch.bool, device=tokens.device)[None]
        scores = scores.masked_fill(~allowed[..., None], float("-inf"))
        alpha = scores.softmax(dim=2)  # over the neighbours j
        mixed = torch.einsum("bijh,bjhc->bihc", alpha, h).reshape(batch, n, d)
        return self.norm(x + self.out(mixed))

    def attention_macs(self, n_tokens: int) -> int:
        return 2 * n_tokens * n_tokens * self.mode_embedding.shape[1]


OPERATORS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion, "self_attention": SelfAttentionFusion,
    "cross_attention": CrossAttentionFusion, "graph_attention": GraphAttentionFusion}
