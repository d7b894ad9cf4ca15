"""Which space should the models learn in? The quick profile's data, scored on the test block.

Prints one table of latitude-weighted RMSE per variable divided by the day-of-year
climatology's (physical units, all test days; < 1 beats the climatology) for

- the EOF code of the anomalies with k = 16 and 64 components, anomalies scaled per variable and
  per grid point (:mod:`geofusion.data.eof`, :mod:`geofusion.data.anomalies`);
- the gappy-EOF fit with 50 % and 90 % of the pixels missing;
- the EOF code of the report's globally standardised full fields (k = 64), which spends its
  components on the seasonal cycle (the old ``quick_convergence.md`` table measured this one);
- the report's autoencoder (ResNet width 8, latent 64, plain MSE, report space) and the
  anomaly-space autoencoder (EOF-64 path + zero-initialised ResNet residual, latitude-weighted
  loss), each trained ``--epochs`` epochs with early stopping on the validation block;

and the CPU seconds of each. Usage::

    python benchmarks/anomaly_space.py [--epochs 12] [--threads 1]

Record: ``reports/benchmarks/quick_convergence.md``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from geofusion import data
from geofusion.data.anomalies import to_space
from geofusion.data.climatology import climatology, day_of_year
from geofusion.data.eof import fit_eof
from geofusion.data.observations import make_mask
from geofusion.experiments.profiles import PROFILES
from geofusion.learning import model_cache
from geofusion.learning.config import TrainConfig
from geofusion.verification.metrics import lat_weighted_rmse


def ratios(physical: np.ndarray, truth: np.ndarray, reference: np.ndarray, lat: np.ndarray
           ) -> list[float]:
    rmse = np.asarray(lat_weighted_rmse(physical, truth, lat, time_axis=0), dtype=np.float64)
    ref = np.asarray(lat_weighted_rmse(reference, truth, lat, time_axis=0), dtype=np.float64)
    return list(rmse / ref)


def reconstruct(method: torch.nn.Module, fields: np.ndarray) -> np.ndarray:
    method.eval()
    with torch.no_grad():
        return torch.cat([method(torch.from_numpy(fields[i:i + 128]))
                          for i in range(0, len(fields), 128)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", default="runs/benchmarks/anomaly_space")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = PROFILES["quick"]["common"]
    report = data.load(None, start="2000-01-01", end="2010-12-31", level=common["level"],
                       cache_dir=common["cache_dir"], train_fraction=0.6, test_fraction=0.2,
                       space="report")
    anomaly = to_space(report, "anomaly")
    truth = report.destandardise(report.test)
    train_phys = report.destandardise(report.train)
    clim = climatology(train_phys, report.train_times)
    reference = clim[day_of_year(report.test_times) - 1]
    rows: dict[str, tuple[list[float], float]] = {"day-of-year climatology": ([1.0] * 5, 0.0)}

    def per_gridpoint(prepared):
        phys = prepared.destandardise(prepared.train, prepared.train_times)
        anom = phys - clim[day_of_year(prepared.train_times) - 1]
        scale = np.sqrt((anom.astype(np.float64) ** 2).mean(axis=0)).astype(np.float32)
        return scale, anom / scale

    for k in (16, 64):
        tic = time.process_time()
        code = fit_eof(anomaly.train, anomaly.lat, k)
        rec = anomaly.destandardise(code.decode(code.encode(anomaly.test)), anomaly.test_times)
        rows[f"EOF-{k}, anomalies per variable"] = (ratios(rec, truth, reference, report.lat),
                                                    time.process_time() - tic)
        tic = time.process_time()
        scale, train_gp = per_gridpoint(anomaly)
        code_gp = fit_eof(train_gp, anomaly.lat, k)
        test_gp = (truth - reference) / scale
        rec_gp = code_gp.decode(code_gp.encode(test_gp)) * scale + reference
        rows[f"EOF-{k}, anomalies per grid point"] = (ratios(rec_gp, truth, reference,
                                                             report.lat),
                                                      time.process_time() - tic)
    code = fit_eof(anomaly.train, anomaly.lat, 64)
    for missing in (0.5, 0.9):
        tic = time.process_time()
        gen = torch.Generator().manual_seed(0)
        observed = make_mask((len(anomaly.test), *anomaly.test.shape[-2:]), missing, "pixel",
                             gen).numpy()
        z = code.encode_observed(np.where(observed[:, None], anomaly.test, 0.0), observed)
        rec = anomaly.destandardise(code.decode(z), anomaly.test_times)
        rows[f"gappy EOF-64, {missing:.0%} missing"] = (ratios(rec, truth, reference, report.lat),
                                                         time.process_time() - tic)
    tic = time.process_time()
    code_report = fit_eof(report.train, report.lat, 64)
    rec = report.destandardise(code_report.decode(code_report.encode(report.test)))
    rows["EOF-64 of the report's standardised full fields"] = (
        ratios(rec, truth, reference, report.lat), time.process_time() - tic)

    config = TrainConfig(epochs=args.epochs, batch_size=64, lr=1e-3, device="cpu", patience=3,
                         lr_schedule="cosine", warmup_epochs=1)
    for label, prepared, params, lr in [
            ("report autoencoder (ResNet-8, MSE, report space)", report,
             {"width": 8, "latent_dim": 64}, 1e-3),
            ("anomaly autoencoder (EOF-64 + ResNet-8 residual, lat-weighted)", anomaly,
             {"width": 8, "latent_dim": 64, "encoder": "eof_residual",
              "reconstruction_loss": "lat_weighted"}, 1e-4)]:
        tic = time.process_time()
        method, _, _ = model_cache.pretrained(
            "autoencoder", prepared, args.run_dir,
            TrainConfig(**{**config.__dict__, "lr": lr}), progress=False, **params)
        rec = prepared.destandardise(reconstruct(method, prepared.test), prepared.test_times)
        rows[label] = (ratios(rec, truth, reference, report.lat), time.process_time() - tic)

    table = pd.DataFrame({name: values + [seconds] for name, (values, seconds) in rows.items()},
                         index=[*report.channels, "CPU s"]).T
    print(f"test block {str(report.test_times[0])[:10]}..{str(report.test_times[-1])[:10]} "
          f"({len(report.test)} days); RMSE / day-of-year climatology RMSE; "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
