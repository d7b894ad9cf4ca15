"""Which quick-profile autoencoder beats the day-of-year climatology on every variable?

Trains the autoencoder of notebook 02 (width 8, latent 1000, the quick profile's schedule:
Adam, warm-up + cosine, early stopping with best-weight restore) once per encoder variant on
the quick profile's data (the SYNTHETIC default, 2000-2007, 500 hPa) and prints one row per
variant: parameters, seconds per epoch, epochs run (and the best epoch), and per variable the
latitude-weighted RMSE on every validation day divided by the day-of-year climatology's RMSE
(fitted on the training days; below 1 beats it). The variants are encoder options of
:class:`geofusion.models.resnet.ResNetEncoder` (``stem``, ``pool``, ``stage_channels``).

Not a test: run it and record the table with the machine and its load. Time ratios count only
between variants run back to back under the same load.

    python benchmarks/quick_autoencoder.py                        # every variant
    python benchmarks/quick_autoencoder.py --variants current stride2_flatten --epochs 12
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from geofusion import data
from geofusion.learning.config import TrainConfig
from geofusion.learning.methods import build_method
from geofusion.learning.training import fit
from geofusion.models.resnet import count_parameters
from geofusion.verification import baselines, metrics

#: Encoder options per variant (``build_method``'s ``encoder_*`` arguments).
VARIANTS: dict[str, dict[str, Any]] = {
    "current": {},
    "flatten": {"encoder_pool": "flatten"},
    "stage4_128": {"encoder_stage_channels": [8, 16, 32, 128]},
    "stride2_flatten": {"encoder_stem": "cifar_stride2", "encoder_pool": "flatten"},
    "stride2_flatten_st4_32": {"encoder_stem": "cifar_stride2", "encoder_pool": "flatten",
                               "encoder_stage_channels": [8, 16, 32, 32]},
    "cifar_flatten": {"encoder_stem": "cifar", "encoder_pool": "flatten"},
    "linear_decoder": {"ae_decoder": "linear"},
    "flatten_linear_decoder": {"encoder_pool": "flatten", "ae_decoder": "linear"},
    "stride2_flatten_linear_decoder": {"encoder_stem": "cifar_stride2",
                                       "encoder_pool": "flatten", "ae_decoder": "linear"},
    "decoder_width_32": {"ae_decoder_width": 32},
    # The loss weighs each channel by the inverse of the climatology's validation-free error
    # (its MSE on the training days, standardised units): "climatology" below.
    "stride2_flatten_linear_decoder_weighted": {
        "encoder_stem": "cifar_stride2", "encoder_pool": "flatten", "ae_decoder": "linear",
        "ae_channel_weights": "climatology"},
    "linear_decoder_weighted": {"ae_decoder": "linear", "ae_channel_weights": "climatology"},
}


def climatology_weights(prepared: data.PreparedData, climatology: np.ndarray) -> list[float]:
    """Per channel ``1 / MSE`` of the day-of-year climatology on the *training* days
    (standardised units): the loss weights that make each channel's residual count alike."""
    anomaly = prepared.train - baselines.climatology_forecast(climatology, prepared.train_times)
    return [float(1.0 / np.mean(anomaly[:, c] ** 2)) for c in range(anomaly.shape[1])]


def rmse_ratios(method: torch.nn.Module, prepared: data.PreparedData,
                climatology: np.ndarray, anomaly: bool = False
                ) -> dict[str, tuple[float, float]]:
    """Per variable ``(model RMSE, climatology RMSE)`` in physical units on every validation
    day, latitude-weighted (the root after the time mean). ``anomaly``: the model encodes and
    reconstructs the departure from the climatology, which is added back."""
    clim_valid = torch.as_tensor(
        baselines.climatology_forecast(climatology, prepared.valid_times), dtype=torch.float32)
    fields = torch.as_tensor(prepared.valid)
    inputs = fields - clim_valid if anomaly else fields
    with torch.no_grad():
        recon = torch.cat([method(chunk) for chunk in inputs.split(256)])
    if anomaly:
        recon = recon + clim_valid
    truth = prepared.destandardise(fields).numpy()
    model = metrics.lat_weighted_rmse(prepared.destandardise(recon).numpy(), truth,
                                      prepared.lat, time_axis=0)
    clim = prepared.destandardise(clim_valid).numpy()
    base = metrics.lat_weighted_rmse(clim, truth, prepared.lat, time_axis=0)
    return {c: (float(m), float(b)) for c, m, b in
            zip(prepared.channels, np.asarray(model), np.asarray(base), strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--start", default="2000-01-01")
    parser.add_argument("--end", default="2007-12-31")
    parser.add_argument("--cache-dir", default=None, help="prepared data (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--anomaly", action="store_true",
                        help="train and score on departures from the training-day climatology "
                             "(the reconstruction adds it back): what a decoder "
                             "climatology(day) + D(z) with an anomaly input would reach")
    args = parser.parse_args()

    cache = args.cache_dir or tempfile.mkdtemp(prefix="quick_autoencoder-")
    prepared = data.load(None, level=500, start=args.start, end=args.end, cache_dir=cache)
    grid = tuple(int(s) for s in prepared.train.shape[-2:])
    print(f"data: {'SYNTHETIC' if prepared.synthetic else 'ERA5'} train {prepared.train.shape}, "
          f"valid {prepared.valid.shape}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load before {os.getloadavg()[0]:.1f}")
    climatology = baselines.training_climatology(prepared)
    train_x, valid_x = prepared.train, prepared.valid
    if args.anomaly:
        train_x = (train_x - baselines.climatology_forecast(
            climatology, prepared.train_times)).astype(np.float32)
        valid_x = (valid_x - baselines.climatology_forecast(
            climatology, prepared.valid_times)).astype(np.float32)
    train = data.FieldDataset(train_x, prepared.season_labels("train"))
    valid = data.FieldDataset(valid_x, prepared.season_labels("valid"))
    names = list(prepared.channels)
    header = ["variant", "params", "s/epoch", "epochs (best)", "best valid MSE",
              *(f"{c} ratio" for c in names), "load"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header), flush=True)
    rows = []
    for variant in args.variants:
        options = dict(VARIANTS[variant])
        if options.get("ae_channel_weights") == "climatology":
            options["ae_channel_weights"] = climatology_weights(prepared, climatology)
        torch.manual_seed(0)
        method = build_method("autoencoder", in_channels=len(names), grid=grid,
                              width=args.width, latent_dim=1000, **options)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=0, device="cpu", patience=args.patience,
                             lr_schedule="cosine", warmup_epochs=args.warmup_epochs)
        tic = time.perf_counter()
        history = fit(method, train, config, valid_set=valid, progress=False)
        seconds = time.perf_counter() - tic
        method.eval()
        scores = rmse_ratios(method, prepared, climatology, anomaly=args.anomaly)
        row = {"variant": variant + (" (anomaly)" if args.anomaly else ""), "options": options,
               "params": count_parameters(method), "seconds": seconds,
               "epochs": len(history), "best_epoch": int(history.attrs["best_epoch"]),
               "best_valid": float(history.attrs["best_valid_loss"]),
               "valid_curve": [float(v) for v in history["valid_loss"]],
               "rmse": {c: scores[c][0] for c in names},
               "climatology_rmse": {c: scores[c][1] for c in names},
               "load": os.getloadavg()[0]}
        rows.append(row)
        cells = [row["variant"], f"{row['params']:,}", f"{seconds / len(history):.1f}",
                 f"{len(history)} ({row['best_epoch']})", f"{row['best_valid']:.4f}",
                 *(f"{scores[c][0] / scores[c][1]:.3f}" for c in names), f"{row['load']:.1f}"]
        print(" | ".join(cells), flush=True)
        print("  valid MSE per epoch: " + " ".join(f"{v:.4f}" for v in row["valid_curve"]),
              flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    clim = rows[0]["climatology_rmse"] if rows else {}
    print("climatology RMSE (physical units): "
          + ", ".join(f"{c} {clim[c]:.4g}" for c in clim))


if __name__ == "__main__":
    main()
