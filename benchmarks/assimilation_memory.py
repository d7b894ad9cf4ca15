"""Benchmark and diagnosis of notebook 10 against its classical schemes with memory (issue 24).

Loads the quick profile's sparse-view Barlow Twins, frozen decoder and latent LSTM from the
model cache (``runs/quick``, trained by a pipeline run of notebook 10, e.g.
``python -m geofusion.pipeline --profile quick --only 10``; nothing is trained here if they
are there) and the quick data (SYNTHETIC), then

- ``time``: runs :func:`geofusion.experiments.assimilation_study.run_assimilation_experiment`
  at notebook 10's quick settings over the first 60 test days and prints its wall and process
  CPU seconds. Run it with the ``geofusion`` of the commit to measure on ``PYTHONPATH`` (e.g.
  the commit before issue 24 and after it, back to back).
- ``diagnose``: on those 60 test days, what bounds each 3D-Var: the RMSE of the
  representation itself (the decoder of the encoded truth, the EOF projection of the truth of
  as many modes as the latent has dimensions, a least-squares linear decoder of the same
  latent), the one-day forecast from the true state (the
  latent LSTM from the latents of the truth, the LIM from the EOF coefficients of the truth),
  each scheme's representation-error variance (the ``R`` diagonal both 3D-Vars add) and the
  climatology; latitude-weighted RMSE in physical units.

    OMP_NUM_THREADS=1 PYTHONPATH=lib python benchmarks/assimilation_memory.py diagnose
    OMP_NUM_THREADS=1 PYTHONPATH=<checkout>/lib python benchmarks/assimilation_memory.py time

Not a test: run it and record the output with the machine, commit and load it came from.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

import geofusion
from geofusion import data
from geofusion.downstream import forecasting
from geofusion.downstream.reconstruction import fit_frozen_decoder
from geofusion.experiments.profiles import parameters_for
from geofusion.learning import model_cache
from geofusion.learning.config import TrainConfig
from geofusion.verification.metrics import lat_weighted_rmse

# Notebook 10's defaults for the keys its quick profile leaves to them.
NOTEBOOK_DEFAULTS = {"forecast_batch_size": 64, "forecast_lr": 1e-3, "lstm_layers": 1}


def load(seed: int = 0):
    """The quick data and notebook 10's forecaster (from the model cache)."""
    p = {**NOTEBOOK_DEFAULTS, **parameters_for("quick", "10_assimilation")}
    prepared = data.load(None, level=p["level"], start=p["start"], end=p["end"],
                         cache_dir=p["cache_dir"], seed=seed, space=p["space"],
                         train_fraction=p["train_fraction"], test_fraction=p["test_fraction"])
    config = TrainConfig(epochs=p["encoder_epochs"], batch_size=p["batch_size"],
                         lr=p["encoder_lr"], seed=seed, device="cpu", patience=p["patience"],
                         lr_schedule=p["lr_schedule"], warmup_epochs=p["warmup_epochs"])
    observation = {"kind": p["mask_kind"], "min_ratio": p["min_ratio"],
                   "max_ratio": p["max_ratio"], "noise_std": p["noise_std"],
                   "noise_length": p["noise_length"], "both_views": p["both_views"]}
    encoder, _, encoder_dir = model_cache.pretrained(
        "barlow_twins", prepared, p["run_dir"], config, seed=seed, width=p["width"],
        latent_dim=p["latent_dim"], proj_dim=p["proj_dim"], lambd=p["lambd"],
        observation=observation, augmentation=p["augmentation"], encoder=p["encoder"])
    decoder_config = TrainConfig(epochs=p["decoder_epochs"], batch_size=p["batch_size"],
                                 lr=p["decoder_lr"], seed=seed, device="cpu",
                                 lr_schedule=p["lr_schedule"])
    frozen, _ = fit_frozen_decoder(encoder, encoder_dir, prepared, p["run_dir"], decoder_config,
                                   p["latent_dim"], n_days=p["n_decoder_days"],
                                   width=p["decoder_width"], seed=seed, progress=False)
    forecast_config = TrainConfig(epochs=p["forecast_epochs"],
                                  batch_size=p["forecast_batch_size"], lr=p["forecast_lr"],
                                  seed=seed, device="cpu", patience=p["forecast_patience"])
    forecaster, _, _ = forecasting.fit_latent_forecaster(
        encoder, frozen.decoder, prepared, p["run_dir"], forecast_config,
        representation=encoder_dir.name, context=p["context"], hidden_dim=p["lstm_hidden"],
        num_layers=p["lstm_layers"], horizon=p["forecast_horizon"], seed=seed, progress=False)
    return p, prepared, forecaster


def time_experiment() -> None:
    from geofusion.experiments.assimilation_study import run_assimilation_experiment

    p, prepared, forecaster = load()
    wall, cpu = time.perf_counter(), time.process_time()
    results = run_assimilation_experiment(
        forecaster, prepared, p["observed_fractions"], p["obs_noise_stds"], kind=p["mask_kind"],
        noise_length=p["noise_length"], days=p["cycle_days"], b_rank=p["b_rank"],
        var_iterations=p["var_iterations"], n_stat_days=p["n_stat_days"],
        distinct_masks=p["distinct_masks"], seed=0, block="test", progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"geofusion {geofusion.__file__}")
    print(f"run_assimilation_experiment: wall {wall:.1f} s, CPU {cpu:.1f} s, load average "
          f"{os.getloadavg()[0]:.1f}, max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; schemes "
          f"{list(results.mse)}")


def _linear_decoder(forecaster, prepared):
    """The least-squares affine map from the forecaster's training latents to the training
    fields: what a linear decoder of the same latent reaches (cf. the conv decoder)."""
    z = forecaster.latents["train"].double().numpy()
    x = prepared.train.reshape(len(prepared.train), -1).astype(np.float64)
    design = np.hstack([z, np.ones((len(z), 1))])
    weights, *_ = np.linalg.lstsq(design, x, rcond=None)

    def decode(latents: torch.Tensor) -> np.ndarray:
        a = np.hstack([latents.double().numpy(), np.ones((len(latents), 1))])
        return (a @ weights).reshape((len(a),) + prepared.train.shape[1:])
    return decode


def diagnose() -> None:
    from geofusion.downstream.assimilation import decoder_error_variance
    from geofusion.verification.eof_3dvar import fit_eof_3dvar

    p, prepared, forecaster = load()
    days = p["cycle_days"]
    truth = prepared.fields("test")[:days + 1]
    times = np.asarray(prepared.times("test")[:days + 1])

    def rmse(x: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Time-mean RMSE (root of the mean daily lat-weighted MSE) against the truth."""
        f = prepared.destandardise(np.asarray(x, np.float64), times[which])
        t = prepared.destandardise(truth[which].astype(np.float64), times[which])
        return np.sqrt((np.asarray(lat_weighted_rmse(f, t, prepared.lat)) ** 2).mean(axis=0))

    cycle = np.arange(days)
    latent = forecaster.encode(torch.as_tensor(truth))
    eof = fit_eof_3dvar(prepared, int(latent.shape[1]), p["obs_noise_stds"][0],
                        p["noise_length"])
    code = eof.model.code
    inits = np.arange(forecaster.context - 1, days - 1)
    rows = {
        "climatology": rmse(np.zeros_like(truth[cycle]), cycle),
        "decoder ceiling (decode(encode(truth)))": rmse(
            forecaster.decode(latent[cycle]).numpy(), cycle),
        "linear decoder ceiling (least squares on training latents)": rmse(
            _linear_decoder(forecaster, prepared)(latent[cycle]), cycle),
        f"EOF-{code.k} ceiling (projection of the truth)": rmse(
            code.decode(code.encode(truth[cycle])), cycle),
        "one-day LSTM forecast from the true latents": rmse(
            forecaster.decode(forecaster.forecast_latents(latent, inits, 1)[:, 0]).numpy(),
            inits + 1),
        "one-day LIM forecast from the true EOF state": rmse(
            eof.model.forecast(truth, times, inits, 1)[:, 0], inits + 1),
    }
    rng = np.random.default_rng(0)
    stat_days = np.sort(rng.choice(len(prepared.train), p["n_stat_days"], replace=False))
    variances = {
        "R representation variance, decoder (model units)": decoder_error_variance(
            forecaster, torch.as_tensor(prepared.train[stat_days])).numpy(),
        "R representation variance, EOF truncation (model units)": eof.representation_var,
    }
    channels = list(prepared.channels)
    print(f"SYNTHETIC quick data, first {days} test days from {str(times[0])[:10]}; "
          f"latent {latent.shape[1]}, EOF modes {code.k}, geofusion {geofusion.__file__}")
    print(f"{'':58s}" + "".join(f"{c[:14]:>16s}" for c in channels))
    for name, values in {**rows, **variances}.items():
        print(f"{name:58s}" + "".join(f"{v:16.4g}" for v in np.asarray(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["time", "diagnose"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    time_experiment() if args.what == "time" else diagnose()


if __name__ == "__main__":
    main()
