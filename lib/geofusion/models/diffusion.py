"""Conditional denoising diffusion (DDPM) in the latent space: ensembles of complete days.

A deterministic decoder gives one reconstruction of a sparse observation (or one forecast),
the conditional *mean*, which is too smooth and says nothing about its uncertainty. A
diffusion model learns the conditional *distribution* ``p(z | c)`` of the latent ``z`` of the
complete day given a condition ``c`` (the embedding of a sparse observation, or the latents of
the previous days for a probabilistic forecast); sampling it ``M`` times gives an ensemble,
decoded to fields and scored with CRPS and spread/skill (:mod:`geofusion.verification.ensembles`).

DDPM (Ho et al. 2020) with ``K`` steps and a variance schedule ``beta_k`` (linear from
``beta_start`` to ``beta_end``, Ho et al.'s choice), ``alpha_k = 1 - beta_k``,
``abar_k = prod_{j <= k} alpha_j``:

- forward: ``z_k = sqrt(abar_k) z_0 + sqrt(1 - abar_k) eps``, ``eps ~ N(0, I)``;
- training (:meth:`LatentDiffusion.loss`): ``E_{k, eps} || eps - eps_theta(z_k, k, c) ||^2``,
  ``k`` uniform, the simplified objective;
- sampling (:meth:`LatentDiffusion.sample`), ancestral: ``z_K ~ N(0, I)``, then for
  ``k = K .. 1``: ``z_{k-1} = (z_k - beta_k / sqrt(1 - abar_k) eps_theta) / sqrt(alpha_k)
  + sigma_k xi`` with the posterior variance ``sigma_k^2 = beta_k (1 - abar_{k-1}) / (1 -
  abar_k)`` (and no noise at the last step).

The denoiser ``eps_theta`` (:class:`LatentDenoiser`) is an MLP on ``[z_k, c, emb(k)]`` with a
sinusoidal step embedding. Latents should be standardised (unit scale), as the schedule
assumes (the forecaster's :class:`geofusion.downstream.forecasting.LatentStandardiser` does this).
Train with :func:`geofusion.learning.training.fit` on a dataset of ``(target latent, condition)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["linear_beta_schedule", "LatentDenoiser", "LatentDiffusion"]


def linear_beta_schedule(steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
                         ) -> Tensor:
    """``(steps,)`` float64 betas, linear (Ho et al. 2020 use 1e-4 .. 0.02 over 1000 steps;
    for fewer steps the end points are rescaled by ``1000 / steps`` so ``abar_K`` stays ~0)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    scale = 1000.0 / steps
    return torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), steps,
                          dtype=torch.float64)


def _step_embedding(step: Tensor, dim: int) -> Tensor:
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=step.device) / half)
    angles = step.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class LatentDenoiser(nn.Module):
    """``eps_theta(z_k, k, c)``: MLP on ``[z_k (D), c (D_c), emb(k) (E)]`` -> ``(D,)``.

    Args:
        latent_dim: ``D``; condition_dim: ``D_c`` (0 for an unconditional model).
        hidden_dim, layers: the MLP (SiLU activations).
        step_dim: size of the sinusoidal step embedding.
    """

    def __init__(self, latent_dim: int, condition_dim: int, hidden_dim: int = 512,
                 layers: int = 3, step_dim: int = 64) -> None:
        super().__init__()
        if latent_dim < 1 or condition_dim < 0 or hidden_dim < 1 or layers < 1:
            raise ValueError("latent_dim, hidden_dim, layers must be >= 1, condition_dim >= 0")
        self.latent_dim, self.condition_dim, self.step_dim = latent_dim, condition_dim, step_dim
        sizes = [latent_dim + condition_dim + step_dim] + [hidden_dim] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Linear(hidden_dim, latent_dim)

    def forward(self, z: Tensor, step: Tensor, condition: Tensor | None) -> Tensor:
        parts = [z, _step_embedding(step, self.step_dim).to(z.dtype)]
        if self.condition_dim:
            if condition is None or condition.shape[-1] != self.condition_dim:
                raise ValueError(f"the denoiser needs a (B, {self.condition_dim}) condition")
            parts.insert(1, condition.to(z.dtype))
        return self.out(self.body(torch.cat(parts, dim=1)))


class LatentDiffusion(nn.Module):
    """Conditional DDPM on latents (module docstring); a training objective for ``fit``.

    Args:
        denoiser: ``eps_theta(z, k, c)`` (:class:`LatentDenoiser`).
        steps: ``K``; beta_start, beta_end: the linear schedule (:func:`linear_beta_schedule`).

    Example::

        >>> model = LatentDiffusion(LatentDenoiser(4, 3, hidden_dim=16, layers=1), steps=10)
        >>> loss, _ = model.loss((torch.randn(8, 4), torch.randn(8, 3)),
        ...                      torch.Generator().manual_seed(0))
        >>> members = model.sample(torch.randn(2, 3), 5, torch.Generator().manual_seed(0))
        >>> tuple(members.shape)
        (5, 2, 4)
    """

    def __init__(self, denoiser: nn.Module, steps: int = 100, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> None:
        super().__init__()
        self.denoiser, self.steps = denoiser, steps
        betas = linear_beta_schedule(steps, beta_start, beta_end)
        abar = torch.cumprod(1.0 - betas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.register_buffer("betas", betas.float())
        self.register_buffer("abar", abar.float())
        self.register_buffer("posterior_var", (betas * (1 - abar_prev) / (1 - abar)).float())

    def noisy(self, z0: Tensor, step: Tensor, noise: Tensor) -> Tensor:
        """``z_k = sqrt(abar_k) z_0 + sqrt(1 - abar_k) eps`` for ``(B, D)`` and steps ``(B,)``."""
        abar = self.abar[step][:, None].to(z0.dtype)
        return abar.sqrt() * z0 + (1 - abar).sqrt() * noise

    def loss(self, batch: Sequence[Tensor], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        """Simplified DDPM loss on ``batch = (z_0 (B, D), condition (B, D_c))``."""
        if generator is None:
            raise ValueError("LatentDiffusion.loss needs an explicit torch.Generator so runs "
                             "reproduce")
        z0, condition = batch[0], (batch[1] if len(batch) > 1 else None)
        gen_device = generator.device
        step = torch.randint(0, self.steps, (len(z0),), generator=generator,
                             device=gen_device).to(z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=gen_device).to(z0)
        predicted = self.denoiser(self.noisy(z0, step, noise), step, condition)
        return nn.functional.mse_loss(predicted, noise), {}

    @torch.no_grad()
    def sample(self, condition: Tensor | None, members: int, generator: torch.Generator,
               batch: int | None = None) -> Tensor:
        """Ancestral samples ``(members, B, D)`` for conditions ``(B, D_c)`` (or ``batch``
        unconditional samples when ``condition`` is None)."""
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if condition is None and batch is None:
            raise ValueError("pass a condition (B, D_c) or, unconditionally, batch=B")
        b = len(condition) if condition is not None else int(batch)
        device = self.betas.device
        dim = self.denoiser.latent_dim
        cond = None if condition is None else \
            condition.to(device).repeat(members, 1)
        z = torch.randn(members * b, dim, generator=generator,
                        device=generator.device).to(device)
        was_training = self.training
        self.eval()
        try:
            for k in range(self.steps - 1, -1, -1):
                step = torch.full((members * b,), k, device=device, dtype=torch.long)
                eps = self.denoiser(z, step, cond)
                beta, abar = self.betas[k], self.abar[k]
                z = (z - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt()
                if k > 0:
                    xi = torch.randn(z.shape, generator=generator,
                                     device=generator.device).to(device)
                    z = z + self.posterior_var[k].sqrt() * xi
        finally:
            self.train(was_training)
        return z.reshape(members, b, dim)
