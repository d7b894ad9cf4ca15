"""Latent forecasting on the quick profile: decoder ceiling, LSTM variants, cost and skill.

Trains (or loads, through :func:`geofusion.learning.model_cache.pretrained`) the quick profile's
autoencoder,
then for every LSTM variant given (context, training horizon, epochs, patience, hidden size)
trains a latent LSTM with :func:`geofusion.downstream.forecasting.fit_latent_forecaster` and
scores, on
notebook 08's forecast start days (the first ``--n-eval-days`` validation days), the
**decoded** forecast ``d(z_hat)`` and the **decoded + damped residual** forecast
``d(z_hat_{t+k}) + rho_k (x_t - d(z_t))`` against persistence, the day-of-year climatology and
damped anomaly persistence, with the decoder ceiling ``d(z_{t+k})`` and the untrained LSTM
(latent persistence) + residual as references. ``rho_k`` is fitted to the LSTM's own forecast
errors on training days (``target="forecast"``, notebook 08's quick setting); the row
"(rho: residual)" fits it to the residual ``k`` days later instead. Prints one table per
variant (RMSE in physical units at leads 1, 3 and the last) and the training time and
stopping epoch. Not a test: run it
and record the output with the machine and its load (reports/benchmarks/latent_forecasting.md).

    python benchmarks/latent_forecasting.py --run-dir runs/quick \\
        --variants context=10,horizon=1 context=30,horizon=1 context=10,horizon=3

Each variant is ``key=value`` pairs joined by commas (keys: context, horizon, epochs,
patience, hidden, lr, weight_decay); unspecified keys take the ``--epochs``, ``--patience``...
defaults.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from geofusion import data
from geofusion.downstream import forecast_scores, forecasting
from geofusion.learning import model_cache
from geofusion.learning.config import TrainConfig
from geofusion.learning.training import describe_stop
from geofusion.verification import baselines

VARIANT_KEYS = {"context": int, "horizon": int, "epochs": int, "patience": int, "hidden": int,
                "lr": float, "weight_decay": float}


def parse_variant(text: str, defaults: dict) -> dict:
    variant = dict(defaults)
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in VARIANT_KEYS:
            raise SystemExit(f"variant item {item!r}: expected key=value with key in "
                             f"{sorted(VARIANT_KEYS)}")
        variant[key] = VARIANT_KEYS[key](value)
    return variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default=None, help="models are cached here (default: temp)")
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--variants", nargs="*", default=["context=10,horizon=1"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--ae-epochs", type=int, default=15)
    parser.add_argument("--ae-patience", type=int, default=3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--n-eval-days", type=int, default=180)
    parser.add_argument("--max-lead", type=int, default=7)
    parser.add_argument("--residual-stride", type=int, default=4,
                        help="start days of the forecast-error fit of rho (every n-th)")
    args = parser.parse_args()
    pd.set_option("display.width", 200)

    run_dir = args.run_dir or tempfile.mkdtemp(prefix="latent_forecasting-")
    prepared = data.load(None, level=500, start="2000-01-01", end="2007-12-31",
                         cache_dir=args.cache_dir)
    channels = list(prepared.channels)
    print(f"data: {'SYNTHETIC' if prepared.synthetic else 'ERA5'} train {prepared.train.shape}, "
          f"valid {prepared.valid.shape}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load {os.getloadavg()[0]:.1f}")
    ae_config = TrainConfig(epochs=args.ae_epochs, batch_size=64, lr=1e-3, seed=0, device="cpu",
                            patience=args.ae_patience, lr_schedule="cosine", warmup_epochs=1)
    ae, ae_history, ae_dir = model_cache.pretrained("autoencoder", prepared, run_dir, ae_config,
                                             seed=0, progress=False, width=args.width,
                                             latent_dim=1000)
    print(f"autoencoder {ae_dir.name}: {describe_stop(ae_history)}")

    n_eval = min(args.n_eval_days, len(prepared.valid))
    fields, times = prepared.valid[:n_eval], prepared.valid_times[:n_eval]
    clim = baselines.training_climatology(prepared)
    damped = baselines.fit_damped_persistence(prepared, max_lead=args.max_lead)
    references = {"persistence": forecast_scores.persistence_source(fields),
                  "climatology": forecast_scores.climatology_source(clim, times),
                  "damped_persistence": baselines.damped_persistence_source(damped, fields,
                                                                            times)}
    score_args = (fields, times, prepared.lat, clim, prepared.destandardise, channels)
    defaults = {"epochs": args.epochs, "patience": args.patience, "hidden": args.hidden,
                "lr": args.lr, "weight_decay": args.weight_decay, "horizon": 1, "context": 10}
    leads = sorted({1, 3, args.max_lead})
    summary = []
    # Every variant is scored on the start days of the longest context, so tables compare.
    longest = max(parse_variant(t, defaults)["context"] for t in args.variants)
    inits = np.arange(longest - 1, n_eval - args.max_lead)
    for text in args.variants:
        v = parse_variant(text, defaults)
        config = TrainConfig(epochs=v["epochs"], batch_size=64, lr=v["lr"], seed=0,
                             device="cpu", patience=v["patience"],
                             weight_decay=v["weight_decay"])
        tic = time.perf_counter()
        forecaster, history, _ = forecasting.fit_latent_forecaster(
            ae, ae.decoder, prepared, run_dir, config, representation=ae_dir.name,
            context=v["context"], hidden_dim=v["hidden"], horizon=v["horizon"], seed=0,
            progress=False)
        train_s = time.perf_counter() - tic
        # rho fitted to what persists of the residual, on a copy sharing the trained LSTM.
        by_residual = forecasting.LatentForecaster(ae, ae.decoder, forecaster.model,
                                                   forecaster.standardiser, v["context"],
                                                   sliding=forecaster.sliding)
        by_residual.fit_residual_damping(prepared, args.max_lead,
                                         latents=forecaster.latents["train"])
        tic = time.perf_counter()
        forecaster.fit_residual_damping(prepared, args.max_lead,
                                        latents=forecaster.latents["train"], target="forecast",
                                        stride=args.residual_stride)
        rho_s = time.perf_counter() - tic
        untrained = forecasting.LatentForecaster(
            ae, ae.decoder, forecasting.LatentSeq2Seq(1000, 8), forecaster.standardiser,
            v["context"])
        untrained.residual_rho = by_residual.residual_rho
        latents = forecaster.latents["valid"][:n_eval]
        sources = {"lstm decoded": forecaster.source(latents),
                   "lstm + residual": forecaster.source(latents, fields),
                   "lstm + residual (rho: residual)": by_residual.source(latents, fields),
                   "decoder ceiling": forecaster.ceiling_source(latents),
                   "latent persistence + residual": untrained.source(latents, fields),
                   **references}
        scores = forecast_scores.score_forecasts(sources, *score_args, context=longest,
                                                 steps=args.max_lead, inits=inits)
        table = scores[scores.lead.isin(leads)].pivot(index=["forecaster", "lead"],
                                                      columns="variable", values="rmse")
        print(f"\n### {text}: {train_s:.0f} s training ({train_s / len(history):.1f} s/epoch), "
              f"{rho_s:.0f} s residual fit (target forecast); {describe_stop(history)}; "
              f"load {os.getloadavg()[0]:.1f}")
        print("valid_loss per epoch: " + " ".join(f"{x:.4f}" for x in history["valid_loss"]))
        print(table[channels].to_string(float_format=lambda x: f"{x:.4g}"))
        rmse = scores.set_index(["forecaster", "lead", "variable"])["rmse"]
        for lead in leads:
            for variable in ("2m_temperature", "geopotential"):
                best_ref = min(rmse["persistence", lead, variable],
                               rmse["climatology", lead, variable])
                summary.append({"variant": text, "lead": lead, "variable": variable,
                                "lstm + residual / min(persistence, climatology)":
                                    rmse["lstm + residual", lead, variable] / best_ref,
                                "lstm + residual / persistence":
                                    rmse["lstm + residual", lead, variable]
                                    / rmse["persistence", lead, variable],
                                "lstm + residual / damped persistence":
                                    rmse["lstm + residual", lead, variable]
                                    / rmse["damped_persistence", lead, variable]})
    print("\nratios (below 1: the LSTM + residual forecast is better)")
    print(pd.DataFrame(summary).set_index(["variant", "lead", "variable"])
          .to_string(float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
