"""Is the LSTM or the representation the limit of notebook 08's latent forecasts? (issue 24)

Notebook 08 scores the LSTM on every latent and on its EOF twin (the same LSTM on the EOF code
of the latent's size) next to the linear inverse model (LIM) in that code. This script swaps
the *propagator* and keeps everything else: in the EOF twin's
:class:`~geofusion.downstream.forecasting.LatentForecaster` (same EOF code, decoder,
standardisation and "+ residual" read-out, ``rho_k`` fitted to the forecaster's own errors on
the training days exactly as the notebook fits the LSTM's), the LSTM is replaced by the LIM's
one-day step ``z_{t+1} = M z_t`` (fitted on consecutive training days,
:mod:`geofusion.verification.linear_inverse_model`). It prints the test-block RMSE of 2 m
temperature and geopotential at leads 1..max_lead, on notebook 08's forecast start days, for

- damped anomaly persistence (the target's reference);
- the EOF twin's LSTM, decoded and + residual (notebook 08's rows);
- the LIM propagator, decoded (notebook 08's LIM row) and + residual (the swap);
- the + residual read-out of the *true* latent (the perfect-latent ceiling).

Where "LIM + residual" beats the LSTM + residual, the LSTM, not the code, is what limits the
forecast. Needs the quick profile's models (notebook 08 run once with ``run_dir``); nothing is
trained here except the ``rho_k`` of the swap. Usage::

    python benchmarks/forecast_twins.py [--run-dir runs/quick] [--cache-dir runs/cache]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from geofusion import data
from geofusion.downstream import forecast_scores, forecasting
from geofusion.downstream.eof_twin import eof_twin
from geofusion.downstream.reconstruction import fit_eof_code
from geofusion.experiments.profiles import PROFILES
from geofusion.learning.config import TrainConfig
from geofusion.verification import baselines, linear_inverse_model


class LIMStep(nn.Module):
    """The LIM's one-day step on standardised latents, in the LSTM's interface
    (``forward(context (B, T, k), horizon=1) -> (B, 1, k)``)."""

    def __init__(self, propagator: np.ndarray, standardiser: forecasting.LatentStandardiser
                 ) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.as_tensor(propagator, dtype=torch.float32),
                              requires_grad=False)
        self.standardiser = standardiser

    def forward(self, context: torch.Tensor, horizon: int = 1) -> torch.Tensor:
        z = self.standardiser.inverse(context[:, -1:])
        return self.standardiser.transform(z @ self.m.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/quick")
    parser.add_argument("--cache-dir", default="runs/cache")
    args = parser.parse_args()
    p = PROFILES["quick"]["08_forecasting"]
    prepared = data.load(None, level=500, start="2000-01-01", end="2010-12-31",
                         cache_dir=args.cache_dir, seed=0, space="anomaly", train_fraction=0.6,
                         test_fraction=0.2)
    code = fit_eof_code(prepared, p["latent_dim"])
    method, decoder = eof_twin(code)
    config = TrainConfig(epochs=p["forecast_epochs"], batch_size=64, lr=1e-3, seed=0,
                         device="cpu", patience=p["forecast_patience"])
    lstm, _, _ = forecasting.fit_latent_forecaster(
        method, decoder, prepared, args.run_dir, config,
        representation=Path(f"eof_code-{p['latent_dim']}").name, context=p["context"],
        hidden_dim=p["lstm_hidden"], horizon=1, seed=0, progress=False)
    lim = linear_inverse_model.fit_linear_inverse_model(prepared, code.k, code=code)
    swap = forecasting.LatentForecaster(method, decoder, LIMStep(lim.propagator, lstm.standardiser),
                                        lstm.standardiser, p["context"])
    max_lead = p["max_lead"]
    for f in (lstm, swap):
        f.fit_residual_damping(prepared, max_lead, latents=lstm.latents["train"],
                               target=p["residual_target"], stride=p["residual_stride"])
    n_eval = p["n_eval_days"]
    fields, times = prepared.test[:n_eval], prepared.test_times[:n_eval]
    latents = lstm.latents["test"][:n_eval]
    damped = baselines.fit_damped_persistence(prepared, max_lead=max_lead)
    sources = {
        "damped_persistence": baselines.damped_persistence_source(damped, fields, times),
        "eof_code LSTM": lstm.source(latents),
        "eof_code LSTM + residual": lstm.source(latents, fields),
        "LIM (decoded)": linear_inverse_model.linear_inverse_model_source(lim, fields, times),
        "LIM propagator + residual": swap.source(latents, fields),
        "perfect latent + residual": lstm.ceiling_source(latents, fields),
    }
    inits = np.arange(p["context"] - 1, n_eval - max_lead)
    scores = forecast_scores.score_forecasts(
        sources, fields, times, prepared.lat, baselines.training_climatology(prepared),
        prepared.destandardise, list(prepared.channels), context=p["context"], steps=max_lead,
        inits=inits)
    table = scores[scores.variable.isin(["2m_temperature", "geopotential"])].pivot_table(
        index="forecaster", columns=["variable", "lead"], values="rmse").loc[list(sources)]
    rho = swap.residual_rho.numpy()
    print(f"test block, {len(inits)} forecasts from {str(times[inits[0]])[:10]}; "
          f"synthetic={prepared.synthetic}; median rho_k of the swap, t2m: "
          f"{np.round(np.median(rho[:, 0].reshape(max_lead, -1), axis=1), 3).tolist()}")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.round(3).to_string())


if __name__ == "__main__":
    main()
