"""Benchmark: what notebook 09's fusion latents hold linearly, against the equal-size EOF code.

Notebook 09 (issue 24) finds every scheme's reconstruction (conv decoder and ridge decoder)
no better than the day-of-year climatology while the EOF code of the same size is far better.
This script separates the causes on the notebook's own encoders (quick profile, loaded from
``<run_dir>/09_fusion``; trained there if absent) and data (SYNTHETIC default unless the
profile says otherwise), scoring the first ``n_eval`` test days in physical units
(latitude-weighted RMSE / day-of-year climatology RMSE, mean over the five variables):

- the ridge decoder (:func:`geofusion.verification.mode_regression.fit_ridge_cv`, penalty by
  blocked CV) of each trained scheme's latent fitted on the encoders' ``n_train_days`` days
  (notebook 09's) and on every training day (is it the number of days?);
- the same architectures at their seeded *initial* weights, untrained (is it the training?);
- the EOF code of the same size on the same two sets of days (the linear reference).

Also printed: the relative penalty the CV chose and the CV error at it over the CV error of
the largest penalty (about the mean predictor): near 1, the latent holds no linear
information the CV can find.

    OMP_NUM_THREADS=1 python benchmarks/fusion_latent_linear_content.py

Not a test: run it and record the output with the machine and commit.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np
import pandas as pd
import torch

from geofusion import data
from geofusion.data.eof import area_weights, fit_eof
from geofusion.experiments import fusion_study
from geofusion.experiments.fusion_linear_twins import scheme_latents
from geofusion.learning.config import TrainConfig
from geofusion.learning.fusion_methods import build_fusion_method
from geofusion.models.fusion_encoders import parse_scheme
from geofusion.reporting.pretrain import notebook_parameters
from geofusion.verification.metrics import lat_weighted_rmse
from geofusion.verification.mode_regression import fit_ridge_cv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--schemes", default=None, help="comma-separated subset of the runs")
    args = parser.parse_args()
    p = notebook_parameters(args.profile, ["09_fusion"])["09_fusion"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"commit {commit}; threads {torch.get_num_threads()}")
    prepared = data.load(p["data_path"], level=p["level"], start=p["start"], end=p["end"],
                         cache_dir=p["cache_dir"], seed=p["seed"], space=p["space"],
                         train_fraction=p["train_fraction"], test_fraction=p["test_fraction"])
    rng = np.random.default_rng(p["seed"])
    train_idx = np.sort(rng.choice(len(prepared.train), size=p["n_train_days"], replace=False))
    train_set = data.FieldDataset(prepared.train[train_idx],
                                  prepared.season_labels("train")[train_idx])
    fields, times = prepared.test[:p["n_eval"]], prepared.test_times[:p["n_eval"]]
    truth = np.asarray(prepared.destandardise(fields, times))
    clim_rmse = lat_weighted_rmse(np.asarray(prepared.destandardise(0 * fields, times)), truth,
                                  prepared.lat, time_axis=0)
    architecture = dict(in_channels=5, grid=prepared.train.shape[-2:],
                        latent_dim=p["latent_dim"], width=p["width"],
                        mode_width=p["mode_width"], token_dim=p["token_dim"],
                        proj_dim=p["proj_dim"], proj_hidden_dim=p["proj_hidden_dim"],
                        lambd=p["lambd"])
    runs = fusion_study.fusion_runs(p["schemes"], p["dropout_scheme"], p["p_mode_dropout"],
                                    p["mode_group_scheme"])
    if args.schemes:
        runs = [r for r in runs if r[0] in args.schemes.split(",")]
    config = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                         seed=p["seed"], device="cpu")
    methods, _ = fusion_study.train_fusion_methods(runs, train_set, config,
                                                   f"{p['run_dir']}/09_fusion", seed=p["seed"],
                                                   progress=False, **architecture)
    for name, scheme, p_drop, objective in runs:
        if p_drop == 0 and objective == "barlow_twins":
            kind, operator = parse_scheme(scheme)
            torch.manual_seed(p["seed"])
            methods[f"{name} (untrained)"] = build_fusion_method(
                objective, kind=kind, fusion=operator, **architecture).eval()
    weights = np.broadcast_to(area_weights(prepared.lat)[:, None],
                              prepared.train.shape[1:]).reshape(-1)
    day_sets = {f"{len(train_idx)} days": train_idx,
                f"all {len(prepared.train)} days": np.arange(len(prepared.train))}

    def relative(reconstruction: np.ndarray) -> float:
        physical = np.asarray(prepared.destandardise(reconstruction.astype(np.float32), times))
        return float(np.mean(lat_weighted_rmse(physical, truth, prepared.lat, time_axis=0)
                             / clim_rmse))

    rows = {}
    for label, idx in day_sets.items():
        code = fit_eof(prepared.train[idx], prepared.lat, p["latent_dim"])
        rows[f"EOF code (k = {p['latent_dim']}), {label}"] = {
            "RMSE / climatology": relative(code.decode(code.encode(fields)))}
    for name, method in methods.items():
        started = time.perf_counter()
        test_latents = scheme_latents(method, fields)
        for label, idx in day_sets.items():
            train = prepared.train[idx]
            fit = fit_ridge_cv(scheme_latents(method, train), train.reshape(len(train), -1),
                               weights)
            chosen = int(np.argmin(fit.cv_error))
            rows[f"{name} + ridge decoder, {label}"] = {
                "RMSE / climatology": relative(fit.predict(test_latents).reshape(fields.shape)),
                # alphas = RELATIVE_ALPHAS (1e-6 .. 1e3) x the input scale
                "relative penalty": fit.alpha / (fit.alphas[-1] / 1e3),
                "CV error / CV error at the largest penalty": fit.cv_error[chosen]
                / fit.cv_error[-1]}
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\nComplete-input reconstruction of the first {len(fields)} test days "
          f"({str(times[0])[:10]} .. {str(times[-1])[:10]}), "
          f"{'SYNTHETIC' if prepared.synthetic else 'ERA5'} data, mean over variables")
    print(pd.DataFrame(rows).T.to_string(float_format="{:.3g}".format))


if __name__ == "__main__":
    main()
