"""Benchmark: training-step throughput of each fusion scheme, and data-parallel scaling.

1. For each scheme (early, late x {concat, self-attention, cross-attention}, hybrid
   self-attention), samples/s of one Barlow Twins training step (two augmented views, forward,
   backward, Adam) and the encoder's parameters and forward FLOPs per sample.
2. The same step for the early scheme data-parallel on 1 and on N CPU processes (gloo,
   DistributedDataParallel, global-batch Barlow Twins loss) at the same *global* batch. Each
   process gets cores/N threads; scaling efficiency = throughput(N processes) /
   (N * throughput(1 process with cores/N threads)), i.e. per unit of hardware. One process
   with all cores as threads is shown too: on one machine that is the alternative to DDP.

    python benchmarks/fusion_and_distributed.py                     # CPU defaults (2 cores)
    python benchmarks/fusion_and_distributed.py --device cuda --width 64 --latent-dim 1000 \\
        --batch-size 128 --processes 0                              # GPU, no CPU scaling run

Not a test: run it and record the output with the machine it came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from geofusion.learning import collectives, distributed
from geofusion.learning.fusion_methods import build_fusion_method
from geofusion.learning.training import resolve_device
from geofusion.models.fusion_encoders import fusion_cost, parse_scheme

SCHEMES = ("early", "late_concat", "late_self_attention", "late_cross_attention",
           "hybrid_self_attention")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_method(scheme: str, args: argparse.Namespace) -> torch.nn.Module:
    kind, operator = parse_scheme(scheme)
    torch.manual_seed(0)
    return build_fusion_method("barlow_twins", kind=kind, fusion=operator,
                               latent_dim=args.latent_dim, width=args.width,
                               token_dim=args.token_dim, proj_dim=args.proj_dim,
                               proj_hidden_dim=args.proj_hidden_dim)


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step (mean of ``steps`` after ``warmup``)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - tic) / steps


def bench_scheme(scheme: str, args: argparse.Namespace, device: torch.device) -> dict:
    method = make_method(scheme, args).to(device).train()
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-4)
    fields = torch.randn(args.batch_size, 5, 32, 64, device=device)
    labels = torch.zeros(args.batch_size, dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(0)
    use_amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _ = method.loss((fields, labels), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = time_steps(step, args.steps, args.warmup, device)
    cost = fusion_cost(method.encoder, (1, 5, 32, 64))
    return {"scheme": scheme, "samples/s": args.batch_size / seconds,
            "parameters": cost["parameters"], "MFLOPs/sample": cost["flops_per_sample"] / 1e6}


def _ddp_worker(rank: int, world: int, threads: int, init_file: str,
                args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                world_size=world)
    try:
        method = make_method("early", args).train()
        collectives.set_gather_distributed(method, True)
        module = distributed._LossModule(method)
        model = torch.nn.parallel.DistributedDataParallel(module) if world > 1 else module
        optimizer = torch.optim.Adam(method.parameters(), lr=1e-4)
        local = args.batch_size // world
        g = torch.Generator().manual_seed(rank)
        fields = torch.randn(local, 5, 32, 64, generator=g)
        labels = torch.zeros(local, dtype=torch.long)
        generator = torch.Generator().manual_seed(rank)

        def step() -> None:
            loss, _ = model((fields, labels), generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        seconds = time_steps(step, args.steps, args.warmup, torch.device("cpu"))
        if rank == 0:
            Path(out).write_text(str(seconds))
    finally:
        if world > 1:
            dist.destroy_process_group()


def bench_scaling(world: int, threads: int, args: argparse.Namespace) -> float:
    """Global samples/s of the early scheme on ``world`` CPU processes of ``threads``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "seconds")
        mp.spawn(_ddp_worker, args=(world, threads, os.path.join(tmp, "init"), args, out),
                 nprocs=world, join=True)
        return args.batch_size / float(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--latent-dim", type=int, default=128)
    parser.add_argument("--token-dim", type=int, default=32)
    parser.add_argument("--proj-dim", type=int, default=64)
    parser.add_argument("--proj-hidden-dim", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--processes", type=int, default=2,
                        help="CPU processes for the scaling run (0 = skip it)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"device {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                if device.type == "cuda" else "")
          + f", torch {torch.__version__}")
    print(f"settings: batch {args.batch_size}, width {args.width} (per-mode width "
          f"{max(4, args.width // 2)}), latent {args.latent_dim}, token {args.token_dim}, "
          f"32x64 grid, Barlow Twins step with the report's augmentations, {args.steps} steps")
    print()
    print("| scheme | samples/s | parameters (encoder) | MFLOPs/sample (encoder fwd) |")
    print("|---|---:|---:|---:|")
    for scheme in SCHEMES:
        row = bench_scheme(scheme, args, device)
        print(f"| {row['scheme']} | {row['samples/s']:.1f} | {row['parameters']:,} | "
              f"{row['MFLOPs/sample']:.2f} |")
    if args.processes > 1:
        if args.batch_size % args.processes:
            raise SystemExit(f"--batch-size must be divisible by --processes={args.processes}")
        cores = os.cpu_count() or 1
        share = max(1, cores // args.processes)
        one = bench_scaling(1, share, args)
        many = bench_scaling(args.processes, share, args)
        whole = bench_scaling(1, cores, args)
        print()
        print(f"Data-parallel (early scheme, gloo, global batch {args.batch_size}, "
              "global-batch Barlow Twins):")
        print()
        print("| processes | threads each | global samples/s | scaling efficiency |")
        print("|---:|---:|---:|---:|")
        print(f"| 1 | {share} | {one:.1f} | 1.00 (reference) |")
        print(f"| {args.processes} | {share} | {many:.1f} | "
              f"{many / (args.processes * one):.2f} |")
        print(f"| 1 | {cores} | {whole:.1f} | {whole / (args.processes * one):.2f} |")


if __name__ == "__main__":
    main()
