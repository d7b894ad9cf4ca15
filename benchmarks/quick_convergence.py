"""How the quick profile's models converge: validation loss per epoch, stopping epoch and time.

Trains each (method, width) on the quick profile's data (the synthetic default, 2000-2007,
500 hPa) with early stopping and a warm-up + cosine schedule, and prints one row per run:
epochs run, why it stopped, the best validation loss and its epoch, seconds per epoch, and the
validation-loss curve. Not a test: run it and record the table with the machine and its load.

    python benchmarks/quick_convergence.py                       # AE and Barlow Twins, 8 vs 16
    python benchmarks/quick_convergence.py --methods barlow_twins --widths 8 --augmentation report

Validation losses are comparable between widths of one method and augmentation, not between
methods or augmentations (each has its own loss).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from geofusion import data
from geofusion.methods import build_method
from geofusion.training import TrainConfig, describe_stop, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = parser.parse_args()

    cache = tempfile.mkdtemp(prefix="quick_convergence-")
    prepared = data.load(None, level=500, start=args.start, end=args.end, cache_dir=cache)
    train = data.FieldDataset(prepared.train, prepared.season_labels("train"))
    valid = data.FieldDataset(prepared.valid, prepared.season_labels("valid"))
    print(f"data: {'SYNTHETIC' if prepared.synthetic else 'ERA5'} train {prepared.train.shape}, "
          f"valid {prepared.valid.shape}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load before {os.getloadavg()[0]:.1f}")
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


if __name__ == "__main__":
    main()
