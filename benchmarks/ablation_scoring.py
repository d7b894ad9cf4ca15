"""Benchmark: what notebook 11's decoded scores measure, per decoder and per DDPM setting.

On the quick profile's ``baseline`` encoder of notebook 11 (sparse-view Barlow Twins, width
4, latent 64, two epochs; trained here, or loaded from ``--run-dir`` when the notebook cached
it) and the SYNTHETIC default data (unless ``--data-path``), on the notebook's first
``--days`` validation days, physical units, latitude-weighted:

1. reconstruction RMSE per variable of every decoder of the frozen latent, from the complete
   day and from a pixel observation missing 50 % of the points, next to the training mean and
   the day-of-year climatology, with each decoder's fitting time: the convolutional frozen
   decoder at the old quick setting (2 epochs, width 8, 256 days) and at notebook 06's
   (6 epochs, width 16, 512 days), and the closed-form ridge decoder (penalties 1 and 100);
2. the probabilistic 1-day latent forecast (a conditional DDPM of ``p(z_{t+1} | z_t)``,
   decoded by the ridge decoder) at several training / sampling settings: CRPS and
   spread/skill per variable and the latent MSE of the ensemble mean (standardised latents),
   next to a linear-Gaussian forecast (ridge mean, Gaussian residual covariance of the
   training days: the closed-form model a DDPM should at least match), the deterministic
   ridge forecast (CRPS = MAE), persistence and the climatological ensemble.

    OMP_NUM_THREADS=1 python benchmarks/ablation_scoring.py --run-dir runs/quick

Not a test: run it and record the output with the machine and the load it came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from geofusion import data
from geofusion.downstream.forecasting import LatentStandardiser
from geofusion.downstream.reconstruction import LatentReconstructor, fit_frozen_decoder
from geofusion.experiments import ablations
from geofusion.learning import model_cache
from geofusion.learning.config import TrainConfig
from geofusion.models.ridge_decoder import fit_ridge_decoder
from geofusion.verification.baselines import climatology_forecast, training_climatology
from geofusion.verification.ensembles import climatological_ensemble, ensemble_scores
from geofusion.verification.metrics import lat_weighted_mse

DDPM_SETTINGS = [  # (label, train pairs (None: all), epochs, batch, lr, sampling steps, hidden)
    ("old quick: 512 pairs, 20 ep, batch 64, 50 steps, h256", 512, 20, 64, 1e-3, 50, 256),
    ("all pairs, 20 ep, batch 64, 50 steps, h256", None, 20, 64, 1e-3, 50, 256),
    ("all pairs, 100 ep, batch 256, lr 2e-3, 50 steps, h256", None, 100, 256, 2e-3, 50, 256),
    ("all pairs, 100 ep, batch 256, lr 2e-3, 100 steps, h256", None, 100, 256, 2e-3, 100, 256),
    ("all pairs, 60 ep, batch 256, lr 3e-3, 100 steps, h128", None, 60, 256, 3e-3, 100, 128),
    ("new quick: 1024 pairs, 120 ep, batch 256, lr 3e-3, 100 steps, h128", 1024, 120, 256,
     3e-3, 100, 128),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--run-dir", default="runs/quick")
    parser.add_argument("--days", type=int, default=64)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-conv", action="store_true", help="no convolutional decoders")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    prepared = data.load(args.data_path, level=500, start="2000-01-01", end="2007-12-31",
                         cache_dir=args.cache_dir, seed=0)
    print(f"data: {'SYNTHETIC default' if prepared.synthetic else args.data_path}")
    config = TrainConfig(epochs=2, batch_size=64, lr=1e-3, seed=0, device="cpu")
    observation = {"kind": "pixel", "min_ratio": 0.0, "max_ratio": 0.9, "noise_std": 0.1,
                   "noise_length": 2.0, "both_views": False}
    method, _, model_dir = model_cache.pretrained(
        "barlow_twins", prepared, args.run_dir, config, seed=0, width=4, latent_dim=64,
        proj_dim=32, proj_hidden_dim=128, lambd=0.01, augmentation="native",
        observation=observation, progress=False)
    channels, lat, n = list(prepared.channels), prepared.lat, args.days
    encoder = LatentReconstructor(method, nn.Identity())
    train_latents = encoder.latents(torch.as_tensor(prepared.train))
    days = prepared.valid[:n + 1]
    truth = np.asarray(prepared.destandardise(days))
    observed_fields, observed = ablations._observe(prepared, days[:n], 0.5, 0.1, 2.0, 0)
    complete = encoder.latents(torch.as_tensor(days))
    sparse = encoder.latents(observed_fields, observed)

    def rmse(standardised: np.ndarray, target: np.ndarray) -> list[float]:
        physical = np.asarray(prepared.destandardise(np.asarray(standardised)))
        return np.sqrt(np.asarray(lat_weighted_mse(physical, target, lat)).mean(0)).tolist()

    rows = {}
    mean = np.broadcast_to(prepared.train.mean(0), days[:n].shape)
    rows["training mean"] = (0.0, rmse(mean, truth[:n]), None)
    clim = climatology_forecast(training_climatology(prepared), prepared.valid_times[:n + 1])
    rows["day-of-year climatology"] = (0.0, rmse(clim[:n], truth[:n]), None)
    decoders: dict[str, tuple[float, nn.Module]] = {}
    if not args.skip_conv:
        for label, epochs, width, n_days in (("conv 2 ep, width 8, 256 days", 2, 8, 256),
                                             ("conv 6 ep, width 16, 512 days", 6, 16, 512)):
            start = time.perf_counter()
            model, _ = fit_frozen_decoder(
                method, model_dir, prepared, args.run_dir,
                TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=0, device="cpu"), 64,
                n_days=n_days, width=width, seed=0, progress=False)
            decoders[label] = (time.perf_counter() - start, model.decoder)
    for ridge in (1.0, 100.0):
        start = time.perf_counter()
        decoder = fit_ridge_decoder(train_latents, prepared.train, ridge=ridge)
        decoders[f"ridge {ridge:g} (all training days)"] = (time.perf_counter() - start,
                                                            decoder)
    for label, (seconds, decoder) in decoders.items():
        model = LatentReconstructor(method, decoder)
        rows[label] = (seconds, rmse(model.decode(complete[:n]).numpy(), truth[:n]),
                       rmse(model.decode(sparse).numpy(), truth[:n]))
    table = pd.DataFrame(
        {label: {"fit s": round(s, 1),
                 **{f"complete {c[:6]}": f"{v:.4g}" for c, v in zip(channels, full, strict=True)},
                 **{f"50% {c[:6]}": ("" if half is None else f"{v:.4g}")
                    for c, v in zip(channels, half if half is not None else full, strict=True)}}
         for label, (s, full, half) in rows.items()}).T
    print("\n1. Reconstruction RMSE of the validation days (physical units)")
    print(table.to_string())

    ridge = LatentReconstructor(method, fit_ridge_decoder(train_latents, prepared.train))
    following = truth[1:n + 1]
    results = {}

    def ensemble_row(members: np.ndarray, seconds: float, latent_mse: float | None) -> dict:
        scores = ensemble_scores(members, following, lat, channels)
        row = {"fit s": round(seconds, 1),
               "latent MSE": "" if latent_mse is None else f"{latent_mse:.3g}"}
        row.update({f"CRPS {c[:6]}": f"{v:.4g}" for c, v in scores["crps"].items()})
        if len(members) > 1:
            row.update({f"s/s {c[:6]}": f"{v:.2f}" for c, v in scores["spread_skill"].items()})
        return row

    scaler = LatentStandardiser.fit(train_latents)
    target = scaler.transform(complete[1:n + 1])
    pairs = np.arange(len(train_latents) - 1)
    for label, n_pairs, epochs, batch, lr, steps, hidden in DDPM_SETTINGS:
        chosen = pairs if n_pairs is None else np.sort(
            np.random.default_rng(0).choice(pairs, n_pairs, replace=False))
        start = time.perf_counter()
        model, own = ablations.fit_conditional_diffusion(
            train_latents[chosen + 1], train_latents[chosen],
            {"hidden": hidden, "layers": 2, "steps": steps, "epochs": epochs,
             "batch_size": batch, "lr": lr}, seed=3)
        seconds = time.perf_counter() - start
        samples = model.sample(own.transform(complete[:n]), args.members,
                               torch.Generator().manual_seed(4))
        latent_mse = float(((scaler.transform(own.inverse(samples)).mean(0) - target) ** 2)
                           .mean())
        members = np.asarray(prepared.destandardise(ridge.decode(
            own.inverse(samples).reshape(-1, samples.shape[-1])).numpy())).reshape(
                args.members, n, *truth.shape[1:])
        results[f"DDPM {label}"] = ensemble_row(members, seconds, latent_mse)
    z = scaler.transform(train_latents).double().numpy()
    design = np.concatenate([z[:-1], np.ones((len(z) - 1, 1))], axis=1)
    penalty = np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.linalg.solve(design.T @ design + penalty, design.T @ z[1:])
    chol = np.linalg.cholesky(np.cov((z[1:] - design @ weights).T) + 1e-6 * np.eye(z.shape[1]))
    start_z = scaler.transform(complete[:n]).double().numpy()
    mean_z = np.concatenate([start_z, np.ones((n, 1))], axis=1) @ weights
    draws = mean_z[None] + np.random.default_rng(0).normal(size=(args.members, *mean_z.shape)) \
        @ chol.T
    members = np.asarray(prepared.destandardise(ridge.decode(scaler.inverse(torch.as_tensor(
        draws.reshape(-1, z.shape[1]), dtype=torch.float32))).numpy())).reshape(
            args.members, n, *truth.shape[1:])
    results["linear-Gaussian"] = ensemble_row(
        members, 0.0, float(((torch.as_tensor(draws).mean(0) - target.double()) ** 2).mean()))
    deterministic = np.asarray(prepared.destandardise(ablations.latent_ridge_forecast(
        ridge, prepared, n, train_latents=train_latents)))
    results["deterministic ridge forecast"] = ensemble_row(deterministic[None], 0.0, None)
    results["persistence"] = ensemble_row(truth[None, :n], 0.0, None)
    train = np.asarray(prepared.destandardise(prepared.train))
    results["climatological ensemble"] = ensemble_row(climatological_ensemble(
        train, prepared.train_times, prepared.valid_times[1:n + 1], window=15,
        max_members=args.members, seed=0), 0.0, None)
    print(f"\n2. Probabilistic 1-day latent forecast, {args.members} members, "
          "decoded by the ridge decoder (CRPS physical units; s/s spread/skill)")
    print(pd.DataFrame(results).T.fillna("").to_string())


if __name__ == "__main__":
    main()
