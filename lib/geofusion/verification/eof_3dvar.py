r"""Reduced-rank 3D-Var in EOF space, cycled with the linear inverse model: the classical twin of
latent 3D-Var.

The state is the ``k`` EOF coefficients ``z`` of the day's anomaly (:mod:`geofusion.data.eof`,
``a = mean + V^T z / sqrt(w)``: linear, so the observation operator is a matrix). Every day ``t``

1. **background** ``z_b(t) = M z_a(t - 1)``, the one-day forecast of the linear inverse model
   (:mod:`geofusion.verification.linear_inverse_model`), from a climatological spin-up
   (``z_a(-1)`` the coefficients of a zero anomaly);
2. **analysis**, the minimiser of

   .. math:: J(z) = \tfrac12 (z - z_b)^\top B^{-1} (z - z_b)
             + \tfrac12 \sum_c (G_c z + \mu_c - y_c)^\top R_c^{-1} (G_c z + \mu_c - y_c),

   with ``G_c`` ``(m, k)`` the EOF decoding of channel ``c`` at the ``m`` observed points,
   ``mu_c`` the EOF mean there and ``y_c`` the observed anomalies. ``J`` is quadratic, so the
   minimiser is closed form (information form, a ``k x k`` solve per day):

   .. math:: z_a = z_b + \Big(B^{-1} + \sum_c G_c^\top R_c^{-1} G_c\Big)^{-1}
             \sum_c G_c^\top R_c^{-1} (y_c - \mu_c - G_c z_b),

   equal to the Kalman form ``z_b + B G^T (G B G^T + R)^{-1} (y - mu - G z_b)`` (the tests
   check one against the other). The analysed field is ``c(doy) + mean + V^T z_a / sqrt(w)``.

``B`` is the LIM's one-step training-residual covariance ``Q`` times an ``inflation`` (a cycle's
analyses are not the truth the residuals started from, so its background errors are larger
than ``Q``; the caller chooses the inflation on validation days). ``R_c`` is the observation
error model of latent 3D-Var (:class:`geofusion.downstream.assimilation.ObservationError`):
the exact covariance of the project's correlated noise on the observed points plus, on the
diagonal, the representation error of the code, here the EOF truncation's mean squared error
per channel on the training days (:func:`truncation_error_variance`; for latent 3D-Var the
decoder's), with the same relative jitter. ``B^{-1}`` is taken with the eigenvalues of ``B``
floored at ``1e-9`` of the largest (:func:`background_precision`): with fewer consecutive
training days than about twice ``k`` (e.g. ``k = 1000`` on a short slice) the residuals of the
least-squares ``M`` span fewer than ``k`` directions and ``Q`` is singular.

Everything is fitted on ``prepared.train`` only (:func:`fit_eof_3dvar`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from geofusion.data.eof import EOFCode
from geofusion.data.observations import correlated_noise_covariance
from geofusion.verification.baselines import (
    _day_numbers,
    anomalies,
    as_numpy,
    climatology_forecast,
    training_days,
)
from geofusion.verification.linear_inverse_model import (
    LinearInverseModel,
    fit_linear_inverse_model,
)

__all__ = ["truncation_error_variance", "background_precision", "EOF3DVar", "fit_eof_3dvar"]

#: Observed patterns whose operators an :class:`EOF3DVar` keeps (``(C, m, k)`` each).
_MAX_OPERATORS = 64


def truncation_error_variance(code: EOFCode, a: Any, chunk: int = 256) -> np.ndarray:
    """Mean squared error per channel ``(C,)`` of the EOF reconstruction of anomalies ``a``
    ``(N, C, H, W)``, ``mean over days and points of (decode(encode(a)) - a)^2`` (unweighted,
    as :func:`geofusion.downstream.assimilation.decoder_error_variance` for a decoder): the
    representation error of the code, part of ``R``."""
    x = as_numpy(a)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"a must be (N >= 1, C, H, W) anomalies, got shape {x.shape}")
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk], dtype=np.float64)
        residual = code.decode(code.encode(part)).astype(np.float64) - part
        total += (residual**2).sum(axis=(0, 2, 3))
    return total / (len(x) * x.shape[2] * x.shape[3])


def background_precision(b: np.ndarray, floor: float = 1e-9) -> np.ndarray:
    """``B^{-1}`` of a symmetric positive semi-definite ``(k, k)`` ``B``, its eigenvalues
    floored at ``floor`` times the largest (directions ``B`` gives no variance are pinned to
    the background, not inverted to infinity).

    Example:
        >>> import numpy as np
        >>> bool(np.allclose(background_precision(np.diag([2.0, 4.0])), np.diag([0.5, 0.25])))
        True
        >>> bool(np.isclose(background_precision(np.diag([1.0, 0.0]))[1, 1], 1e9))
        True
    """
    b = 0.5 * (np.asarray(b, dtype=np.float64) + np.asarray(b, dtype=np.float64).T)
    values, vectors = np.linalg.eigh(b)
    if values[-1] <= 0:
        raise ValueError("the background-error covariance has no positive variance")
    values = np.maximum(values, floor * values[-1])
    return (vectors / values) @ vectors.T


@dataclass
class EOF3DVar:
    """Reduced-rank 3D-Var in EOF space cycled with the LIM (module docstring).

    Attributes:
        model: the fitted :class:`~geofusion.verification.linear_inverse_model.
            LinearInverseModel` (its code, ``M``, ``Q`` and climatology).
        representation_var: ``(C,)`` the code's error variance per channel (model units).
        noise_std, noise_length: the observation-noise model (standardised units, grid
            points), as :class:`geofusion.data.observations.Observation`.
        periodic_lon: of the noise model.
    """

    model: LinearInverseModel
    representation_var: np.ndarray
    noise_std: float
    noise_length: float
    periodic_lon: bool = True
    _operators: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _noise: Any = field(default=None, init=False, repr=False, compare=False)
    _q_precision: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.representation_var = np.asarray(self.representation_var, dtype=np.float64)
        channels = self.model.code.mean.shape[0]
        if self.representation_var.shape != (channels,) or (self.representation_var < 0).any():
            raise ValueError(f"representation_var must be ({channels},) variances >= 0, got "
                             f"{self.representation_var}")
        if not self.noise_std >= 0 or not self.noise_length >= 0:
            raise ValueError(f"noise_std and noise_length must be >= 0, got {self.noise_std}, "
                             f"{self.noise_length}")
        if self.noise_std == 0 and (self.representation_var <= 0).any():
            raise ValueError("with noise_std = 0 every representation_var must be > 0, or R is "
                             "singular; estimate it with truncation_error_variance")

    def with_noise(self, noise_std: float) -> EOF3DVar:
        """The same fit with another observation-noise std (a new operator cache)."""
        return dataclasses.replace(self, noise_std=float(noise_std))

    @property
    def k(self) -> int:
        return self.model.k

    def background_covariance(self, inflation: float = 1.0) -> np.ndarray:
        """``B = inflation * Q`` float64 ``(k, k)``."""
        if not inflation > 0:
            raise ValueError(f"inflation must be > 0, got {inflation}")
        return inflation * np.asarray(self.model.error_covariance, dtype=np.float64)

    def background_precision(self, inflation: float = 1.0) -> np.ndarray:
        """``B^{-1} = Q^{-1} / inflation`` float64 ``(k, k)``
        (:func:`background_precision` of ``Q``, whose floor is relative to the largest
        eigenvalue and so scales with ``B``): one eigendecomposition of ``Q`` per object, not
        one per day and inflation of a cycle."""
        if not inflation > 0:
            raise ValueError(f"inflation must be > 0, got {inflation}")
        if self._q_precision is None:
            self._q_precision = background_precision(self.background_covariance(1.0))
        return self._q_precision / float(inflation)

    def observation_covariance(self, observed: np.ndarray) -> np.ndarray:
        """``R_c`` float64 ``(C, m, m)`` on the ``m`` observed points of ``observed``
        ``(H, W)`` (row-major), as :class:`geofusion.downstream.assimilation.ObservationError`
        builds it."""
        index = np.flatnonzero(np.asarray(observed, dtype=bool).reshape(-1))
        grid = tuple(self.model.code.mean.shape[1:])
        if self.noise_std > 0:
            if self._noise is None:
                self._noise = correlated_noise_covariance(
                    grid, float(self.noise_length), float(self.noise_std),
                    self.periodic_lon).numpy()
            noise = self._noise[np.ix_(index, index)]
        else:
            noise = np.zeros((len(index), len(index)))
        jitter = 1e-6 * max(self.noise_std**2, float(self.representation_var.max()), 1e-12)
        eye = np.eye(len(index))
        return noise[None] + (self.representation_var[:, None, None] + jitter) * eye[None]

    def observation_operator(self, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(G (C, m, k), mu (C, m))``: the EOF decoding at the observed points of
        ``observed`` ``(H, W)``, ``H decode(z) = G_c z + mu_c`` per channel."""
        code = self.model.code
        c, h, w = code.mean.shape
        index = np.flatnonzero(np.asarray(observed, dtype=bool).reshape(-1))
        v = code.components.astype(np.float64).reshape(self.k, c, h * w)[:, :, index]
        sqrt_w = code.sqrt_weights.astype(np.float64).reshape(c, h * w)[:, index]
        g = (v / sqrt_w[None]).transpose(1, 2, 0)
        return g, code.mean.astype(np.float64).reshape(c, h * w)[:, index]

    def _operator(self, pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
        """Index, ``G``, ``mu``, ``U = R^{-1} G`` ``(C, m, k)`` and ``P = sum_c G_c^T U_c``
        of an observed pattern, computed once per pattern."""
        key = pattern.tobytes()
        if key not in self._operators:
            if len(self._operators) >= _MAX_OPERATORS:
                self._operators.clear()
            mask = pattern.reshape(self.model.code.mean.shape[1:])
            g, mu = self.observation_operator(mask)
            r = self.observation_covariance(mask)
            u = np.stack([cho_solve(cho_factor(r[ch], lower=True), g[ch])
                          for ch in range(len(g))])
            p = np.matmul(g.transpose(0, 2, 1), u).sum(axis=0)  # sum_c G_c^T U_c, BLAS
            self._operators[key] = (g, mu, u, p)
        return self._operators[key]

    def analyse(self, background: np.ndarray, anomaly: np.ndarray, observed: np.ndarray,
                inflation: float | Any = 1.0) -> np.ndarray:
        """Analyses ``(N, k)`` of ``N`` independent days (or experiments).

        Args:
            background: ``(N, k)`` coefficients ``z_b``.
            anomaly: ``(N, C, H, W)`` observed anomalies ``y`` (the observation minus its
                day's climatology; values where missing are ignored).
            observed: bool ``(N, H, W)``.
            inflation: ``B = inflation * Q``, one for all or ``(N,)``.

        Returns:
            float64 ``(N, k)``; a day without observed points keeps ``z_b`` exactly.
        """
        zb = np.asarray(background, dtype=np.float64)
        y = as_numpy(anomaly).astype(np.float64)
        mask = as_numpy(observed).astype(bool)
        n = len(zb)
        if zb.shape != (n, self.k) or y.shape[0] != n or y.shape[1:] != \
                self.model.code.mean.shape or mask.shape != (n,) + y.shape[2:]:
            raise ValueError(f"need background (N, {self.k}), anomaly (N, "
                             f"{', '.join(map(str, self.model.code.mean.shape))}) and observed "
                             f"(N, H, W); got {zb.shape}, {y.shape}, {mask.shape}")
        lam = np.broadcast_to(np.asarray(inflation, dtype=np.float64), (n,))
        out = zb.copy()
        precision = {}
        for i in range(n):
            pattern = mask[i].reshape(-1)
            if not pattern.any():
                continue
            g, mu, u, p = self._operator(pattern)
            if lam[i] not in precision:
                precision[lam[i]] = self.background_precision(lam[i])
            index = np.flatnonzero(pattern)
            d = y[i].reshape(len(g), -1)[:, index] - mu - g @ zb[i]     # (C, m)
            rhs = np.einsum("cmk,cm->k", u, d)
            a = precision[lam[i]] + p
            out[i] = zb[i] + cho_solve(cho_factor(0.5 * (a + a.T)), rhs)
        return out

    def cycle(self, observations: Any, observed: Any, times: Any,
              inflation: float | Any = 1.0) -> np.ndarray:
        """Cycle ``E`` experiments side by side over ``T`` consecutive days.

        Args:
            observations: ``(T, E, C, H, W)`` observed fields in the units of the fit (the
                model space; only observed points read).
            observed: bool ``(T, E, H, W)``.
            times: ``(T,)`` datetime64 consecutive days.
            inflation: one for all experiments or ``(E,)``.

        Returns:
            float32 ``(T, E, C, H, W)`` analysed fields, ``c(doy) + decode(z_a)``.
        """
        y = as_numpy(observations)
        mask = as_numpy(observed).astype(bool)
        if y.ndim != 5 or mask.shape != y.shape[:2] + y.shape[3:]:
            raise ValueError(f"observations must be (T, E, C, H, W) with observed "
                             f"(T, E, H, W), got {y.shape} and {mask.shape}")
        t, e = y.shape[:2]
        days = _day_numbers(times)
        if len(days) != t or (t > 1 and not (np.diff(days) == 1).all()):
            raise ValueError(f"times must be {t} consecutive days (the background is the LIM's "
                             "one-day forecast); pass the cycle's contiguous days")
        lam = np.broadcast_to(np.asarray(inflation, dtype=np.float64), (e,))
        clim = climatology_forecast(self.model.climatology, times).astype(np.float64)
        code = self.model.code
        spin_up = code.encode(np.zeros((1,) + code.mean.shape, dtype=np.float32))
        z = np.repeat(spin_up.astype(np.float64), e, axis=0)
        out = np.empty(y.shape, dtype=np.float32)
        for day in range(t):
            zb = z @ self.model.propagator.T
            z = self.analyse(zb, y[day] - clim[day][None], mask[day], lam)
            out[day] = clim[day][None] + code.decode(z)
        return out


def fit_eof_3dvar(prepared: Any, k: int, noise_std: float, noise_length: float,
                  code: EOFCode | None = None, window: int = 15) -> EOF3DVar:
    """:class:`EOF3DVar` from the training days of ``prepared``: the LIM of ``k`` modes
    (:func:`~geofusion.verification.linear_inverse_model.fit_linear_inverse_model`) and the
    truncation error variance of its code on the training anomalies.

    Only ``prepared.train``, ``train_times`` and ``lat`` are read.
    """
    model = fit_linear_inverse_model(prepared, k, code=code, window=window)
    x, times = training_days(prepared)
    representation = truncation_error_variance(model.code,
                                               anomalies(x, times, model.climatology))
    return EOF3DVar(model, representation, float(noise_std), float(noise_length))
