"""Contrastive and redundancy-reduction losses on embeddings.

Plain functions on full tensors (no global state), plus thin ``nn.Module`` wrappers for use
as attributes of a method. Under DistributedDataParallel, ``gather_distributed=True`` makes the
effective batch the global one (see :mod:`geofusion.learning.distributed`): NT-Xent and SupCon
gather the
embeddings of all processes (gradients flow back through the gather) and compute the loss of
the global batch; Barlow Twins sums its batch statistics and ``z1^T z2`` over processes, as the
official implementation does. The value then equals the single-process loss on the
concatenated batch on every process; in a single process the option changes nothing.

- :func:`barlow_twins_loss` (Zbontar et al. 2021): ``z1, z2`` (N, D) -> scalar.
- :func:`nt_xent_loss` (SimCLR, Chen et al. 2020): ``z1, z2`` (N, D) -> scalar.
- :func:`supcon_loss` (Khosla et al. 2020, L_out): ``features`` (B, V, D), ``labels`` (B,)
  -> scalar. With ``V = 2`` and ``labels=None`` it equals :func:`nt_xent_loss` at the same
  temperature: each anchor's only positive is its other view and its denominator runs over the
  other ``2B - 1`` views, exactly NT-Xent's.

Half-precision inputs are computed in float32 (the exponentials and batch statistics need it);
the result is float32 then.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geofusion.learning import collectives

__all__ = [
    "BarlowTwinsLoss",
    "NTXentLoss",
    "SupConLoss",
    "barlow_twins_loss",
    "nt_xent_loss",
    "supcon_loss",
]

# BatchNorm1d's default eps: the official Barlow Twins code standardises with
# BatchNorm1d(affine=False), i.e. (z - mean) / sqrt(biased var + 1e-5).
BN_EPS = 1e-5


def _as_float(z: Tensor) -> Tensor:
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _check_pair(z1: Tensor, z2: Tensor, name: str, min_batch: int) -> None:
    if z1.dim() != 2 or z2.dim() != 2:
        raise ValueError(
            f"{name}: expected two (N, D) embeddings, got shapes {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}; flatten the embeddings to 2-D first")
    if z1.shape != z2.shape:
        raise ValueError(
            f"{name}: the two views must have the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}")
    if z1.shape[0] < min_batch:
        raise ValueError(f"{name}: needs a batch of at least {min_batch}, got N={z1.shape[0]}; "
                         "use a larger batch (or drop_last=True in the loader)")


def _check_temperature(temperature: float, name: str = "temperature") -> None:
    if not temperature > 0:
        raise ValueError(f"{name} must be > 0, got {temperature}")


def _check_lambd(lambd: float) -> None:
    # A negative weight would reward correlated dimensions, the opposite of redundancy
    # reduction; NaN fails the comparison too.
    if not lambd >= 0:
        raise ValueError(f"lambd must be >= 0 (the weight of the off-diagonal redundancy term; "
                         f"the report uses 0.005), got {lambd}")


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 0.005,
                      gather_distributed: bool = False) -> Tensor:
    """Barlow Twins loss of two batches of embeddings.

    Each dimension is standardised over the batch as the official implementation does
    (``BatchNorm1d(affine=False)`` in training mode: biased variance, eps 1e-5 inside the square
    root), ``C = z1n.T @ z2n / N`` is the (D, D) cross-correlation and

        L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.

    A dimension with zero variance standardises to 0 (finite, C_ii = 0).

    Args:
        z1, z2: (N, D) embeddings of the two views, N >= 2.
        lambd: weight of the redundancy-reduction (off-diagonal) term, >= 0.
        gather_distributed: standardise and correlate over the batches of all processes.

    Returns:
        Scalar loss.
    """
    _check_lambd(lambd)
    _check_pair(z1, z2, "barlow_twins_loss", min_batch=2)
    z1, z2 = _as_float(z1), _as_float(z2)
    n = z1.shape[0]

    if gather_distributed and collectives.is_distributed():
        # Sums over processes (differentiable), so statistics and C are the global batch's.
        total = collectives.all_reduce_sum
        n = int(total(torch.tensor(n, device=z1.device)))

        def standardise(z: Tensor) -> Tensor:
            mean = total(z.sum(dim=0, keepdim=True)) / n
            var = total((z - mean).pow(2).sum(dim=0, keepdim=True)) / n
            return (z - mean) / torch.sqrt(var + BN_EPS)

        c = total(standardise(z1).T @ standardise(z2)) / n
    else:
        def standardise(z: Tensor) -> Tensor:
            mean = z.mean(dim=0, keepdim=True)
            var = z.var(dim=0, unbiased=False, keepdim=True)
            return (z - mean) / torch.sqrt(var + BN_EPS)

        c = standardise(z1).T @ standardise(z2) / n
    diagonal = torch.diagonal(c)
    on_diag = (1 - diagonal).pow(2).sum()
    off_diag = c.pow(2).sum() - diagonal.pow(2).sum()
    return on_diag + lambd * off_diag


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5,
                 gather_distributed: bool = False) -> Tensor:
    """NT-Xent (normalised temperature-scaled cross entropy) of SimCLR over the 2N views.

    With ``z`` the 2N l2-normalised views (``z1`` then ``z2``) and ``s_ij = z_i . z_j / tau``,
    anchor ``k`` with positive ``pos(k)`` (the other view of the same sample) contributes

        l_k = -log( exp(s_{k,pos(k)}) / sum_{a != k} exp(s_{k,a}) )

    and the loss is the mean of ``l_k`` over all 2N anchors (both directions).

    N = 1 is rejected: with no negatives the loss is identically 0 and gives no signal, which in
    practice means a batch-size bug.

    Args:
        z1, z2: (N, D) embeddings of the two views, N >= 2; need not be normalised.
        temperature: tau > 0.
        gather_distributed: contrast over the embeddings of all processes (global batch).

    Returns:
        Scalar loss.
    """
    _check_temperature(temperature)
    _check_pair(z1, z2, "nt_xent_loss", min_batch=1 if gather_distributed else 2)
    if gather_distributed:
        z1, z2 = collectives.gather_with_grad(z1), collectives.gather_with_grad(z2)
        _check_pair(z1, z2, "nt_xent_loss", min_batch=2)
    n = z1.shape[0]
    z = F.normalize(_as_float(torch.cat([z1, z2])), dim=1)
    logits = z @ z.T / temperature
    # Exclude self-similarity from the softmax denominator.
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    targets = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, targets)


def supcon_loss(features: Tensor, labels: Tensor | None = None, temperature: float = 0.1,
                base_temperature: float | None = None,
                gather_distributed: bool = False) -> Tensor:
    """Supervised contrastive loss, the L_out form of Khosla et al. (2020), eq. 2.

    The B * V views are l2-normalised; for each anchor ``i`` with positives ``P(i)`` (the other
    views with the same label, or of the same sample when ``labels`` is None) and ``A(i)`` all
    views but ``i``:

        l_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau)
                                             / sum_{a in A(i)} exp(z_i.z_a / tau) )

    and the loss is the mean of ``l_i`` over all B * V anchors, times ``tau / base_temperature``
    when ``base_temperature`` is given (the official code's scaling, with base 0.07 there; the
    default None applies no scaling, so the value is eq. 2 averaged over anchors).

    With ``labels=None`` and ``V = 2`` this equals :func:`nt_xent_loss` at the same temperature.

    Args:
        features: (B, V, D) embeddings, V views of each of B samples; need not be normalised.
        labels: (B,) integer class of each sample, or None (SimCLR positives).
        temperature: tau > 0.
        base_temperature: optional reference temperature > 0 for the scaling above.
        gather_distributed: contrast over the features (and labels) of all processes.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes or temperatures, or an anchor with no positive (V = 1 and a
            label that occurs once in the batch): eq. 2 is undefined there.
    """
    _check_temperature(temperature)
    if base_temperature is not None:
        _check_temperature(base_temperature, "base_temperature")
    if features.dim() != 3:
        raise ValueError(
            f"supcon_loss: expected features (B, V, D), got {tuple(features.shape)}; "
            "stack the views with torch.stack([z1, z2], dim=1)")
    b, v, _ = features.shape
    if b < 1 or v < 1:
        raise ValueError(f"supcon_loss: empty features {tuple(features.shape)}")
    own_positives = labels is None
    if labels is None:
        labels = torch.arange(b, device=features.device)
    else:
        if labels.shape != (b,):
            raise ValueError(
                f"supcon_loss: labels must have shape ({b},) to match features, got "
                f"{tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"supcon_loss: labels must be integers, got {labels.dtype}")
        labels = labels.to(features.device)
    if gather_distributed and collectives.is_distributed():
        if own_positives:
            labels = labels + collectives.rank() * b  # sample ids stay unique globally
        features = collectives.gather_with_grad(features)
        labels = collectives.gather_with_grad(labels)
        b = features.shape[0]

    # View-major order (all first views, then all second views, ...) as in the official code.
    z = F.normalize(_as_float(features).transpose(0, 1).reshape(v * b, -1), dim=1)
    anchor_labels = labels.repeat(v)
    logits = z @ z.T / temperature
    self_mask = torch.eye(v * b, dtype=torch.bool, device=z.device)
    positive = (anchor_labels[:, None] == anchor_labels[None, :]) & ~self_mask
    n_positive = positive.sum(dim=1)
    if bool((n_positive == 0).any()):
        raise ValueError(
            "supcon_loss: some anchors have no positive (a single view of a sample whose label "
            "occurs once in the batch); pass V >= 2 views or batches where every label repeats")
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1,
                                        keepdim=True)
    # where, not multiply: the diagonal of log_prob is finite but must not count.
    mean_log_prob_pos = torch.where(positive, log_prob, 0.0).sum(dim=1) / n_positive
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    return -scale * mean_log_prob_pos.mean()


class BarlowTwinsLoss(nn.Module):
    """:func:`barlow_twins_loss` as a module: ``forward(z1, z2)`` with (N, D) inputs."""

    def __init__(self, lambd: float = 0.005, gather_distributed: bool = False) -> None:
        super().__init__()
        _check_lambd(lambd)
        self.lambd = lambd
        self.gather_distributed = gather_distributed

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, lambd=self.lambd,
                                 gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


class NTXentLoss(nn.Module):
    """:func:`nt_xent_loss` as a module: ``forward(z1, z2)`` with (N, D) inputs."""

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, temperature=self.temperature,
                            gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class SupConLoss(nn.Module):
    """:func:`supcon_loss` as a module: ``forward(features, labels=None)``, features (B, V, D)."""

    def __init__(self, temperature: float = 0.1, base_temperature: float | None = None,
                 gather_distributed: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        if base_temperature is not None:
            _check_temperature(base_temperature, "base_temperature")
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.gather_distributed = gather_distributed

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        return supcon_loss(features, labels, temperature=self.temperature,
                           base_temperature=self.base_temperature,
                           gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, base_temperature={self.base_temperature}"
