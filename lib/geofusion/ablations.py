"""The issue-15 ablation: each SPARTA-inspired addition switched on alone, scored on one table.

Notebook 11 trains the sparse-view Barlow Twins of notebook 06 (complete day paired with a
masked, noisy observation) once per *variant* (:data:`VARIANTS`) and scores every variant
the same way (:func:`score_variant`):

- ``baseline``: the report's same-day pairs, uniformly shuffled batches;
- ``temporal_positives``: the observation in a pair is of day ``t + s delta``
  (:class:`geofusion.samplers.TemporalPairDataset`, ``p(delta) ∝ exp(-delta / scale)``);
- ``smoothness``: same-day pairs plus ``w * ||u_{t+d} - 2 u_t + u_{t-d}||^2``
  (:class:`geofusion.methods.ContrastiveMethod`, ``smoothness_weight``);
- ``time_aware_batches``: batches of anchors with hard (10-40 days away) and easy
  (>= ``easy_min`` days) negatives (``TrainConfig.batch_sampler``);
- ``all``: the three together.

Scores of a variant (:func:`score_variant`), all on validation days, physical units, with
95 % block-bootstrap intervals (7-day blocks) where a per-day statistic exists:

- Table 3.1 (:func:`geofusion.evaluation.table_3_1`) on two augmentations of the complete
  day (with the all-ones mask channel the sparse-view encoder takes);
- ``reconstruction_rmse_50``: RMSE per variable of ``D(f(x_obs, m))`` for pixel masks missing
  50 % of the points, ``D`` a decoder trained on the frozen latents
  (:func:`geofusion.reconstruction_scores.fit_frozen_decoder`);
- ``crps_diffusion`` / ``spread_skill_diffusion``: a conditional latent DDPM
  (:mod:`geofusion.diffusion`) sampling ``p(z | f(x_obs, m))`` on standardised latents, each
  member decoded by ``D``, scored by CRPS and spread/skill (:mod:`geofusion.ensembles`);
  ``crps_decoder``: the deterministic reconstruction (a one-member ensemble: CRPS = MAE);
- ``forecast_rmse_1day``: RMSE per variable of a 1-day forecast in the latent space, a ridge
  regression ``z_{t+1} = W [z_t; 1]`` on the standardised latents of consecutive training
  days (penalty ``forecast_ridge``), decoded by ``D`` (:func:`latent_ridge_forecast`): the
  cheapest forecast that still asks whether the latent carries the weather forward;
- ``season_accuracy``, ``season_cross_entropy`` (:func:`geofusion.encoder_diagnostics.
  season_probe_scores`); ``latent_step``, ``latent_second_difference``
  (:func:`geofusion.encoder_diagnostics.latent_smoothness_scores`);
- ``seconds_per_epoch``: the mean training time of an epoch (wall clock of this machine).

:func:`climatological_crps` scores the climatological ensemble every probabilistic model must
beat (variant independent).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geofusion.bootstrap import DEFAULT_BLOCK, bootstrap_mean, bootstrap_rmse
from geofusion.diffusion import LatentDenoiser, LatentDiffusion
from geofusion.encoder_diagnostics import latent_smoothness_scores, season_probe_scores
from geofusion.ensembles import climatological_ensemble, crps_ensemble, ensemble_scores
from geofusion.evaluation import table_3_1
from geofusion.forecasting import LatentStandardiser
from geofusion.methods import observe
from geofusion.metrics import lat_weighted_mean, lat_weighted_mse
from geofusion.reconstruction_scores import (
    LatentReconstructor,
    fit_frozen_decoder,
    observation_generator,
    score_reconstruction,
)
from geofusion.sparsity import Observation
from geofusion.training import TrainConfig, fit

__all__ = ["VARIANTS", "variant_settings", "score_variant", "climatological_crps",
           "ablation_table", "latent_ridge_forecast"]

VARIANTS: tuple[str, ...] = ("baseline", "temporal_positives", "smoothness",
                             "time_aware_batches", "all")
FIGURES: tuple[str, ...] = ("positive_cosine", "negative_cosine", "embedding_variance")


def variant_settings(variant: str, config: TrainConfig, max_shift: int = 5,
                     scale: float = 10.0, smoothness_weight: float = 1.0,
                     batch_sampler: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], TrainConfig]:
    """``(pretrained keyword arguments, training config)`` of ``variant`` (module doc).

    The keyword arguments go to :func:`geofusion.runs.pretrained` next to the method's own
    (``temporal_pairs``, ``temporal_positives``, ``smoothness_weight``); the config is
    ``config`` with ``batch_sampler`` set for the time-aware variants.

    Example:
        >>> kwargs, cfg = variant_settings("smoothness", TrainConfig(batch_size=6))
        >>> kwargs["temporal_positives"], kwargs["temporal_pairs"]["with_mirror"]
        (False, True)
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ablation variant {variant!r}; choose one of {VARIANTS}")
    temporal = variant in ("temporal_positives", "all")
    smooth = variant in ("smoothness", "all")
    kwargs: dict[str, Any] = {}
    if temporal or smooth:
        kwargs["temporal_pairs"] = {"max_shift": max_shift, "scale": scale,
                                    "with_mirror": smooth}
        kwargs["temporal_positives"] = temporal
    if smooth:
        kwargs["smoothness_weight"] = smoothness_weight
    if variant in ("time_aware_batches", "all"):
        config = dataclasses.replace(config, batch_sampler=dict(
            batch_sampler or {"hard": 2, "easy": 1}))
    return kwargs, config


class _CompleteViews:
    """The method's augmentation of complete days, with the all-ones mask channel for methods
    trained on sparse views (Table 3.1 pairs two views of the complete day)."""

    def __init__(self, method: nn.Module) -> None:
        self.method = method

    def __call__(self, fields: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.method.augmentation(observe(self.method, fields), generator)


def _interval(values: np.ndarray, seed: int) -> list[float]:
    return bootstrap_mean(values, block=min(DEFAULT_BLOCK, len(values)), seed=seed).pairs()


def latent_ridge_forecast(reconstructor: LatentReconstructor, prepared: Any, n_days: int,
                          ridge: float = 1.0) -> np.ndarray:
    """1-day forecasts ``(n_days, C, H, W)`` (standardised) of validation days ``1..n_days``
    from days ``0..n_days - 1``: ``D(s^-1(W [s(z_t); 1]))`` with ``s`` the per-dimension
    standardisation of the training latents and ``W`` the ridge solution
    ``argmin sum_t ||s(z_{t+1}) - W [s(z_t); 1]||^2 + ridge ||W||^2`` over consecutive
    training days (the intercept unpenalised)."""
    if not 1 <= n_days < len(prepared.valid):
        raise ValueError(f"n_days must be in [1, {len(prepared.valid) - 1}] validation days "
                         f"with a following day, got {n_days}")
    train = reconstructor.latents(torch.as_tensor(prepared.train))
    scaler = LatentStandardiser.fit(train)
    z = scaler.transform(train).double().numpy()
    x = np.concatenate([z[:-1], np.ones((len(z) - 1, 1))], axis=1)
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.linalg.solve(x.T @ x + penalty, x.T @ z[1:])
    start = scaler.transform(reconstructor.latents(
        torch.as_tensor(prepared.valid[:n_days]))).double().numpy()
    predicted = np.concatenate([start, np.ones((n_days, 1))], axis=1) @ weights
    return reconstructor.decode(scaler.inverse(torch.as_tensor(predicted,
                                                               dtype=torch.float32))).numpy()


def _observe(prepared: Any, days: np.ndarray, missing: float, noise_std: float,
             noise_length: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    observation = Observation.from_dict({"kind": "pixel", "min_ratio": missing,
                                         "max_ratio": missing, "noise_std": noise_std,
                                         "noise_length": noise_length})
    fields = torch.as_tensor(days, dtype=torch.float32)
    return observation(fields, observation_generator(seed, "pixel"))


def _fit_latent_diffusion(reconstructor: LatentReconstructor, prepared: Any, n_days: int,
                          missing: float, noise_std: float, noise_length: float,
                          settings: dict[str, Any], seed: int
                          ) -> tuple[LatentDiffusion, LatentStandardiser]:
    days = np.sort(np.random.default_rng(seed).choice(
        len(prepared.train), size=min(n_days, len(prepared.train)), replace=False))
    train = prepared.train[days]
    observed_fields, observed = _observe(prepared, train, missing, noise_std, noise_length,
                                         seed + 1)
    complete = reconstructor.latents(torch.as_tensor(train))
    sparse = reconstructor.latents(observed_fields, observed)
    scaler = LatentStandardiser.fit(complete)
    torch.manual_seed(seed)
    dim = complete.shape[1]
    model = LatentDiffusion(LatentDenoiser(dim, dim, hidden_dim=settings["hidden"],
                                           layers=settings["layers"]),
                            steps=settings["steps"])
    fit(model, TensorDataset(scaler.transform(complete), scaler.transform(sparse)),
        TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"],
                    lr=settings["lr"], seed=seed, device="cpu"), progress=False)
    return model, scaler


def score_variant(method: nn.Module, encoder_dir: Any, history: pd.DataFrame, prepared: Any,
                  run_dir: Any, decoder_config: TrainConfig, latent_dim: int,
                  n_eval_days: int = 64, n_decoder_days: int | None = 512,
                  decoder_width: int = 16, missing: float = 0.5, noise_std: float = 0.1,
                  noise_length: float = 2.0, members: int = 8,
                  diffusion: dict[str, Any] | None = None,
                  probe_hidden: tuple[int, ...] = (128,), probe_iterations: int = 300,
                  forecast_ridge: float = 1.0, seed: int = 0, progress: bool = False
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """All ablation scores of one trained variant (module doc): ``(values, intervals)``.

    Args:
        method, encoder_dir, history: from :func:`geofusion.runs.pretrained`.
        prepared: :class:`geofusion.data.PreparedData`.
        run_dir, decoder_config, latent_dim, n_decoder_days, decoder_width: the frozen
            decoder (:func:`geofusion.reconstruction_scores.fit_frozen_decoder`, cached).
        n_eval_days: the first validation days scored for reconstruction and CRPS (all
            validation days serve the probe and the smoothness).
        missing, noise_std, noise_length: the pixel observation (standardised noise).
        members: ensemble size of the diffusion samples.
        diffusion: ``hidden``, ``layers``, ``steps``, ``epochs``, ``batch_size``, ``lr``,
            ``train_days`` of the latent DDPM (defaults: 256, 2, 50, 30, 64, 1e-3, 512).
        probe_hidden, probe_iterations: the season probe's MLP (hidden sizes, maximum
            iterations of :class:`sklearn.neural_network.MLPClassifier`).
        forecast_ridge: the penalty of :func:`latent_ridge_forecast`.
        seed: seeds the decoder, the masks, the DDPM and the bootstrap.

    Returns:
        ``values``: ``{score: number or {variable: number}}``; ``intervals``: the same keys
        (where a per-day statistic exists) with ``[low, high]``.
    """
    settings = {"hidden": 256, "layers": 2, "steps": 50, "epochs": 30, "batch_size": 64,
                "lr": 1e-3, "train_days": 512, **(diffusion or {})}
    channels = list(prepared.channels)
    values: dict[str, Any] = {}
    intervals: dict[str, Any] = {}

    figures = table_3_1(method, prepared.valid, torch.Generator().manual_seed(seed),
                        augmentation=_CompleteViews(method), intervals=True, seed=seed)
    values.update({k: float(figures[k]) for k in FIGURES})
    intervals.update({k: [float(figures[f"{k}_low"]), float(figures[f"{k}_high"])]
                      for k in FIGURES if f"{k}_low" in figures})

    decoder, _ = fit_frozen_decoder(method, encoder_dir, prepared, run_dir, decoder_config,
                                    latent_dim, n_days=n_decoder_days, width=decoder_width,
                                    seed=seed, progress=progress)
    reconstructor = LatentReconstructor(method, decoder.decoder)
    days = prepared.valid[:n_eval_days]
    truth = np.asarray(prepared.destandardise(days))
    observed_fields, observed = _observe(prepared, days, missing, noise_std, noise_length, seed)
    complete = reconstructor.latents(torch.as_tensor(days))
    score, reconstruction = score_reconstruction(
        reconstructor, observed_fields, observed, truth, prepared.lat,
        prepared.destandardise, channels, complete_latents=complete)
    values["reconstruction_rmse_50"] = score.rmse
    intervals["reconstruction_rmse_50"] = score.rmse_interval(seed=seed).by_name(channels)

    n_forecast = min(n_eval_days, len(prepared.valid) - 1)
    forecast = np.asarray(prepared.destandardise(
        latent_ridge_forecast(reconstructor, prepared, n_forecast, forecast_ridge)))
    following = np.asarray(prepared.destandardise(prepared.valid[1:n_forecast + 1]))
    daily_mse = np.asarray(lat_weighted_mse(forecast, following, prepared.lat), np.float64)
    values["forecast_rmse_1day"] = dict(zip(channels, np.sqrt(daily_mse.mean(0)).tolist(),
                                            strict=True))
    intervals["forecast_rmse_1day"] = bootstrap_rmse(
        daily_mse, block=min(DEFAULT_BLOCK, n_forecast), seed=seed).by_name(channels)

    # The deterministic decoder as a one-member ensemble: its CRPS is the MAE.
    deterministic = crps_ensemble(truth, reconstruction[None], member_axis=0)
    daily = lat_weighted_mean(deterministic, prepared.lat)  # (N, C)
    values["crps_decoder"] = dict(zip(channels, daily.mean(axis=0).tolist(), strict=True))
    intervals["crps_decoder"] = {c: _interval(daily[:, i], seed)
                                 for i, c in enumerate(channels)}

    model, scaler = _fit_latent_diffusion(reconstructor, prepared, settings["train_days"],
                                          missing, noise_std, noise_length, settings, seed)
    condition = scaler.transform(reconstructor.latents(observed_fields, observed))
    samples = model.sample(condition, members, torch.Generator().manual_seed(seed + 2))
    ensemble = np.stack([np.asarray(prepared.destandardise(
        reconstructor.decode(scaler.inverse(member)).numpy())) for member in samples])
    table = ensemble_scores(ensemble, truth, prepared.lat, channels)
    values["crps_diffusion"] = table["crps"].to_dict()
    values["spread_skill_diffusion"] = table["spread_skill"].to_dict()
    daily = lat_weighted_mean(crps_ensemble(truth, ensemble, member_axis=0), prepared.lat)
    intervals["crps_diffusion"] = {c: _interval(daily[:, i], seed)
                                   for i, c in enumerate(channels)}

    probe = season_probe_scores(method, prepared, hidden=tuple(probe_hidden),
                                max_iter=probe_iterations, intervals=True, seed=seed)
    values["season_accuracy"] = probe["accuracy"]
    values["season_cross_entropy"] = probe["cross_entropy"]
    intervals["season_accuracy"] = probe["intervals"]["accuracy"]
    intervals["season_cross_entropy"] = probe["intervals"]["cross_entropy"]
    smooth = latent_smoothness_scores(method, prepared.valid, intervals=True, seed=seed)
    values["latent_step"] = smooth["mean_step"]
    values["latent_second_difference"] = smooth["mean_second_difference"]
    intervals["latent_step"] = smooth["intervals"]["mean_step"]
    intervals["latent_second_difference"] = smooth["intervals"]["mean_second_difference"]
    values["seconds_per_epoch"] = float(history["seconds"].mean())
    return values, intervals


def climatological_crps(prepared: Any, n_eval_days: int = 64, members: int = 8,
                        window: int = 15, seed: int = 0
                        ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """CRPS per variable (physical units) of the climatological ensemble (training days
    within ``window`` days of year of each target, :func:`geofusion.ensembles.
    climatological_ensemble`) on the first ``n_eval_days`` validation days, and intervals."""
    days = prepared.valid[:n_eval_days]
    truth = np.asarray(prepared.destandardise(days))
    train = np.asarray(prepared.destandardise(prepared.train))
    ensemble = climatological_ensemble(train, prepared.train_times,
                                       prepared.valid_times[:n_eval_days], window=window,
                                       max_members=members, seed=seed)
    channels = list(prepared.channels)
    daily = lat_weighted_mean(crps_ensemble(truth, ensemble, member_axis=0), prepared.lat)
    return (dict(zip(channels, daily.mean(axis=0).tolist(), strict=True)),
            {c: _interval(daily[:, i], seed) for i, c in enumerate(channels)})


def ablation_table(values: dict[str, dict[str, Any]],
                   intervals: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per variant, one column per score (``score`` or ``score: variable``), each
    cell ``"value [low, high]"`` where an interval exists, else the value (4 significant
    digits).

    Example:
        >>> ablation_table({"baseline": {"season_accuracy": 0.5, "crps": {"t": 1.0}}},
        ...                {"baseline": {"season_accuracy": [0.4, 0.6]}}).iloc[0].tolist()
        ['0.5 [0.4, 0.6]', '1']
    """
    rows = {}
    for variant, scores in values.items():
        bounds = (intervals or {}).get(variant, {})
        row = {}
        for score, value in scores.items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for variable, number in items:
                column = score if variable is None else f"{score}: {variable}"
                bound = bounds.get(score)
                if isinstance(bound, dict):
                    bound = bound.get(variable)
                text = f"{number:.4g}"
                if bound is not None:
                    text += f" [{bound[0]:.4g}, {bound[1]:.4g}]"
                row[column] = text
        rows[variant] = row
    return pd.DataFrame.from_dict(rows, orient="index")
