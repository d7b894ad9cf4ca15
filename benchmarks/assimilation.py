"""Benchmark: seconds per scheme and observed fraction of notebook 10's assimilation cycle.

Times every scheme of :mod:`geofusion.experiments.assimilation_study` on the quick profile's shapes
(32 x 64 grid, five variables, the sparse-view Barlow Twins encoder of width 8 and latent size
1000, a width-16 frozen decoder, an LSTM of 128 units reading 10 days), cycled over ``--days``
days at each observed fraction with the two noise levels side by side (two experiments), as
the notebook does:

- the latent cycles (free run, encode only, latent 3D-Var with ``--iterations`` L-BFGS
  iterations and rank-10 ``B``, latent blend), the encoding of the observations included;
- field-space optimal interpolation (its fit on the training days timed separately);
- latent 3D-Var and OI again with a new mask every day (``distinct_masks`` None) against the
  notebook's rotation through ``--distinct-masks`` masks (each factorises ``R`` or
  ``H B H^T + R`` once per observed pattern).

The cost depends on the shapes and iteration counts, not on what the models learned, so the
models are untrained (fixed seeds) and the fields are SYNTHETIC smooth random anomalies on a
seasonal cycle (no data loading). L-BFGS stops early once ``J`` stops falling, which an
untrained decoder may reach at a different iteration than a trained one: the 3D-Var rows are
at most ``--iterations`` iterations a day.

    OMP_NUM_THREADS=1 python benchmarks/assimilation.py              # 20 days, 1 thread
    python benchmarks/assimilation.py --threads 2 --days 60          # the notebook's cycle

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

from geofusion.data import PreparedData
from geofusion.data.observations import correlated_noise
from geofusion.downstream.assimilation import (
    EncodeOnly,
    FreeRun,
    Latent3DVar,
    LatentBlend,
    LatentCovariance,
    ObservationError,
    differentiable_decoder,
    run_cycle,
)
from geofusion.downstream.forecasting import LatentForecaster, LatentSeq2Seq, LatentStandardiser
from geofusion.experiments.assimilation_study import draw_observations
from geofusion.learning.methods import build_method
from geofusion.models.resnet import FieldDecoder
from geofusion.variables import VARIABLES
from geofusion.verification.optimal_interpolation import fit_optimal_interpolation

GRID, C, D = (32, 64), 5, 1000


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def synthetic_prepared(years: int = 3, seed: int = 0) -> PreparedData:
    """SYNTHETIC standardised fields: a seasonal cycle plus smooth random anomalies."""
    times = pd.date_range("2000-01-01", periods=years * 365, freq="D").to_numpy()
    seasonal = np.sin(2 * np.pi * np.arange(len(times)) / 365.25)[:, None, None, None]
    weather = correlated_noise((len(times), C, *GRID), 3.0, 0.7,
                               torch.Generator().manual_seed(seed)).numpy()
    fields = (seasonal + weather).astype(np.float32)
    split = len(times) - 365
    return PreparedData(fields[:split], fields[split:], times[:split], times[split:],
                        VARIABLES, np.zeros(C, np.float32), np.ones(C, np.float32),
                        np.linspace(-87.1875, 87.1875, GRID[0]), np.arange(GRID[1]) * 5.625,
                        500, True)


def untrained_forecaster(context: int) -> LatentForecaster:
    torch.manual_seed(0)
    method = build_method("barlow_twins", grid=GRID, width=8, latent_dim=D, proj_dim=128,
                          observation={"kind": "pixel", "min_ratio": 0.0, "max_ratio": 0.9,
                                       "noise_std": 0.1, "noise_length": 2.0},
                          augmentation="native").eval()
    decoder: nn.Module = FieldDecoder(D, C, GRID, width=16).eval()
    lstm = LatentSeq2Seq(D, 128).eval()
    return LatentForecaster(method, decoder, lstm,
                            LatentStandardiser(torch.zeros(D), torch.ones(D)), context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=20, help="days cycled")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.1, 0.5])
    parser.add_argument("--noises", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--iterations", type=int, default=8, help="L-BFGS iterations a day")
    parser.add_argument("--distinct-masks", type=int, default=8)
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {load[0]:.1f} "
          f"{load[1]:.1f} {load[2]:.1f}")
    prepared = synthetic_prepared()
    forecaster = untrained_forecaster(args.context)
    print(f"SYNTHETIC fields {prepared.train.shape[1:]}, untrained quick-size models, "
          f"{args.days} days, {len(args.noises)} noise levels per fraction, "
          f"{args.iterations} L-BFGS iterations at most")

    rng = np.random.default_rng(0)
    b = LatentCovariance.estimate(rng.normal(size=(400, D)) * 0.3, rank=10)
    gain = torch.eye(D) * 0.3
    representation = torch.full((C,), 0.05)
    truth = torch.as_tensor(prepared.valid[:args.days])
    times = np.asarray(prepared.valid_times[:args.days])
    initial = torch.zeros(args.context, D)
    decode = differentiable_decoder(forecaster)
    fits, fit_seconds = timed(lambda: {s: fit_optimal_interpolation(prepared, s, 2.0)
                                       for s in args.noises})
    print(f"OI fit on the training days ({len(args.noises)} noise levels): {fit_seconds:.1f} s")

    rows = []
    for fraction in args.fractions:
        experiments = [(fraction, s) for s in args.noises]
        for masks in (args.distinct_masks, None):
            y, m = draw_observations(truth, experiments, distinct_masks=masks)
            init = initial[None].repeat(len(experiments), 1, 1)
            r = [ObservationError(s, 2.0, representation) for s in args.noises]
            timings = {}
            if masks is not None:
                start = time.perf_counter()
                encoded = torch.stack([forecaster.encode(y[:, e], m[:, e])
                                       for e in range(len(experiments))], dim=1)
                timings["encode"] = time.perf_counter() - start
                for name, scheme in (("free_run", FreeRun()), ("encode_only",
                                                               EncodeOnly(encoded)),
                                     ("latent_blend", LatentBlend(gain, encoded))):
                    start = time.perf_counter()
                    run_cycle(forecaster, init, scheme, args.days)
                    timings[name] = time.perf_counter() - start
            start = time.perf_counter()
            run_cycle(forecaster, init, Latent3DVar(y, m, decode, b, r, max_iter=args.iterations),
                      args.days)
            timings["latent_3dvar"] = time.perf_counter() - start
            start = time.perf_counter()
            for e, s in enumerate(args.noises):
                fits[s].analyse(y[:, e], m[:, e], times)
            timings["optimal_interpolation"] = time.perf_counter() - start
            for name, seconds in timings.items():
                rows.append({"observed_fraction": fraction,
                             "masks": masks if masks is not None else "one per day",
                             "scheme": name, "seconds": seconds})
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["scheme"], columns=["masks", "observed_fraction"],
                             values="seconds", aggfunc="sum")
    print(wide.round(2).to_string())
    shared = table[table.masks == args.distinct_masks].seconds.sum()
    print(f"total with {args.distinct_masks} distinct masks: {shared:.1f} s "
          f"(+ OI fit {fit_seconds:.1f} s)")
    for name in ("latent_3dvar", "optimal_interpolation"):
        per_day = table[(table.scheme == name) & (table.masks == "one per day")].seconds.sum()
        rotated = table[(table.scheme == name)
                        & (table.masks == args.distinct_masks)].seconds.sum()
        print(f"{name}: a new mask every day / {args.distinct_masks} distinct masks = "
              f"{per_day / rotated:.2f}x")


if __name__ == "__main__":
    main()
