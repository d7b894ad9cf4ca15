"""Benchmark: fit and scoring times of the field-space baselines
(:mod:`geofusion.verification.baselines`).

On the project's prepared data (default: the embedded synthetic ERA5-like fields, 2000-2007,
32 x 64 grid, five variables; labelled synthetic in the output), it times

1. the fits on the training days: damped anomaly persistence, the ridge linear regression
   (100 EOFs, leads 1-7, alpha by 5-fold blocked CV) and optimal interpolation;
2. forecasts of the first ``--days`` validation days for 7 leads (linear regression and
   damped persistence);
3. optimal-interpolation analyses of ``--days`` validation days x 5 variables at the missing
   fractions 0, 0.5 and 0.9 (pixel masks, correlated noise std 0.1, length 2 grid points:
   notebook 06's observation model), with the analysis and background RMSE (standardised
   units) as a sanity check.

    python benchmarks/baselines.py --cache-dir runs/cache            # quick-profile data
    python benchmarks/baselines.py --threads 2 --days 64

Not a test: run it and record the output with the machine and the load it came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from geofusion import data
from geofusion.data import observations
from geofusion.verification import baselines, linear_regression, optimal_interpolation


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", default=None, help="WB2 zarr; default synthetic")
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--start", default="2000-01-01")
    parser.add_argument("--end", default="2007-12-31")
    parser.add_argument("--days", type=int, default=64, help="validation days scored")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--noise-std", type=float, default=0.1)
    parser.add_argument("--noise-length", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prepared = data.load(args.data_path, level=500, start=args.start, end=args.end,
                         cache_dir=args.cache_dir, seed=0)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {load[0]:.1f} "
          f"{load[1]:.1f} {load[2]:.1f}")
    print(f"data: {'SYNTHETIC ' if prepared.synthetic else ''}{prepared.train.shape[0]} training "
          f"days, {prepared.valid.shape[0]} validation days, grid {prepared.train.shape[1:]}")

    rows = []
    damped, t_damped = timed(lambda: baselines.fit_damped_persistence(prepared))
    rows.append(("fit damped persistence (leads 1-7)", t_damped))
    linear, t_linear = timed(lambda: linear_regression.fit_linear_regression(prepared))
    rows.append(("fit linear regression (100 EOFs, leads 1-7, 5-fold CV)", t_linear))
    oi, t_oi = timed(lambda: optimal_interpolation.fit_optimal_interpolation(
        prepared, args.noise_std, args.noise_length))
    rows.append(("fit optimal interpolation", t_oi))

    n = min(args.days, len(prepared.valid) - 7)
    inits = np.arange(n)
    valid, times = prepared.valid, prepared.valid_times
    _, t = timed(lambda: damped.forecast(valid, times, inits, 7))
    rows.append((f"forecast damped persistence, {n} inits x 7 leads", t))
    _, t = timed(lambda: linear.forecast(valid, times, inits, 7))
    rows.append((f"forecast linear regression, {n} inits x 7 leads", t))

    fields = torch.from_numpy(np.ascontiguousarray(valid[:n]))
    truth = valid[:n].astype(np.float64)
    background = oi.background(times[:n])
    rmse_b = float(np.sqrt(np.mean((background - truth) ** 2)))
    quality = []
    total_oi = 0.0
    for fraction in (0.0, 0.5, 0.9):
        observe = observations.Observation(kind="pixel", min_ratio=fraction, max_ratio=fraction,
                                       noise_std=args.noise_std,
                                       noise_length=args.noise_length)
        noisy, observed = observe(fields, torch.Generator().manual_seed(0))
        analysis, t = timed(lambda noisy=noisy, observed=observed: oi.analyse(
            noisy, observed, times[:n]))
        total_oi += t
        rows.append((f"OI analyse {n} days x 5 variables, missing {fraction:g}", t))
        quality.append((fraction, float(np.sqrt(np.mean((analysis - truth) ** 2)))))
    rows.append(("OI all three missing fractions", total_oi))

    width = max(len(r[0]) for r in rows)
    print(f"\n{'step':<{width}}  seconds")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.2f}")
    print(f"\nOI per day and variable: {total_oi / (3 * n * 5) * 1e3:.1f} ms on average over the "
          "three fractions")
    print(f"fit ratio linear regression / damped persistence: {t_linear / t_damped:.1f}")
    print(f"\nstandardised RMSE over all variables: background (climatology) {rmse_b:.3f}")
    for fraction, rmse in quality:
        print(f"  OI, missing {fraction:g}: {rmse:.3f} (ratio to background {rmse / rmse_b:.2f})")
    lengths = dict(zip(prepared.channels, oi.length_scale_km.round(0).tolist(), strict=True))
    print(f"OI length scales (km): {lengths}")
    shares = dict(zip(prepared.channels, oi.correlated_fraction.round(2).tolist(), strict=True))
    print(f"OI correlated share c of the background variance: {shares}")
    print(f"linear regression alpha (lead 1): {linear.alpha[0].round(1).tolist()}, variance in "
          f"100 EOFs {linear.explained_variance.sum():.2f}")


if __name__ == "__main__":
    main()
