"""How much margin the simulated world keeps on its calibration targets across seeds.

tests/test_synthetic.py checks the calibration targets of issue 9 (and the magnitude bounds,
e.g. the 500 hPa geopotential below 61000 m^2/s^2) on ONE seed. A target met with a thin margin
on seed 0 may fail on another seed, which would mean the calibration is luck, not physics.
This script generates the test's multi-year run for several seeds and prints, per statistic,
the value for each seed, the target range and the smallest relative margin
``min(value - low, high - value) / |bound|`` over the seeds (negative: a seed misses).
Not a test (minutes of CPU); record its table in reports/benchmarks/synthetic_world.md.

    OMP_NUM_THREADS=1 python benchmarks/world_seed_margins.py                 # seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/world_seed_margins.py --seeds 0 3 --years 6

Each seed runs in a fresh subprocess so its memory (about 2 GiB for 10 years) is returned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
import numpy as np
from geofusion.experiments import world_calibration
from geofusion.world.synthetic import synthetic_era5
seed, years = int(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
ds = synthetic_era5(start="2000-01-01", end=f"{1999 + years}-12-31", seed=seed)
generated = time.perf_counter() - t
table = world_calibration.calibration_table(world_calibration.daily_fields(ds))
twin = world_calibration.twin_experiment(start="2000-01-01", days=50, seed=seed)
z = ds["geopotential"].isel(level=0)
two = ds.sel(time=slice("2000-01-01", "2001-12-31"))
u, v = ds["u_component_of_wind"].isel(level=0), ds["v_component_of_wind"].isel(level=0)
w = np.cos(np.deg2rad(ds.latitude))
ke = (0.5 * (u**2 + v**2)).weighted(w).mean(("longitude", "latitude"))
annual = ke.groupby("time.year").mean().values
values = {k: float(v) for k, v in table["value"].items()}
values["geopotential error-doubling time (days)"] = float(twin["doubling_days"])
values["Z500 max, first two years (m2/s2)"] = float(two["geopotential"].max())
values["Z500 min, first two years (m2/s2)"] = float(two["geopotential"].min())
values["Z500 max, all years (m2/s2)"] = float(z.max())
values["KE last/first year - 1"] = float(annual[-1] / annual[0] - 1)
values["KE interannual std/mean"] = float(annual.std() / annual.mean())
print(json.dumps({"seed": seed, "generated_s": generated, "values": values}))
"""

# Bounds of the magnitude and stability checks in tests/test_synthetic.py (the calibration
# targets come from geofusion.experiments.world_calibration.TARGETS).
EXTRA_BOUNDS = {
    "Z500 max, first two years (m2/s2)": (None, 6.1e4),
    "Z500 min, first two years (m2/s2)": (4.5e4, None),
    "Z500 max, all years (m2/s2)": (None, None),
    "KE last/first year - 1": (-0.3, 0.3),
    "KE interannual std/mean": (None, 0.15),
}


def run_seed(seed: int, years: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, "-c", CHILD, str(seed), str(years)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def margin(value: float, low: float | None, high: float | None) -> float | None:
    """Smallest distance to a bound relative to that bound (negative: outside)."""
    gaps = []
    if low is not None:
        gaps.append((value - low) / abs(low))
    if high is not None:
        gaps.append((high - value) / abs(high))
    return min(gaps) if gaps else None


def main() -> None:
    from geofusion.experiments.world_calibration import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--years", type=int, default=10, help="as tests/test_synthetic.py")
    args = parser.parse_args()
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}, cpus: {os.cpu_count()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, years: {args.years}")
    results = []
    for seed in args.seeds:
        t = time.perf_counter()
        results.append(run_seed(seed, args.years))
        print(f"seed {seed}: {time.perf_counter() - t:.0f} s (generation "
              f"{results[-1]['generated_s']:.0f} s)", flush=True)
    bounds = {**TARGETS, **EXTRA_BOUNDS}
    seeds = " | ".join(f"seed {r['seed']}" for r in results)
    print(f"\nstatistic | {seeds} | low | high | smallest margin")
    print("--- | " + " | ".join("---" for _ in results) + " | --- | --- | ---")
    for key, (low, high) in bounds.items():
        vals = [r["values"].get(key) for r in results]
        if any(v is None for v in vals):
            continue
        margins = [m for m in (margin(v, low, high) for v in vals) if m is not None]
        worst = f"{min(margins):+.3f}" if margins else "-"
        cells = " | ".join(f"{v:.4g}" for v in vals)
        print(f"{key} | {cells} | {low if low is not None else '-'} | "
              f"{high if high is not None else '-'} | {worst}")
    print(f"\nload average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
