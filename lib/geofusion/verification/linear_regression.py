"""The WeatherBench linear-regression forecast baseline (Rasp et al. 2020), fitted on training
days only.

``x_hat_{t+k} = c(doy_{t+k}) + b_k + W_k^T P(a_t)`` with ``c`` the day-of-year climatology of
the training days, ``a_t = x_t - c(doy_t)`` the anomaly of the start day, ``P`` the leading
principal components of the standardised, area-weighted anomaly of all variables at ``t``, and
``(W_k, b_k)`` a ridge regression fitted directly for every lead on the training days, its
penalty chosen by blocked cross-validation within the training days
(:func:`fit_linear_regression`). :func:`linear_regression_source` scores it next to the latent
forecasters (``source(inits, steps)``, :mod:`geofusion.downstream.forecast_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geofusion.verification.baselines import (
    _day_numbers,
    _initial_anomalies,
    _lag_pairs,
    _valid_doy_index,
    anomalies,
    as_numpy,
    training_climatology,
    training_days,
)

__all__ = ["LinearRegressionForecast", "fit_linear_regression", "linear_regression_source"]


@dataclass(frozen=True)
class LinearRegressionForecast:
    """Ridge regression of future anomalies on the principal components of today's anomaly.

    ``x_hat_{t+k} = c(doy_{t+k}) + intercept[k-1] + P(a_t) @ coef[k-1]``, with
    ``P(a) = (flatten(a / scale * sqrt(w)) - mean) @ components.T`` the leading principal
    component scores of the anomaly ``a = x_t - c(doy_t)`` (every variable divided by its
    training anomaly std ``scale``, every row by the square root of its area weight ``w``,
    so the PCs are those of the area-weighted, equally weighted variables).

    Attributes:
        climatology: float32 ``(366, C, H, W)`` of the training days.
        scale: float32 ``(C,)`` training anomaly std per variable (area-weighted).
        sqrt_weights: float32 ``(H,)`` square roots of the latitude area weights.
        mean: float32 ``(D,)`` training mean of the scaled anomaly (``D = C H W``).
        components: float32 ``(K, D)`` orthonormal leading EOFs.
        coef: float32 ``(max_lead, K, D)`` regression weights, field units.
        intercept: float32 ``(max_lead, D)``.
        alpha: float64 ``(max_lead, C)`` ridge penalty chosen per lead and variable.
        explained_variance: float64 ``(K,)`` share of the training anomaly variance per PC.
    """

    climatology: np.ndarray
    scale: np.ndarray
    sqrt_weights: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    alpha: np.ndarray
    explained_variance: np.ndarray

    @property
    def max_lead(self) -> int:
        return int(self.coef.shape[0])

    def scores(self, anomalies: np.ndarray) -> np.ndarray:
        """Principal component scores ``(N, K)`` of anomalies ``(N, C, H, W)``."""
        z = anomalies / self.scale[:, None, None] * self.sqrt_weights[:, None]
        z = z.reshape(len(anomalies), -1) - self.mean
        return (z @ self.components.T).astype(np.float32)

    def forecast(self, fields: Any, times: Any, inits: Any, steps: int) -> np.ndarray:
        """Forecasts from ``fields[inits]`` valid 1 .. ``steps`` days later, float32
        ``(B, steps, C, H, W)`` (arguments as :meth:`DampedPersistence.forecast`)."""
        x, times, inits, anomaly = _initial_anomalies(self.climatology, self.max_lead, fields,
                                                      times, inits, steps)
        pcs = self.scores(anomaly)
        out = np.einsum("bk,lkd->bld", pcs, self.coef[:steps]) + self.intercept[None, :steps]
        out = out.reshape(len(inits), steps, *x.shape[1:])
        return (out + self.climatology[_valid_doy_index(times, inits, steps)]).astype(np.float32)


def _ridge_cv_errors(x: np.ndarray, y: np.ndarray, column_weights: np.ndarray,
                     groups: np.ndarray, n_groups: int, alphas: np.ndarray, folds: int,
                     init_days: np.ndarray, gap: int) -> np.ndarray:
    """Blocked cross-validation error ``(len(alphas), n_groups)`` of ridge ``y ~ x``.

    The pairs are cut into ``folds`` contiguous blocks of initialisation days; each block is
    predicted by the ridge fitted on the pairs whose initialisation lies more than ``gap``
    days away from it (so no target day of the fit is a day of the held-out block). The
    weighted squared error of column group ``g`` for every ``alpha`` comes from one SVD of
    the fitting inputs ``x_f = U s V^T``:
    ``E = |y_v|^2_w - 2 sum_k d_k (P^T y_v W G^T)_kk + d^T ((P^T P) o (G W G^T)) d`` with
    ``P = x_v V``, ``G = U^T y_f``, ``d = s / (s^2 + alpha)`` and ``W`` the column weights.
    """
    order = np.argsort(init_days, kind="stable")
    blocks = np.array_split(order, folds)
    errors = np.zeros((len(alphas), n_groups))
    for held in blocks:
        lo, hi = init_days[held].min(), init_days[held].max()
        fit = np.flatnonzero((init_days < lo - gap) | (init_days > hi + gap))
        if len(fit) < 2:
            continue  # too few days outside this block (tiny training sets): skip it
        xm, ym = x[fit].mean(0), y[fit].mean(0)
        u, s, vt = np.linalg.svd(x[fit] - xm, full_matrices=False)
        # The (r, D) products run in the targets' dtype (float32 for fields: the bulk of the
        # cost), the small reductions below in float64.
        g = (u.T.astype(y.dtype) @ (y[fit] - ym)).astype(np.float64)        # (r, D)
        p = (x[held] - xm) @ vt.T                                            # (n_v, r)
        yv = y[held] - ym                                                    # (n_v, D)
        ptp = p.T @ p
        m = (p.T.astype(y.dtype) @ (yv * column_weights.astype(y.dtype))).astype(np.float64)
        yv = yv.astype(np.float64)
        d = s[None, :] / (s[None, :] ** 2 + alphas[:, None])   # (A, r)
        for c in range(n_groups):
            cols = groups == c
            wc = column_weights[cols]
            gc = g[:, cols]
            base = float(np.sum(yv[:, cols] ** 2 * wc))
            cross = np.sum(m[:, cols] * gc, axis=1)             # (r,)
            quad = ptp * ((gc * wc) @ gc.T)                     # (r, r)
            errors[:, c] += base - 2 * d @ cross + np.einsum("ak,kl,al->a", d, quad, d)
    return errors


def fit_linear_regression(prepared: Any, max_lead: int = 7, n_components: int = 100,
                          alphas: Sequence[float] | None = None, folds: int = 5,
                          window: int = 15) -> LinearRegressionForecast:
    """Fit the WeatherBench linear-regression baseline on the training days of ``prepared``.

    1. Anomalies ``a`` from the training :func:`climatology`; every variable divided by its
       training anomaly std, every latitude row multiplied by ``sqrt(area weight)``.
    2. The ``K = n_components`` leading EOFs of these (all variables jointly; eigenvectors of
       the ``T x T`` Gram matrix, exact and deterministic) give the predictors ``P(a_t)``.
    3. For every lead ``k`` separately (direct, not iterated), over all training pairs
       ``(t, t + k)``: ridge regression of the anomaly field ``a_{t+k}`` (every grid point
       and variable, field units) on ``P(a_t)`` with an intercept,
       ``W_k = argmin |A_{t+k} - b - P W|^2 + alpha |W|^2``.
    4. ``alpha`` is chosen per lead and variable from ``alphas`` (default: the mean PC
       variance times ``10^-3 .. 10^3``, 13 values) by ``folds``-fold blocked
       cross-validation over contiguous blocks of training days, with a gap of ``max_lead``
       days around the held-out block; the score is the area-weighted squared error, as in
       the latitude-weighted RMSE.

    Args:
        prepared: :class:`geofusion.data.PreparedData`; only ``train``, ``train_times`` and
            ``lat`` are read.
        max_lead: leads ``1 .. max_lead`` days.
        n_components: EOFs kept (capped at the training days - 1).
        alphas: candidate ridge penalties (in PC-score units squared), or None.
        folds: cross-validation blocks (>= 2).
        window: climatology smoothing window, days.

    Returns:
        :class:`LinearRegressionForecast`.

    Example (needs a PreparedData, not run as a doctest)::

        model = fit_linear_regression(prepared)
        model.forecast(prepared.valid, prepared.valid_times, [0], steps=3)  # (1, 3, C, H, W)
    """
    from geofusion.verification.metrics import latitude_weights

    if max_lead < 1:
        raise ValueError(f"max_lead must be >= 1 day, got {max_lead}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2 for cross-validation, got {folds}")
    x, times = training_days(prepared)
    n, c, h, w = x.shape
    if n < 3:
        raise ValueError(f"{n} training days are too few for a regression; use more")
    # The training climatology (exactly zero in the anomaly space): the same anomalies, so
    # the same physical forecast, in either space.
    clim = training_climatology(prepared, window)
    a = anomalies(x, times, clim)                                  # (N, C, H, W) float64
    area = latitude_weights(np.asarray(prepared.lat, dtype=np.float64))
    if area.shape[0] != h:
        raise ValueError(f"prepared.lat has {area.shape[0]} values for {h} latitude rows")
    scale = np.sqrt(np.mean(a**2 * area[:, None], axis=(0, 2, 3)))
    scale = np.where(scale > 0, scale, 1.0)
    sqrt_w = np.sqrt(area)
    # float32 for the (N, D) products (their cost dominates; the leading EOFs are well
    # separated from round-off), float64 for everything of size N x K or smaller.
    z = (a / scale[:, None, None] * sqrt_w[:, None]).reshape(n, -1)
    mean = z.mean(0)
    z = (z - mean).astype(np.float32)
    eigval, eigvec = np.linalg.eigh((z @ z.T).astype(np.float64))  # ascending
    k = int(min(n_components, n - 1))
    eigval, eigvec = eigval[::-1][:k], eigvec[:, ::-1][:, :k]
    eigval = np.clip(eigval, 1e-12 * eigval[0], None)
    components = (eigvec.T.astype(np.float32) @ z) / np.sqrt(eigval)[:, None].astype(np.float32)
    pcs = eigvec * np.sqrt(eigval)                                 # (N, K) = z @ components.T
    explained = eigval / np.sum(z.astype(np.float64) ** 2)
    del z
    targets = a.reshape(n, -1).astype(np.float32)
    groups = np.repeat(np.arange(c), h * w)
    column_weights = np.tile(np.repeat(area, w), c)
    if alphas is None:
        alphas = np.mean(eigval) * np.logspace(-3, 3, 13)
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or alphas.size == 0 or np.any(alphas < 0):
        raise ValueError("alphas must be a non-empty sequence of penalties >= 0")
    days = _day_numbers(times)
    coef = np.empty((max_lead, k, c * h * w), dtype=np.float32)
    intercept = np.empty((max_lead, c * h * w), dtype=np.float32)
    chosen = np.empty((max_lead, c))
    for lead in range(1, max_lead + 1):
        i, j = _lag_pairs(times, lead)
        if len(i) < folds * 2:
            raise ValueError(f"the training days hold {len(i)} pairs {lead} days apart; need "
                             f"at least {2 * folds} (more training days or a smaller max_lead)")
        xi, yj = pcs[i], targets[j]
        errors = _ridge_cv_errors(xi, yj, column_weights, groups, c, alphas, folds, days[i],
                                  gap=max_lead)
        best = alphas[np.argmin(errors, axis=0)]                   # (C,)
        chosen[lead - 1] = best
        xm, ym = xi.mean(0), yj.mean(0)
        u, s, vt = np.linalg.svd(xi - xm, full_matrices=False)
        g = (u.T.astype(np.float32) @ (yj - ym)).astype(np.float64)  # (r, D)
        for ch in range(c):
            cols = groups == ch
            d = s / (s**2 + best[ch])
            coef[lead - 1][:, cols] = (vt.T * d) @ g[:, cols]
        intercept[lead - 1] = ym - xm @ coef[lead - 1]
    return LinearRegressionForecast(
        climatology=clim, scale=scale.astype(np.float32), sqrt_weights=sqrt_w.astype(np.float32),
        mean=mean.astype(np.float32), components=components.astype(np.float32), coef=coef,
        intercept=intercept, alpha=chosen, explained_variance=explained)


def linear_regression_source(model: LinearRegressionForecast, fields: Any, times: Any
                             ) -> Callable[[Any, int], Tensor]:
    """:class:`LinearRegressionForecast` as a forecast source on ``fields`` (days ``times``):
    ``source(inits, steps) -> (B, steps, C, H, W)`` float32 tensor.

    Example (needs a PreparedData, not run as a doctest)::

        source = linear_regression_source(fit_linear_regression(prepared),
                                          prepared.valid, prepared.valid_times)
    """
    x = as_numpy(fields)
    t = np.asarray(times, dtype="datetime64[ns]")

    def source(inits: Any, steps: int) -> Tensor:
        return torch.from_numpy(model.forecast(x, t, inits, steps))
    return source
