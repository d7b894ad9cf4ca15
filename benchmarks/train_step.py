"""Benchmark of the contrastive training step at the report's shapes (or the native preset's).

Prints, for each augmentation preset and method, training throughput (samples/s), the share of
a step spent in the augmentations, and the achieved FLOP/s as a fraction of this machine's
matrix-multiply peak measured in the same run; with several presets, the speed-up of each over
the first. Not a test: run it and record the table with the machine.

The augmentations' budget is under 10 % of a training step ("augment share"; its arithmetic is
checked, untimed, by tests/test_augment.py); the run ends by naming any row over it.

    python benchmarks/train_step.py                      # CPU defaults sized for 2 cores
    python benchmarks/train_step.py --device cuda --batch-size 128 --width 64 --steps 20
    python benchmarks/train_step.py --augmentation report native --width 8 --batch-size 64

FLOPs of a step are counted by ``torch.utils.flop_counter.FlopCounterMode`` (forward and
backward of the encoder and projection head; the count covers matmuls and convolutions,
which dominate). The peak is the best of a few large square matmuls in the step's dtype.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from geofusion.learning.augment import AUGMENTATION_PRESETS, augmentation_preset, two_views
from geofusion.learning.methods import build_method
from geofusion.learning.training import resolve_device

#: The augmentations may take at most this share of a training step.
AUGMENT_BUDGET = 0.10


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Best achieved FLOP/s of a (size x size) @ (size x size) matmul."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - tic)
    return 2 * size**3 / best


def step_flops(method, fields: torch.Tensor, generator: torch.Generator) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = method.loss((fields, torch.zeros(len(fields), dtype=torch.long,
                                                   device=fields.device)), generator)
        loss.backward()
    method.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench_method(name: str, preset: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    method = build_method(name, width=args.width, augmentation=preset).to(device).train()
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-4)
    fields = torch.randn(args.batch_size, 5, 32, 64, device=device)
    labels = torch.randint(0, 4, (args.batch_size,), device=device)
    generator = torch.Generator().manual_seed(0)
    use_amp = device.type == "cuda"
    augmentation = augmentation_preset(preset)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _ = method.loss((fields, labels), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    step_seconds = (time.perf_counter() - tic) / args.steps

    for _ in range(args.warmup):
        two_views(fields, augmentation, generator)
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(args.steps):
        two_views(fields, augmentation, generator)
    synchronize(device)
    augment_seconds = (time.perf_counter() - tic) / args.steps

    flops = step_flops(method, fields, generator)
    return {"augmentation": preset, "view": "x".join(map(str, augmentation.crop)),
            "method": name, "samples/s": args.batch_size / step_seconds,
            "step ms": 1e3 * step_seconds, "augment ms": 1e3 * augment_seconds,
            "augment share": augment_seconds / step_seconds, "GFLOP/step": flops / 1e9,
            "achieved TFLOP/s": flops / step_seconds / 1e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64, help="64 = ResNet-18")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--methods", nargs="*", default=["barlow_twins", "simclr", "supcon"])
    parser.add_argument("--augmentation", nargs="*", default=["report"],
                        choices=sorted(AUGMENTATION_PRESETS),
                        help="presets to compare (geofusion.learning.augment.AUGMENTATION_PRESETS)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" else 2048)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"batch {args.batch_size}, width {args.width}, input 5x32x64")
    print(f"measured matmul peak ({dtype}): {peak / 1e12:.3f} TFLOP/s")
    header = ["augmentation", "view", "method", "samples/s", "step ms", "augment ms",
              "augment share", "GFLOP/step", "achieved TFLOP/s", "of peak"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    step_ms: dict[tuple[str, str], float] = {}
    over_budget = []
    for preset in args.augmentation:
        for method in args.methods:
            row = bench_method(method, preset, args, device)
            row["of peak"] = row["achieved TFLOP/s"] * 1e12 / peak
            step_ms[preset, method] = row["step ms"]
            if row["augment share"] >= AUGMENT_BUDGET:
                over_budget.append(f"{preset} {method} ({row['augment share']:.1%})")
            print(" | ".join(f"{row[h]:.3g}" if isinstance(row[h], float) else str(row[h])
                             for h in header), flush=True)
    print(f"\naugment share budget {AUGMENT_BUDGET:.0%} of a step: "
          + (f"over in {', '.join(over_budget)}" if over_budget else "every row within"))
    if len(args.augmentation) > 1:
        base = args.augmentation[0]
        print(f"\nspeed-up of a training step over {base!r} (its step time / this one's):")
        for preset in args.augmentation[1:]:
            for method in args.methods:
                ratio = step_ms[base, method] / step_ms[preset, method]
                print(f"{preset} {method}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
