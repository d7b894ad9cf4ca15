"""Latent smoothness in time: a loss on second differences and the diagnostics to compare encoders.

Weather evolves continuously from day to day, so a representation useful for forecasting
should move smoothly along a trajectory. For embeddings ``z_{t-delta}, z_t, z_{t+delta}`` of
three days equally spaced in time the second difference

.. math:: \\Delta^2 z_t = z_{t+\\delta} - 2 z_t + z_{t-\\delta}

vanishes when the embedding is linear in time; :func:`latent_smoothness_loss` is its mean
squared norm (SPARTA's smoothness term), optionally on L2-normalised embeddings.
:func:`latent_smoothness` reports, for a daily series, the mean step ``||u_{t+1} - u_t||`` and
the mean second-difference norm ``||u_{t+1} - 2 u_t + u_{t-1}||`` of the **normalised**
embeddings ``u = z / ||z||`` (distances on the unit sphere, so encoders of different scale and
dimension are comparable), and their ratio (second difference per step: 0 for a straight
path, 2 for a path that reverses every day).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["second_difference", "latent_smoothness_loss", "latent_smoothness",
           "latent_smoothness_per_day"]


def second_difference(previous: Tensor, current: Tensor, following: Tensor) -> Tensor:
    """``following - 2 current + previous``, each ``(B, D)``."""
    if not previous.shape == current.shape == following.shape:
        raise ValueError(f"the three embeddings must share a shape, got "
                         f"{tuple(previous.shape)}, {tuple(current.shape)}, "
                         f"{tuple(following.shape)}")
    return following - 2.0 * current + previous


def latent_smoothness_loss(previous: Tensor, current: Tensor, following: Tensor,
                           normalise: bool = True) -> Tensor:
    """Mean over the batch of ``||z_{t+d} - 2 z_t + z_{t-d}||^2`` (module docstring).

    Args:
        previous, current, following: ``(B, D)`` embeddings of days ``t - d``, ``t``, ``t + d``.
        normalise: L2-normalise each embedding first (scale-free, as the cosine-based
            contrastive losses are).

    Example::

        >>> t = torch.arange(3.0)[:, None] * torch.ones(1, 4)  # linear in time
        >>> float(latent_smoothness_loss(t[0:1], t[1:2], t[2:3], normalise=False))
        0.0
    """
    if normalise:
        previous, current, following = (F.normalize(z, dim=-1)
                                        for z in (previous, current, following))
    return (second_difference(previous, current, following) ** 2).sum(dim=-1).mean()


def latent_smoothness_per_day(embeddings: np.ndarray | Tensor
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Per-day terms of :func:`latent_smoothness`: the steps ``||u_{t+1} - u_t||``
    ``(T - 1,)`` and the second-difference norms ``||u_{t+1} - 2 u_t + u_{t-1}||`` ``(T - 2,)``
    of the normalised embeddings ``u = z / ||z||`` of ``(T >= 3, D)`` consecutive days."""
    z = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    if z.ndim != 2 or len(z) < 3:
        raise ValueError(f"embeddings must be (T >= 3, D) consecutive days, got "
                         f"{tuple(z.shape)}")
    u = F.normalize(z, dim=-1)
    step = (u[1:] - u[:-1]).norm(dim=-1)
    second = second_difference(u[:-2], u[1:-1], u[2:]).norm(dim=-1)
    return step.numpy(), second.numpy()


def latent_smoothness(embeddings: np.ndarray | Tensor) -> dict[str, float]:
    """Smoothness of a daily series of embeddings ``(T >= 3, D)`` on the unit sphere.

    Returns ``mean_step`` (mean ``||u_{t+1} - u_t||``), ``mean_second_difference`` (mean
    ``||u_{t+1} - 2 u_t + u_{t-1}||``) and ``curvature`` (their ratio), ``u = z / ||z||``.
    """
    steps, seconds = latent_smoothness_per_day(embeddings)
    step, second = steps.mean(), seconds.mean()
    return {"mean_step": float(step), "mean_second_difference": float(second),
            "curvature": float(second / step) if step > 0 else float("nan")}
