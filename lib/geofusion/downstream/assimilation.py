"""Data assimilation in a learned latent space (report chapter 4: fusing sparse observations).

A cycling assimilation system built from the project's pieces: the sparse-view encoder maps a
sparse, noisy observation next to the latent of the complete day, the decoder maps a latent
back to the grid, and the latent LSTM steps the state forward one day. Every day ``t``

1. **background** ``z_b(t)``: the LSTM's one-day forecast from the previous ``context``
   analyses (standardised latents, :class:`geofusion.downstream.forecasting.LatentForecaster`);
2. **analysis** ``z_a(t)`` by one of the schemes below, from ``z_b(t)`` and the day's
   observation ``y(t)`` (standardised fields, observed where the mask ``m(t)`` is True);
3. ``z_a(t)`` joins the context of the next background.

Schemes (each an :class:`AnalysisScheme`, ``scheme(background (E, D), day) -> analysis (E, D)``
for ``E`` experiments cycled side by side, e.g. several observed fractions):

- :class:`FreeRun`: ``z_a = z_b``, no observation is used (the upper bound on error);
- :class:`EncodeOnly`: ``z_a = z_o``, the encoder's latent of the observation alone, the
  background ignored (what the representation gives without a model);
- :class:`Latent3DVar`: minimise over ``z``

  .. math:: J(z) = \\tfrac12 (z - z_b)^\\top B^{-1} (z - z_b)
            + \\tfrac12 \\sum_c \\lVert m \\odot (D(z)_c - y_c) \\rVert^2_{R_c^{-1}}

  by quasi-Newton descent (L-BFGS, strong-Wolfe line search, so ``J`` decreases at every
  iteration) *through the decoder* ``D``. ``B`` (:class:`LatentCovariance`, diagonal or
  low-rank plus diagonal) is estimated from training-period latent forecast errors; ``R_c``
  (:class:`ObservationError`) is the exact covariance of the correlated-noise model on the
  observed points plus the decoder's own representation error. The minimisation runs in the
  control variable ``v`` with ``z = z_b + L v`` and ``B = L L^T``, where
  ``J_b = ||v||^2 / 2`` and no inverse of ``B`` is needed (the standard 3D-Var preconditioning);
- :class:`LatentBlend`: a Kalman-like update ``z_a = z_b + K (z_o - b_o - z_b)``,
  ``K = B (B + R_z)^{-1}``, with ``B`` the latent forecast-error covariance, ``b_o`` the mean
  and ``R_z`` the covariance of the encoder's error on observations (``z_o`` minus the latent
  of the complete day), all estimated on training years (Ledoit-Wolf shrinkage,
  scikit-learn).

:func:`run_cycle` runs a scheme through a period from a climatological spin-up;
:func:`cycle_rmse` scores analyses per day and variable in physical units. Estimation helpers:
:func:`latent_forecast_errors`, :func:`encoder_errors`, :func:`decoder_error_variance`.

All latents here are the forecaster's **standardised** latents (what the LSTM reads); the
decoder is reached through :meth:`LatentForecaster.decode` / :func:`differentiable_decoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import FactorAnalysis
from torch import Tensor, nn

from geofusion.data.observations import Observation, correlated_noise_covariance
from geofusion.downstream.forecasting import rollout
from geofusion.learning.training import progress_bar
from geofusion.verification.metrics import lat_weighted_rmse

__all__ = [
    "LatentCovariance", "ObservationError", "VariationalCost", "Latent3DVarResult",
    "latent_3dvar", "AnalysisScheme", "FreeRun", "EncodeOnly", "Latent3DVar", "LatentBlend",
    "CycleResult", "run_cycle", "cycle_rmse", "latent_forecast_errors", "encoder_errors",
    "decoder_error_variance", "differentiable_decoder", "shrunk_covariance",
]

#: ``decode(z (N, D)) -> (N, C, H, W)``, differentiable in ``z``.
Decoder = Callable[[Tensor], Tensor]


def _as_2d(samples: Any, name: str) -> np.ndarray:
    x = np.asarray(samples.detach().cpu() if isinstance(samples, Tensor) else samples,
                   dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must be (N >= 2, D) samples, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; estimate covariances from "
                         "finite errors only")
    return x


# --------------------------------------------------------------------------------------------
# Error covariances
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatentCovariance:
    """A latent error covariance ``B = diag(d) + U U^T`` (``d`` ``(D,)``, ``U`` ``(D, k)``).

    ``k = 0`` is the diagonal model. :attr:`square_root` ``L = [diag(sqrt d), U]`` (``(D, D + k)``)
    satisfies ``L L^T = B``, the control-variable transform of :class:`Latent3DVar`.
    """

    diagonal: Tensor
    factors: Tensor

    def __post_init__(self) -> None:
        if self.diagonal.ndim != 1 or self.factors.ndim != 2 \
                or self.factors.shape[0] != self.diagonal.shape[0]:
            raise ValueError(f"need diagonal (D,) and factors (D, k), got "
                             f"{tuple(self.diagonal.shape)} and {tuple(self.factors.shape)}")
        if (self.diagonal <= 0).any():
            raise ValueError("the diagonal of a latent covariance must be positive")

    @classmethod
    def estimate(cls, samples: np.ndarray | Tensor, rank: int = 0, min_variance: float = 1e-6,
                 seed: int = 0) -> LatentCovariance:
        """Fit ``B`` to error samples ``(N, D)`` (centred on their mean).

        ``rank = 0``: the sample variances. ``rank = k > 0``: factor analysis (the maximum
        likelihood diagonal-plus-rank-``k`` covariance,
        :class:`sklearn.decomposition.FactorAnalysis`).
        Variances are floored at ``min_variance``.

        Example::

            >>> errors = np.random.default_rng(0).normal(size=(5000, 4)) * [1.0, 2.0, 0.5, 1.0]
            >>> b = LatentCovariance.estimate(errors)
            >>> bool(np.allclose(b.diagonal.numpy(), [1.0, 4.0, 0.25, 1.0], rtol=0.1))
            True
        """
        x = _as_2d(samples, "samples")
        if not 0 <= rank < x.shape[1]:
            raise ValueError(f"rank must lie in [0, {x.shape[1] - 1}], got {rank}")
        if rank == 0:
            variance = np.maximum(x.var(axis=0, ddof=1), min_variance)
            return cls(torch.as_tensor(variance, dtype=torch.float32),
                       torch.zeros(x.shape[1], 0))
        model = FactorAnalysis(n_components=rank, random_state=seed).fit(x)
        return cls(torch.as_tensor(np.maximum(model.noise_variance_, min_variance),
                                   dtype=torch.float32),
                   torch.as_tensor(model.components_.T, dtype=torch.float32))

    @property
    def dim(self) -> int:
        return int(self.diagonal.shape[0])

    @property
    def rank(self) -> int:
        return int(self.factors.shape[1])

    def dense(self) -> Tensor:
        """``(D, D)`` matrix ``B``."""
        return torch.diag(self.diagonal) + self.factors @ self.factors.T

    @property
    def square_root(self) -> Tensor:
        """``L`` ``(D, D + k)`` with ``L L^T = B``."""
        return torch.cat([torch.diag(self.diagonal.sqrt()), self.factors], dim=1)


@lru_cache(maxsize=4)
def _noise_covariance(grid: tuple[int, int], length: float, std: float) -> Tensor:
    """:func:`correlated_noise_covariance` of the grid, computed once per noise setting (it
    costs ~0.2 s on 64 x 32 and a cycle asks for it every day and experiment). Read only."""
    return correlated_noise_covariance(grid, length, std)


#: Cholesky factors an :class:`ObservationError` keeps (one per observed pattern and dtype):
#: enough for the distinct masks of a cycle, bounded so a cycle with a new mask every day
#: does not hold them all (a 50 % mask on 64 x 32 with 5 channels is 20 MB in float32).
_MAX_CACHED_FACTORS = 32


@dataclass(frozen=True)
class ObservationError:
    """Observation-error covariance ``R_c`` of the observed points of one day, per channel.

    ``R_c = noise_std^2 K_L + representation_var_c I`` on the observed points, ``K_L`` the exact
    correlation of :func:`geofusion.data.observations.correlated_noise` with length ``noise_length``
    (grid points), ``noise_std`` in standardised units; ``representation_var`` ``(C,)`` is the
    decoder's error variance per channel (:func:`decoder_error_variance`): the part of the
    observation no latent can explain, without which 3D-Var would over-fit the decoder's bias.

    Args:
        noise_std, noise_length: the observation model
        (:class:`geofusion.data.observations.Observation`).
        representation_var: ``(C,)`` standardised variances, > 0 where ``noise_std`` is 0.
        correlated: False keeps only the diagonal of ``K_L`` (uncorrelated approximation).
    """

    noise_std: float
    noise_length: float
    representation_var: Tensor
    correlated: bool = True
    _factors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.noise_std >= 0 or not self.noise_length >= 0:
            raise ValueError(f"noise_std and noise_length must be >= 0, got {self.noise_std}, "
                             f"{self.noise_length}")
        if self.representation_var.ndim != 1 or (self.representation_var < 0).any():
            raise ValueError("representation_var must be a (C,) tensor of variances >= 0")
        if self.noise_std == 0 and (self.representation_var <= 0).any():
            raise ValueError("with noise_std = 0 every representation_var must be > 0, or R is "
                             "singular; estimate it with decoder_error_variance")

    @classmethod
    def from_observation(cls, observation: Observation | dict, representation_var: Tensor,
                         correlated: bool = True) -> ObservationError:
        """``R`` for an :class:`geofusion.data.observations.Observation` (its noise settings)."""
        obs = Observation.from_dict(observation)
        return cls(obs.noise_std, obs.noise_length, torch.as_tensor(representation_var,
                                                                     dtype=torch.float32),
                   correlated)

    def cholesky(self, observed: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """Lower Cholesky factors ``(C, n, n)`` of ``R_c`` on the ``n`` observed points of
        ``observed`` ``(H, W)`` (row-major order), factorised in float64 and returned in
        ``dtype``.

        Factors are kept per observed pattern (up to 32), so a cycle whose days share a few
        distinct masks factorises each once. Treat the result as read only.
        """
        if observed.ndim != 2 or observed.dtype != torch.bool:
            raise ValueError(f"observed must be a bool (H, W) mask, got {observed.dtype} "
                             f"{tuple(observed.shape)}")
        key = (tuple(observed.shape), observed.numpy().tobytes(), dtype)
        if key not in self._factors:
            if len(self._factors) >= _MAX_CACHED_FACTORS:
                self._factors.clear()
            self._factors[key] = self._factorise(observed).to(dtype)
        return self._factors[key]

    def _factorise(self, observed: Tensor) -> Tensor:
        index = observed.reshape(-1).nonzero().squeeze(1)
        if self.noise_std > 0:
            full = _noise_covariance(tuple(observed.shape), float(self.noise_length),
                                     float(self.noise_std))
            noise = full[index[:, None], index[None, :]]
            if not self.correlated:
                noise = torch.diag(torch.diagonal(noise))
        else:
            noise = torch.zeros(len(index), len(index), dtype=torch.float64)
        eye = torch.eye(len(index), dtype=torch.float64)
        # A tiny relative jitter keeps the smooth Gaussian kernel positive definite in floats.
        jitter = 1e-6 * max(self.noise_std**2, float(self.representation_var.max()), 1e-12)
        covariances = noise[None] + (self.representation_var.double()[:, None, None]
                                     + jitter) * eye[None]
        return torch.linalg.cholesky(covariances)


# --------------------------------------------------------------------------------------------
# Latent 3D-Var
# --------------------------------------------------------------------------------------------

class VariationalCost:
    """``J(v) = sum_n [||v_n||^2 / 2 + sum_c ||L_nc^-1 (D(z_bn + L_B v_n)_c - y_nc)[m_n]||^2 / 2]``.

    The 3D-Var cost of ``N`` independent days (or experiments) at once, so one decoder pass
    serves them all; being a sum of independent terms, its minimiser is every day's own.
    ``v`` ``(N, D + k)`` is the control variable, ``L_B`` the square root of ``B``, ``L_nc`` the
    Cholesky factor of ``R`` of day ``n`` and channel ``c`` on its observed points
    (:meth:`ObservationError.cholesky`). Call it for ``J`` (a scalar tensor, differentiable in
    ``v``); :meth:`per_day` gives each day's term, :meth:`latent` maps ``v`` to ``z``,
    :meth:`gradient` is ``dJ/dv`` by automatic differentiation.

    Args:
        background: ``(N, D)``; observation: ``(N, C, H, W)``; observed: bool ``(N, H, W)``.
        decode: differentiable ``(N, D) -> (N, C, H, W)``.
        b: the background-error covariance; r: one :class:`ObservationError` for all days or
            one per day.
    """

    def __init__(self, background: Tensor, observation: Tensor, observed: Tensor,
                 decode: Decoder, b: LatentCovariance,
                 r: ObservationError | Sequence[ObservationError]) -> None:
        if background.ndim != 2 or background.shape[1] != b.dim:
            raise ValueError(f"background must be (N, {b.dim}), got {tuple(background.shape)}")
        if observation.ndim != 4 or observation.shape[-2:] != observed.shape[-2:] \
                or observed.ndim != 3:
            raise ValueError(f"observation must be (N, C, H, W) with observed (N, H, W), got "
                             f"{tuple(observation.shape)} and {tuple(observed.shape)}")
        if not len(background) == len(observation) == len(observed):
            raise ValueError("background, observation and observed need the same number of days")
        errors = list(r) if isinstance(r, Sequence) else [r] * len(background)
        if len(errors) != len(background):
            raise ValueError(f"{len(errors)} observation errors for {len(background)} days")
        for error in errors:
            if error.representation_var.shape[0] != observation.shape[1]:
                raise ValueError(f"R has {error.representation_var.shape[0]} channels, the "
                                 f"observation {observation.shape[1]}")
        self.background, self.decode = background, decode
        self.square_root = b.square_root.to(background.dtype)
        flat = observation.reshape(*observation.shape[:2], -1)
        self.index = [m.reshape(-1).nonzero().squeeze(1) for m in observed]
        self.values = [flat[n][:, idx] for n, idx in enumerate(self.index)]
        # Factors in the working dtype, made once per observed pattern (ObservationError
        # keeps them), not converted at every cost evaluation.
        self.cholesky = [error.cholesky(m, background.dtype) if len(idx) else None
                         for error, m, idx in zip(errors, observed, self.index, strict=True)]

    @property
    def control_shape(self) -> tuple[int, int]:
        return (int(self.background.shape[0]), int(self.square_root.shape[1]))

    @property
    def has_observations(self) -> bool:
        return any(chol is not None for chol in self.cholesky)

    def latent(self, v: Tensor) -> Tensor:
        """``z = z_b + L_B v`` ``(N, D)``."""
        return self.background + v @ self.square_root.T

    def observation_terms(self, z: Tensor) -> Tensor:
        """``J_o`` of each day ``(N,)``."""
        terms = [z.new_zeros(())] * len(z)
        if not self.has_observations:
            return torch.stack(terms)
        decoded = self.decode(z)
        decoded = decoded.reshape(*decoded.shape[:2], -1)
        for n, chol in enumerate(self.cholesky):
            if chol is None:
                continue
            residual = decoded[n][:, self.index[n]] - self.values[n]
            whitened = torch.linalg.solve_triangular(chol, residual[..., None].to(chol.dtype),
                                                     upper=False)
            terms[n] = 0.5 * (whitened**2).sum()
        return torch.stack(terms)

    def per_day(self, v: Tensor) -> Tensor:
        """``J`` of each day ``(N,)``."""
        return 0.5 * (v**2).sum(dim=1) + self.observation_terms(self.latent(v))

    def __call__(self, v: Tensor) -> Tensor:
        return self.per_day(v).sum()

    def gradient(self, v: Tensor) -> Tensor:
        """``dJ/dv`` ``(N, D + k)``."""
        v = v.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self(v), v)
        return grad


@dataclass
class Latent3DVarResult:
    """Analyses ``(N, D)`` and ``J`` (summed over the days) at the start and per iteration."""

    analysis: Tensor
    costs: list[float] = field(default_factory=list)


def latent_3dvar(background: Tensor, observation: Tensor, observed: Tensor, decode: Decoder,
                 b: LatentCovariance, r: ObservationError | Sequence[ObservationError],
                 max_iter: int = 30, tolerance: float = 1e-6) -> Latent3DVarResult:
    """Latent 3D-Var analyses of ``N`` independent days (module docstring) in one minimisation.

    Args:
        background: ``(N, D)`` standardised latents ``z_b``.
        observation: ``(N, C, H, W)`` standardised fields ``y`` (values where missing ignored).
        observed: bool ``(N, H, W)``, True = observed.
        decode: differentiable ``(n, D) -> (n, C, H, W)`` (:func:`differentiable_decoder`).
        b, r: error covariances (``r`` one for all days or one per day).
        max_iter: L-BFGS iterations.
        tolerance: stop when ``J`` falls by less than this fraction of its value in an iteration.

    Returns:
        :class:`Latent3DVarResult`; a day without observed points keeps ``z_b`` exactly.
    """
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    cost = VariationalCost(background.detach(), observation, observed, decode, b, r)
    v, costs = _minimise(cost, max_iter, tolerance)
    return Latent3DVarResult(cost.latent(v).detach(), costs)


def _minimise(cost: VariationalCost, max_iter: int, tolerance: float
              ) -> tuple[Tensor, list[float]]:
    """L-BFGS (strong Wolfe) on ``J(v)`` from ``v = 0``; the control and ``J`` per iterate."""
    v = torch.zeros(cost.control_shape, dtype=cost.background.dtype, requires_grad=True)
    with torch.no_grad():
        costs = [float(cost(v))]
    if not cost.has_observations or max_iter == 0:
        return v.detach(), costs
    # One iteration per step() so every iterate is recorded; max_eval must then be raised
    # explicitly (it defaults to 5/4 max_iter = 1), or the line search cannot bracket.
    optimiser = torch.optim.LBFGS([v], lr=1.0, max_iter=1, max_eval=25, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        value = cost(v)
        value.backward()
        return value

    for _ in range(max_iter):
        optimiser.step(closure)
        with torch.no_grad():
            costs.append(float(cost(v)))
        if costs[-2] - costs[-1] <= tolerance * abs(costs[-2]):
            break
    return v.detach(), costs


def differentiable_decoder(forecaster: Any) -> Decoder:
    """``z (n, D)`` standardised latents -> ``(n, C, H, W)`` standardised fields, with gradients:
    the forecaster's decoder after its latent de-standardisation, in eval mode, on the CPU
    float32 path the cycle uses."""
    decoder: nn.Module = forecaster.decoder
    decoder.eval()
    # A closed-form decoder (models.ridge_decoder) holds buffers only.
    tensor = next(decoder.parameters(), None)
    tensor = next(decoder.buffers(), None) if tensor is None else tensor
    device = tensor.device if tensor is not None else torch.device("cpu")

    def decode(z: Tensor) -> Tensor:
        raw = forecaster.standardiser.inverse(z.to(device=device, dtype=torch.float32))
        return decoder(raw).to(z.dtype).cpu()

    return decode


# --------------------------------------------------------------------------------------------
# Analysis schemes
# --------------------------------------------------------------------------------------------

class AnalysisScheme(Protocol):
    """``scheme(background (E, D), day) -> analysis (E, D)`` for ``E`` parallel experiments
    (e.g. observed fractions or noise levels), standardised latents."""

    def __call__(self, background: Tensor, day: int) -> Tensor: ...


class FreeRun:
    """No assimilation: ``z_a = z_b``."""

    def __call__(self, background: Tensor, day: int) -> Tensor:
        return background


@dataclass
class EncodeOnly:
    """``z_a = z_o(day)``: the encoded observation, the background ignored.

    Args:
        encoded: ``(T, E, D)`` standardised latents of each day's observation in each
            experiment (:meth:`LatentForecaster.encode` with the observation mask).
    """

    encoded: Tensor

    def __call__(self, background: Tensor, day: int) -> Tensor:
        return self.encoded[day].to(background.dtype)


@dataclass
class Latent3DVar:
    """3D-Var through the decoder each day (:func:`latent_3dvar`, all experiments in one
    minimisation); keeps the cost history of every day.

    Args:
        observations: ``(T, E, C, H, W)`` standardised observed fields; observed: bool
            ``(T, E, H, W)``.
        decode, b, max_iter: as for :func:`latent_3dvar`; r: one :class:`ObservationError`
            per experiment (or one for all).
    """

    observations: Tensor
    observed: Tensor
    decode: Decoder
    b: LatentCovariance
    r: ObservationError | Sequence[ObservationError]
    max_iter: int = 30
    costs: list[list[float]] = field(default_factory=list)

    def __call__(self, background: Tensor, day: int) -> Tensor:
        result = latent_3dvar(background, self.observations[day], self.observed[day],
                              self.decode, self.b, self.r, self.max_iter)
        self.costs.append(result.costs)
        return result.analysis


@dataclass
class LatentBlend:
    """Kalman-like blend ``z_a = z_b + K (z_o - b_o - z_b)``, ``K = B (B + R_z)^{-1}``.

    ``b_o`` is the **mean** error of the encoded observation (its bias), ``R_z`` the covariance
    of that error about its mean. The Kalman gain is the best linear weighting only for
    unbiased inputs: an observation error ``e = b_o + e'`` with ``E e' = 0`` has a mean square
    ``tr R_z + |b_o|^2``, so a gain from the covariance alone over-trusts a biased input and
    passes its bias into the analysis. Measured on notebook 10's quick sparse-view encoder the
    bias is two thirds of the encoder's squared error (``|b_o|^2`` 1787 of 2659, standardised
    latents, 10 % observed), which made the uncorrected blend worse than both its inputs.

    Build with :meth:`estimate` (one gain ``(D, D)`` and bias ``(D,)``) or stack gains
    ``(E, D, D)`` and biases ``(E, D)``, one per experiment (``R_z`` and ``b_o`` depend on the
    observed fraction and noise); ``encoded`` ``(T, E, D)`` holds each day's encoded
    observations. ``observation_bias`` None means an unbiased encoder.
    """

    gain: Tensor
    encoded: Tensor | None = None
    observation_bias: Tensor | None = None

    @classmethod
    def estimate(cls, background_errors: np.ndarray | Tensor,
                 observation_errors: np.ndarray | Tensor, encoded: Tensor | None = None,
                 debias: bool = True) -> LatentBlend:
        """``K`` and ``b_o`` from error samples ``(N, D)`` of the background (latent forecast
        minus truth) and of the encoded observation (minus the latent of the complete day):
        ``b_o`` the mean observation error (``debias``; False assumes it is zero), each
        covariance a Ledoit-Wolf shrinkage estimate about the sample mean (well conditioned
        when ``N`` is not much above ``D``).

        Example::

            >>> rng = np.random.default_rng(0)
            >>> blend = LatentBlend.estimate(rng.normal(size=(4000, 2)),
            ...                              5.0 + 3.0 * rng.normal(size=(4000, 2)))
            >>> [round(float(k), 1) for k in torch.diagonal(blend.gain)]  # 1 / (1 + 9)
            [0.1, 0.1]
            >>> [round(float(b)) for b in blend.observation_bias]
            [5, 5]
        """
        xb = _as_2d(background_errors, "background_errors")
        xo = _as_2d(observation_errors, "observation_errors")
        if xb.shape[1] != xo.shape[1]:
            raise ValueError(f"background and observation errors must have the same latent "
                             f"size, got {xb.shape[1]} and {xo.shape[1]}")
        bias = torch.as_tensor(xo.mean(axis=0), dtype=torch.float32) if debias else None
        blend = cls.from_covariances(shrunk_covariance(xb), shrunk_covariance(xo), encoded)
        blend.observation_bias = bias
        return blend

    @classmethod
    def from_covariances(cls, b: np.ndarray, r: np.ndarray, encoded: Tensor | None = None,
                         observation_bias: Tensor | None = None) -> LatentBlend:
        """``K = B (B + R)^{-1}`` from the two ``(D, D)`` covariances (``R`` about the mean
        observation error ``observation_bias``)."""
        # K = B (B + R)^-1  <=>  (B + R) K^T = B  (both symmetric)
        gain = np.linalg.solve(np.asarray(b) + np.asarray(r), np.asarray(b)).T
        return cls(torch.as_tensor(gain, dtype=torch.float32), encoded, observation_bias)

    def update(self, background: Tensor, encoded: Tensor) -> Tensor:
        """Analyses ``(E, D)`` (or ``(..., D)`` with one gain) from backgrounds and encoded
        observations (bias corrected here)."""
        gain = self.gain.to(background.dtype)
        if self.observation_bias is not None:
            encoded = encoded - self.observation_bias.to(background.dtype)
        increment = (encoded - background).unsqueeze(-1)
        return background + (gain @ increment).squeeze(-1)

    def __call__(self, background: Tensor, day: int) -> Tensor:
        if self.encoded is None:
            raise ValueError("LatentBlend needs the encoded observations to cycle; pass "
                             "encoded=forecaster.encode(observations, observed)")
        return self.update(background, self.encoded[day].to(background.dtype))


# --------------------------------------------------------------------------------------------
# Cycling
# --------------------------------------------------------------------------------------------

@dataclass
class CycleResult:
    """Standardised latents ``(T, E, D)`` of the backgrounds and analyses of a cycle."""

    background: Tensor
    analysis: Tensor


def run_cycle(forecaster: Any, initial_context: Tensor, scheme: AnalysisScheme, days: int,
              progress: bool = False) -> CycleResult:
    """Cycle ``days`` days: background from the last ``context`` analyses, then the analysis.

    Args:
        forecaster: a :class:`geofusion.downstream.forecasting.LatentForecaster` (its LSTM, context
        and
            rollout scheme).
        initial_context: ``(E, context, D)`` standardised latents before the first day for each
            of ``E`` parallel experiments (or ``(context, D)`` for one), e.g. the latents of
            the day-of-year climatology of those days (a climatological spin-up).
        scheme: the analysis (:class:`FreeRun`, :class:`EncodeOnly`, :class:`Latent3DVar`,
            :class:`LatentBlend`).
        days: cycle length.
        progress: show a progress bar.

    Returns:
        :class:`CycleResult` with ``(days, E, D)`` latents.
    """
    context = forecaster.context
    window = initial_context.detach().float()
    if window.ndim == 2:
        window = window[None]
    if window.ndim != 3 or window.shape[1] != context:
        raise ValueError(f"initial_context must be (E, {context}, D) or ({context}, D) latents, "
                         f"got shape {tuple(initial_context.shape)}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    device = forecaster.device
    backgrounds, analyses = [], []
    steps = progress_bar(range(days), desc="cycle", unit="day") if progress else range(days)
    for day in steps:
        background = rollout(forecaster.model, window.to(device), 1,
                             sliding=forecaster.sliding)[:, 0].float().cpu()
        analysis = scheme(background, day).detach().float()
        backgrounds.append(background)
        analyses.append(analysis)
        window = torch.cat([window[:, 1:], analysis[:, None]], dim=1)
    return CycleResult(torch.stack(backgrounds), torch.stack(analyses))


def cycle_rmse(fields: Tensor | np.ndarray, truth: Tensor | np.ndarray, lat: np.ndarray,
               destandardise: Callable[[Any], Any]) -> np.ndarray:
    """Latitude-weighted RMSE per day and variable, physical units: ``(T, C)``.

    ``fields`` and ``truth`` are standardised ``(T, C, H, W)``; ``destandardise`` is
    :meth:`geofusion.data.PreparedData.destandardise`.
    """
    f = destandardise(np.asarray(fields, dtype=np.float64))
    t = destandardise(np.asarray(truth, dtype=np.float64))
    return np.asarray(lat_weighted_rmse(f, t, np.asarray(lat)))


# --------------------------------------------------------------------------------------------
# Estimating the error statistics on training years
# --------------------------------------------------------------------------------------------

def shrunk_covariance(samples: np.ndarray | Tensor) -> np.ndarray:
    """Ledoit-Wolf shrinkage covariance ``(D, D)`` of error samples ``(N, D)`` (well conditioned
    when ``N`` is not much above ``D``; :class:`sklearn.covariance.LedoitWolf`)."""
    # store_precision=False: only the covariance is used; its pseudo-inverse (an eigh of the
    # D x D matrix, ~1 s for D = 1000) is not computed.
    return LedoitWolf(store_precision=False).fit(_as_2d(samples, "samples")).covariance_


def latent_forecast_errors(forecaster: Any, latents: Tensor, inits: Sequence[int] | None = None
                           ) -> Tensor:
    """One-day latent forecast errors ``(N, D)``: forecast from the ``context`` days ending at
    each init minus the true next latent, on a series ``latents`` ``(T, D)`` (standardised,
    the training period's for ``B``). Default inits: every day with a full context and a
    successor."""
    if inits is None:
        inits = np.arange(forecaster.context - 1, len(latents) - 1)
    inits = np.asarray(inits, dtype=np.int64)
    forecasts = forecaster.forecast_latents(latents, inits, 1)[:, 0]
    return forecasts - latents[torch.as_tensor(inits + 1)]


def encoder_errors(forecaster: Any, fields: Tensor | np.ndarray, observation: Observation,
                   generator: torch.Generator, complete: Tensor | None = None) -> Tensor:
    """Encoded-observation errors ``(N, D)``: the standardised latent of a sparse, noisy
    observation of each of ``fields`` ``(N, C, H, W)`` minus that of the complete field
    (``complete``: those latents if already computed)."""
    x = torch.as_tensor(np.asarray(fields), dtype=torch.float32)
    corrupted, observed = observation(x, generator)
    if complete is None:
        complete = forecaster.encode(x)
    return forecaster.encode(corrupted, observed) - complete


@torch.no_grad()
def decoder_error_variance(forecaster: Any, fields: Tensor | np.ndarray) -> Tensor:
    """Mean squared error per channel ``(C,)`` of decoding the encoded complete ``fields``
    ``(N, C, H, W)`` (standardised): the representation error of the decoder, part of ``R``."""
    x = torch.as_tensor(np.asarray(fields), dtype=torch.float32)
    reconstruction = forecaster.decode(forecaster.encode(x))
    return ((reconstruction - x) ** 2).mean(dim=(0, 2, 3))
