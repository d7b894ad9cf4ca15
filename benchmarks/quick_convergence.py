"""How the quick profile's models converge, and whether they beat the climatology.

Two parts, both on the quick profile's data (the synthetic default, 2000-2007, 500 hPa):

- ``curves`` (default): trains each (method, width) with early stopping and a warm-up + cosine
  schedule and prints one row per run: epochs run, why it stopped, the best validation loss
  and its epoch, seconds per epoch, and the validation-loss curve.
- ``scores``: trains the models of notebook 06 exactly as the notebooks request them
  (:func:`geofusion.learning.model_cache.pretrained` and
  :func:`geofusion.downstream.reconstruction.fit_frozen_decoder`
  into ``--run-dir``, so a second call with other decoder settings reuses the encoders), then
  prints, per model and variable, the latitude-weighted RMSE (physical units) of the
  reconstruction on the evaluation days of notebook 06 (complete input, and 50 % of the pixels
  missing) and its ratio to the day-of-year climatology's (below 1 beats it).

Not a test: run it and record the table with the machine and its load.

    python benchmarks/quick_convergence.py                       # AE and Barlow Twins, 8 vs 16
    python benchmarks/quick_convergence.py --methods barlow_twins --widths 8 --augmentation report
    python benchmarks/quick_convergence.py scores --ae-epochs 15 --encoder-epochs 8 \\
        --decoder-epochs 10 --run-dir runs/bench

Validation losses are comparable between widths of one method and augmentation, not between
methods or augmentations (each has its own loss).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from geofusion import data
from geofusion.downstream.reconstruction import (
    LatentReconstructor,
    climatology_reconstructor,
    fit_frozen_decoder,
)
from geofusion.experiments.sparsity_study import SparsityEvaluation
from geofusion.learning import model_cache
from geofusion.learning.config import TrainConfig
from geofusion.learning.methods import build_method
from geofusion.learning.training import describe_stop, fit
from geofusion.verification import baselines

# The sparse views of notebook 06 (geofusion.experiments.profiles._SPARSE).
SPARSE_OBSERVATION = {"kind": "pixel", "min_ratio": 0.0, "max_ratio": 0.9, "noise_std": 0.1,
                      "noise_length": 2.0, "both_views": False}


def _load(args: argparse.Namespace, cache: str) -> data.PreparedData:
    prepared = data.load(None, level=500, start=args.start, end=args.end, cache_dir=cache)
    print(f"data: {'SYNTHETIC' if prepared.synthetic else 'ERA5'} train {prepared.train.shape}, "
          f"valid {prepared.valid.shape}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load before {os.getloadavg()[0]:.1f}")
    return prepared


def curves(args: argparse.Namespace) -> None:
    prepared = _load(args, args.cache_dir or tempfile.mkdtemp(prefix="quick_convergence-"))
    train = data.FieldDataset(prepared.train, prepared.season_labels("train"))
    valid = data.FieldDataset(prepared.valid, prepared.season_labels("valid"))
    header = ["method", "width", "augmentation", "epochs run", "stop", "best epoch",
              "best valid", "s/epoch", "valid loss per epoch"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name in args.methods:
        for width in args.widths:
            torch.manual_seed(0)
            views = {} if name == "autoencoder" else {"augmentation": args.augmentation}
            method = build_method(name, in_channels=len(prepared.channels),
                                  grid=tuple(prepared.train.shape[-2:]), width=width,
                                  latent_dim=1000, proj_dim=128, **views)
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 device="cpu", patience=args.patience, min_delta=args.min_delta,
                                 lr_schedule="cosine", warmup_epochs=args.warmup_epochs,
                                 time_budget_s=args.budget)
            tic = time.perf_counter()
            history = fit(method, train, config, valid_set=valid, progress=False)
            seconds = time.perf_counter() - tic
            curve = " ".join(f"{v:.4g}" for v in history["valid_loss"])
            row = [name, width, views.get("augmentation", "-"), len(history),
                   history.attrs["stop_reason"], history.attrs["best_epoch"],
                   f"{history.attrs['best_valid_loss']:.4g}", f"{seconds / len(history):.1f}",
                   curve]
            print(" | ".join(map(str, row)), flush=True)
            print(f"  ({describe_stop(history)}; load {os.getloadavg()[0]:.1f})", flush=True)


def _timed(label: str, train):
    tic = time.perf_counter()
    model, history, *rest = train()
    seconds = time.perf_counter() - tic
    stop = history.attrs.get("stop_reason", "-")
    curve = " ".join(f"{v:.4g}" for v in history.get("valid_loss", history["loss"]))
    print(f"{label}: {len(history)} epochs ({stop}), {seconds:.0f} s this call "
          f"(0 when loaded), load {os.getloadavg()[0]:.1f}; "
          f"{'valid' if 'valid_loss' in history else 'train'} loss per epoch: {curve}",
          flush=True)
    return (model, history, *rest)


def scores(args: argparse.Namespace) -> None:
    prepared = _load(args, args.cache_dir or os.path.join(args.run_dir, "cache"))
    base = {"width": args.width, "latent_dim": 1000}
    schedule = {"batch_size": args.batch_size, "seed": 0, "device": "cpu",
                "patience": args.patience, "lr_schedule": "cosine",
                "warmup_epochs": args.warmup_epochs}
    ae_config = TrainConfig(epochs=args.ae_epochs, lr=args.ae_lr, **schedule)
    encoder_config = TrainConfig(epochs=args.encoder_epochs, lr=args.encoder_lr, **schedule)
    contrastive = {**base, "proj_dim": 128, "lambd": 0.01, "augmentation": args.augmentation}
    ae, _, _ = _timed("autoencoder", lambda: model_cache.pretrained(
        "autoencoder", prepared, args.run_dir, ae_config, progress=False, **base))
    encoders = {}
    if not args.skip_contrastive:
        encoders["barlow_twins"] = _timed("barlow_twins", lambda: model_cache.pretrained(
            "barlow_twins", prepared, args.run_dir, encoder_config, progress=False,
            **contrastive))
        encoders["sparse_barlow_twins"] = _timed("sparse_barlow_twins", lambda:
        model_cache.pretrained(
            "barlow_twins", prepared, args.run_dir, encoder_config, progress=False,
            observation=SPARSE_OBSERVATION, **contrastive))
    decoder_config = TrainConfig(epochs=args.decoder_epochs, lr=args.decoder_lr,
                                 batch_size=args.batch_size, seed=0, device="cpu",
                                 lr_schedule=args.decoder_schedule)
    models = {"autoencoder": LatentReconstructor(ae, ae.decoder)}
    for name, (method, _, directory) in encoders.items():
        frozen, _ = _timed(f"{name} frozen decoder", lambda m=method, d=directory: (
            *fit_frozen_decoder(m, d, prepared, args.run_dir, decoder_config, 1000,
                                n_days=args.n_decoder_days, width=args.decoder_width,
                                progress=False),))
        models[name] = LatentReconstructor(method, frozen.decoder)
    models["climatology"] = climatology_reconstructor(baselines.training_climatology(prepared))
    # The evaluation days of notebook 06 (same draw), or every validation day.
    rng = np.random.default_rng(0)
    n_eval = min(args.n_eval_days or len(prepared.valid), len(prepared.valid))
    eval_idx = np.sort(rng.choice(len(prepared.valid), size=n_eval, replace=False))
    evaluation = SparsityEvaluation(models, torch.as_tensor(prepared.valid[eval_idx]),
                                    prepared.valid_times[eval_idx], prepared.lat,
                                    prepared.destandardise, list(prepared.channels), seed=0,
                                    distinct_masks=8)
    names = list(prepared.channels)
    print(f"\nRMSE (physical units) / climatology RMSE on {n_eval} validation days, "
          f"pixel masks; load {os.getloadavg()[0]:.1f}")
    print(" | ".join(["model", "missing", *names]))
    print(" | ".join("---" for _ in range(len(names) + 2)))
    for ratio in (0.0, 0.5):
        result = evaluation.scores("pixel", ratio)
        climatology = result["climatology"].rmse
        if ratio == 0.0:
            print(" | ".join(["climatology", "-", *(f"{climatology[c]:.4g}" for c in names)]))
        for name in models:
            if name == "climatology" or (ratio > 0 and name == "autoencoder"):
                continue
            rmse = result[name].rmse
            cells = [f"{rmse[c]:.4g} ({rmse[c] / climatology[c]:.2f})" for c in names]
            print(" | ".join([name, f"{ratio:.0%}", *cells]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", default="curves", choices=["curves", "scores"])
    parser.add_argument("--methods", nargs="*", default=["autoencoder", "barlow_twins"])
    parser.add_argument("--widths", nargs="*", type=int, default=[8, 16])
    parser.add_argument("--augmentation", default="native")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--min-delta", type=float, default=0.0)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--budget", type=float, default=None, help="seconds per model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--start", default="2000-01-01")
    parser.add_argument("--end", default="2007-12-31")
    parser.add_argument("--cache-dir", default=None, help="prepared data (default: a temp dir)")
    scoring = parser.add_argument_group("scores")
    scoring.add_argument("--run-dir", default=None, help="models (kept; default a temp dir)")
    scoring.add_argument("--width", type=int, default=8)
    scoring.add_argument("--ae-epochs", type=int, default=15)
    scoring.add_argument("--ae-lr", type=float, default=1e-3)
    scoring.add_argument("--encoder-epochs", type=int, default=8)
    scoring.add_argument("--encoder-lr", type=float, default=1e-3)
    scoring.add_argument("--skip-contrastive", action="store_true")
    scoring.add_argument("--decoder-epochs", type=int, default=10)
    scoring.add_argument("--decoder-lr", type=float, default=1e-3)
    scoring.add_argument("--decoder-schedule", default="cosine")
    scoring.add_argument("--decoder-width", type=int, default=16)
    scoring.add_argument("--n-decoder-days", type=int, default=512)
    scoring.add_argument("--n-eval-days", type=int, default=64,
                         help="notebook 06's evaluation days (0: every validation day)")
    args = parser.parse_args()
    if args.part == "curves":
        curves(args)
    else:
        args.run_dir = args.run_dir or tempfile.mkdtemp(prefix="quick_scores-")
        scores(args)


if __name__ == "__main__":
    main()
