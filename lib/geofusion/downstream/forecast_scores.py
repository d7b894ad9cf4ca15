"""Scoring forecasts per variable and lead in physical units, and the reference sources.

A *forecast source* (:data:`geofusion.downstream.forecasting.ForecastSource`) is a callable
``source(inits, steps) -> (B, steps, C, H, W)`` fields of the model's space (report or
anomaly space, :mod:`geofusion.data.anomalies`): for each initialisation index ``i`` of an
evaluation series (the last day the forecast may use), the forecasts valid at
``i + 1 .. i + steps``, each expressed as a field **of its valid day** (in the anomaly space
a field is a departure from the climatology of its own day, so persistence is re-expressed
with ``prepared.as_valid_at``, :func:`persistence_source`). :func:`score_forecasts` converts
every field to physical units with the day it is valid at, ``to_physical(x, times)``
(``prepared.destandardise``). :func:`persistence_source` and :func:`climatology_source` build the
references; :meth:`geofusion.downstream.forecasting.LatentForecaster.source` and ``ceiling_source``
the
learned ones. :func:`score_forecasts` verifies them all on the same initialisations
(latitude-weighted RMSE and ACC, WeatherBench 2), and :func:`skill_vs_mask_ratio` repeats the
lead-1 score with the context observed through masks of growing missing fraction.

Example:
    >>> import numpy as np
    >>> times = np.arange("2001-01-01", "2001-01-11", dtype="datetime64[D]")
    >>> fields = np.random.default_rng(0).normal(size=(10, 1, 4, 8)).astype("float32")
    >>> clim = np.zeros((366, 1, 4, 8), dtype="float32")
    >>> table = score_forecasts({"persistence": persistence_source(fields)}, fields, times,
    ...                         np.linspace(-60, 60, 4), clim, lambda x: x, ["t2m"], context=1)
    >>> list(table.columns)
    ['forecaster', 'lead', 'variable', 'rmse', 'acc', 'n']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from geofusion.data.observations import make_mask
from geofusion.downstream.forecasting import ForecastSource, LatentForecaster
from geofusion.verification.baselines import day_of_year
from geofusion.verification.bootstrap import (
    DEFAULT_BLOCK,
    DEFAULT_RESAMPLES,
    bootstrap_acc,
    bootstrap_rmse,
)
from geofusion.verification.metrics import lat_weighted_acc, lat_weighted_mse

__all__ = ["ForecastSource", "persistence_source", "climatology_source", "score_forecasts",
           "skill_vs_mask_ratio", "physical_at", "takes_times"]


def _check_inits(inits: Any, length: int, first: int, steps: int) -> np.ndarray:
    inits = np.asarray(inits, dtype=np.int64).reshape(-1)
    if inits.size == 0:
        raise ValueError("no initialisation indices given; pass at least one")
    if inits.min() < first or inits.max() + steps >= length:
        raise ValueError(f"initialisation indices must lie in [{first}, {length - 1 - steps}] "
                         f"for a series of {length} days and {steps} steps (first = context - 1)"
                         f", got [{inits.min()}, {inits.max()}]")
    return inits


def _as_float_tensor(x: Any) -> Tensor:
    return (x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))).float()


def takes_times(to_physical: Callable[..., Any]) -> bool:
    """Whether ``to_physical`` accepts a second positional argument (the days)."""
    try:
        parameters = list(inspect.signature(to_physical).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: assume one argument
        return False
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def physical_at(to_physical: Callable[..., Any], fields: Tensor, times: Any) -> Tensor:
    """``fields`` ``(..., C, H, W)`` of the model's space -> physical units, each field with
    the day it is valid at, ``times`` (datetime64, shape ``fields.shape[:-3]``).

    ``to_physical(x (N, C, H, W), times (N,))`` is ``prepared.destandardise``; a callable of
    one argument (``to_physical(x)``, report space, where the day does not matter) is called
    without the days.
    """
    if not takes_times(to_physical):
        return to_physical(fields)
    lead_shape = fields.shape[:-3]
    days = np.asarray(times, dtype="datetime64[ns]")
    if days.shape != tuple(lead_shape):
        raise ValueError(f"times of shape {days.shape} for fields of shape "
                         f"{tuple(fields.shape)}; pass one day per field")
    flat = fields.reshape(-1, *fields.shape[-3:])
    out = to_physical(flat, days.reshape(-1))
    return out.reshape(*lead_shape, *out.shape[1:])


def persistence_source(fields: np.ndarray | Tensor, times: Any = None,
                       as_valid_at: Callable[[Tensor, Any, Any], Tensor] | None = None
                       ) -> ForecastSource:
    """Persistence as a forecast source: the (physical) field of the init day at every lead.

    In the report space the field itself; in the anomaly space pass the series' ``times`` and
    ``as_valid_at=prepared.as_valid_at``, which re-expresses the init day's field as a field
    of each valid day ``times[i + k]`` (the same physical field ``x_t``, not the persisted
    anomaly).
    """
    x = _as_float_tensor(fields)
    if as_valid_at is not None:
        if times is None:
            raise ValueError("persistence in the anomaly space needs the days of the series: "
                             "pass times with as_valid_at")
        days = np.asarray(times, dtype="datetime64[ns]")
        if len(days) != len(x):
            raise ValueError(f"{len(days)} times for {len(x)} fields; pass the series' times")

    def source(inits: Any, steps: int) -> Tensor:
        inits = np.asarray(inits, dtype=np.int64).reshape(-1)
        day = x[torch.as_tensor(inits)]
        out = day[:, None].expand(-1, steps, *day.shape[1:])
        if as_valid_at is None:
            return out
        valid = inits[:, None] + np.arange(1, steps + 1)
        origin = np.repeat(days[inits], steps)
        flat = out.reshape(-1, *day.shape[1:])
        moved = as_valid_at(flat, origin, days[valid.reshape(-1)])
        return _as_float_tensor(moved).reshape(out.shape)
    return source


def climatology_source(climatology: np.ndarray | Tensor, times: Any) -> ForecastSource:
    """Day-of-year climatology (:func:`geofusion.verification.baselines.training_climatology`, same
    units
    as the fields) as a forecast source on the series whose days are ``times``: the
    climatology of each verification day."""
    clim = _as_float_tensor(climatology)
    doy = day_of_year(times) - 1

    def source(inits: Any, steps: int) -> Tensor:
        idx = np.asarray(inits, dtype=np.int64).reshape(-1, 1) + np.arange(1, steps + 1)
        return clim[torch.as_tensor(doy[idx])]
    return source


@torch.no_grad()
def score_forecasts(sources: Mapping[str, ForecastSource], fields: np.ndarray | Tensor,
                    times: Any, lat: Any, climatology: np.ndarray | Tensor,
                    to_physical: Callable[..., Tensor], channels: Sequence[str],
                    context: int, steps: int = 1, inits: Any = None, batch_size: int = 64,
                    intervals: bool = False, block: int = DEFAULT_BLOCK,
                    n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Latitude-weighted RMSE and ACC per forecaster, lead and variable, in physical units.

    Every source is verified on the same initialisations ``i`` against ``fields[i + lead]``:
    per verification day the area-weighted MSE and ACC (anomalies from the day-of-year
    ``climatology`` of the verification day) over the grid, then the mean over the
    initialisations, and the RMSE is the root of the mean MSE (WeatherBench 2, see
    :mod:`geofusion.verification.metrics`). Everything is computed in chunks of ``batch_size``
    initialisations, so no decoded forecast of the whole period is held.

    Args:
        sources: name -> forecast source (module docstring), fields of the model's space,
            each of its valid day.
        fields: ``(T, C, H, W)`` evaluation series in the model's space (e.g.
            ``prepared.test``).
        times: ``(T,)`` datetime64 of ``fields``.
        lat: ``(H,)`` degrees ascending.
        climatology: ``(366, C, H, W)`` standardised
            (:func:`geofusion.verification.baselines.training_climatology`), the reference of the
            anomalies.
        to_physical: ``to_physical(x (N, C, H, W), times (N,))`` -> physical units
            (``prepared.destandardise``; every field goes with the day it is valid at,
            :func:`physical_at`), or a one-argument callable in the report space.
        channels: the ``C`` variable names.
        context: days of history the forecasters read; the default initialisations are
            ``context - 1 .. T - 1 - steps`` (all with a full context and a verifying day).
        steps: the leads ``1 .. steps`` (days for daily data).
        inits: optional explicit initialisation indices.
        batch_size: initialisations per chunk.
        intervals: also give 95 % block-bootstrap intervals over the initialisations
            (:func:`geofusion.verification.bootstrap.bootstrap_rmse` of the per-day MSEs and
            :func:`~geofusion.verification.bootstrap.bootstrap_acc` of the per-day ACCs, blocks of
            ``block``
            consecutive initialisations, ``n_resamples`` resamples seeded by ``seed``; the
            same resampled days for every forecaster, lead and variable, so intervals of
            different forecasters are comparable).

    Returns:
        DataFrame with columns ``forecaster``, ``lead``, ``variable``, ``rmse`` (physical
        units of the variable), ``acc`` (NaN for the climatology itself: zero anomaly), and
        ``n`` (initialisations averaged); with ``intervals`` also ``rmse_low``,
        ``rmse_high``, ``acc_low``, ``acc_high``.
    """
    x = _as_float_tensor(fields)
    if x.ndim != 4 or x.shape[1] != len(channels):
        raise ValueError(f"fields must be (T, C={len(channels)}, H, W), got {tuple(x.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not sources:
        raise ValueError("no forecast sources given; pass a dict name -> source")
    if inits is None:
        inits = np.arange(context - 1, len(x) - steps)
    inits = _check_inits(inits, len(x), max(context - 1, 0), steps)
    clim = _as_float_tensor(climatology)
    doy = day_of_year(times) - 1
    if len(doy) != len(x):
        raise ValueError(f"{len(doy)} times for {len(x)} fields; pass the times of the fields")
    day_times = np.asarray(times, dtype="datetime64[ns]")
    lat = np.array(lat, dtype=np.float64)  # a writable copy (torch warns on read-only arrays)
    # Per-initialisation scores (n, steps, C): small, and what the bootstrap resamples.
    mse_days: dict[str, list[Tensor]] = {name: [] for name in sources}
    acc_days: dict[str, list[Tensor]] = {name: [] for name in sources}
    for start in range(0, len(inits), batch_size):
        chunk = inits[start:start + batch_size]
        idx = chunk[:, None] + np.arange(1, steps + 1)
        valid_times = day_times[idx]
        truth = physical_at(to_physical, x[torch.as_tensor(idx)], valid_times)
        reference = physical_at(to_physical, clim[torch.as_tensor(doy[idx])], valid_times)
        for name, source in sources.items():
            forecast = _as_float_tensor(source(chunk, steps)).cpu()
            if forecast.shape != truth.shape:
                raise ValueError(f"source {name!r} returned shape {tuple(forecast.shape)}, "
                                 f"expected {tuple(truth.shape)} (inits, steps, C, H, W)")
            forecast = physical_at(to_physical, forecast, valid_times)
            mse_days[name].append(lat_weighted_mse(forecast, truth, lat).double())
            acc_days[name].append(lat_weighted_acc(forecast, truth, reference, lat).double())
    rows = []
    n = len(inits)
    for name in sources:
        mse, acc_day = torch.cat(mse_days[name]).numpy(), torch.cat(acc_days[name]).numpy()
        rmse, acc = np.sqrt(mse.mean(0)), acc_day.mean(0)
        if intervals:
            rmse_ci = bootstrap_rmse(mse, block=block, n_resamples=n_resamples, seed=seed)
            acc_ci = bootstrap_acc(acc_day, block=block, n_resamples=n_resamples, seed=seed)
        for lead in range(steps):
            for c, variable in enumerate(channels):
                row = {"forecaster": name, "lead": lead + 1, "variable": variable,
                       "rmse": float(rmse[lead, c]), "acc": float(acc[lead, c]), "n": n}
                if intervals:
                    row.update(rmse_low=float(rmse_ci.low[lead, c]),
                               rmse_high=float(rmse_ci.high[lead, c]),
                               acc_low=float(acc_ci.low[lead, c]),
                               acc_high=float(acc_ci.high[lead, c]))
                rows.append(row)
    return pd.DataFrame(rows)


def skill_vs_mask_ratio(forecasters: Mapping[str, LatentForecaster],
                        fields: np.ndarray | Tensor, times: Any, lat: Any,
                        climatology: np.ndarray | Tensor,
                        to_physical: Callable[..., Tensor], channels: Sequence[str],
                        ratios: Sequence[float], kind: str = "pixel", seed: int = 0,
                        inits: Any = None, batch_size: int = 64, **mask_params: Any
                        ) -> pd.DataFrame:
    """Lead-1 forecast skill when the context days are only partly observed.

    For each missing fraction ``r`` one mask per day is drawn
    (:func:`geofusion.data.observations.make_mask` of ``kind`` with a generator seeded by ``seed``:
    the
    same masks for every forecaster), each forecaster encodes the masked days
    (:meth:`LatentForecaster.encode`, i.e. ``embed_observed``: 0 where missing, plus the mask
    channel for methods trained on sparse views), forecasts the next day and decodes it; the
    forecast is scored against the **complete** next-day field (:func:`score_forecasts`, on
    the initialisations every forecaster can use).

    Args:
        forecasters: name -> :class:`LatentForecaster`.
        fields, times, lat, climatology, to_physical, channels, inits, batch_size: as
            :func:`score_forecasts` (default initialisations: every day with the longest
            context of the forecasters and a next day).
        ratios: missing fractions in [0, 1).
        kind, **mask_params: mask kind and its parameters (``patch_size``, ...).
        seed: seeds the masks.

    Returns:
        DataFrame with columns ``forecaster``, ``ratio``, ``variable``, ``rmse``, ``acc``, ``n``.
    """
    if not forecasters:
        raise ValueError("no forecasters given; pass a dict name -> LatentForecaster")
    x = _as_float_tensor(fields)
    context = max(f.context for f in forecasters.values())
    tables = []
    for ratio in ratios:
        mask = make_mask((len(x), *x.shape[-2:]), float(ratio), kind,
                         generator=torch.Generator().manual_seed(seed), **mask_params)
        sources = {name: f.source(f.encode(x, mask)) for name, f in forecasters.items()}
        table = score_forecasts(sources, x, times, lat, climatology, to_physical, channels,
                                context=context, steps=1, inits=inits, batch_size=batch_size)
        tables.append(table.drop(columns="lead").assign(ratio=float(ratio)))
    out = pd.concat(tables, ignore_index=True)
    return out[["forecaster", "ratio", "variable", "rmse", "acc", "n"]]
