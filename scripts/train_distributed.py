"""Train a method (any fusion scheme) data-parallel under torchrun; also runs as one process.

    torchrun --standalone --nproc_per_node=2 scripts/train_distributed.py \\
        --method barlow_twins --kind late --fusion self_attention --epochs 2 --width 8
    python scripts/train_distributed.py --epochs 1          # single process, same code

NCCL on GPUs (one process per GPU), gloo on CPU. ``--batch-size`` is the global batch, split
evenly over the processes; the contrastive losses use the global batch
(``gather_distributed``), so a run on N processes optimises the same objective as a
single-process run with the same batch size. Rank 0 prepares the data cache first (the others
wait and then read it) and writes checkpoints under ``--run-dir`` (resumable by rerunning the
same command, or by ``geofusion.learning.training.fit``).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from geofusion import data
from geofusion.learning import collectives, distributed
from geofusion.learning.config import TrainConfig
from geofusion.learning.fusion_methods import FUSION_METHODS, build_fusion_method
from geofusion.models.fusion_encoders import FUSIONS, KINDS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="barlow_twins", choices=FUSION_METHODS)
    parser.add_argument("--kind", default="early", choices=KINDS)
    parser.add_argument("--fusion", default="concat", choices=FUSIONS)
    parser.add_argument("--p-mode-dropout", type=float, default=0.0)
    parser.add_argument("--data-path", default=None, help="WB2 zarr store; default synthetic")
    parser.add_argument("--start-date", default="2000-01-01")
    parser.add_argument("--end-date", default="2007-12-31")
    parser.add_argument("--level", type=int, default=500)
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--run-dir", default="runs/distributed")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--latent-dim", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sync-batchnorm", action="store_true",
                        help="global batch-norm statistics (CUDA)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    collectives.init_from_env()
    try:
        if not torch.cuda.is_available():
            # Processes share the cores: one pool each would oversubscribe them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // collectives.world_size()))
        load = dict(level=args.level, start=args.start_date, end=args.end_date,
                    cache_dir=args.cache_dir, seed=args.seed)
        if collectives.rank() == 0:
            prepared = data.load(args.data_path, **load)
        collectives.barrier()
        if collectives.rank() != 0:
            prepared = data.load(args.data_path, **load)
        train_set = data.FieldDataset(prepared.train, prepared.season_labels("train"))
        torch.manual_seed(args.seed)  # the same initial weights on every process
        method = build_fusion_method(
            args.method, kind=args.kind, fusion=args.fusion,
            p_mode_dropout=args.p_mode_dropout, in_channels=len(prepared.channels),
            grid=prepared.train.shape[-2:], latent_dim=args.latent_dim, width=args.width)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, device=args.device)
        name = f"{args.method}_{args.kind}_{args.fusion}"
        history = distributed.fit_distributed(
            method, train_set, config, run_dir=os.path.join(args.run_dir, name),
            # late/hybrid encoders skip a mode absent from a whole local batch
            find_unused_parameters=args.kind != "early" and args.p_mode_dropout > 0,
            sync_batchnorm=args.sync_batchnorm)
        if collectives.rank() == 0:
            last = history.iloc[-1].to_dict() if len(history) else {}
            print(json.dumps({"run": name, "processes": collectives.world_size(),
                              "synthetic": prepared.synthetic, **last}, default=float))
    finally:
        collectives.cleanup()


if __name__ == "__main__":
    main()
