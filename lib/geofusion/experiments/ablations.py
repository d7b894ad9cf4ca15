"""The issue-15 ablation: each SPARTA-inspired addition switched on alone, scored on one table.

Notebook 11 trains the sparse-view Barlow Twins of notebook 06 (complete day paired with a
masked, noisy observation) once per *variant* (:data:`VARIANTS`) and scores every variant
the same way (:func:`score_variant`):

- ``baseline``: the report's same-day pairs, uniformly shuffled batches;
- ``temporal_positives``: the observation in a pair is of day ``t + s delta``
  (:class:`geofusion.data.samplers.TemporalPairDataset`, ``p(delta) ∝ exp(-delta / scale)``);
- ``smoothness``: same-day pairs plus ``w * ||u_{t+d} - 2 u_t + u_{t-d}||^2``
  (:class:`geofusion.learning.methods.ContrastiveMethod`, ``smoothness_weight``);
- ``time_aware_batches``: batches of anchors with hard (10-40 days away) and easy
  (>= ``easy_min`` days) negatives (``TrainConfig.batch_sampler``);
- ``all``: the three together.

Scores of a variant (:func:`score_variant`), all on the days of one block (``block``: the
test block for notebook 11's scorecard), physical units, with
95 % block-bootstrap intervals (7-day blocks) where a per-day statistic exists:

- Table 3.1 (:func:`geofusion.downstream.embeddings.table_3_1`) on two augmentations of the complete
  day (with the all-ones mask channel the sparse-view encoder takes);
- the decoder ``D`` of the frozen latents: ``"ridge"`` (default), the closed-form ridge
  regression from the standardised latent to the standardised fields fitted on every training
  day (:func:`geofusion.models.ridge_decoder.fit_ridge_decoder`: converged whatever the budget, so
  variants differ only in what their latents hold), or ``"conv"``, the frozen convolutional
  decoder of notebook 06 (:func:`geofusion.downstream.reconstruction.fit_frozen_decoder`);
- ``reconstruction_rmse_50``: RMSE per variable of ``D(f(x_obs, m))`` for pixel masks missing
  50 % of the points; ``crps_decoder``: the same reconstruction as a one-member ensemble
  (CRPS = MAE);
- ``crps_diffusion`` / ``spread_skill_diffusion``: a conditional latent DDPM
  (:mod:`geofusion.models.diffusion`) sampling ``p(z | f(x_obs, m))`` on standardised latents, each
  member decoded by ``D``, scored by CRPS and spread/skill
  (:mod:`geofusion.verification.ensembles`);
- ``forecast_rmse_1day`` / ``crps_forecast_deterministic``: a deterministic 1-day forecast in
  the latent space, a ridge regression ``z_{t+1} = W [z_t; 1]`` on the standardised latents of
  consecutive training days (penalty ``forecast_ridge``), decoded by ``D``
  (:func:`latent_ridge_forecast`): the cheapest forecast that still asks whether the latent
  carries the weather forward; its RMSE and CRPS (= MAE);
- ``crps_forecast_diffusion`` / ``spread_skill_forecast_diffusion``: the *probabilistic* 1-day
  latent forecast, a conditional DDPM of ``p(z_{t+1} | z_t)`` trained on consecutive training
  days (:func:`fit_conditional_diffusion`), conditioned on the embedding of the complete day
  ``t``, its members decoded by ``D``;
- ``season_accuracy``, ``season_cross_entropy`` (:func:`geofusion.downstream.encoder_diagnostics.
  season_probe_scores`); ``latent_step``, ``latent_second_difference``
  (:func:`geofusion.downstream.encoder_diagnostics.latent_smoothness_scores`);
- ``seconds_per_epoch``: the mean training time of an epoch (wall clock of this machine).

:func:`reference_scores` scores the variant-independent rows every score is read against on
the same days: the day-of-year ``climatology`` (reconstruction and forecast), ``persistence``
(forecast) and the ``climatological_ensemble`` (both ensembles); :func:`compare_rows` says
which rows differ from a reference beyond their intervals. Every key is registered in
:data:`geofusion.experiments.scorecard.ABLATION_SCORES` (the scorecard schema).

Notebook 11 runs the study from its parameters (:data:`SETTING_KEYS`):
:func:`train_variants` (one cached model per variant and training seed), :func:`score_variants`
(every variant and the references on the test block) and :func:`stated_comparisons` (the
comparisons it states); :mod:`geofusion.experiments.ablation_seeds` says which of those hold
across training seeds, and :func:`fusion_row` shows notebook 09's graph-attention fusion
next to the variants.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geofusion.data.observations import Observation
from geofusion.downstream.embeddings import table_3_1
from geofusion.downstream.encoder_diagnostics import latent_smoothness_scores, season_probe_scores
from geofusion.downstream.forecasting import LatentStandardiser
from geofusion.downstream.reconstruction import (
    LatentReconstructor,
    fit_frozen_decoder,
    observation_generator,
    score_reconstruction,
)
from geofusion.experiments.scorecard import ABLATION_SCORES
from geofusion.learning import model_cache
from geofusion.learning.config import TrainConfig
from geofusion.learning.methods import observe
from geofusion.learning.training import fit
from geofusion.models.diffusion import LatentDenoiser, LatentDiffusion
from geofusion.models.ridge_decoder import fit_ridge_decoder
from geofusion.verification.baselines import climatology_forecast, training_climatology
from geofusion.verification.bootstrap import DEFAULT_BLOCK, bootstrap_mean, bootstrap_rmse
from geofusion.verification.ensembles import climatological_ensemble, crps_ensemble, ensemble_scores
from geofusion.verification.metrics import lat_weighted_mean, lat_weighted_mse

__all__ = ["VARIANTS", "DECODERS", "SCORES", "REFERENCES", "variant_settings",
           "score_variant", "reference_scores", "climatological_crps", "ablation_table",
           "compare_rows", "summarise_comparison", "latent_ridge_forecast",
           "DIFFUSION_DEFAULTS", "DIFFUSION_DEVICE", "diffusion_settings",
           "build_conditional_diffusion", "fit_conditional_diffusion", "DATA_KEYS",
           "TRAINING_KEYS", "SCORING_KEYS", "SETTING_KEYS", "OPTIONAL_SETTINGS",
           "train_variants", "score_variants", "STATED_COMPARISONS",
           "stated_comparisons", "FUSION_SCORES", "FUSION_LINK", "fusion_row"]

VARIANTS: tuple[str, ...] = ("baseline", "temporal_positives", "smoothness",
                             "time_aware_batches", "all")
FIGURES: tuple[str, ...] = ("positive_cosine", "negative_cosine", "embedding_variance")
#: How the frozen latents are decoded to fields (:func:`score_variant`).
DECODERS: tuple[str, ...] = ("ridge", "conv")
#: Every score a row of the ablation table may hold (registered with the scorecard schema,
#: :data:`geofusion.experiments.scorecard.ABLATION_SCORES`).
SCORES: tuple[str, ...] = ABLATION_SCORES
#: The variant-independent rows of :func:`reference_scores`.
REFERENCES: tuple[str, ...] = ("climatology", "persistence", "climatological_ensemble")


def variant_settings(variant: str, config: TrainConfig, max_shift: int = 5,
                     scale: float = 10.0, smoothness_weight: float = 1.0,
                     batch_sampler: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], TrainConfig]:
    """``(pretrained keyword arguments, training config)`` of ``variant`` (module doc).

    The keyword arguments go to :func:`geofusion.learning.model_cache.pretrained` next to the
    method's own
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


def _rmse_entry(forecast: np.ndarray, truth: np.ndarray, lat: Any, channels: list[str],
                seed: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """RMSE per variable (physical units, latitude-weighted) and its block-bootstrap interval."""
    daily = np.asarray(lat_weighted_mse(forecast, truth, lat), np.float64)  # (N, C)
    return (dict(zip(channels, np.sqrt(daily.mean(0)).tolist(), strict=True)),
            bootstrap_rmse(daily, block=min(DEFAULT_BLOCK, len(daily)), seed=seed)
            .by_name(channels))


def _crps_entry(ensemble: np.ndarray, truth: np.ndarray, lat: Any, channels: list[str],
                seed: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """CRPS per variable of ``ensemble`` ``(M, N, C, H, W)`` (``M = 1``: the MAE) and its
    interval over the ``N`` days."""
    daily = lat_weighted_mean(crps_ensemble(truth, ensemble, member_axis=0), lat)  # (N, C)
    return (dict(zip(channels, daily.mean(axis=0).tolist(), strict=True)),
            {c: _interval(daily[:, i], seed) for i, c in enumerate(channels)})


def _spread_skill(ensemble: np.ndarray, truth: np.ndarray, lat: Any,
                  channels: list[str]) -> dict[str, float]:
    return ensemble_scores(ensemble, truth, lat, channels)["spread_skill"].to_dict()


def latent_ridge_forecast(reconstructor: LatentReconstructor, prepared: Any, n_days: int,
                          ridge: float = 1.0, train_latents: torch.Tensor | None = None,
                          block: str = "valid") -> np.ndarray:
    """1-day forecasts ``(n_days, C, H, W)`` (in the model space) of days ``1..n_days`` of
    ``block`` ("valid" or "test") from its days ``0..n_days - 1``:
    ``D(s^-1(W [s(z_t); 1]))`` with ``s`` the per-dimension
    standardisation of the training latents and ``W`` the ridge solution
    ``argmin sum_t ||s(z_{t+1}) - W [s(z_t); 1]||^2 + ridge ||W||^2`` over consecutive
    training days (the intercept unpenalised). ``train_latents``: the ``(T, D)`` latents of
    ``prepared.train`` when already computed (else they are encoded here)."""
    days = prepared.fields(block)
    if not 1 <= n_days < len(days):
        raise ValueError(f"n_days must be in [1, {len(days) - 1}] {block} days "
                         f"with a following day, got {n_days}")
    train = (reconstructor.latents(torch.as_tensor(prepared.train)) if train_latents is None
             else train_latents)
    scaler = LatentStandardiser.fit(train)
    z = scaler.transform(train).double().numpy()
    x = np.concatenate([z[:-1], np.ones((len(z) - 1, 1))], axis=1)
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.linalg.solve(x.T @ x + penalty, x.T @ z[1:])
    start = scaler.transform(reconstructor.latents(
        torch.as_tensor(days[:n_days]))).double().numpy()
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


#: The latent DDPMs' settings where :func:`score_variant` is given none (``layers`` is never
#: set by notebook 11).
DIFFUSION_DEFAULTS: dict[str, Any] = {"hidden": 256, "layers": 2, "steps": 50, "epochs": 30,
                                      "batch_size": 64, "lr": 1e-3, "train_days": 512}
#: Where :func:`fit_conditional_diffusion` trains (whatever the notebook's ``device``).
DIFFUSION_DEVICE = "cpu"


def diffusion_settings(settings: dict[str, Any], limit_batches: int | None = None
                       ) -> dict[str, Any]:
    """The DDPM settings :func:`score_variants` passes to :func:`score_variant` (and it to
    :func:`fit_conditional_diffusion`) from notebook 11's ``diffusion_*`` parameters, over
    :data:`DIFFUSION_DEFAULTS`.

    Example:
        >>> s = diffusion_settings({"diffusion_steps": 100, "diffusion_epochs": 3,
        ...                         "diffusion_hidden": 64, "diffusion_train_days": None,
        ...                         "diffusion_batch_size": 32, "diffusion_lr": 1e-3})
        >>> s["layers"], s["hidden"], s["train_days"]
        (2, 64, None)
    """
    return {**DIFFUSION_DEFAULTS,
            "steps": settings["diffusion_steps"], "epochs": settings["diffusion_epochs"],
            "hidden": settings["diffusion_hidden"],
            "train_days": settings["diffusion_train_days"],
            "batch_size": settings["diffusion_batch_size"], "lr": settings["diffusion_lr"],
            "limit_batches": limit_batches}


def build_conditional_diffusion(dim: int, settings: dict[str, Any]) -> LatentDiffusion:
    """The untrained DDPM of :func:`fit_conditional_diffusion` for ``(N, dim)`` latents
    conditioned on ``(N, dim)`` latents: a :class:`LatentDenoiser` of ``settings["hidden"]``
    units and ``settings["layers"]`` layers, ``settings["steps"]`` diffusion steps (initial
    weights from the global generator: seed it first)."""
    return LatentDiffusion(LatentDenoiser(dim, dim, hidden_dim=settings["hidden"],
                                          layers=settings["layers"]),
                           steps=settings["steps"])


def fit_conditional_diffusion(target: torch.Tensor, condition: torch.Tensor,
                              settings: dict[str, Any], seed: int
                              ) -> tuple[LatentDiffusion, LatentStandardiser]:
    """A conditional latent DDPM of ``p(target | condition)`` (``(N, D)`` latents each),
    trained on ``(s(target), s(condition))`` with ``s`` the standardisation of ``target``
    (so both live on the unit scale the schedule assumes). ``settings``: ``hidden``,
    ``layers``, ``steps``, ``epochs``, ``batch_size``, ``lr`` (:func:`score_variant`) and
    optionally ``limit_batches`` (:class:`TrainConfig`).

    Returns ``(model, s)``: sample with ``model.sample(s.transform(c), members, generator)``
    and map the members back with ``s.inverse``."""
    if target.shape != condition.shape:
        raise ValueError(f"target {tuple(target.shape)} and condition "
                         f"{tuple(condition.shape)} must both be (N, D) latents")
    scaler = LatentStandardiser.fit(target)
    torch.manual_seed(seed)
    model = build_conditional_diffusion(target.shape[1], settings)
    fit(model, TensorDataset(scaler.transform(target), scaler.transform(condition)),
        TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"],
                    lr=settings["lr"], seed=seed, device=DIFFUSION_DEVICE,
                    limit_batches=settings.get("limit_batches")), progress=False)
    return model, scaler


def _decoded_ensemble(model: LatentDiffusion, scaler: LatentStandardiser,
                      reconstructor: LatentReconstructor, condition: torch.Tensor,
                      members: int, prepared: Any, seed: int, times: Any) -> np.ndarray:
    """Decoded members ``(M, N, C, H, W)`` in physical units for raw conditions ``(N, D)``
    of the days ``times`` ``(N,)``."""
    samples = model.sample(scaler.transform(condition), members,
                           torch.Generator().manual_seed(seed))
    decoded = reconstructor.decode(scaler.inverse(samples.reshape(-1, samples.shape[-1])))
    return np.asarray(prepared.destandardise(
        decoded.numpy().reshape(members, len(condition), *decoded.shape[1:]), times))


def score_variant(method: nn.Module, encoder_dir: Any, history: pd.DataFrame, prepared: Any,
                  run_dir: Any, decoder_config: TrainConfig, latent_dim: int,
                  n_eval_days: int = 64, n_decoder_days: int | None = 512,
                  decoder_width: int = 16, missing: float = 0.5, noise_std: float = 0.1,
                  noise_length: float = 2.0, members: int = 8,
                  diffusion: dict[str, Any] | None = None,
                  probe_hidden: tuple[int, ...] = (128,), probe_iterations: int = 300,
                  forecast_ridge: float = 1.0, decoder: str = "ridge",
                  decoder_ridge: float = 1.0, seed: int = 0, progress: bool = False,
                  block: str = "valid", observed_decoder: bool = False
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """All ablation scores of one trained variant (module doc): ``(values, intervals)``.

    Everything is fitted on training days (decoder, DDPMs, latent forecast, probe) and scored
    on ``block`` ("test" for the scorecard, "valid" while choosing), in physical units
    (``prepared.destandardise(x, times)`` of each scored day).

    Args:
        method, encoder_dir, history: from :func:`geofusion.learning.model_cache.pretrained`.
        prepared: :class:`geofusion.data.PreparedData`.
        run_dir, decoder_config, latent_dim, n_decoder_days, decoder_width: the frozen
            convolutional decoder (:func:`geofusion.downstream.reconstruction.fit_frozen_decoder`,
            cached) when ``decoder="conv"``.
        decoder: ``"ridge"`` (:func:`geofusion.models.ridge_decoder.fit_ridge_decoder` on the
            latents of every training day, penalty ``decoder_ridge``: closed form, so
            converged whatever the budget) or ``"conv"``.
        n_eval_days: the first consecutive days of ``block`` scored for reconstruction,
            forecasts and CRPS (None: all; every day of ``block`` serves Table 3.1, the probe
            and the smoothness).
        missing, noise_std, noise_length: the pixel observation (standardised noise).
        members: ensemble size of the diffusion samples.
        diffusion: ``hidden``, ``layers``, ``steps``, ``epochs``, ``batch_size``, ``lr``,
            ``train_days`` of the latent DDPMs (defaults: 256, 2, 50, 30, 64, 1e-3, 512;
            ``train_days`` None: every training day), one for the reconstruction (trained on
            observations of ``train_days`` training days) and one for the 1-day forecast
            (on ``train_days`` pairs of consecutive training days).
        probe_hidden, probe_iterations: the season probe's MLP (hidden sizes, maximum
            iterations of :class:`sklearn.neural_network.MLPClassifier`).
        forecast_ridge: the penalty of :func:`latent_ridge_forecast`.
        observed_decoder: with ``decoder="ridge"``, decode the latents of the sparse
            observations (``reconstruction_rmse_50``, ``crps_decoder``) with a second ridge
            decoder fitted on the latents of observations of the *training* days (the same
            observation: ``missing`` pixels, the same noise; other masks than the scored ones)
            to their complete fields: the decoder meets the latents it decodes. Complete-day
            latents (forecasts, ensembles) keep the decoder fitted on complete days.
        seed: seeds the decoder, the masks, the DDPMs and the bootstrap.

    Returns:
        ``values``: ``{score: number or {variable: number}}`` with the keys of
        :data:`SCORES`; ``intervals``: the same keys (where a per-day statistic exists) with
        ``[low, high]``.
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    settings = {**DIFFUSION_DEFAULTS, **(diffusion or {})}
    channels = list(prepared.channels)
    lat = prepared.lat
    values: dict[str, Any] = {}
    intervals: dict[str, Any] = {}

    block_fields, block_times = prepared.fields(block), prepared.times(block)
    n_eval = len(block_fields) if n_eval_days is None else min(n_eval_days, len(block_fields))
    figures = table_3_1(method, block_fields, torch.Generator().manual_seed(seed),
                        augmentation=_CompleteViews(method), intervals=True, seed=seed)
    values.update({k: float(figures[k]) for k in FIGURES})
    intervals.update({k: [float(figures[f"{k}_low"]), float(figures[f"{k}_high"])]
                      for k in FIGURES if f"{k}_low" in figures})

    encoder = LatentReconstructor(method, nn.Identity())
    train_latents = encoder.latents(torch.as_tensor(prepared.train))
    if decoder == "ridge":
        field_decoder: nn.Module = fit_ridge_decoder(train_latents, prepared.train,
                                                     ridge=decoder_ridge)
    else:
        field_decoder = fit_frozen_decoder(
            method, encoder_dir, prepared, run_dir, decoder_config, latent_dim,
            n_days=n_decoder_days, width=decoder_width, seed=seed, progress=progress)[0].decoder
    reconstructor = LatentReconstructor(method, field_decoder)
    observation_reconstructor = reconstructor
    if observed_decoder:
        if decoder != "ridge":
            raise ValueError("observed_decoder needs decoder='ridge' (a closed-form fit)")
        seen, seen_mask = _observe(prepared, prepared.train, missing, noise_std, noise_length,
                                   seed + 5)
        observation_reconstructor = LatentReconstructor(method, fit_ridge_decoder(
            encoder.latents(seen, seen_mask), prepared.train, ridge=decoder_ridge))

    # Reconstruction from a pixel observation missing `missing` of the points.
    days, times = block_fields[:n_eval], block_times[:n_eval]
    truth = np.asarray(prepared.destandardise(days, times))
    observed_fields, observed = _observe(prepared, days, missing, noise_std, noise_length, seed)
    complete = reconstructor.latents(torch.as_tensor(days))
    score, reconstruction = score_reconstruction(
        observation_reconstructor, observed_fields, observed, truth, lat,
        lambda x: prepared.destandardise(x, times), channels, complete_latents=complete)
    values["reconstruction_rmse_50"] = score.rmse
    intervals["reconstruction_rmse_50"] = score.rmse_interval(seed=seed).by_name(channels)
    # The deterministic decoder as a one-member ensemble: its CRPS is the MAE.
    values["crps_decoder"], intervals["crps_decoder"] = _crps_entry(
        reconstruction[None], truth, lat, channels, seed)

    rng = np.random.default_rng(seed)
    limit = settings["train_days"] if settings["train_days"] is not None else len(prepared.train)
    picked = np.sort(rng.choice(len(prepared.train), size=min(limit, len(prepared.train)),
                                replace=False))
    train_fields, train_observed = _observe(prepared, prepared.train[picked], missing,
                                            noise_std, noise_length, seed + 1)
    model, scaler = fit_conditional_diffusion(
        train_latents[picked], reconstructor.latents(train_fields, train_observed), settings,
        seed)
    ensemble = _decoded_ensemble(model, scaler, reconstructor,
                                 reconstructor.latents(observed_fields, observed), members,
                                 prepared, seed + 2, times)
    values["crps_diffusion"], intervals["crps_diffusion"] = _crps_entry(
        ensemble, truth, lat, channels, seed)
    values["spread_skill_diffusion"] = _spread_skill(ensemble, truth, lat, channels)

    # 1-day forecasts of days 1..n of the block from its complete days 0..n-1.
    n_forecast = min(n_eval, len(block_fields) - 1)
    next_times = block_times[1:n_forecast + 1]
    following = np.asarray(prepared.destandardise(block_fields[1:n_forecast + 1], next_times))
    forecast = np.asarray(prepared.destandardise(latent_ridge_forecast(
        reconstructor, prepared, n_forecast, forecast_ridge, train_latents=train_latents,
        block=block), next_times))
    values["forecast_rmse_1day"], intervals["forecast_rmse_1day"] = _rmse_entry(
        forecast, following, lat, channels, seed)
    values["crps_forecast_deterministic"], intervals["crps_forecast_deterministic"] = \
        _crps_entry(forecast[None], following, lat, channels, seed)
    times = np.asarray(prepared.train_times, dtype="datetime64[D]")
    consecutive = np.flatnonzero(np.diff(times) == np.timedelta64(1, "D"))  # (t, t + 1)
    pairs = np.sort(rng.choice(consecutive, size=min(limit, len(consecutive)), replace=False))
    model, scaler = fit_conditional_diffusion(train_latents[pairs + 1], train_latents[pairs],
                                              settings, seed + 3)
    ensemble = _decoded_ensemble(model, scaler, reconstructor, complete[:n_forecast], members,
                                 prepared, seed + 4, next_times)
    values["crps_forecast_diffusion"], intervals["crps_forecast_diffusion"] = _crps_entry(
        ensemble, following, lat, channels, seed)
    values["spread_skill_forecast_diffusion"] = _spread_skill(ensemble, following, lat,
                                                              channels)

    probe = season_probe_scores(method, prepared, hidden=tuple(probe_hidden),
                                max_iter=probe_iterations, intervals=True, seed=seed,
                                split=block)
    values["season_accuracy"] = probe["accuracy"]
    values["season_cross_entropy"] = probe["cross_entropy"]
    intervals["season_accuracy"] = probe["intervals"]["accuracy"]
    intervals["season_cross_entropy"] = probe["intervals"]["cross_entropy"]
    smooth = latent_smoothness_scores(method, block_fields, intervals=True, seed=seed)
    values["latent_step"] = smooth["mean_step"]
    values["latent_second_difference"] = smooth["mean_second_difference"]
    intervals["latent_step"] = smooth["intervals"]["mean_step"]
    intervals["latent_second_difference"] = smooth["intervals"]["mean_second_difference"]
    values["seconds_per_epoch"] = float(history["seconds"].mean())
    return values, intervals


def reference_scores(prepared: Any, n_eval_days: int | None = 64, members: int = 8,
                     window: int = 15, seed: int = 0, block: str = "valid"
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The variant-independent rows every score is read against, on the days
    :func:`score_variant` scores (the first ``n_eval_days`` reconstructed days of ``block``,
    the 1-day forecasts of the following days), physical units (``prepared.destandardise(x,
    times)``), with intervals:

    - ``climatology``: the day-of-year climatology of the training days
      (:func:`geofusion.verification.baselines.training_climatology`) as the reconstruction
      (``reconstruction_rmse_50``, ``crps_decoder``: it ignores the observation) and as the
      1-day forecast (``forecast_rmse_1day``, ``crps_forecast_deterministic``);
    - ``persistence``: the physical field of day ``t`` as the forecast of ``t + 1``
      (``prepared.as_valid_at``: in the anomaly space yesterday's anomaly is not today's;
      ``forecast_rmse_1day``, ``crps_forecast_deterministic``);
    - ``climatological_ensemble``: ``members`` training days within ``window`` days of year
      of each target (:func:`geofusion.verification.ensembles.climatological_ensemble`), for the
      reconstructed days (``crps_diffusion``, ``spread_skill_diffusion``) and the forecast
      days (``crps_forecast_diffusion``, ``spread_skill_forecast_diffusion``).

    Returns ``(values, intervals)`` keyed ``{row: {score: ...}}``.
    """
    channels, lat = list(prepared.channels), prepared.lat
    fields, times = prepared.fields(block), prepared.times(block)
    n_eval = len(fields) if n_eval_days is None else min(n_eval_days, len(fields))
    n_forecast = min(n_eval, len(fields) - 1)
    days = slice(0, n_eval)
    targets = slice(1, n_forecast + 1)
    span = max(n_eval, n_forecast + 1)
    scored = np.asarray(prepared.destandardise(fields[:span], times[:span]))
    truth, following = scored[days], scored[targets]
    clim = np.asarray(prepared.destandardise(climatology_forecast(
        training_climatology(prepared), times[:span]), times[:span]))
    values: dict[str, dict[str, Any]] = {"climatology": {}, "persistence": {},
                                         "climatological_ensemble": {}}
    bounds: dict[str, dict[str, Any]] = {k: {} for k in values}
    row, bound = values["climatology"], bounds["climatology"]
    row["reconstruction_rmse_50"], bound["reconstruction_rmse_50"] = _rmse_entry(
        clim[days], truth, lat, channels, seed)
    row["crps_decoder"], bound["crps_decoder"] = _crps_entry(clim[days][None], truth, lat,
                                                             channels, seed)
    row["forecast_rmse_1day"], bound["forecast_rmse_1day"] = _rmse_entry(
        clim[targets], following, lat, channels, seed)
    row["crps_forecast_deterministic"], bound["crps_forecast_deterministic"] = _crps_entry(
        clim[targets][None], following, lat, channels, seed)
    row, bound = values["persistence"], bounds["persistence"]
    persistence = np.asarray(prepared.destandardise(prepared.as_valid_at(
        fields[:n_forecast], times[:n_forecast], times[targets]), times[targets]))
    row["forecast_rmse_1day"], bound["forecast_rmse_1day"] = _rmse_entry(
        persistence, following, lat, channels, seed)
    row["crps_forecast_deterministic"], bound["crps_forecast_deterministic"] = _crps_entry(
        persistence[None], following, lat, channels, seed)
    row, bound = values["climatological_ensemble"], bounds["climatological_ensemble"]
    train = np.asarray(prepared.destandardise(prepared.train, prepared.train_times))
    for key, span, target in (("diffusion", days, truth),
                              ("forecast_diffusion", targets, following)):
        ensemble = climatological_ensemble(train, prepared.train_times,
                                           times[span], window=window,
                                           max_members=members, seed=seed)
        row[f"crps_{key}"], bound[f"crps_{key}"] = _crps_entry(ensemble, target, lat,
                                                               channels, seed)
        row[f"spread_skill_{key}"] = _spread_skill(ensemble, target, lat, channels)
    return values, bounds


def climatological_crps(prepared: Any, n_eval_days: int = 64, members: int = 8,
                        window: int = 15, seed: int = 0, block: str = "valid"
                        ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """CRPS per variable (physical units) of the climatological ensemble (training days
    within ``window`` days of year of each target, :func:`geofusion.verification.ensembles.
    climatological_ensemble`) on the first ``n_eval_days`` days of ``block``, and intervals."""
    times = prepared.times(block)[:n_eval_days]
    truth = np.asarray(prepared.destandardise(prepared.fields(block)[:n_eval_days], times))
    train = np.asarray(prepared.destandardise(prepared.train, prepared.train_times))
    ensemble = climatological_ensemble(train, prepared.train_times,
                                       times, window=window,
                                       max_members=members, seed=seed)
    return _crps_entry(ensemble, truth, prepared.lat, list(prepared.channels), seed)


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


#: The scores :func:`compare_rows` reads and which way is better (-1: lower, +1: higher).
#: Table 3.1 figures, spread/skill (best at 1), latent smoothness and cost have no "better".
DIRECTIONS: dict[str, int] = {
    "reconstruction_rmse_50": -1, "crps_decoder": -1, "crps_diffusion": -1,
    "forecast_rmse_1day": -1, "crps_forecast_deterministic": -1,
    "crps_forecast_diffusion": -1, "season_accuracy": 1, "season_cross_entropy": -1}


def compare_rows(values: dict[str, dict[str, Any]], intervals: dict[str, dict[str, Any]],
                 reference: str, against: dict[str, str] | None = None,
                 rows: list[str] | None = None) -> pd.DataFrame:
    """Which rows differ from ``reference`` beyond their 95 % intervals.

    For each row (default: every row but ``reference``) and each score of
    :data:`DIRECTIONS` (per variable where it has them) that both rows hold with an interval:
    ``"better"`` when the row's interval lies entirely on the better side of the reference's
    (e.g. its upper RMSE bound below the reference's lower one), ``"worse"`` when entirely on
    the other side, ``"overlap"`` otherwise (no difference the validation days support: a
    conservative reading, as overlapping intervals can still hide a paired difference).

    Args:
        values, intervals: ``{row: {score: ...}}`` as :func:`score_variant` and
            :func:`reference_scores` return them.
        reference: the row compared against.
        against: ``{score: reference score}`` to compare a score with another of the
            reference (e.g. ``{"crps_forecast_diffusion": "crps_forecast_deterministic"}`` for
            the diffusion forecast against persistence); default: the same score.
        rows: the rows to compare (default all but ``reference``).

    Returns:
        One row per compared row, columns ``score`` or ``score: variable`` (the compared
        row's score), cells as above; scores with nothing to compare are left out.

    Example:
        >>> v = {"a": {"season_accuracy": 0.9}, "b": {"season_accuracy": 0.5}}
        >>> i = {"a": {"season_accuracy": [0.85, 0.95]}, "b": {"season_accuracy": [0.4, 0.6]}}
        >>> compare_rows(v, i, "b").loc["a", "season_accuracy"]
        'better'
    """
    if reference not in values:
        raise ValueError(f"no row {reference!r} to compare against; rows are {list(values)}")
    against = dict(against or {})
    ref_bounds = intervals.get(reference, {})
    table: dict[str, dict[str, str]] = {}
    for row in rows if rows is not None else [r for r in values if r != reference]:
        cells: dict[str, str] = {}
        for score, direction in DIRECTIONS.items():
            mine = intervals.get(row, {}).get(score)
            theirs = ref_bounds.get(against.get(score, score))
            if mine is None or theirs is None:
                continue
            pairs = ([(None, mine, theirs)] if not isinstance(mine, dict) else
                     [(k, b, theirs.get(k)) for k, b in mine.items()
                      if isinstance(theirs, dict)])
            for variable, bound, other in pairs:
                if bound is None or other is None:
                    continue
                (low, high), (other_low, other_high) = bound, other
                above, below = low > other_high, high < other_low
                if above or below:
                    verdict = "better" if (above if direction > 0 else below) else "worse"
                else:
                    verdict = "overlap"
                cells[score if variable is None else f"{score}: {variable}"] = verdict
        table[row] = cells
    return pd.DataFrame.from_dict(table, orient="index")


def summarise_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`compare_rows`'s table folded over variables: one column per score, each cell
    ``"better: v1, v2; worse: v3"`` (the variables whose intervals do not overlap) or
    ``"overlap"`` when every variable's does; empty where the score was not compared.

    Example:
        >>> t = pd.DataFrame({"crps: t": ["better"], "crps: z": ["overlap"],
        ...                   "season_accuracy": ["worse"]}, index=["a"])
        >>> summarise_comparison(t).loc["a"].tolist()
        ['better: t', 'worse']
    """
    scores = list(dict.fromkeys(column.split(": ")[0] for column in table.columns))
    out: dict[str, dict[str, str]] = {}
    for row, cells in table.iterrows():
        summary: dict[str, str] = {}
        for score in scores:
            columns = [c for c in table.columns if c.split(": ")[0] == score
                       and isinstance(cells[c], str)]
            if not columns:
                summary[score] = ""
                continue
            parts = []
            for verdict in ("better", "worse"):
                names = [c.split(": ", 1)[1] if ": " in c else "" for c in columns
                         if cells[c] == verdict]
                if names:
                    listed = ", ".join(n for n in names if n)
                    parts.append(f"{verdict}: {listed}" if listed else verdict)
            summary[score] = "; ".join(parts) or "overlap"
        out[str(row)] = summary
    return pd.DataFrame.from_dict(out, orient="index")


#: Notebook 11's parameters that define the measured ablation (the data, the training of every
#: variant, the scoring); a seed table applies to a run only where all of them agree
#: (:mod:`geofusion.experiments.ablation_seeds`). Not among them: where files go, the device,
#: the determinism switch, which variants run and the encoders' training seed.
DATA_KEYS: tuple[str, ...] = ("data_path", "start", "end", "level", "space", "train_fraction",
                              "test_fraction", "seed")
TRAINING_KEYS: tuple[str, ...] = (
    "encoder", "epochs", "batch_size", "lr", "width", "latent_dim", "proj_dim",
    "proj_hidden_dim", "lambd", "augmentation", "mask_kind", "min_ratio", "max_ratio",
    "noise_std", "noise_length", "max_shift", "shift_scale", "smoothness_weight", "hard",
    "easy", "hard_range", "easy_min", "limit_batches")
SCORING_KEYS: tuple[str, ...] = (
    "decoder", "decoder_ridge", "decoder_observed", "decoder_epochs", "decoder_lr",
    "decoder_width", "n_decoder_days", "n_eval_days", "missing", "members",
    "climatology_window", "diffusion_steps", "diffusion_epochs", "diffusion_batch_size",
    "diffusion_lr", "diffusion_hidden", "diffusion_train_days", "probe_hidden",
    "probe_iterations")
SETTING_KEYS: tuple[str, ...] = DATA_KEYS + TRAINING_KEYS + SCORING_KEYS
#: Settings added after seed tables were first measured, with the value that means "off": a
#: settings dict may leave them out (they take this value), and a seed table measured before
#: they existed matches a run that has them off (:func:`geofusion.experiments.ablation_seeds.
#: settings_mismatch`). ``limit_batches`` (every model's batches per epoch) trains and so
#: changes the measurement.
OPTIONAL_SETTINGS: dict[str, Any] = {"limit_batches": None}


def _checked_settings(settings: dict[str, Any], needed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"unknown ablation settings {unknown}; the keys are SETTING_KEYS "
                         f"{SETTING_KEYS}")
    missing = [k for k in needed if k not in settings and k not in OPTIONAL_SETTINGS]
    if missing:
        raise ValueError(f"ablation settings lack {missing}: pass notebook 11's parameters "
                         "(every key of SETTING_KEYS)")
    return {**OPTIONAL_SETTINGS, **settings}  # an optional setting left out is off


def train_variants(prepared: Any, run_dir: Any, settings: dict[str, Any],
                   variants: list[str], train_seed: int, device: str = "cpu",
                   progress: bool = True) -> dict[str, tuple[nn.Module, pd.DataFrame, Any]]:
    """Notebook 11's sparse-view Barlow Twins, one per variant, trained (or loaded from the
    model cache, :func:`geofusion.learning.model_cache.pretrained`) on ``prepared.train``.

    ``settings``: the notebook's parameters (:data:`TRAINING_KEYS` are read; any key of
    :data:`SETTING_KEYS` is accepted, any other raises). ``train_seed`` seeds the initial
    weights, the batches, augmentations, masks and temporal pairs of training (the
    ``TrainConfig`` seed and ``pretrained``'s ``seed``); every variant gets the same one.

    Returns ``{variant: (method, history, model directory)}``.
    """
    s = _checked_settings(settings, TRAINING_KEYS)
    config = TrainConfig(epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
                         seed=train_seed, device=device,
                         limit_batches=s["limit_batches"])
    observation = {"kind": s["mask_kind"], "min_ratio": s["min_ratio"],
                   "max_ratio": s["max_ratio"], "noise_std": s["noise_std"],
                   "noise_length": s["noise_length"], "both_views": False}
    sampler = {"hard": s["hard"], "easy": s["easy"], "hard_range": s["hard_range"],
               "easy_min": s["easy_min"]}
    trained = {}
    for variant in variants:
        options, variant_config = variant_settings(
            variant, config, max_shift=s["max_shift"], scale=s["shift_scale"],
            smoothness_weight=s["smoothness_weight"], batch_sampler=sampler)
        trained[variant] = model_cache.pretrained(
            "barlow_twins", prepared, run_dir, variant_config, seed=train_seed,
            progress=progress, width=s["width"], latent_dim=s["latent_dim"],
            proj_dim=s["proj_dim"], proj_hidden_dim=s["proj_hidden_dim"], lambd=s["lambd"],
            augmentation=s["augmentation"], observation=observation, encoder=s["encoder"],
            **options)
    return trained


def score_variants(trained: dict[str, tuple[nn.Module, pd.DataFrame, Any]], prepared: Any,
                   run_dir: Any, settings: dict[str, Any], device: str = "cpu",
                   block: str = "test", progress: bool = False
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """:func:`score_variant` of every trained variant and :func:`reference_scores`, on
    ``block``, with notebook 11's scoring settings (:data:`SCORING_KEYS` and ``seed``, which
    seeds the decoder, the scored masks, the DDPMs and the bootstrap: the same for every
    variant and every training seed). Returns ``(values, intervals)`` keyed ``{row: {score:
    ...}}``, the variants first, then :data:`REFERENCES`."""
    s = _checked_settings(settings, (*SCORING_KEYS, "batch_size", "latent_dim", "noise_std",
                                     "noise_length", "seed"))
    limit_batches = s["limit_batches"]
    decoder_config = TrainConfig(epochs=s["decoder_epochs"], batch_size=s["batch_size"],
                                 lr=s["decoder_lr"], seed=s["seed"], device=device,
                                 limit_batches=limit_batches)
    diffusion = diffusion_settings(s, limit_batches)
    values: dict[str, dict[str, Any]] = {}
    bounds: dict[str, dict[str, Any]] = {}
    for variant, (method, history, model_dir) in trained.items():
        values[variant], bounds[variant] = score_variant(
            method, model_dir, history, prepared, run_dir, decoder_config, s["latent_dim"],
            n_eval_days=s["n_eval_days"], n_decoder_days=s["n_decoder_days"],
            decoder_width=s["decoder_width"], missing=s["missing"], noise_std=s["noise_std"],
            noise_length=s["noise_length"], members=s["members"], diffusion=diffusion,
            probe_hidden=s["probe_hidden"], probe_iterations=s["probe_iterations"],
            decoder=s["decoder"], decoder_ridge=s["decoder_ridge"], seed=s["seed"],
            block=block, observed_decoder=s["decoder_observed"] and s["decoder"] == "ridge",
            progress=progress)
    reference_values, reference_bounds = reference_scores(
        prepared, n_eval_days=s["n_eval_days"], members=s["members"],
        window=s["climatology_window"], seed=s["seed"], block=block)
    values.update(reference_values)
    bounds.update(reference_bounds)
    return values, bounds


#: The comparisons notebook 11 states: ``(name, reference row, against)`` (:func:`compare_rows`
#: arguments); every variant row is compared (but the reference itself).
STATED_COMPARISONS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("vs baseline", "baseline", {}),
    ("vs climatology", "climatology", {}),
    ("vs persistence", "persistence",
     {"crps_forecast_diffusion": "crps_forecast_deterministic"}),
    ("vs climatological ensemble", "climatological_ensemble", {}),
)


def stated_comparisons(values: dict[str, dict[str, Any]],
                       intervals: dict[str, dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """``{name: compare_rows(...)}`` for each of :data:`STATED_COMPARISONS`, the variant rows
    (every row not in :data:`REFERENCES`) against the reference; a comparison whose reference
    row is absent (no ``baseline`` variant run) is left out.

    Example:
        >>> v = {"baseline": {"season_accuracy": 0.5}, "smoothness": {"season_accuracy": 0.9}}
        >>> i = {"baseline": {"season_accuracy": [0.4, 0.6]},
        ...      "smoothness": {"season_accuracy": [0.85, 0.95]}}
        >>> stated_comparisons(v, i)["vs baseline"].loc["smoothness", "season_accuracy"]
        'better'
    """
    variants = [row for row in values if row not in REFERENCES]
    return {name: compare_rows(values, intervals, reference, against=against,
                               rows=[v for v in variants if v != reference])
            for name, reference, against in STATED_COMPARISONS if reference in values}


#: What :func:`fusion_row` reads from notebook 09's results for each score of :data:`SCORES`:
#: ``(section, key)`` of ``09_fusion.json`` (``table_3_1`` holds ``<key>_low`` /
#: ``<key>_high`` intervals too).
FUSION_SCORES: dict[str, tuple[str, str]] = {
    "positive_cosine": ("table_3_1", "positive_cosine"),
    "negative_cosine": ("table_3_1", "negative_cosine"),
    "embedding_variance": ("table_3_1", "embedding_variance"),
    "season_accuracy": ("summary", "season accuracy"),
    "latent_second_difference": ("summary", "latent second difference"),
}
#: Where notebook 09's report shows every scheme's row.
FUSION_LINK = "09_fusion.html#Summary"


def fusion_row(path: Any, scheme: str | None) -> dict[str, Any]:
    """Notebook 09's ``scheme`` (e.g. ``"late_graph_attention"``) as a row next to notebook
    11's variants, from 09's results file ``path`` (``<run_dir>/results/09_fusion.json``).

    Only the scores both notebooks define the same way (:data:`FUSION_SCORES`: Table 3.1 on
    two views of a complete day, the season probe's accuracy, the latent second difference);
    09's encoder, training days and scored test days are its own, so the row is shown, never
    compared. Returns ``{"values": {label: row}, "intervals": {label: ...}, "note": text,
    "link": FUSION_LINK}`` with ``label`` = ``"<scheme> (09)"``; empty rows and a note saying
    why when ``scheme`` is None or 09 has not written ``path``. A scheme 09 did not train
    raises, naming those it did.
    """
    empty: dict[str, Any] = {"values": {}, "intervals": {}, "link": FUSION_LINK}
    if scheme is None:
        return {**empty, "note": "no notebook-09 scheme asked for (fusion_scheme=None)"}
    path = Path(path)
    if not path.exists():
        return {**empty, "note": f"notebook 09 has not written {path} in this run; its "
                                 f"{scheme} row is in its report ({FUSION_LINK})"}
    results = json.loads(path.read_text())
    schemes = sorted(results.get("summary", {}))
    if scheme not in schemes:
        raise ValueError(f"notebook 09 trained no scheme {scheme!r} ({path}); choose one of "
                         f"{schemes}")
    label = f"{scheme} (09)"
    row: dict[str, Any] = {}
    bounds: dict[str, Any] = {}
    for score, (section, key) in FUSION_SCORES.items():
        entry = results[section][scheme]
        if entry.get(key) is None:
            continue
        row[score] = float(entry[key])
        if entry.get(f"{key}_low") is not None:
            bounds[score] = [float(entry[f"{key}_low"]), float(entry[f"{key}_high"])]
    days = results.get("eval_days", ["?", "?"])
    note = (f"{label}: notebook 09's encoder ({results.get('epochs')} epochs on "
            f"{results.get('n_train_days')} training days, latent {results.get('latent_dim')}), "
            f"scored on its {results.get('n_eval_days')} {results.get('scored_block')} days "
            f"{days[0]} .. {days[-1]} in the {results.get('space')} space; shown, not compared "
            f"(other model and days); its full row is in {FUSION_LINK}")
    return {"values": {label: row}, "intervals": {label: bounds}, "note": note,
            "link": FUSION_LINK}
