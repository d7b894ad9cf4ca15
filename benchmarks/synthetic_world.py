"""Benchmark of the simulated world (the embedded default): cost of generating years of data.

Prints a table: simulated years (after the discarded spin-up), wall seconds, seconds per
simulated year, peak resident memory of this process (MiB), the share of the time spent in the
model integration (the rest: diagnostics, regridding, building the dataset), and the ratio to
the issue-9 budget (8 years 6-hourly in 180 s on 2 cores). Not a test: run it and record the
table with the machine and its load (``uptime``).

    python benchmarks/synthetic_world.py                 # 60 days, 1 year, 8 years (quick)
    python benchmarks/synthetic_world.py --years 1 10    # chosen lengths

Each length is generated in a fresh subprocess so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

BUDGET_S_PER_8_YEARS = 180.0

CHILD = r"""
import json, resource, sys, time
import pandas as pd
from geofusion.world import atmosphere, synthetic
days = float(sys.argv[1])
end = (pd.Timestamp("2000-01-01") + pd.Timedelta(days=days) - pd.Timedelta(hours=6))
spent = {"model": 0.0}
original = atmosphere.simulate
def timed(*a, **k):
    t = time.perf_counter()
    out = original(*a, **k)
    spent["model"] += time.perf_counter() - t
    return out
synthetic.simulate = timed
t = time.perf_counter()
ds = synthetic.synthetic_era5("2000-01-01", str(end), seed=0)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"days": days, "wall": wall, "model": spent["model"], "rss_mib": rss,
                  "n_time": int(ds.sizes["time"])}))
"""


def run_one(days: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, "-c", CHILD, str(days)], capture_output=True,
                         text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, nargs="+", default=[60 / 365.25, 1.0, 8.0])
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average (1 min) at start: {load:.2f}, cpus: {os.cpu_count()}")
    print("years | wall s | s/year | model share | peak RSS MiB | budget ratio (8 y in 180 s)")
    print("--- | --- | --- | --- | --- | ---")
    for years in args.years:
        days = round(years * 365.25)
        r = run_one(days)
        s_per_year = r["wall"] / (days / 365.25)
        ratio = s_per_year * 8 / BUDGET_S_PER_8_YEARS
        print(f"{days / 365.25:.2f} | {r['wall']:.1f} | {s_per_year:.1f} | "
              f"{r['model'] / r['wall']:.2f} | {r['rss_mib']:.0f} | {ratio:.2f}", flush=True)
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
