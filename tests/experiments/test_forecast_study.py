"""Notebook 08's sources: the references are the baselines fitted directly, the latent sources
are each forecaster's own, under the names the notebook's tables use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofusion.downstream.forecast_scores import persistence_source
from geofusion.downstream.reconstruction import fit_eof_code
from geofusion.experiments.forecast_study import REFERENCES, latent_sources, reference_sources
from geofusion.verification import baselines, linear_inverse_model, linear_regression
from tests.downstream.test_forecasting import two_spaces, untrained_forecaster


def test_reference_sources_are_the_baselines_fitted_on_the_training_days():
    _, prepared = two_spaces(3)
    fields, times = prepared.test[:60], prepared.test_times[:60]
    code = fit_eof_code(prepared, 4)
    sources = reference_sources(prepared, fields, times, max_lead=3, lr_components=6, code=code)
    assert tuple(sources) == REFERENCES
    damped = baselines.fit_damped_persistence(prepared, max_lead=3)
    regression = linear_regression.fit_linear_regression(prepared, max_lead=3, n_components=6)
    lim = linear_inverse_model.fit_linear_inverse_model(prepared, 4, code=code)
    direct = {
        "persistence": persistence_source(fields, times, prepared.as_valid_at),
        "damped_persistence": baselines.damped_persistence_source(damped, fields, times),
        "linear_regression": linear_regression.linear_regression_source(regression, fields,
                                                                        times),
        "linear_inverse_model": linear_inverse_model.linear_inverse_model_source(lim, fields,
                                                                                 times)}
    inits = np.array([0, 10, 40])
    for name, source in direct.items():  # the same computation: bit for bit
        torch.testing.assert_close(sources[name](inits, 3), source(inits, 3), rtol=0, atol=0)
    clim = sources["climatology"](inits, 2)
    assert clim.shape == (3, 2, 5, 4, 8)
    # The training climatology is zero in the anomaly space (up to float32 rounding).
    assert float(clim.abs().max()) < 1e-5
    # k instead of the code: the LIM's own EOFs of the training days, the same ones.
    again = reference_sources(prepared, fields, times, max_lead=3, lr_components=6, k=4)
    torch.testing.assert_close(again["linear_inverse_model"](inits, 3),
                               sources["linear_inverse_model"](inits, 3), rtol=0, atol=0)
    with pytest.raises(ValueError, match="EOF code"):
        reference_sources(prepared, fields, times, max_lead=3)


def test_latent_sources_name_every_forecast_of_every_forecaster():
    forecaster, fields = untrained_forecaster(context=4)
    forecaster.fit_residual_damping(
        type("P", (), {"train": fields.numpy(), "train_times": np.arange(
            "2001-01-01", 20, dtype="datetime64[D]").astype("datetime64[ns]")})(), 2)
    latents = forecaster.encode(fields)
    out = latent_sources({"ae": forecaster}, {"ae": latents}, fields)
    assert list(out["lstm"]) == ["ae", "ae + residual"]
    assert list(out["ablation"]) == ["ae latent persistence + residual"]
    assert list(out["ceilings"]) == ["ae (decoder ceiling)", "ae + residual (perfect latent)"]
    inits = np.array([3, 9])
    pairs = [(out["lstm"]["ae"], forecaster.source(latents)),
             (out["lstm"]["ae + residual"], forecaster.source(latents, fields)),
             (out["ceilings"]["ae (decoder ceiling)"], forecaster.ceiling_source(latents)),
             (out["ceilings"]["ae + residual (perfect latent)"],
              forecaster.ceiling_source(latents, fields))]
    for got, expected in pairs:
        torch.testing.assert_close(got(inits, 2), expected(inits, 2), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no latents"):
        latent_sources({"ae": forecaster}, {}, fields)
