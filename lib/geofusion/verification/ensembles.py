"""Scoring ensembles: CRPS, spread and skill, and the climatological ensemble to beat.

A probabilistic forecast or reconstruction (e.g. :mod:`geofusion.models.diffusion`) is an ensemble
of ``M`` members. Per variable, in physical units, latitude-weighted as everything else
(:mod:`geofusion.verification.metrics`):

- **CRPS** ``E|X - y| - E|X - X'| / 2`` per grid point and day, with the *fair* ensemble
  estimator (unbiased for the CRPS of the distribution the members are drawn from, whatever
  ``M``) computed in its probability-weighted-moment form (``scoringrules.crps_ensemble(...,
  estimator="pwm")``: the same value in ``O(M log M)`` instead of ``O(M^2)``, Zamo & Naveau
  2018), then the area-weighted mean
  over the globe and the mean over days. For a deterministic forecast (``M = 1``) the CRPS
  is the mean absolute error.
- **Skill**: RMSE of the ensemble mean (WB2 convention, root after the time mean).
- **Spread**: ``sqrt(mean over days and area of the unbiased ensemble variance)``; the
  spread/skill ratio ``sqrt((M + 1) / M) * spread / skill`` is 1 for a reliable ensemble
  (Fortin et al. 2014).
- :func:`climatological_ensemble`: for each target day the training-year fields within
  ``+-window`` days of the same day of year, the reference every ensemble must beat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scoringrules

from geofusion.verification.metrics import lat_weighted_mean, lat_weighted_rmse

__all__ = ["crps_ensemble", "crps_gaussian", "ensemble_scores", "climatological_ensemble"]


def crps_ensemble(truth: np.ndarray, ensemble: np.ndarray, member_axis: int = 0) -> np.ndarray:
    """Fair-estimator CRPS per point: ``truth`` ``(...)``, ``ensemble`` with a member axis.

    Example::

        >>> float(crps_ensemble(np.array(0.0), np.array([-1.0, 1.0])))  # E|X| - E|X-X'|/2
        0.0
    """
    ensemble = np.moveaxis(np.asarray(ensemble, dtype=np.float64), member_axis, -1)
    truth = np.asarray(truth, dtype=np.float64)
    if ensemble.shape[:-1] != truth.shape:
        raise ValueError(f"ensemble {ensemble.shape[:-1]} (members moved last) and truth "
                         f"{truth.shape} must match")
    if ensemble.shape[-1] < 2:
        return np.abs(ensemble[..., 0] - truth)
    return np.asarray(scoringrules.crps_ensemble(truth, ensemble, m_axis=-1,
                                                 estimator="pwm"))


def crps_gaussian(truth: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of ``N(mean, std^2)``: ``std [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]``,
    ``z = (truth - mean) / std`` (Gneiting et al. 2005), via ``scoringrules.crps_normal``."""
    return np.asarray(scoringrules.crps_normal(np.asarray(truth, dtype=np.float64),
                                               np.asarray(mean, dtype=np.float64),
                                               np.asarray(std, dtype=np.float64)))


def ensemble_scores(ensemble: np.ndarray, truth: np.ndarray, lat: np.ndarray,
                    channels: list[str] | None = None) -> pd.DataFrame:
    """CRPS, skill, spread and spread/skill per variable (module docstring).

    Args:
        ensemble: ``(M, T, C, H, W)`` physical units.
        truth: ``(T, C, H, W)`` physical units.
        lat: ``(H,)`` degrees ascending.
        channels: variable names (default ``0 .. C-1``).

    Returns:
        DataFrame indexed by variable with columns ``crps``, ``rmse_mean``, ``spread``,
        ``spread_skill``.
    """
    ensemble = np.asarray(ensemble, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if ensemble.ndim != 5 or ensemble.shape[1:] != truth.shape:
        raise ValueError(f"need ensemble (M, T, C, H, W) and truth (T, C, H, W), got "
                         f"{ensemble.shape} and {truth.shape}")
    m = ensemble.shape[0]
    crps = lat_weighted_mean(crps_ensemble(truth, ensemble, member_axis=0), lat).mean(axis=0)
    mean = ensemble.mean(axis=0)
    skill = lat_weighted_rmse(mean, truth, lat, time_axis=0)
    if m > 1:
        variance = ensemble.var(axis=0, ddof=1)
        spread = np.sqrt(lat_weighted_mean(variance, lat).mean(axis=0))
        ratio = np.sqrt((m + 1) / m) * spread / skill
    else:
        spread = np.zeros_like(skill)
        ratio = np.zeros_like(skill)
    index = channels if channels is not None else list(range(truth.shape[1]))
    return pd.DataFrame({"crps": crps, "rmse_mean": skill, "spread": spread,
                         "spread_skill": ratio}, index=pd.Index(index, name="variable"))


def climatological_ensemble(train_fields: np.ndarray, train_times: Any, target_times: Any,
                            window: int = 0, max_members: int | None = None,
                            seed: int = 0) -> np.ndarray:
    """Members ``(M, T, C, H, W)``: for each target day, training days whose day of year is
    within ``window`` days (circular) of the target's. ``M`` is the smallest count over the
    targets (capped at ``max_members``), drawn without replacement with ``seed``."""
    fields = np.asarray(train_fields)
    train_doy = pd.DatetimeIndex(train_times).day_of_year.to_numpy()
    target_doy = pd.DatetimeIndex(target_times).day_of_year.to_numpy()
    if len(train_doy) != len(fields):
        raise ValueError(f"{len(train_doy)} training times for {len(fields)} fields")
    distance = np.abs(target_doy[:, None] - train_doy[None, :])
    distance = np.minimum(distance, 366 - distance)
    pools = [np.flatnonzero(row <= window) for row in distance]
    size = min(len(p) for p in pools)
    if size == 0:
        raise ValueError("a target day of year has no training day within the window; widen "
                         "window")
    if max_members is not None:
        size = min(size, max_members)
    rng = np.random.default_rng(seed)
    members = np.stack([rng.choice(pool, size=size, replace=False) for pool in pools], axis=1)
    return fields[members]
