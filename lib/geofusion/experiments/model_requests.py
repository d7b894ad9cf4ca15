"""The models each notebook requests, so they can be trained ahead of it (on several GPUs).

A notebook finds its models by description: :func:`geofusion.learning.model_cache.pretrained`
(notebooks 02-08, 10, 11) or, for notebook 09's fusion schemes, the checkpoint directory
``<run_dir>/09_fusion/<run>`` (``09_fusion_eof_residual/<run>`` with ``encoder="eof_residual"``,
:func:`geofusion.experiments.fusion_study.checkpoint_root`;
:func:`geofusion.experiments.fusion_study.train_fusion_methods`).
:func:`notebook_requests` rebuilds those requests from a notebook's parameters exactly as its
cells build them (same :class:`~geofusion.learning.config.TrainConfig`, same build parameters,
same data), and :func:`train_requests` trains them with any training loop: under torchrun with
:func:`geofusion.learning.distributed.fit_distributed`, the models land where the notebook
looks, and the notebook then loads them instead of training
(``python -m geofusion.pipeline pretrain --nproc N``, :mod:`geofusion.reporting.pretrain`).

Notebooks 07, 08 and 10 request the autoencoder, Barlow Twins and sparse-view Barlow Twins of
notebooks 02, 03 and 06 (the profiles give them the same settings), so their encoders are
those of :func:`notebook_requests` for ``06_sparsity``. Decoders, joint schemes, LSTMs and the
diffusion models are trained by the notebooks themselves (single process).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geofusion import data
from geofusion.data import PreparedData
from geofusion.experiments import ablations, fusion_study
from geofusion.learning import collectives, model_cache
from geofusion.learning.config import TrainConfig

__all__ = ["ModelRequest", "notebook_requests", "base_requests", "BASE_MODELS",
           "PRETRAINED_NOTEBOOKS", "load_notebook_data", "train_requests"]

#: Notebooks whose encoders :func:`notebook_requests` knows (07, 08 and 10 reuse 02/03/06's).
PRETRAINED_NOTEBOOKS = ("02_autoencoder", "03_barlow_twins", "04_simclr",
                        "05_supervised_contrastive", "06_sparsity", "09_fusion", "11_beyond")


@dataclasses.dataclass(frozen=True)
class ModelRequest:
    """One model a notebook asks for: ``model_cache.pretrained(method, prepared, run_dir,
    config, seed=seed, temporal_pairs=..., **build_params)``."""

    label: str
    method: str
    config: TrainConfig
    build_params: dict[str, Any]
    seed: int = 0
    temporal_pairs: dict[str, Any] | None = None


def _schedule(p: dict[str, Any]) -> dict[str, Any]:
    return {"patience": p["patience"], "lr_schedule": p["lr_schedule"],
            "warmup_epochs": p["warmup_epochs"], "limit_batches": p.get("limit_batches")}


def _encoder(p: dict[str, Any], autoencoder: bool = False) -> dict[str, Any]:
    """The encoder / loss build parameters a notebook passes when it declares them (issue 23:
    ``encoder``, and the autoencoders' ``reconstruction_loss``), so the request's cache key is
    the notebook's."""
    out = {"encoder": p["encoder"]} if "encoder" in p else {}
    if autoencoder and "reconstruction_loss" in p:
        out["reconstruction_loss"] = p["reconstruction_loss"]
    return out


def notebook_requests(notebook: str, p: dict[str, Any]) -> list[ModelRequest]:
    """The model-cache requests of ``notebook`` with parameters ``p`` (its full parameter
    set, e.g. :func:`geofusion.reporting.notebooks.checked_parameters`); ``09_fusion`` has
    none here (its schemes are trained by :func:`train_requests` into ``09_fusion/``).

    Example:
        >>> from geofusion.experiments.profiles import parameters_for
        >>> quick = parameters_for("quick", "06_sparsity")
        >>> [r.label for r in notebook_requests("06_sparsity", quick)]
        ['autoencoder', 'barlow_twins', 'sparse_barlow_twins']
    """
    seed, device = p["seed"], p["device"]
    if notebook == "02_autoencoder":
        config = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                             seed=seed, device=device, **_schedule(p))
        return [ModelRequest("autoencoder", "autoencoder", config,
                             {"width": p["width"], "latent_dim": p["latent_dim"],
                              **_encoder(p, autoencoder=True)}, seed)]
    if notebook in ("03_barlow_twins", "04_simclr", "05_supervised_contrastive"):
        config = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                             seed=seed, device=device, **_schedule(p))
        common = {"width": p["width"], "latent_dim": p["latent_dim"], "proj_dim": p["proj_dim"],
                  **_encoder(p)}
        if notebook == "03_barlow_twins":
            params = {**common, "lambd": p["lambd"], "augmentation": p["augmentation"]}
            return [ModelRequest("barlow_twins", "barlow_twins", config, params, seed)]
        method = "simclr" if notebook == "04_simclr" else "supcon"
        params = {**common, "temperature": p["temperature"],
                  "proj_final_batchnorm": p["proj_final_batchnorm"],
                  "augmentation": p["augmentation"]}
        return [ModelRequest(method, method, config, params, seed)]
    if notebook == "06_sparsity":
        return base_requests(p)
    if notebook == "11_beyond":
        config = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                             seed=seed, device=device, limit_batches=p.get("limit_batches"))
        observation = {"kind": p["mask_kind"], "min_ratio": p["min_ratio"],
                       "max_ratio": p["max_ratio"], "noise_std": p["noise_std"],
                       "noise_length": p["noise_length"], "both_views": False}
        requests = []
        for variant in p["variants"]:
            options, variant_config = ablations.variant_settings(
                variant, config, max_shift=p["max_shift"], scale=p["shift_scale"],
                smoothness_weight=p["smoothness_weight"],
                batch_sampler={"hard": p["hard"], "easy": p["easy"],
                               "hard_range": p["hard_range"], "easy_min": p["easy_min"]})
            temporal_pairs = options.pop("temporal_pairs", None)
            requests.append(ModelRequest(
                variant, "barlow_twins", variant_config,
                {"width": p["width"], "latent_dim": p["latent_dim"], "proj_dim": p["proj_dim"],
                 "proj_hidden_dim": p["proj_hidden_dim"], "lambd": p["lambd"],
                 "augmentation": p["augmentation"], "observation": observation, **options,
                 **_encoder(p)},
                seed, temporal_pairs))
        return requests
    if notebook == "09_fusion":
        return []
    raise ValueError(f"no model requests known for {notebook!r}; notebooks with models trained "
                     f"ahead: {', '.join(PRETRAINED_NOTEBOOKS)} (07, 08 and 10 reuse those of "
                     "02, 03 and 06)")


#: The base models of notebooks 06, 07, 08 and 10 (:func:`base_requests`).
BASE_MODELS = ("autoencoder", "barlow_twins", "sparse_barlow_twins")


def base_requests(p: dict[str, Any], labels: tuple[str, ...] = BASE_MODELS
                  ) -> list[ModelRequest]:
    """The autoencoder, Barlow Twins and sparse-view Barlow Twins (those of ``labels``, in
    that order) as notebooks 06, 07, 08 and 10 request them from their parameters ``p``
    (``ae_epochs``, ``ae_lr``, ``encoder_epochs``, ``encoder_lr``, ...; the sparse view's
    ``mask_kind`` ... ``both_views`` only when it is asked for): notebook 07 asks for the first
    two, notebook 10 for the third.

    Example:
        >>> from geofusion.experiments.profiles import parameters_for
        >>> quick = parameters_for("quick", "07_decoder")
        >>> [r.label for r in base_requests(quick, ("autoencoder", "barlow_twins"))]
        ['autoencoder', 'barlow_twins']
    """
    unknown = sorted(set(labels) - set(BASE_MODELS))
    if unknown:
        raise ValueError(f"unknown base models {unknown}; choose from {BASE_MODELS}")
    seed, device = p["seed"], p["device"]
    requests = []
    if "autoencoder" in labels:
        ae_config = TrainConfig(epochs=p["ae_epochs"], batch_size=p["batch_size"],
                                lr=p["ae_lr"], seed=seed, device=device, **_schedule(p))
        requests.append(ModelRequest("autoencoder", "autoencoder", ae_config,
                                     {"width": p["width"], "latent_dim": p["latent_dim"],
                                      **_encoder(p, autoencoder=True)}, seed))
    config = TrainConfig(epochs=p["encoder_epochs"], batch_size=p["batch_size"],
                         lr=p["encoder_lr"], seed=seed, device=device, **_schedule(p))
    bt = {"width": p["width"], "latent_dim": p["latent_dim"], "proj_dim": p["proj_dim"],
          "lambd": p["lambd"], **_encoder(p)}
    if "barlow_twins" in labels:
        requests.append(ModelRequest("barlow_twins", "barlow_twins", config,
                                     {**bt, "augmentation": p["augmentation"]}, seed))
    if "sparse_barlow_twins" in labels:
        observation = {"kind": p["mask_kind"], "min_ratio": p["min_ratio"],
                       "max_ratio": p["max_ratio"], "noise_std": p["noise_std"],
                       "noise_length": p["noise_length"], "both_views": p["both_views"]}
        requests.append(ModelRequest("sparse_barlow_twins", "barlow_twins", config,
                                     {**bt, "observation": observation,
                                      "augmentation": p["augmentation"]}, seed))
    return requests


def load_notebook_data(p: dict[str, Any]) -> PreparedData:
    """``data.load`` as the notebooks call it; under torchrun rank 0 prepares (and caches)
    first, the other processes read its cache."""
    def load() -> PreparedData:
        return data.load(p["data_path"], level=p["level"], start=p["start"], end=p["end"],
                         cache_dir=p["cache_dir"], seed=p["seed"],
                         train_fraction=p.get("train_fraction", 0.8),
                         test_fraction=p.get("test_fraction", 0.0),
                         space=p.get("space", "report"))
    if collectives.rank() == 0:
        prepared = load()
    collectives.barrier()
    if collectives.rank() != 0:
        prepared = load()
    return prepared


def _fusion_training(p: dict[str, Any], prepared: PreparedData,
                     trainer: Callable[..., pd.DataFrame], progress: bool) -> list[Path]:
    """Notebook 09's cell "Training every scheme", with its own subset of training days."""
    rng = np.random.default_rng(p["seed"])
    train_idx = np.arange(len(prepared.train))
    if p["n_train_days"] is not None and p["n_train_days"] < len(train_idx):
        train_idx = np.sort(rng.choice(train_idx, size=p["n_train_days"], replace=False))
    train_set = data.FieldDataset(prepared.train[train_idx],
                                  prepared.season_labels("train")[train_idx])
    runs = fusion_study.fusion_runs(p["schemes"], p["dropout_scheme"], p["p_mode_dropout"],
                                    p["mode_group_scheme"])
    config = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                         seed=p["seed"], device=p["device"], limit_batches=p.get("limit_batches"))
    root = fusion_study.checkpoint_root(p["run_dir"], p["encoder"])
    # The EOF basis of encoder="eof_residual" is fitted on all training days, as in the notebook.
    encoder = fusion_study.encoder_parameters(prepared, p["encoder"], p["latent_dim"])
    fusion_study.train_fusion_methods(
        runs, train_set, config, root, seed=p["seed"], progress=progress, trainer=trainer,
        in_channels=len(prepared.channels), grid=prepared.train.shape[-2:],
        latent_dim=p["latent_dim"], width=p["width"], mode_width=p["mode_width"],
        token_dim=p["token_dim"], proj_dim=p["proj_dim"], proj_hidden_dim=p["proj_hidden_dim"],
        lambd=p["lambd"], **encoder)
    return [Path(root) / run[0] for run in runs]


def train_requests(notebook: str, p: dict[str, Any],
                   trainer: Callable[..., pd.DataFrame] | None = None,
                   progress: bool = True) -> list[Path]:
    """Train (or load) every model ``notebook`` requests with parameters ``p``; returns their
    directories. ``trainer``: :func:`geofusion.learning.training.fit` (default) or, in every
    process of a torchrun job, :func:`geofusion.learning.distributed.fit_distributed`."""
    prepared = load_notebook_data(p)
    if notebook == "09_fusion":
        # Late fusion with mode dropout leaves some parameters without a gradient in a step.
        fusion_trainer = (functools.partial(trainer, find_unused_parameters=True)
                          if trainer is not None and collectives.is_distributed() else trainer)
        return _fusion_training(p, prepared, fusion_trainer, progress)
    directories = []
    for request in notebook_requests(notebook, p):
        _, _, directory = model_cache.pretrained(
            request.method, prepared, os.fspath(p["run_dir"]), request.config,
            seed=request.seed, progress=progress, temporal_pairs=request.temporal_pairs,
            trainer=trainer, **request.build_params)
        directories.append(directory)
    return directories
