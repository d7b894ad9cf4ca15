"""Notebook 08's forecast sources, assembled in one place.

:func:`reference_sources` fits the field-space baselines and the linear inverse model on the
training days and returns them as forecast sources on an evaluation series;
:func:`latent_sources` gives every :class:`~geofusion.downstream.forecasting.LatentForecaster`
its decoded and "+ residual" forecasts, the "latent persistence + residual" ablation and the
ceilings (:data:`~geofusion.experiments.forecast_scorecard.CEILING` and
:data:`~geofusion.experiments.forecast_scorecard.PERFECT_LATENT`), named as notebook 08's
tables name them. A forecast source is ``source(inits, steps) -> (B, steps, C, H, W)``
(:mod:`geofusion.downstream.forecast_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geofusion.data.eof import EOFCode
from geofusion.downstream.forecast_scores import climatology_source, persistence_source
from geofusion.downstream.forecasting import ForecastSource, LatentForecaster
from geofusion.experiments.forecast_scorecard import CEILING, PERFECT_LATENT
from geofusion.verification import baselines, linear_inverse_model, linear_regression

__all__ = ["reference_sources", "latent_sources", "REFERENCES"]

#: The reference forecasts of :func:`reference_sources`, in order.
REFERENCES: tuple[str, ...] = ("persistence", "climatology", "damped_persistence",
                               "linear_regression", "linear_inverse_model")


def reference_sources(prepared: Any, fields: Any, times: Any, max_lead: int,
                      damped_pooling: str = "gridpoint", lr_components: int = 100,
                      code: EOFCode | None = None, k: int | None = None
                      ) -> dict[str, ForecastSource]:
    """The reference forecasts (:data:`REFERENCES`) on the series ``fields`` (days ``times``).

    Persistence (the physical field of the initial day, ``prepared.as_valid_at``), the
    training day-of-year climatology, damped anomaly persistence
    (:func:`geofusion.verification.baselines.fit_damped_persistence`, ``damped_pooling``),
    WeatherBench linear regression (``lr_components`` principal components) and the linear
    inverse model in the EOF code ``code`` (or ``k`` EOFs fitted on the training days),
    :mod:`geofusion.verification.linear_inverse_model`. Everything is fitted on
    ``prepared.train`` only.
    """
    if code is None and k is None:
        raise ValueError("the linear inverse model needs its EOF code: pass code= (the EOF "
                         "twin's) or k= (fitted on the training days)")
    lim = linear_inverse_model.fit_linear_inverse_model(
        prepared, code.k if code is not None else int(k), code=code)
    damped = baselines.fit_damped_persistence(prepared, max_lead=max_lead,
                                              pooling=damped_pooling)
    regression = linear_regression.fit_linear_regression(prepared, max_lead=max_lead,
                                                         n_components=lr_components)
    return {
        "persistence": persistence_source(fields, times, prepared.as_valid_at),
        "climatology": climatology_source(baselines.training_climatology(prepared), times),
        "damped_persistence": baselines.damped_persistence_source(damped, fields, times),
        "linear_regression": linear_regression.linear_regression_source(regression, fields,
                                                                        times),
        "linear_inverse_model": linear_inverse_model.linear_inverse_model_source(lim, fields,
                                                                                 times),
    }


def latent_sources(forecasters: Mapping[str, LatentForecaster], latents: Mapping[str, Any],
                   fields: Any) -> dict[str, dict[str, ForecastSource]]:
    """Every forecaster's sources on one evaluation series, by role.

    Args:
        forecasters: name -> forecaster with a fitted residual damping.
        latents: name -> its standardised latents ``(T, D)`` of ``fields``.
        fields: ``(T, C, H, W)`` the series the latents were encoded from.

    Returns:
        ``{"lstm": {name, name + " + residual"}, "ablation": {name + " latent persistence +
        residual"}, "ceilings": {CEILING, PERFECT_LATENT}}``, each name -> source
        (:meth:`~geofusion.downstream.forecasting.LatentForecaster.source`,
        ``latent_persistence_source``, ``ceiling_source`` without and with ``fields``).
    """
    missing = sorted(set(forecasters) - set(latents))
    if missing:
        raise ValueError(f"no latents for {missing}; pass latents[name] for every forecaster")
    lstm: dict[str, ForecastSource] = {}
    ablation: dict[str, ForecastSource] = {}
    ceilings: dict[str, ForecastSource] = {}
    for name, f in forecasters.items():
        lstm[name] = f.source(latents[name])
        ceilings[CEILING.format(name)] = f.ceiling_source(latents[name])
        ablation[f"{name} latent persistence + residual"] = \
            f.latent_persistence_source(latents[name], fields)
    for name, f in forecasters.items():
        lstm[f"{name} + residual"] = f.source(latents[name], fields)
        ceilings[PERFECT_LATENT.format(name)] = f.ceiling_source(latents[name], fields)
    return {"lstm": lstm, "ablation": ablation, "ceilings": ceilings}
