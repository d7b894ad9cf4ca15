"""What a profile's training will cost, measured before it starts (``pipeline cost``).

:func:`cost_jobs` lists every model the selected notebooks train, each built as the notebook
builds it (:func:`notebook_jobs`), and counts a model that several notebooks request once, under
the first (the others are listed in its ``shared_with``):

- the encoders of :mod:`geofusion.experiments.model_requests`: the autoencoder and contrastive
  encoders of 02-05, the base encoders of 06, 07, 08 and 10 (02's and 03's, 06's sparse-view
  Barlow Twins), notebook 09's fusion schemes and notebook 11's variants;
- the frozen-encoder decoders (:func:`geofusion.downstream.reconstruction.build_frozen_decoder`,
  ``decoder_epochs``): 06 (Barlow Twins, and sparse-view Barlow Twins on observed latents), 07
  (Barlow Twins: 06's, shared), 08 (Barlow Twins and sparse-view Barlow Twins with the plain
  MSE), 09 (one per scheme), 10 (08's sparse-view one, shared) and 11 (one per variant when
  ``decoder == "conv"``);
- notebook 07's joint schemes (:func:`geofusion.learning.decoders.build_joint`: Kadeethum,
  Quetin, Yao/Dippel with the notebook's scheme parameters, ``joint_epochs``);
- the latent LSTMs (:class:`geofusion.downstream.forecasting.LatentSeq2Seq`,
  ``forecast_epochs``): one per representation of 08 (autoencoder, Barlow Twins, sparse-view
  Barlow Twins, EOF code), one per scheme of 09, 10's (08's sparse-view one, shared); an epoch
  is the training windows, ``training days - context - horizon + 1``
  (:func:`geofusion.downstream.forecasting.make_windows`), in batches;
- notebook 11's two conditional latent DDPMs per variant
  (:func:`geofusion.experiments.ablations.build_conditional_diffusion`: the reconstruction one
  on ``diffusion_train_days`` observed training days, the forecast one on as many pairs of
  consecutive days), trained on the CPU whatever the notebook's device
  (:data:`geofusion.experiments.ablations.DIFFUSION_DEVICE`), so measured there.

:func:`measure_job` builds the model with the lib's own builder (random weights, a random
orthonormal stand-in for an EOF basis), runs ``warmup + steps`` optimisation steps
(:func:`time_steps`, as :func:`geofusion.learning.training.fit` runs them: Adam, bfloat16
autocast on CUDA) on random data of the model's shape (fields of the profile's grid, latents,
latent windows) at its batch size on the device at hand, and records the seconds per step, the
FLOPs of one step (:class:`torch.utils.flop_counter.FlopCounterMode`, the same on every device;
it does not see the fused LSTM kernels, whose matrix products :func:`lstm_step_flops` adds)
and the peak memory (CUDA: ``max_memory_allocated``; CPU: the process's resident set size after
the steps, an upper bound that includes everything loaded before). The projection multiplies by
the steps per epoch (training samples / batch size, as the notebook's loader batches them,
at most ``limit_batches``) and the epochs (the maximum: early stopping may end sooner).

Not counted: validation passes (one forward pass over the validation days, or windows, per
epoch: a few percent); the encoding of the latents an LSTM or a DDPM trains on (one forward
pass of the frozen encoder over every day, once; a frozen decoder's encoder runs inside its
measured step, so that one is counted); notebook 09's fine-grid decoder (skipped on real data,
so in the full profile); and the evaluations (bootstrap, baselines, probes, ridge decoders,
DDPM sampling).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import psutil
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from geofusion.data import FieldDataset
from geofusion.data.samplers import TemporalPairDataset
from geofusion.downstream.forecasting import ForecastMethod, LatentSeq2Seq, LatentWindowDataset
from geofusion.downstream.reconstruction import build_frozen_decoder
from geofusion.experiments import ablations
from geofusion.experiments.fusion_study import fusion_runs
from geofusion.experiments.model_requests import ModelRequest, base_requests, notebook_requests
from geofusion.learning.config import TrainConfig
from geofusion.learning.decoders import build_joint
from geofusion.learning.fusion_methods import build_fusion_method
from geofusion.learning.methods import build_method
from geofusion.learning.training import (
    batches_per_epoch,
    epoch_generator,
    move_to,
    resolve_device,
    time_aware_batch_sampler,
)
from geofusion.models.fusion_encoders import parse_scheme

__all__ = ["StepCost", "CostJob", "JOB_KINDS", "TRAINING_NOTEBOOKS", "training_days",
           "lstm_windows", "steps_per_epoch", "notebook_jobs", "cost_jobs", "StepTiming",
           "time_steps", "lstm_step_flops", "measure_job", "measure_request", "projection_table"]

GRID = (32, 64)  # WeatherBench 2's 64x32 and the synthetic default
CHANNELS = 5
#: What a :class:`CostJob` trains.
JOB_KINDS = ("encoder", "fusion", "frozen_decoder", "joint", "lstm", "diffusion")
#: The notebooks that train models (01 trains none).
TRAINING_NOTEBOOKS = ("02_autoencoder", "03_barlow_twins", "04_simclr",
                      "05_supervised_contrastive", "06_sparsity", "07_decoder",
                      "08_forecasting", "09_fusion", "10_assimilation", "11_beyond")


@dataclasses.dataclass
class StepCost:
    """One model's measured step and its projection over the profile's training."""

    notebook: str
    label: str
    batch_size: int
    epochs: int
    steps_per_epoch: int
    seconds_per_step: float
    flops_per_step: float
    peak_memory_gib: float
    device: str
    kind: str = "encoder"
    shared_with: tuple[str, ...] = ()

    @property
    def projected_hours(self) -> float:
        return self.seconds_per_step * self.steps_per_epoch * self.epochs / 3600

    def gpu_hours(self, peak_tflops: float, efficiency: float) -> float:
        """Hours at ``efficiency`` of a ``peak_tflops`` device: a projection, not a measurement."""
        total = self.flops_per_step * self.steps_per_epoch * self.epochs
        return total / (peak_tflops * 1e12 * efficiency) / 3600


@dataclasses.dataclass(frozen=True, eq=False)
class CostJob:
    """One model a notebook trains, as :func:`measure_job` builds it.

    ``kind`` (:data:`JOB_KINDS`) says what ``build`` holds: ``encoder`` / ``fusion``: nothing
    (the model is ``request``'s); ``frozen_decoder``: ``latent_dim``, ``width``, ``seed``,
    ``reconstruction_loss``, ``observation`` (the frozen encoder is ``request``'s);
    ``joint``: ``scheme``, ``params``, ``architecture``, ``seed``; ``lstm``: ``latent_dim``,
    ``hidden_dim``, ``num_layers``, ``context``, ``horizon``, ``seed``; ``diffusion``:
    ``dim``, ``settings`` (:func:`geofusion.experiments.ablations.diffusion_settings`),
    ``seed``. ``samples``: training samples per epoch (days, LSTM windows, DDPM pairs);
    ``key``: what identifies the trained model (equal keys: one model, trained once);
    ``device``: where the notebook trains it when not on its ``device`` (the DDPMs: "cpu").
    """

    notebook: str
    label: str
    kind: str
    config: TrainConfig
    samples: int
    key: str
    request: ModelRequest | None = None
    build: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str | None = None
    shared_with: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {self.kind!r}; choose one of {JOB_KINDS}")
        if self.samples < 1:
            raise ValueError(f"{self.notebook} {self.label}: {self.samples} training samples; "
                             "the notebook would have nothing to train on (more training days, "
                             "or a shorter context)")


def training_days(params: dict[str, Any], train_fraction: float = 0.8) -> int:
    """Training days of the notebook's period (daily means; the profiles split 60/20/20).

    Example:
        >>> training_days({"start": "1959-01-01", "end": "2022-12-31"})
        18701
    """
    days = (pd.Timestamp(params["end"]) - pd.Timestamp(params["start"])).days + 1
    return int(round(days * train_fraction))


def lstm_windows(days: int, context: int, horizon: int = 1) -> int:
    """Training windows of a latent LSTM on ``days`` consecutive days: ``days - context -
    horizon + 1`` (:func:`geofusion.downstream.forecasting.make_windows`).

    Example:
        >>> lstm_windows(100, 30)
        70
    """
    n = days - context - horizon + 1
    if n < 1:
        raise ValueError(f"{days} training days are too short for context {context} + horizon "
                         f"{horizon}; use more training days or a shorter context")
    return n


def steps_per_epoch(samples: int, config: TrainConfig) -> int:
    """Optimisation steps of one epoch over ``samples`` training samples, as
    :func:`geofusion.learning.training.fit` batches them: full batches (the last incomplete one
    dropped when ``config.drop_last`` and there is more than one batch), the time-aware
    sampler's batches when ``config.batch_sampler`` is set, at most ``config.limit_batches``.

    Example:
        >>> steps_per_epoch(1000, TrainConfig(batch_size=128)), steps_per_epoch(
        ...     100, TrainConfig(batch_size=128))
        (7, 1)
    """
    batch = config.batch_size
    if config.batch_sampler is not None:
        n = len(time_aware_batch_sampler(samples, config, epoch=0))
    elif config.drop_last and samples > batch:
        n = samples // batch
    else:
        n = math.ceil(samples / batch)
    return batches_per_epoch(n, config)


def _request_key(request: ModelRequest) -> str:
    return repr((request.method, sorted(request.build_params.items(), key=str),
                 dataclasses.astuple(request.config), request.temporal_pairs))


def _encoder_job(notebook: str, request: ModelRequest, days: int) -> CostJob:
    pairs = request.temporal_pairs or {}
    # TemporalPairDataset with a mirror day keeps the anchors max_shift .. T - 1 - max_shift.
    samples = days - (2 * pairs["max_shift"] if pairs.get("with_mirror") else 0)
    kind = "fusion" if request.method == "fusion" else "encoder"
    return CostJob(notebook, request.label, kind, request.config, samples,
                   _request_key(request), request)


def _decoder_config(p: dict[str, Any], schedule: bool = True) -> TrainConfig:
    """The frozen decoders' config of notebooks 06, 07, 08 and 10 (``schedule``) and 11."""
    extra = {"lr_schedule": p["lr_schedule"]} if schedule else {}
    return TrainConfig(epochs=p["decoder_epochs"], batch_size=p["batch_size"],
                       lr=p["decoder_lr"], seed=p["seed"], device=p["device"],
                       limit_batches=p.get("limit_batches"), **extra)


def _frozen_decoder_job(notebook: str, label: str, encoder: ModelRequest, config: TrainConfig,
                        latent_dim: int, days: int, n_days: int | None, width: int, seed: int,
                        reconstruction_loss: str = "mse",
                        observation: dict[str, Any] | None = None) -> CostJob:
    """:func:`geofusion.downstream.reconstruction.fit_frozen_decoder` on ``encoder``'s model
    (its cache key: the encoder, width, seed, training days, loss, observation, config)."""
    samples = days if n_days is None else min(n_days, days)
    build = {"latent_dim": latent_dim, "width": width, "seed": seed,
             "reconstruction_loss": reconstruction_loss, "observation": observation}
    key = repr(("frozen_decoder", _request_key(encoder), sorted(build.items(), key=str),
                samples, dataclasses.astuple(config)))
    return CostJob(notebook, label, "frozen_decoder", config, samples, key, encoder, build)


def _lstm_job(notebook: str, label: str, representation: str, config: TrainConfig,
              days: int, latent_dim: int, hidden_dim: int, num_layers: int, context: int,
              horizon: int, seed: int) -> CostJob:
    """:func:`geofusion.downstream.forecasting.fit_latent_forecaster` on ``days`` consecutive
    training days of ``representation``'s latents (its cache key)."""
    build = {"latent_dim": latent_dim, "hidden_dim": hidden_dim, "num_layers": num_layers,
             "context": context, "horizon": horizon, "seed": seed}
    key = repr(("lstm", representation, sorted(build.items()), days,
                dataclasses.astuple(config)))
    return CostJob(notebook, label, "lstm", config, lstm_windows(days, context, horizon), key,
                   build=build)


def _notebook_08_jobs(notebook: str, p: dict[str, Any], days: int,
                      encoders: list[ModelRequest], eof_code: bool) -> list[CostJob]:
    """Notebook 08's decoders and LSTMs on ``encoders`` and, with ``eof_code``, the LSTM on
    the EOF twin's code (08: all three base models and the EOF code; 10: the sparse-view
    model only), with 08's cells' settings."""
    config = _decoder_config(p)
    forecast_config = TrainConfig(epochs=p["forecast_epochs"],
                                  batch_size=p["forecast_batch_size"], lr=p["forecast_lr"],
                                  seed=p["seed"], device=p["device"],
                                  patience=p["forecast_patience"],
                                  limit_batches=p.get("limit_batches"))
    lstm = {"config": forecast_config, "days": days, "latent_dim": p["latent_dim"],
            "hidden_dim": p["lstm_hidden"], "num_layers": p["lstm_layers"],
            "context": p["context"], "horizon": p["forecast_horizon"], "seed": p["seed"]}
    # The autoencoder decodes with its own decoder.
    jobs = [_frozen_decoder_job(notebook, f"{request.label} decoder", request, config,
                                p["latent_dim"], days, p["n_decoder_days"], p["decoder_width"],
                                p["seed"])
            for request in encoders if request.label != "autoencoder"]
    jobs += [_lstm_job(notebook, f"{request.label} LSTM", _request_key(request), **lstm)
             for request in encoders]
    if eof_code:  # notebook 08's EOF twin: the latent_dim leading EOFs
        jobs.append(_lstm_job(notebook, "eof_code LSTM", f"eof_code-{p['latent_dim']}", **lstm))
    return jobs


def _notebook_09_jobs(notebook: str, p: dict[str, Any], days: int) -> list[CostJob]:
    """Notebook 09's schemes, a decoder per scheme and an LSTM per scheme."""
    scheme_days = days if p.get("n_train_days") is None else min(days, p["n_train_days"])
    common = {"batch_size": p["batch_size"], "seed": p["seed"], "device": p["device"],
              "limit_batches": p.get("limit_batches")}
    config = TrainConfig(epochs=p["epochs"], lr=p["lr"], **common)
    decoder_config = TrainConfig(epochs=p["decoder_epochs"], lr=p["lr"], **common)
    forecast_config = TrainConfig(epochs=p["forecast_epochs"], lr=p["forecast_lr"], **common)
    lstm_days = (days if p.get("forecast_train_days") is None
                 else min(days, p["forecast_train_days"]))
    jobs = []
    for name, scheme, p_drop, objective in fusion_runs(
            p["schemes"], p["dropout_scheme"], p["p_mode_dropout"], p["mode_group_scheme"]):
        kind, operator = parse_scheme(scheme)
        params = {"objective": objective, "kind": kind, "fusion": operator,
                  "p_mode_dropout": p_drop, "latent_dim": p["latent_dim"],
                  "width": p["width"], "mode_width": p["mode_width"],
                  "token_dim": p["token_dim"], "proj_dim": p["proj_dim"],
                  "proj_hidden_dim": p["proj_hidden_dim"], "lambd": p["lambd"],
                  "encoder": p.get("encoder", "resnet")}
        request = ModelRequest(name, "fusion", config, params, p["seed"])
        jobs.append(_encoder_job(notebook, request, scheme_days))
        decoder = _frozen_decoder_job(notebook, f"{name} decoder", request, decoder_config,
                                      p["latent_dim"], scheme_days, None, p["decoder_width"],
                                      p["seed"])
        jobs.append(decoder)
        # fusion_study.fit_latent_forecasters: one-step loss, one layer, the probe's latents.
        jobs.append(_lstm_job(notebook, f"{name} LSTM", decoder.key, forecast_config,
                              lstm_days, p["latent_dim"], p["lstm_hidden"], 1, p["context"], 1,
                              p["seed"]))
    return jobs


def _notebook_07_joint_jobs(notebook: str, p: dict[str, Any], days: int) -> list[CostJob]:
    """Notebook 07's three joint schemes (its cell "joint schemes")."""
    samples = days if p["n_train_days"] is None else min(days, p["n_train_days"])
    architecture = {"in_channels": CHANNELS, "grid": list(GRID), "latent_dim": p["latent_dim"],
                    "width": p["width"], "proj_dim": p["proj_dim"],
                    "proj_hidden_dim": p["proj_hidden_dim"], "lambd": p["lambd"],
                    "decoder_width": p["decoder_width"], "augmentation": p["augmentation"],
                    "encoder": p["encoder"], "reconstruction_loss": p["reconstruction_loss"]}
    scheme_params = {
        "kadeethum": {"inner_batch": p["inner_batch"], "decoder_weight": p["kadeethum_weight"]},
        "quetin": {"alpha_start": p["alpha_start"], "alpha_end": p["alpha_end"],
                   "schedule": p["alpha_schedule"]},
        "yao_dippel": {"mask_ratio": p["yao_mask_ratio"],
                       "decoder_weight": p["yao_decoder_weight"]},
    }
    config = TrainConfig(epochs=p["joint_epochs"], batch_size=p["batch_size"],
                         lr=p["joint_lr"], seed=p["seed"], device=p["device"],
                         limit_batches=p.get("limit_batches"))
    jobs = []
    for scheme, params in scheme_params.items():
        build = {"scheme": scheme, "params": params, "architecture": architecture,
                 "seed": p["seed"]}
        key = repr(("joint", scheme, sorted(params.items()), sorted(architecture.items()),
                    p["seed"], samples, dataclasses.astuple(config)))
        jobs.append(CostJob(notebook, f"joint {scheme}", "joint", config, samples, key,
                            build=build))
    return jobs


def _notebook_11_jobs(notebook: str, p: dict[str, Any], days: int) -> list[CostJob]:
    """Notebook 11's variants, the conv decoder per variant (``decoder == "conv"``) and the
    two DDPMs per variant of :func:`geofusion.experiments.ablations.score_variant`."""
    settings = ablations.diffusion_settings(p, p.get("limit_batches"))
    limit = days if settings["train_days"] is None else settings["train_days"]
    diffusion_config = TrainConfig(epochs=settings["epochs"],
                                   batch_size=settings["batch_size"], lr=settings["lr"],
                                   seed=p["seed"], device=ablations.DIFFUSION_DEVICE,
                                   limit_batches=settings["limit_batches"])
    jobs = []
    for request in notebook_requests(notebook, p):
        jobs.append(_encoder_job(notebook, request, days))
        if p["decoder"] == "conv":
            jobs.append(_frozen_decoder_job(
                notebook, f"{request.label} decoder", request, _decoder_config(p, False),
                p["latent_dim"], days, p["n_decoder_days"], p["decoder_width"], p["seed"]))
        # The reconstruction DDPM on `limit` observed training days, the forecast DDPM on as
        # many pairs of consecutive training days (days - 1 of them).
        for which, samples in (("reconstruction", min(limit, days)),
                               ("forecast", min(limit, days - 1))):
            build = {"dim": p["latent_dim"], "settings": settings, "seed": p["seed"]}
            key = repr(("diffusion", which, _request_key(request), samples,
                        sorted(settings.items()), p["seed"]))
            jobs.append(CostJob(notebook, f"{request.label} DDPM ({which})", "diffusion",
                                diffusion_config, samples, key, build=build,
                                device=ablations.DIFFUSION_DEVICE))
    return jobs


def notebook_jobs(notebook: str, p: dict[str, Any]) -> list[CostJob]:
    """Every model ``notebook`` trains with its parameters ``p`` (its full parameter set,
    :func:`geofusion.reporting.pretrain.notebook_parameters`), built as its cells build them
    (module docstring); none for a notebook that trains nothing (01).

    Example:
        >>> from geofusion.reporting.pretrain import notebook_parameters
        >>> p = notebook_parameters("quick", ["07_decoder"])["07_decoder"]
        >>> [job.label for job in notebook_jobs("07_decoder", p)]  # doctest: +NORMALIZE_WHITESPACE
        ['autoencoder', 'barlow_twins', 'barlow_twins decoder', 'joint kadeethum',
         'joint quetin', 'joint yao_dippel']
    """
    if notebook not in TRAINING_NOTEBOOKS:
        if notebook.startswith("01"):
            return []
        raise ValueError(f"no training known for {notebook!r}; the notebooks that train: "
                         f"{', '.join(TRAINING_NOTEBOOKS)}")
    days = training_days(p, p.get("train_fraction", 0.8))
    if notebook == "09_fusion":
        return _notebook_09_jobs(notebook, p, days)
    if notebook == "11_beyond":
        return _notebook_11_jobs(notebook, p, days)
    if notebook in ("02_autoencoder", "03_barlow_twins", "04_simclr",
                    "05_supervised_contrastive"):
        return [_encoder_job(notebook, r, days) for r in notebook_requests(notebook, p)]
    if notebook == "06_sparsity":
        ae, bt, sparse = base_requests(p)
        config = _decoder_config(p)
        decoder = {"config": config, "latent_dim": p["latent_dim"], "days": days,
                   "n_days": p["n_decoder_days"], "width": p["decoder_width"],
                   "seed": p["seed"], "reconstruction_loss": p["reconstruction_loss"]}
        return [*(_encoder_job(notebook, r, days) for r in (ae, bt, sparse)),
                _frozen_decoder_job(notebook, "barlow_twins decoder", bt, **decoder),
                _frozen_decoder_job(notebook, "sparse_barlow_twins decoder (observed)",
                                    sparse, observation=sparse.build_params["observation"],
                                    **decoder)]
    if notebook == "07_decoder":
        ae, bt = base_requests(p, ("autoencoder", "barlow_twins"))
        return [_encoder_job(notebook, ae, days), _encoder_job(notebook, bt, days),
                _frozen_decoder_job(notebook, "barlow_twins decoder", bt, _decoder_config(p),
                                    p["latent_dim"], days, p["n_train_days"],
                                    p["decoder_width"], p["seed"], p["reconstruction_loss"]),
                *_notebook_07_joint_jobs(notebook, p, days)]
    if notebook == "08_forecasting":
        encoders = base_requests(p)
        return [*(_encoder_job(notebook, r, days) for r in encoders),
                *_notebook_08_jobs(notebook, p, days, encoders, eof_code=True)]
    # 10_assimilation: 08's sparse-view Barlow Twins, its decoder and LSTM (08's cells).
    (sparse,) = base_requests(p, ("sparse_barlow_twins",))
    return [_encoder_job(notebook, sparse, days),
            *_notebook_08_jobs(notebook, p, days, [sparse], eof_code=False)]


def cost_jobs(planned: dict[str, dict[str, Any]]) -> list[CostJob]:
    """Every distinct model of ``planned`` (notebook -> parameters), in notebook order; a model
    several notebooks request (equal :attr:`CostJob.key`, as the model cache keys it) is
    counted once, under the first, whose ``shared_with`` names the others."""
    jobs: list[CostJob] = []
    seen: dict[str, int] = {}
    for notebook, p in planned.items():
        for job in notebook_jobs(notebook, p):
            if job.key in seen:
                first = jobs[seen[job.key]]
                if notebook != first.notebook and notebook not in first.shared_with:
                    jobs[seen[job.key]] = dataclasses.replace(
                        first, shared_with=(*first.shared_with, notebook))
                continue
            seen[job.key] = len(jobs)
            jobs.append(job)
    return jobs


def _latitudes() -> np.ndarray:
    return np.linspace(-90 + 90 / GRID[0], 90 - 90 / GRID[0], GRID[0])


def _build(request: ModelRequest) -> nn.Module:
    torch.manual_seed(request.seed)
    if request.method == "fusion":
        params = dict(request.build_params)
        objective = params.pop("objective")
        return build_fusion_method(objective, in_channels=CHANNELS, grid=GRID, **params,
                                   **_stand_in_data_parameters(params))
    return build_method(request.method, in_channels=CHANNELS, grid=GRID, **request.build_params,
                        **_stand_in_data_parameters(request.build_params))


def _stand_in_data_parameters(build_params: dict[str, Any]) -> dict[str, Any]:
    """What :func:`geofusion.learning.model_cache.data_dependent_parameters` would fit on the
    training days, with the same shapes but no data (a cost measurement needs no real basis):
    an orthonormal random EOF basis of ``latent_dim`` components and the grid's latitudes."""
    extra: dict[str, Any] = {}
    if build_params.get("encoder") == "eof_residual":
        k = int(build_params.get("latent_dim", 1000))
        basis, _ = torch.linalg.qr(torch.randn(CHANNELS * GRID[0] * GRID[1], k,
                                               generator=torch.Generator().manual_seed(0)))
        extra["eof_basis"] = {"components": basis.T.contiguous(),
                              "sqrt_weights": torch.ones(CHANNELS, *GRID)}
    if build_params.get("reconstruction_loss") == "lat_weighted":
        extra["latitudes"] = _latitudes().tolist()
    return extra


def _model_and_data(job: CostJob, n: int) -> tuple[nn.Module, Dataset]:
    """``job``'s untrained model and ``n`` random training samples of its input."""
    rng = np.random.default_rng(0)
    b = job.build
    if job.kind in ("lstm", "diffusion"):
        dim = b["latent_dim"] if job.kind == "lstm" else b["dim"]
        torch.manual_seed(b["seed"])
        if job.kind == "lstm":
            series = rng.standard_normal((n + b["context"] + b["horizon"] - 1, dim))
            return (ForecastMethod(LatentSeq2Seq(dim, b["hidden_dim"], b["num_layers"])),
                    LatentWindowDataset(series.astype(np.float32), b["context"], b["horizon"]))
        pairs = torch.from_numpy(rng.standard_normal((2, n, dim)).astype(np.float32))
        return (ablations.build_conditional_diffusion(dim, b["settings"]),
                TensorDataset(pairs[0], pairs[1]))
    fields = rng.standard_normal((n, CHANNELS, *GRID)).astype(np.float32)
    seasons = rng.integers(0, 4, n)
    if job.kind == "joint":
        architecture = dict(b["architecture"])
        extra = _stand_in_data_parameters(architecture)
        torch.manual_seed(b["seed"])
        model: nn.Module = build_joint(b["scheme"], **architecture, **b["params"], **extra)
    elif job.kind == "frozen_decoder":
        assert job.request is not None
        model = build_frozen_decoder(_build(job.request), b["latent_dim"], CHANNELS, GRID,
                                     width=b["width"], seed=b["seed"],
                                     reconstruction_loss=b["reconstruction_loss"],
                                     lat=_latitudes(), observation=b["observation"])
    else:
        assert job.request is not None
        model = _build(job.request)
        if job.request.temporal_pairs is not None:
            return model, TemporalPairDataset(fields, seasons, seed=0,
                                              **job.request.temporal_pairs)
    return model, FieldDataset(fields, seasons)


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return psutil.Process().memory_info().rss / 2**30


class StepTiming(NamedTuple):
    """What :func:`time_steps` measured."""

    seconds: float  #: per timed step
    flops: float  #: of one step, as FlopCounterMode counts them
    peak_memory_gib: float
    counted_ops: tuple[str, ...]  #: the operators FlopCounterMode counted FLOPs for


def time_steps(model: nn.Module, batches: Iterator[Any], config: TrainConfig,
               device: torch.device, steps: int = 2, warmup: int = 1) -> StepTiming:
    """Seconds per step, FLOPs of one step and peak memory of ``model`` (a method:
    ``loss(batch, generator) -> (loss, metrics)``) trained as
    :func:`geofusion.learning.training.fit` trains it (Adam at ``config.lr``, bfloat16
    autocast on CUDA when ``config.amp``, ``on_epoch_start`` first): ``warmup`` steps, the
    first counted by :class:`~torch.utils.flop_counter.FlopCounterMode`, then ``steps`` timed
    ones (CUDA synchronised). ``batches`` yields at least ``warmup + steps`` batches.
    """
    if steps < 1 or warmup < 1:
        raise ValueError(f"steps and warmup must be >= 1, got {steps} and {warmup}")
    model = model.to(device).train()
    if hasattr(model, "on_epoch_start"):
        model.on_epoch_start(0, config.epochs)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = epoch_generator(0, 0, stream=1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        batch = move_to(next(batches), device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=device.type == "cuda" and config.amp):
            loss, _ = model.loss(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # the warm-up step is also the counted one
    for _ in range(warmup - 1):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - tic) / steps
    ops = tuple(sorted(str(op) for op in counter.get_flop_counts().get("Global", {})))
    return StepTiming(seconds, float(counter.get_total_flops()), _peak_memory_gib(device), ops)


def lstm_step_flops(batch: int, context: int, horizon: int, latent_dim: int, hidden_dim: int,
                    num_layers: int = 1) -> float:
    """Matrix-multiply FLOPs of one training step of
    :class:`geofusion.downstream.forecasting.LatentSeq2Seq`'s two LSTMs, which
    FlopCounterMode does not see (the fused ``mkldnn_rnn_layer`` / ``_cudnn_rnn`` kernels):
    per sample, time step and layer the gates ``W_ih x + W_hh h`` cost ``2 * 4H (I + H)``
    (``I = latent_dim`` in the first layer, ``H`` above), over ``context`` encoder and
    ``horizon`` decoder steps; the backward pass twice the forward (gradients of inputs and
    weights), so 3x in all. The linear head is counted by FlopCounterMode.

    Example:
        >>> lstm_step_flops(batch=1, context=1, horizon=1, latent_dim=1, hidden_dim=1)
        96.0
    """
    per_step = 2 * 4 * hidden_dim * (latent_dim + hidden_dim)
    per_step += (num_layers - 1) * 2 * 4 * hidden_dim * (2 * hidden_dim)
    return 3.0 * batch * (context + horizon) * per_step


def measure_job(job: CostJob, device: str = "auto", steps: int = 2, warmup: int = 1
                ) -> StepCost:
    """Time ``steps`` optimisation steps (after ``warmup``) of ``job``'s model at its batch
    size on random data of its input's shape (:func:`time_steps`), on ``job.device`` when the
    notebook fixes one (the DDPMs: the CPU), else on ``device``; count one step's FLOPs."""
    dev = resolve_device(job.device or device)
    batch = job.config.batch_size
    # One spare batch, and the days TemporalPairDataset's mirror anchors leave out.
    model, dataset = _model_and_data(job, batch * (steps + warmup + 1) + 64)
    loader = iter(DataLoader(dataset, batch_size=batch, shuffle=False, drop_last=True))
    timing = time_steps(model, loader, job.config, dev, steps, warmup)
    flops = timing.flops
    if job.kind == "lstm" and not any("rnn" in op or "lstm" in op
                                      for op in timing.counted_ops):
        b = job.build
        flops += lstm_step_flops(batch, b["context"], b["horizon"], b["latent_dim"],
                                 b["hidden_dim"], b["num_layers"])
    return StepCost(job.notebook, job.label, batch, job.config.epochs,
                    steps_per_epoch(job.samples, job.config), timing.seconds, flops,
                    timing.peak_memory_gib, str(dev), job.kind, job.shared_with)


def measure_request(notebook: str, request: ModelRequest, days: int, device: str = "auto",
                    steps: int = 2, warmup: int = 1) -> StepCost:
    """:func:`measure_job` of the encoder ``request`` trained on ``days`` days."""
    return measure_job(_encoder_job(notebook, request, days), device, steps, warmup)


def projection_table(costs: list[StepCost], peak_tflops: float, efficiency: float
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per model and per notebook (with a total): measured seconds per step, projected hours
    on the device it was measured on, peak memory, the GPU projection from the FLOPs, and the
    later notebooks that use the same model (counted once, here)."""
    gpu = f"GPU projection h ({peak_tflops:g} TFLOP/s x {efficiency:g})"
    rows = pd.DataFrame([{
        "notebook": c.notebook, "model": c.label, "kind": c.kind, "batch": c.batch_size,
        "epochs": c.epochs, "steps/epoch": c.steps_per_epoch,
        "s/step (measured)": _sig(c.seconds_per_step),
        "TFLOP/step": _sig(c.flops_per_step / 1e12),
        f"h on {c.device} (projected)": _sig(c.projected_hours),
        gpu: _sig(c.gpu_hours(peak_tflops, efficiency)),
        "peak memory GiB": _sig(c.peak_memory_gib),
        "also used by": ", ".join(c.shared_with) or "-"} for c in costs])
    hours = [col for col in rows.columns if col.startswith("h on ")]  # one per device
    per_notebook = rows.groupby("notebook")[[*hours, gpu]].sum()
    per_notebook["peak memory GiB"] = rows.groupby("notebook")["peak memory GiB"].max()
    per_notebook.loc["total"] = [*per_notebook[[*hours, gpu]].sum(),
                                 per_notebook["peak memory GiB"].max()]
    return rows, per_notebook.map(_sig)


def _sig(value: float) -> float:
    return float(f"{value:.3g}")


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """``frame`` as a markdown table (pandas' ``to_markdown`` needs tabulate).

    Example:
        >>> print(markdown_table(pd.DataFrame({"a": [1]}, index=["x"])))
        |  | a |
        | --- | --- |
        | x | 1 |
    """
    table = frame.reset_index() if index else frame
    if index:
        table = table.rename(columns={table.columns[0]: ""})
    lines = ["| " + " | ".join(str(c) for c in table.columns) + " |",
             "| " + " | ".join("---" for _ in table.columns) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:g}"
    return str(value)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    import platform
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
