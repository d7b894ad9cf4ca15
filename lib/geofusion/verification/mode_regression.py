r"""The linear twin of a fusion scheme's missing-mode reconstruction (notebook 09, issue 24).

A fusion encoder that still works with one *mode* (variable) ``m`` absent is asked to
reconstruct ``m`` from the others. Its linear counterpart, fitted on training days only:

1. the anomalies ``a = x - c(doy)`` of the present modes ``p = {0..C-1} \ {m}`` are coded by
   their ``k`` leading area-weighted EOFs (:func:`geofusion.data.eof.fit_eof`, one code for
   the present modes together, ``k`` = the latent size of the scheme it is compared with);
2. the anomaly field of mode ``m`` (every grid point) is a ridge regression on these ``k``
   coefficients, ``a_m = b + W^T z_p``, its penalty chosen by blocked cross-validation
   within the training days (:func:`fit_ridge_cv`; the latitude-weighted squared error the
   scores use);
3. ``x_hat_m = c_m(doy) + b + W^T z_p``.

:func:`fit_ridge_cv` is the generic ridge with blocked cross-validation, used unchanged for
the learned side's linear readouts (:mod:`geofusion.experiments.fusion_linear_twins`) so the
twin and the schemes get the same treatment.

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 3)); y = x @ rng.normal(size=(3, 4)) + 1.0
    >>> fit = fit_ridge_cv(x, y, folds=3)
    >>> bool(np.allclose(fit.predict(x), y, atol=1e-2))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geofusion.data.climatology import day_of_year
from geofusion.data.eof import EOFCode, area_weights, fit_eof
from geofusion.verification.baselines import training_climatology, training_days

__all__ = ["RELATIVE_ALPHAS", "RidgeFit", "fit_ridge_cv", "MissingModeRegression",
           "fit_missing_mode_regression"]

#: Penalties tried, in units of the mean squared singular value of the centred inputs
#: (``||X_c||_F^2 / k``): from nearly least squares to nearly the mean.
RELATIVE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 3, 19))


@dataclass(frozen=True)
class RidgeFit:
    """``y_hat = y_mean + (x - x_mean) @ coef``.

    Attributes:
        x_mean: float64 ``(k,)``; y_mean: float64 ``(D,)``; coef: float64 ``(k, D)``.
        alpha: the penalty chosen (absolute units of ``X_c^T X_c``).
        alphas: float64 ``(A,)`` the penalties tried; cv_error: float64 ``(A,)`` their
            blocked cross-validation error (column-weighted mean squared error).
    """

    x_mean: np.ndarray
    y_mean: np.ndarray
    coef: np.ndarray
    alpha: float
    alphas: np.ndarray
    cv_error: np.ndarray

    def predict(self, x: Any) -> np.ndarray:
        """Inputs ``(N, k)`` -> predictions float64 ``(N, D)``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.x_mean):
            raise ValueError(f"inputs must be (N, {len(self.x_mean)}), got {x.shape}")
        return self.y_mean + (x - self.x_mean) @ self.coef


def _ridge_solution(x: np.ndarray, y: np.ndarray, alphas: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centred SVD pieces: ``x_mean, y_mean, vt, d (A, r), g = U^T y_c (r, D)`` with
    ``coef(alpha) = vt^T diag(d_alpha) g``."""
    xm, ym = x.mean(0), y.mean(0)
    u, s, vt = np.linalg.svd(x - xm, full_matrices=False)
    d = s[None, :] / (s[None, :] ** 2 + alphas[:, None])
    return xm, ym, vt, d, u.T @ (y - ym)


def fit_ridge_cv(x: Any, y: Any, column_weights: Any = None,
                 relative_alphas: Sequence[float] = RELATIVE_ALPHAS, folds: int = 5
                 ) -> RidgeFit:
    """Multi-output ridge regression of ``y`` ``(N, D)`` on ``x`` ``(N, k)`` (intercept
    unpenalised), one penalty for all outputs chosen by blocked cross-validation.

    The ``N`` rows (days, in time order) are cut into ``folds`` contiguous blocks; each block
    is predicted by the ridge fitted on the others, and the penalty with the lowest total
    ``sum_{n, j} w_j (y_hat_nj - y_nj)^2`` (``w`` = ``column_weights``, e.g. the latitude
    area weights of each grid point; 1 by default) over the held-out blocks is refitted on
    all rows. Penalties: ``relative_alphas`` times ``||X_c||_F^2 / k``. Float64 throughout.

    Raises:
        ValueError: shapes that do not match, fewer than ``2 * folds`` rows, non-finite values.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need x (N, k) and y (N, D) with the same N, got {x.shape} and "
                         f"{y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x or y holds NaN or inf; fill or drop those days first")
    if folds < 2 or len(x) < 2 * folds:
        raise ValueError(f"blocked cross-validation needs folds >= 2 and at least 2 rows per "
                         f"fold, got {folds} folds for {len(x)} rows; pass fewer folds or "
                         "more days")
    weights = (np.ones(y.shape[1]) if column_weights is None
               else np.asarray(column_weights, dtype=np.float64).reshape(-1))
    if weights.shape != (y.shape[1],):
        raise ValueError(f"column_weights must have one weight per column of y "
                         f"({y.shape[1]}), got {weights.shape}")
    scale = float(((x - x.mean(0)) ** 2).sum()) / x.shape[1]
    alphas = np.asarray(relative_alphas, dtype=np.float64) * max(scale, 1e-300)
    errors = np.zeros(len(alphas))
    for held in np.array_split(np.arange(len(x)), folds):
        keep = np.setdiff1d(np.arange(len(x)), held)
        xm, ym, vt, d, g = _ridge_solution(x[keep], y[keep], alphas)
        p = (x[held] - xm) @ vt.T                                   # (n_v, r)
        for i in range(len(alphas)):
            residual = ym + (p * d[i]) @ g - y[held]
            errors[i] += float((residual ** 2 * weights).sum())
    errors /= len(x) * weights.sum()
    best = int(np.argmin(errors))
    xm, ym, vt, d, g = _ridge_solution(x, y, alphas[best:best + 1])
    return RidgeFit(xm, ym, vt.T @ (d[0][:, None] * g), float(alphas[best]), alphas, errors)


@dataclass(frozen=True)
class MissingModeRegression:
    """Mode ``mode``'s field from the EOF coefficients of the other modes (module doc).

    Attributes:
        mode: the channel index reconstructed; present: the channel indices it reads.
        code: :class:`EOFCode` of the present modes' training anomalies ``(k, |p| H W)``.
        ridge: :class:`RidgeFit` from the ``k`` coefficients to mode ``mode``'s ``H W``
            anomaly values.
        climatology: float32 ``(366, H, W)`` training climatology of mode ``mode`` (zero in
            the anomaly space); present_climatology: float32 ``(366, |p|, H, W)``.
    """

    mode: int
    present: tuple[int, ...]
    code: EOFCode
    ridge: RidgeFit
    climatology: np.ndarray
    present_climatology: np.ndarray

    def predict(self, fields: Any, times: Any) -> np.ndarray:
        """Mode ``mode`` of ``fields`` ``(T, C, H, W)`` (the model space; channel ``mode``
        is never read) at the days ``times`` -> float32 ``(T, H, W)``, the model space."""
        x = np.asarray(fields, dtype=np.float64)
        doy = day_of_year(np.asarray(times, dtype="datetime64[ns]")) - 1
        if len(doy) != len(x):
            raise ValueError(f"{len(times)} times for {len(x)} fields; pass each field's day")
        a = x[:, list(self.present)] - self.present_climatology[doy]
        out = self.ridge.predict(self.code.encode(a)).reshape((len(x),)
                                                              + self.climatology.shape[1:])
        return (out + self.climatology[doy]).astype(np.float32)


def fit_missing_mode_regression(prepared: Any, mode: int, k: int,
                                relative_alphas: Sequence[float] = RELATIVE_ALPHAS,
                                folds: int = 5) -> MissingModeRegression:
    """Fit the linear twin of a missing-mode reconstruction (module doc) on
    ``prepared.train`` alone (``train``, ``train_times``, ``lat``; nothing else is read).

    Args:
        prepared: a :class:`geofusion.data.PreparedData` (or an object with those fields).
        mode: the channel index to reconstruct (0..C-1).
        k: EOF coefficients of the present modes (the compared latent's size), fewer than the
            number of training days.
        relative_alphas, folds: the ridge's penalty grid and blocked cross-validation
            (:func:`fit_ridge_cv`).
    """
    x, _ = training_days(prepared)
    n_channels = x.shape[1]
    if not 0 <= int(mode) < n_channels:
        raise ValueError(f"mode must be a channel index in 0..{n_channels - 1}, got {mode}")
    if n_channels < 2:
        raise ValueError("a missing mode needs at least one other mode to regress on")
    present = tuple(c for c in range(n_channels) if c != int(mode))
    clim = np.asarray(training_climatology(prepared), dtype=np.float32)
    doy = day_of_year(np.asarray(prepared.train_times, dtype="datetime64[ns]")) - 1
    a = x.astype(np.float64) - clim[doy]
    lat = np.asarray(prepared.lat)
    code = fit_eof(a[:, list(present)], lat, k)
    weights = np.broadcast_to(area_weights(lat)[:, None], x.shape[2:])
    ridge = fit_ridge_cv(code.encode(a[:, list(present)]), a[:, int(mode)].reshape(len(a), -1),
                         weights, relative_alphas, folds)
    return MissingModeRegression(int(mode), present, code, ridge, clim[:, int(mode)],
                                 clim[:, list(present)])
