"""Trained models keyed by everything that made them, so notebooks share them.

Notebook 03 trains Barlow Twins; notebooks 06-08 need the same encoder. Rather than pass
checkpoints between notebooks by hand, every notebook asks for the model it needs by a
*description* (method name, architecture and loss parameters, training settings, data). The
first request trains it through :func:`geofusion.learning.training.fit` into
``<run_dir>/models/<name>-<hash>/``; a later request with the same description, in any notebook,
finds the finished checkpoint and loads it in seconds. A different description (another
lambda, more epochs, other data) gets another directory, so nothing is ever overwritten, and an
interrupted training resumes where it stopped.

Each model directory holds ``description.json`` (what was asked for), ``config.json``,
``metrics.csv`` and ``checkpoint.pt`` (see :mod:`geofusion.learning.training`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from geofusion.data import FieldDataset, PreparedData
from geofusion.data.eof import fit_eof
from geofusion.data.samplers import TemporalPairDataset
from geofusion.io import atomic_write_text
from geofusion.learning.config import TrainConfig
from geofusion.learning.methods import build_method
from geofusion.learning.training import fit

__all__ = ["data_fingerprint", "data_dependent_parameters", "model_dir", "cached_fit", "pretrained",
           "builder_key"]


# TrainConfig fields added after models were first cached; hashed only when set.
_OPTIONAL_SETTINGS = ("batch_sampler", "limit_batches")


def data_fingerprint(prepared: PreparedData) -> dict[str, Any]:
    """What identifies a prepared dataset for training purposes: source, level, grid, periods
    and the training statistics (which change whenever the training data does)."""
    fingerprint = {
        "synthetic": bool(prepared.synthetic),
        "level": int(prepared.level),
        "channels": list(prepared.channels),
        "grid": [int(s) for s in prepared.train.shape[-2:]],
        "train": [str(prepared.train_times[0])[:10], str(prepared.train_times[-1])[:10]],
        "valid": [str(prepared.valid_times[0])[:10], str(prepared.valid_times[-1])[:10]],
        "mean": [round(float(v), 6) for v in prepared.mean],
        "std": [round(float(v), 6) for v in prepared.std],
    }
    if prepared.test is not None:
        # Only for a three-way split, so the fingerprints of earlier runs are unchanged.
        fingerprint["test"] = [str(prepared.test_times[0])[:10],
                               str(prepared.test_times[-1])[:10]]
    if getattr(prepared, "space", "report") != "report":
        # Only outside the report space, so the fingerprints of earlier runs are unchanged.
        fingerprint["space"] = prepared.space
    return fingerprint


def data_dependent_parameters(prepared: PreparedData, build_params: dict[str, Any]
                              ) -> dict[str, Any]:
    """Builder arguments fitted on ``prepared.train`` that the build parameters ask for: the
    EOF basis of ``encoder="eof_residual"`` (:func:`geofusion.data.eof.fit_eof`, ``k =
    latent_dim``) and the latitudes of ``reconstruction_loss="lat_weighted"``. They follow
    from the data, which the description already fingerprints, so they are not part of it.
    """
    extra: dict[str, Any] = {}
    if build_params.get("encoder") == "eof_residual":
        latent_dim = int(build_params.get("latent_dim", 1000))
        if latent_dim >= len(prepared.train):
            raise ValueError(
                f'encoder="eof_residual" with latent_dim={latent_dim} needs more than '
                f"{latent_dim} training days for its {latent_dim} EOFs, the data have "
                f"{len(prepared.train)}: load more years (start/end, train_fraction) or "
                "lower latent_dim")
        code = fit_eof(prepared.train, prepared.lat, latent_dim)
        extra["eof_basis"] = {"components": torch.from_numpy(code.components),
                              "sqrt_weights": torch.from_numpy(code.sqrt_weights),
                              "mean": torch.from_numpy(code.mean)}
    if build_params.get("reconstruction_loss") == "lat_weighted":
        extra["latitudes"] = [float(v) for v in prepared.lat]
    return extra


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def model_dir(run_dir: str | os.PathLike, description: dict[str, Any],
              config: TrainConfig) -> Path:
    """``<run_dir>/models/<name>-<10 hex digits>``: the hash covers the description and every
    training setting except the device (a model trained on GPU serves a CPU notebook)."""
    if "name" not in description:
        raise ValueError("a model description needs a 'name' entry, e.g. {'name': 'simclr', ...}")
    # A setting at its "off" default (None) is left out, so adding such an option to
    # TrainConfig keeps the directories (and cached models) of every earlier run.
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("device", "num_workers")
                and not (k in _OPTIONAL_SETTINGS and v is None)}
    digest = hashlib.sha1(_canonical_json([description, settings]).encode()).hexdigest()[:10]
    return Path(run_dir) / "models" / f"{description['name']}-{digest}"


def cached_fit(make_method: Callable[[], nn.Module], description: dict[str, Any],
               train_set: Dataset, config: TrainConfig, run_dir: str | os.PathLike,
               valid_set: Dataset | None = None, progress: bool = True,
               trainer: Callable[..., pd.DataFrame] | None = None
               ) -> tuple[nn.Module, pd.DataFrame, Path]:
    """Train ``make_method()`` once per description, or load the finished run.

    Args:
        make_method: builds the untrained method (called once per request, seeded by the
            caller for a reproducible initialisation).
        description: JSON-serialisable dict with a ``name`` that, together with ``config``,
            determines the model: architecture, loss parameters and the data
            (:func:`data_fingerprint`). Two requests share a model exactly when these agree.
        train_set, valid_set, config, progress: as for :func:`geofusion.learning.training.fit`.
        run_dir: root of this profile's runs.
        trainer: the training loop, :func:`geofusion.learning.training.fit` by default;
            :func:`geofusion.learning.distributed.fit_distributed` under torchrun (every
            process calls this with the same arguments; the model lands in the same directory,
            so a later single-process request loads it).

    Returns:
        ``(method, history, directory)``: the trained method in eval mode, its per-epoch
        history, and the directory holding its checkpoint and logs.
    """
    directory = model_dir(run_dir, description, config)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "description.json",
                      json.dumps(description, indent=2, sort_keys=True, default=str))
    method = make_method()
    history = (fit if trainer is None else trainer)(
        method, train_set, config, run_dir=directory, valid_set=valid_set, progress=progress)
    return method, history, directory


#: Modules whose builders are named in cache keys, under the names they had before the package
#: was split into layers: a model trained then keeps its key (and is loaded, not retrained).
_PRE_LAYER_MODULES = {
    "geofusion.learning.methods": "geofusion.methods",
    "geofusion.learning.fusion_methods": "geofusion.fusion_methods",
    "geofusion.learning.decoders": "geofusion.decoders",
}


def builder_key(builder: Callable[..., nn.Module]) -> str:
    """The name of ``builder`` in a model's description (its cache key): the dotted path
    ``module.qualname``, with the pre-layering module names of :data:`_PRE_LAYER_MODULES`.

    Example:
        >>> from geofusion.learning.methods import build_method
        >>> builder_key(build_method)
        'geofusion.methods.build_method'
    """
    module = _PRE_LAYER_MODULES.get(builder.__module__, builder.__module__)
    return f"{module}.{builder.__qualname__}"


def pretrained(name: str, prepared: PreparedData, run_dir: str | os.PathLike,
               config: TrainConfig, seed: int = 0, progress: bool = True,
               builder: Callable[..., nn.Module] | None = None,
               temporal_pairs: dict[str, Any] | None = None,
               trainer: Callable[..., pd.DataFrame] | None = None, **build_params: Any
               ) -> tuple[nn.Module, pd.DataFrame, Path]:
    """A method of :func:`geofusion.learning.methods.build_method` (or ``builder``) trained on
    ``prepared`` with ``config``, shared by every notebook that asks for the same one.

    Args:
        name: method name passed to the builder ("autoencoder", "barlow_twins", ...).
        prepared: the data; training uses ``prepared.train`` with season labels and the
            validation loss ``prepared.valid``.
        run_dir: root of this profile's runs.
        config: training settings (epochs, batch size, lr, seed, device).
        seed: seeds the initial weights.
        builder: ``builder(name, in_channels=..., grid=..., **build_params)``; defaults to
            :func:`geofusion.learning.methods.build_method`.
        temporal_pairs: None (default: each day paired with itself,
            :class:`geofusion.data.FieldDataset`) or the settings of a
            :class:`geofusion.data.samplers.TemporalPairDataset` (``max_shift``, ``scale``,
            ``with_mirror``) for both training and validation, seeded by ``config.seed``:
            temporal positives, and the days ``t - d, t, t + d`` that
            ``smoothness_weight`` needs (``with_mirror=True``). Part of the description.
        trainer: as for :func:`cached_fit` (not part of the description: a model trained
            data-parallel is the model a notebook asks for).
        **build_params: architecture and loss parameters (``width``, ``latent_dim``,
            ``lambd``, ``temperature``, ...).

    Returns:
        ``(method, history, directory)`` as :func:`cached_fit`.
    """
    builder = builder if builder is not None else build_method
    in_channels, grid = len(prepared.channels), tuple(int(s) for s in prepared.train.shape[-2:])
    description = {"name": name, "builder": builder_key(builder),
                   "init_seed": seed, "params": build_params, "data": data_fingerprint(prepared)}

    extra = data_dependent_parameters(prepared, build_params)

    def make_method() -> nn.Module:
        torch.manual_seed(seed)
        return builder(name, in_channels=in_channels, grid=grid, **build_params, **extra)

    if temporal_pairs is None:
        train_set = FieldDataset(prepared.train, prepared.season_labels("train"))
        valid_set = FieldDataset(prepared.valid, prepared.season_labels("valid"))
    else:
        train_set = TemporalPairDataset(prepared.train, prepared.season_labels("train"),
                                        seed=config.seed, **temporal_pairs)
        valid_set = TemporalPairDataset(prepared.valid, prepared.season_labels("valid"),
                                        seed=config.seed, **temporal_pairs)
        # Only when set, so the descriptions (cache keys) of same-day models are unchanged.
        description["temporal_pairs"] = train_set.describe()
    return cached_fit(make_method, description, train_set, config, run_dir,
                      valid_set=valid_set, progress=progress, trainer=trainer)
