"""Benchmark: how well is each mode a *linear* function of the other four (notebook 09's twin)?

Notebook 09 (issue 24) measures every fusion scheme's reconstruction of an absent mode
against a ridge regression of that mode on the ``k`` leading EOF coefficients of the present
modes (:mod:`geofusion.verification.mode_regression`, ``k`` = the schemes' latent size, all
training days, penalty by blocked CV within them). This script scores, on the notebook's
scored days (the first ``--days`` consecutive test days), the same regression at several
``k`` (up to nearly every present-mode EOF: the whole linear information of the present
fields), the same regression on only the encoders' ``--own-days`` random training days
(notebook 09's ``n_train_days`` draw), the day-of-year climatology and the EOF code that
sees the mode (a ceiling). Latitude-weighted RMSE in physical units with 95 % block-bootstrap
intervals; the data are the quick profile's SYNTHETIC default unless ``--data-path``.

    OMP_NUM_THREADS=1 python benchmarks/missing_mode_linear.py

Not a test: run it and record the output with the machine and commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import time

import numpy as np
import pandas as pd

from geofusion import data
from geofusion.data.eof import fit_eof
from geofusion.verification.bootstrap import bootstrap_rmse
from geofusion.verification.metrics import lat_weighted_mse
from geofusion.verification.mode_regression import fit_missing_mode_regression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--days", type=int, default=192, help="first test days scored")
    parser.add_argument("--own-days", type=int, default=384, help="notebook 09's n_train_days")
    parser.add_argument("--ks", default="32,64,128,256,512,1024")
    parser.add_argument("--k-latent", type=int, default=128, help="notebook 09's latent_dim")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"commit {commit}")
    prepared = data.load(args.data_path, level=500, start="2000-01-01", end="2010-12-31",
                         cache_dir=args.cache_dir, seed=args.seed, space="anomaly",
                         train_fraction=0.6, test_fraction=0.2)
    print(f"data: {'SYNTHETIC default' if prepared.synthetic else args.data_path}, "
          f"{len(prepared.train)} training days")
    fields, times = prepared.test[:args.days], prepared.test_times[:args.days]
    truth = np.asarray(prepared.destandardise(fields, times))
    # Notebook 09's draw of the encoders' training days.
    rng = np.random.default_rng(args.seed)
    own_idx = np.sort(rng.choice(len(prepared.train), size=args.own_days, replace=False))
    own = dataclasses.replace(prepared, train=prepared.train[own_idx],
                              train_times=prepared.train_times[own_idx])
    code = fit_eof(prepared.train, prepared.lat, args.k_latent)
    seen = code.decode(code.encode(fields))

    def score(m: int, prediction: np.ndarray) -> str:
        full = fields.copy()
        full[:, m] = prediction
        physical = np.asarray(prepared.destandardise(full, times))[:, m:m + 1]
        ci = bootstrap_rmse(lat_weighted_mse(physical, truth[:, m:m + 1], prepared.lat)[:, 0],
                            seed=args.seed)
        return f"{float(ci.estimate):.4g} [{float(ci.low):.4g}, {float(ci.high):.4g}]"

    rows: dict[str, dict[str, str]] = {}
    for m, mode in enumerate(prepared.channels):
        started = time.perf_counter()
        for k in (int(k) for k in args.ks.split(",")):
            fit = fit_missing_mode_regression(prepared, m, k)
            rows.setdefault(f"regression, k = {k}", {})[mode] = (
                f"{score(m, fit.predict(fields, times))} (alpha/scale "
                f"{fit.ridge.alpha / (fit.ridge.alphas[-1] / 1e3):.0e})")
        fit = fit_missing_mode_regression(own, m, args.k_latent)
        rows.setdefault(f"regression, k = {args.k_latent}, {args.own_days} days", {})[mode] = \
            score(m, fit.predict(fields, times))
        rows.setdefault("day-of-year climatology", {})[mode] = score(m, 0 * fields[:, m])
        rows.setdefault(f"EOF code, mode present, k = {args.k_latent} (ceiling)", {})[mode] = \
            score(m, seen[:, m])
        print(f"{mode}: {time.perf_counter() - started:.1f} s", flush=True)
    print(f"\nRMSE of the absent mode on the first {args.days} test days "
          f"({str(times[0])[:10]} .. {str(times[-1])[:10]}), physical units [95 % interval]")
    print(pd.DataFrame(rows).T.to_string())


if __name__ == "__main__":
    main()
