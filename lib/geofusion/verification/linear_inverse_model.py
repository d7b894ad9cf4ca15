r"""The linear inverse model (LIM) in EOF space: the linear twin of a latent forecaster.

With ``z_t = V a_t`` the ``k`` leading EOF coefficients of the day's anomaly
(:mod:`geofusion.data.eof`, fitted on the training days), the LIM (Penland & Sardeshmukh
1995) is the one-step linear propagator fitted by least squares on every pair of consecutive
training days,

.. math:: z_{t+1} = M z_t + \varepsilon_t, \qquad
          M = C_1 C_0^{-1}, \quad C_0 = \langle z_t z_t^\top \rangle, \quad
          C_1 = \langle z_{t+1} z_t^\top \rangle,

iterated for longer leads (``z_{t+k} = M^k z_t``), and decoded back to the field:
``x_hat_{t+k} = c(doy_{t+k}) + V^\top M^k V a_t`` (``c`` the training day-of-year
climatology). It is the equal-size linear counterpart of the latent LSTM of notebook 08:
same code size, same start day, no nonlinearity and no context window. Its one-step error
covariance ``Q = <eps eps^T>`` (training residuals) is the background-error covariance of
the reduced-rank 3D-Var that cycles it (notebook 10).

Only ``prepared.train`` and ``prepared.train_times`` are read; pairs are taken by date, so a
gap in the training days never pairs two days that are not one day apart.

Example:
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> rng = np.random.default_rng(0)
    >>> times = np.arange("2001-01-01", "2002-01-01", dtype="datetime64[D]").astype(
    ...     "datetime64[ns]")
    >>> x = rng.normal(size=(len(times), 2, 4, 8)).astype("float32")
    >>> prepared = SimpleNamespace(train=x, train_times=times, lat=np.linspace(-60, 60, 4),
    ...                            space="anomaly")
    >>> lim = fit_linear_inverse_model(prepared, k=6)
    >>> lim.propagator.shape, lim.forecast(x, times, [0, 5], steps=3).shape
    ((6, 6), (2, 3, 2, 4, 8))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geofusion.data.eof import EOFCode, fit_eof
from geofusion.verification.baselines import (
    _initial_anomalies,
    _lag_pairs,
    _valid_doy_index,
    anomalies,
    as_numpy,
    training_climatology,
    training_days,
)

__all__ = ["LinearInverseModel", "fit_linear_inverse_model", "linear_inverse_model_source"]


@dataclass(frozen=True)
class LinearInverseModel:
    """``z_{t+1} = M z_t`` on the EOF coefficients of the anomaly.

    Attributes:
        code: the :class:`~geofusion.data.eof.EOFCode` (``k`` modes) the model runs in.
        propagator: float64 ``(k, k)``, ``M``.
        error_covariance: float64 ``(k, k)``, ``Q``, covariance of the one-step training
            residuals ``z_{t+1} - M z_t`` (the background-error covariance of a 3D-Var cycled
            with this model, in coefficient units).
        climatology: float32 ``(366, C, H, W)``, the training day-of-year climatology of the
            fitted fields (zero in the anomaly space).
        max_lead: the longest lead :meth:`forecast` accepts (any: the model iterates).
    """

    code: EOFCode
    propagator: np.ndarray
    error_covariance: np.ndarray
    climatology: np.ndarray
    max_lead: int = 10_000

    @property
    def k(self) -> int:
        """Size of the code."""
        return self.code.k

    def step(self, z: np.ndarray, steps: int) -> np.ndarray:
        """Coefficients ``(B, k)`` -> float64 ``(B, steps, k)``, ``M^j z`` for ``j = 1..steps``."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.k:
            raise ValueError(f"z must be (B, {self.k}) EOF coefficients, got {z.shape}")
        out = np.empty((len(z), steps, self.k))
        for j in range(steps):
            z = z @ self.propagator.T
            out[:, j] = z
        return out

    def forecast(self, fields: Any, times: Any, inits: Any, steps: int) -> np.ndarray:
        """Forecasts from ``fields[inits]`` valid 1 .. ``steps`` days later.

        Args:
            fields: ``(T, C, H, W)`` in the units of the fit (e.g. ``prepared.test``).
            times: ``(T,)`` datetime64 days of ``fields``.
            inits: ``(B,)`` initialisation indices into ``fields``.
            steps: leads ``1 .. steps`` days.

        Returns:
            float32 ``(B, steps, C, H, W)``.
        """
        _, times, inits, anomaly = _initial_anomalies(self.climatology, self.max_lead, fields,
                                                      times, inits, steps)
        z = self.step(self.code.encode(anomaly), steps)
        decoded = self.code.decode(z.reshape(-1, self.k)).reshape(
            (len(inits), steps) + anomaly.shape[1:])
        valid = self.climatology[_valid_doy_index(times, inits, steps)]
        return (valid + decoded).astype(np.float32)


def fit_linear_inverse_model(prepared: Any, k: int, code: EOFCode | None = None,
                             window: int = 15) -> LinearInverseModel:
    """Fit the LIM on the consecutive training days of ``prepared``.

    Args:
        prepared: :class:`geofusion.data.PreparedData`; only ``train``, ``train_times`` and
            ``lat`` are read.
        k: number of EOF modes (the size of the latent it is the twin of).
        code: an EOF code to run in (its ``k`` must equal ``k``); fitted on the training
            anomalies when omitted.
        window: climatology smoothing window, days.

    Returns:
        :class:`LinearInverseModel`.
    """
    x, times = training_days(prepared)
    clim = training_climatology(prepared, window)
    a = anomalies(x, times, clim)
    if code is None:
        code = fit_eof(a, prepared.lat, k)
    elif code.k != k:
        raise ValueError(f"the EOF code has {code.k} modes, k is {k}; pass code.truncate(k) "
                         "or a code of k modes")
    i, j = _lag_pairs(times, 1)
    if len(i) <= k:
        raise ValueError(f"{len(i)} pairs of consecutive training days for a {k}x{k} "
                         "propagator; use more training days or a smaller k")
    z = code.encode(a).astype(np.float64)
    z0, z1 = z[i], z[j]
    c0 = z0.T @ z0 / len(i)
    c1 = z1.T @ z0 / len(i)
    # M = C1 C0^{-1}, solved rather than inverted (C0 is symmetric positive definite).
    m = np.linalg.solve(c0, c1.T).T
    residual = z1 - z0 @ m.T
    q = residual.T @ residual / len(i)
    return LinearInverseModel(code, m, q, clim.astype(np.float32))


def linear_inverse_model_source(model: LinearInverseModel, fields: Any, times: Any
                                ) -> Callable[[Any, int], Tensor]:
    """:class:`LinearInverseModel` as a forecast source on ``fields`` (days ``times``):
    ``source(inits, steps) -> (B, steps, C, H, W)`` float32 tensor, scored with
    :func:`geofusion.downstream.forecast_scores.score_forecasts` next to the latent LSTMs."""
    x = as_numpy(fields)
    t = np.asarray(times, dtype="datetime64[ns]")

    def source(inits: Any, steps: int) -> Tensor:
        return torch.from_numpy(model.forecast(x, t, inits, steps))
    return source
