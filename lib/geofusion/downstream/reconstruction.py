"""Reconstruction of complete days from sparse, noisy observations, and its scores.

Notebooks 06 and 07 ask one question of several models: given an observation ``(x_obs, m)`` of
a validation day ``x`` (``m`` True where observed, ``x_obs`` 0 where missing, the standardised
training mean, :func:`geofusion.data.observations.apply_mask`), how well is the complete day
recovered,
and how far does the model's latent move from that of the complete day?

Reconstructors (anything with ``has_latent`` and
``reconstruct(fields, observed, times, noise_std)``):

- :class:`LatentReconstructor`: a trained method and a decoder of its latents,
  ``x_hat = D(f(x_obs, m))`` with ``f`` :func:`geofusion.learning.methods.embed_observed` (the
  method's
  inference view, plus the mask channel for methods trained on sparse views).
- :class:`FunctionReconstructor`: a baseline in field space that maps an observation straight
  to fields (optimal interpolation, the day-of-year climatology, ...); it has no latent.

Scores (:func:`score_reconstruction`), on ``N`` days, per variable ``c`` in physical units:

- latitude-weighted RMSE (WeatherBench 2, :mod:`geofusion.verification.metrics`):
  ``RMSE_c = sqrt(mean_n MSE_nc)``, ``MSE_nc = sum_ij w_i (x_hat - x)^2 / sum_ij w_i``,
  ``w_i ∝ cos(lat_i)``; the per-day ``MSE_nc`` are kept for block-bootstrap intervals;
- latent cosines (latent models only): ``cos(f(x_obs, m) - mu, f(x) - mu)`` (centred, ``mu``
  the mean latent of the complete evaluation days: only this says whether the observation
  still points at *its* day) and the raw ``cos(f(x_obs, m), f(x))``, averaged over days.

:class:`SparsityEvaluation` draws the observations (one mask generator per mask kind, so masks
of a kind are nested across missing fractions), memoises the scores per
``(kind, ratio, noise)`` and returns the robustness curves as long tables.

Arrays follow the project layout ``(day, channel, lat, lon)``, standardised unless stated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geofusion.data import FieldDataset
from geofusion.data.observations import MASK_KINDS, Observation, make_mask
from geofusion.learning import model_cache
from geofusion.learning.decoders import FrozenEncoderDecoder, JointContrastiveDecoder, build_joint
from geofusion.learning.methods import embed_observed
from geofusion.models.resnet import FieldDecoder
from geofusion.verification import baseline_comparison
from geofusion.verification.baselines import climatology_forecast
from geofusion.verification.bootstrap import BootstrapInterval, bootstrap_mean, bootstrap_rmse
from geofusion.verification.metrics import lat_weighted_mse

__all__ = [
    "Reconstructor", "LatentReconstructor", "FunctionReconstructor", "ReconstructionScore",
    "score_reconstruction", "observation_generator", "SparsityEvaluation",
    "decoder_training_days", "fit_frozen_decoder", "fit_joint_decoder", "relative_skill",
    "versus_best_baseline", "fraction_key", "climatology_reconstructor",
    "optimal_interpolation_reconstructor",
]


class Reconstructor(Protocol):
    """What the scores need of a model: whether it has a latent, and its reconstruction."""

    has_latent: bool

    def reconstruct(self, fields: Tensor, observed: Tensor | None, times: Any,
                    noise_std: float = 0.0) -> Tensor:
        """Observed ``fields`` (N, C, H, W) and mask (N, H, W) of days ``times`` (N,), with
        observation noise of std ``noise_std`` (standardised units) -> reconstructed complete
        fields (N, C, H, W), standardised, on the CPU."""
        ...


def _module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class LatentReconstructor:
    """A trained method and the decoder of its latents: ``x_hat = D(f(x_obs, m))``.

    Args:
        method: a trained method of :mod:`geofusion.learning.methods` (``embed`` and, for methods
            trained on sparse views, ``mask_channel``); it is used in eval mode.
        decoder: ``(B, D)`` latents -> ``(B, C, H, W)`` standardised fields (the autoencoder's
            own decoder, or one trained on the frozen latents).
        batch_size: days encoded or decoded at once (memory on the device).

    Example:
        >>> import torch
        >>> from geofusion.learning.methods import build_method
        >>> ae = build_method("autoencoder", grid=(8, 16), width=2, latent_dim=4)
        >>> model = LatentReconstructor(ae, ae.decoder)
        >>> model.reconstruct(torch.zeros(3, 5, 8, 16)).shape
        torch.Size([3, 5, 8, 16])
    """

    has_latent = True

    def __init__(self, method: nn.Module, decoder: nn.Module, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 day, got {batch_size}")
        self.method, self.decoder, self.batch_size = method, decoder, batch_size

    @torch.no_grad()
    def latents(self, fields: Tensor, observed: Tensor | None = None) -> Tensor:
        """``embed_observed(method, fields, observed)`` in chunks: ``(N, D)`` float32 on the CPU.

        ``fields`` (N, C, H, W) standardised (0 where missing); ``observed`` bool (N, H, W),
        None for complete days.
        """
        device = _module_device(self.method)
        was_training = self.method.training
        self.method.eval()
        try:
            out = []
            for start in range(0, len(fields), self.batch_size):
                chunk = fields[start:start + self.batch_size].to(device)
                mask = None if observed is None else observed[start:start + self.batch_size]
                out.append(embed_observed(self.method, chunk, None if mask is None
                                          else mask.to(device)).float().cpu())
        finally:
            self.method.train(was_training)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """``(N, D)`` latents -> ``(N, C, H, W)`` standardised fields, float32 on the CPU."""
        device = _module_device(self.decoder)
        was_training = self.decoder.training
        self.decoder.eval()
        try:
            out = [self.decoder(latents[s:s + self.batch_size].to(device)).float().cpu()
                   for s in range(0, len(latents), self.batch_size)]
        finally:
            self.decoder.train(was_training)
        return torch.cat(out)

    def reconstruct(self, fields: Tensor, observed: Tensor | None = None,
                    times: Any = None, noise_std: float = 0.0) -> Tensor:
        """``decode(latents(fields, observed))``; ``times`` and ``noise_std`` are not needed
        (the model knows no more than its input) and ignored."""
        return self.decode(self.latents(fields, observed))


@dataclass
class FunctionReconstructor:
    """A field-space baseline: ``function(fields, observed, times, noise_std) -> (N, C, H, W)``.

    ``fields`` (N, C, H, W) standardised observations (0 where missing), ``observed`` bool
    (N, H, W) or None (complete), ``times`` (N,) datetime64 of the days (for a day-of-year
    background), ``noise_std`` the std of the observation noise in standardised units (the
    observation error a statistical interpolation assumes). The result is standardised. It
    has no latent, so its cosines are NaN.

    Example:
        >>> import torch
        >>> zero = FunctionReconstructor(lambda fields, observed, times, noise_std:
        ...                              torch.zeros_like(fields))
        >>> float(zero.reconstruct(torch.ones(2, 5, 4, 8), None, None).abs().sum())
        0.0
    """

    function: Callable[[Tensor, Tensor | None, Any, float], Any]
    has_latent: bool = field(default=False, init=False)

    def reconstruct(self, fields: Tensor, observed: Tensor | None, times: Any,
                    noise_std: float = 0.0) -> Tensor:
        if observed is None:
            observed = torch.ones(fields.shape[0], *fields.shape[2:], dtype=torch.bool)
        out = self.function(fields, observed, times, noise_std)
        out = out if isinstance(out, Tensor) else torch.as_tensor(np.asarray(out))
        if out.shape != fields.shape:
            raise ValueError(f"the reconstruction function returned shape {tuple(out.shape)} "
                             f"for fields {tuple(fields.shape)}; it must return complete "
                             "fields of the same (N, C, H, W) shape")
        return out.float().cpu()


def climatology_reconstructor(climatology: Any) -> FunctionReconstructor:
    """The day-of-year climatology as a reconstruction that ignores the observation:
    ``x_hat = c(doy)``, ``climatology`` ``(366, C, H, W)`` standardised, of the training days
    (:func:`geofusion.verification.baselines.training_climatology`).

    Example:
        >>> import numpy as np, torch
        >>> clim = np.arange(366, dtype="float32")[:, None, None, None] * np.ones((1, 5, 4, 8))
        >>> days = np.array(["2001-01-02", "2001-02-01"], dtype="datetime64[D]")
        >>> out = climatology_reconstructor(clim).reconstruct(torch.zeros(2, 5, 4, 8), None, days)
        >>> out[:, 0, 0, 0].tolist()
        [1.0, 31.0]
    """
    climatology = np.asarray(climatology, dtype=np.float32)
    return FunctionReconstructor(
        lambda fields, observed, times, noise_std: climatology_forecast(climatology, times))


def optimal_interpolation_reconstructor(interpolation: Any) -> FunctionReconstructor:
    """Optimal interpolation as a reconstruction, its observation error matched to each
    observation: ``interpolation`` is a fitted
    ``geofusion.verification.baselines.OptimalInterpolation``
    (a frozen dataclass with ``noise_std`` and ``analyse(observations, observed, times)``);
    every call analyses with ``noise_std`` set to the std of the noise the observation was
    drawn with (``R = noise_std^2 k``, the exact covariance of the project's correlated noise;
    noise-free observations get the nugget the analysis adds for a singular ``R``).

    Example (the analysis replaced by a stand-in that reports the noise it is given):
        >>> import dataclasses, numpy as np, torch
        >>> @dataclasses.dataclass(frozen=True)
        ... class Stub:
        ...     noise_std: float = 0.0
        ...     def analyse(self, y, observed, times):
        ...         return np.full(y.shape, self.noise_std, dtype="float32")
        >>> oi = optimal_interpolation_reconstructor(Stub())
        >>> float(oi.reconstruct(torch.zeros(1, 5, 4, 8), None, None, noise_std=0.3)[0, 0, 0, 0])
        0.30000001192092896
    """
    def analyse(fields: Tensor, observed: Tensor, times: Any, noise_std: float) -> np.ndarray:
        matched = dataclasses.replace(interpolation, noise_std=float(noise_std))
        return matched.analyse(fields.numpy(), observed.numpy(), times)

    return FunctionReconstructor(analyse)


@dataclass
class ReconstructionScore:
    """Scores of one model on ``N`` observed days.

    Attributes:
        rmse: variable -> latitude-weighted RMSE over the days, physical units.
        daily_mse: ``(N, C)`` latitude-weighted MSE per day and variable (physical units
            squared): ``rmse[c] == sqrt(daily_mse[:, c].mean())``; resample its rows for
            block-bootstrap intervals.
        centred_cosine, cosine: mean over days of the centred and raw latent cosine to the
            complete day (NaN without a latent).
        daily_centred_cosine: ``(N,)`` (NaN without a latent).
    """

    rmse: dict[str, float]
    daily_mse: np.ndarray
    centred_cosine: float
    cosine: float
    daily_centred_cosine: np.ndarray

    def rmse_interval(self, seed: int = 0, block: int = 7) -> BootstrapInterval:
        """95 % block-bootstrap interval ``(C,)`` of the RMSE over the days (blocks of
        ``block`` consecutive days of the evaluation set, at most all of them,
        :func:`geofusion.verification.bootstrap.bootstrap_rmse`: the per-day MSEs are resampled,
        averaged,
        then rooted)."""
        return bootstrap_rmse(self.daily_mse, block=min(block, len(self.daily_mse)), seed=seed)

    def cosine_interval(self, seed: int = 0, block: int = 7) -> BootstrapInterval:
        """The same for the mean centred cosine (NaN for a model without a latent)."""
        return bootstrap_mean(self.daily_centred_cosine,
                              block=min(block, len(self.daily_centred_cosine)), seed=seed)


def decoder_training_days(n_train: int, n_days: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of the training days a frozen-encoder decoder sees: ``n_days`` drawn
    without replacement by ``numpy.random.default_rng(seed)`` (all days when None or larger),
    the same draw in notebooks 06, 07 and 08, so their decoders are one cached model."""
    days = np.arange(n_train)
    if n_days is not None and n_days < n_train:
        days = np.sort(np.random.default_rng(seed).choice(days, size=n_days, replace=False))
    return days


def fit_frozen_decoder(method: nn.Module, encoder_dir: Any, prepared: Any, run_dir: Any,
                       config: Any, latent_dim: int, n_days: int | None = None, width: int = 16,
                       seed: int = 0, progress: bool = True
                       ) -> tuple[FrozenEncoderDecoder, pd.DataFrame]:
    """A :class:`geofusion.models.resnet.FieldDecoder` trained on the frozen latents of ``method``.

    ``min_D mean ||D(f(x)) - x||^2`` over complete training days
    (:class:`geofusion.learning.decoders.FrozenEncoderDecoder`; the encoder never changes), trained
    once
    per encoder and settings by :func:`geofusion.learning.model_cache.cached_fit` and shared by
    every notebook
    asking for the same one.

    Args:
        method: the trained method; ``encoder_dir`` its directory from
            :func:`geofusion.learning.model_cache.pretrained` (its name keys the cache).
        prepared: :class:`geofusion.data.PreparedData`; the decoder sees
            :func:`decoder_training_days` of ``prepared.train``.
        run_dir, config, progress: as :func:`geofusion.learning.model_cache.cached_fit`.
        latent_dim: the size of the method's latent.
        n_days: training days (None for all); width: the decoder's base width; seed: its
            initial weights and the day draw.

    Returns:
        ``(model, history)``; ``model.decoder`` maps latents to standardised fields.
    """
    days = decoder_training_days(len(prepared.train), n_days, seed)
    train_set = FieldDataset(prepared.train[days], prepared.season_labels("train")[days])
    grid = tuple(int(s) for s in prepared.train.shape[-2:])

    def make() -> FrozenEncoderDecoder:
        torch.manual_seed(seed)
        return FrozenEncoderDecoder(method, FieldDecoder(latent_dim, len(prepared.channels),
                                                         grid, width=width))

    description = {"name": "frozen_decoder", "encoder": Path(encoder_dir).name,
                   "decoder_width": width, "init_seed": seed, "train_days": len(train_set),
                   "data": model_cache.data_fingerprint(prepared)}
    model, history, _ = model_cache.cached_fit(make, description, train_set, config, run_dir,
                                        progress=progress)
    return model, history


def fit_joint_decoder(scheme: str, params: Mapping[str, Any], architecture: Mapping[str, Any],
                      prepared: Any, run_dir: Any, config: Any, n_days: int | None = None,
                      seed: int = 0, progress: bool = True
                      ) -> tuple[JointContrastiveDecoder, pd.DataFrame]:
    """A Barlow Twins encoder and decoder trained together from scratch (notebook 07).

    ``geofusion.learning.decoders.build_joint(scheme, **architecture, **params)`` (Kadeethum,
    Quetin or
    Yao/Dippel), trained once per description by :func:`geofusion.learning.model_cache.cached_fit`
    on the
    :func:`decoder_training_days` of ``prepared.train`` (the days the frozen decoders see).

    Args:
        scheme: one of :data:`geofusion.learning.decoders.JOINT_SCHEMES`; params: its own
        parameters.
        architecture: ``in_channels, grid, latent_dim, width, proj_dim, proj_hidden_dim,
            lambd, decoder_width`` (JSON-friendly: they key the cache).
        prepared, run_dir, config, progress: as :func:`fit_frozen_decoder`.
        n_days: training days (None for all); seed: initial weights and the day draw.

    Returns:
        ``(model, history)``; the history logs each term of the objective per epoch.
    """
    days = decoder_training_days(len(prepared.train), n_days, seed)
    train_set = FieldDataset(prepared.train[days], prepared.season_labels("train")[days])

    def make() -> JointContrastiveDecoder:
        torch.manual_seed(seed)
        return build_joint(scheme, **architecture, **params)

    description = {"name": f"joint_{scheme}", "builder": "geofusion.learning.decoders.build_joint",
                   "init_seed": seed, "params": {**architecture, **params},
                   "train_days": len(train_set), "data": model_cache.data_fingerprint(prepared)}
    model, history, _ = model_cache.cached_fit(make, description, train_set, config, run_dir,
                                        progress=progress)
    return model, history


def score_reconstruction(model: Reconstructor, fields: Tensor, observed: Tensor | None,
                         truth: np.ndarray, lat: Any,
                         to_physical: Callable[[np.ndarray], np.ndarray],
                         channels: Sequence[str], times: Any = None,
                         complete_latents: Tensor | None = None, centre: Tensor | None = None,
                         noise_std: float = 0.0) -> tuple[ReconstructionScore, np.ndarray]:
    """Score ``model``'s reconstruction of the complete days ``truth`` from an observation.

    Args:
        model: a :class:`Reconstructor`.
        fields: ``(N, C, H, W)`` standardised observations (0 where missing, noise included).
        observed: bool ``(N, H, W)``, True = observed; None = complete.
        truth: ``(N, C, H, W)`` complete days in physical units.
        lat: ``(H,)`` degrees ascending.
        to_physical: standardised numpy -> physical units (``prepared.destandardise``).
        channels: the ``C`` variable names (keys of ``rmse``).
        times: ``(N,)`` datetime64 of the days (for baselines with a day-of-year background).
        complete_latents: ``(N, D)`` latents of the complete days, ``model.latents(complete)``
            (required for a latent model, ignored otherwise).
        centre: ``(D,)`` the mean latent of the complete evaluation days, subtracted before
            the centred cosine (default: the mean of ``complete_latents``).
        noise_std: std of the observation noise in ``fields`` (standardised), for baselines
            that model the observation error.

    Returns:
        ``(score, reconstruction)``, the reconstruction ``(N, C, H, W)`` in physical units.
    """
    truth = np.asarray(truth)
    if truth.shape != tuple(fields.shape) or truth.shape[1] != len(channels):
        raise ValueError(f"truth {truth.shape} must match the observed fields "
                         f"{tuple(fields.shape)} with C = {len(channels)} channels")
    if model.has_latent:
        if complete_latents is None or len(complete_latents) != len(fields):
            raise ValueError("a latent model needs complete_latents, the (N, D) latents of the "
                             "complete days: pass model.latents(complete_fields)")
        z = model.latents(fields, observed)
        full = complete_latents
        mu = full.mean(dim=0) if centre is None else centre
        daily_centred = F.cosine_similarity(z - mu, full - mu, dim=1).numpy()
        cosine = float(F.cosine_similarity(z, full, dim=1).mean())
        standardised = model.decode(z)
    else:
        daily_centred = np.full(len(fields), np.nan)
        cosine = math.nan
        standardised = model.reconstruct(fields, observed, times, noise_std)
    reconstruction = np.asarray(to_physical(standardised.numpy()))
    daily_mse = np.asarray(lat_weighted_mse(reconstruction, truth, np.asarray(lat)),
                           dtype=np.float64)
    rmse = np.sqrt(daily_mse.mean(axis=0))
    score = ReconstructionScore(
        rmse=dict(zip(channels, rmse.tolist(), strict=True)), daily_mse=daily_mse,
        centred_cosine=float(np.mean(daily_centred)), cosine=cosine,
        daily_centred_cosine=daily_centred)
    return score, reconstruction


def observation_generator(seed: int, kind: str) -> torch.Generator:
    """The mask generator of ``kind``: one seed per kind, so masks of a kind drawn at several
    missing fractions are nested (a higher fraction removes more of the same points)."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    return torch.Generator().manual_seed(seed + 10 + MASK_KINDS.index(kind))


class SparsityEvaluation:
    """Scores of several models on the same evaluation days seen through masks and noise.

    For a mask kind ``k``, missing fraction ``r`` and noise std ``s`` (standardised units,
    correlation length ``noise_length`` grid points) every day gets the same observation for
    every model: a mask of ``k`` missing exactly ``round(r H W)`` points, drawn from
    :func:`observation_generator` (nested across ``r``), then, when ``s > 0``, correlated noise
    (:func:`geofusion.data.observations.correlated_noise`) from a generator seeded ``seed + 20``.

    Args:
        models: name -> :class:`Reconstructor` (latent models and baselines).
        fields: ``(N, C, H, W)`` complete evaluation days, standardised.
        times: ``(N,)`` datetime64 of the days.
        lat: ``(H,)`` degrees ascending.
        to_physical: standardised numpy -> physical units.
        channels: the ``C`` variable names.
        seed: seeds the masks and the noise.
        noise_length: correlation length of the noise in grid points.
        distinct_masks: how many different masks one observation setting draws; day ``n``
            gets mask ``n mod distinct_masks`` (None: one per day). Fewer masks make
            baselines that factorise a covariance per observed pattern (optimal
            interpolation) proportionally cheaper, at the price of less mask variety; the
            masks stay nested across missing fractions.

    Example:
        >>> import numpy as np, torch
        >>> from geofusion.learning.methods import build_method
        >>> ae = build_method("autoencoder", grid=(8, 16), width=2, latent_dim=4)
        >>> days = torch.randn(4, 5, 8, 16)
        >>> ev = SparsityEvaluation({"ae": LatentReconstructor(ae, ae.decoder)}, days,
        ...     np.arange(4).astype("datetime64[D]"), np.linspace(-80, 80, 8), lambda x: x,
        ...     ["a", "b", "c", "d", "e"])
        >>> round(ev.scores("pixel", 0.0)["ae"].centred_cosine, 4)
        1.0
        >>> ev.curves(["pixel"], [0.0, 0.5]).columns.tolist()[:6]
        ['model', 'kind', 'missing_fraction', 'noise_std', 'variable', 'rmse']
    """

    def __init__(self, models: Mapping[str, Reconstructor], fields: Tensor, times: Any,
                 lat: Any, to_physical: Callable[[np.ndarray], np.ndarray],
                 channels: Sequence[str], seed: int = 0, noise_length: float = 2.0,
                 distinct_masks: int | None = None) -> None:
        if not models:
            raise ValueError("no models given; pass a dict name -> Reconstructor")
        fields = torch.as_tensor(fields).float()
        if fields.ndim != 4 or fields.shape[1] != len(channels):
            raise ValueError(f"fields must be (N, C={len(channels)}, H, W), got "
                             f"{tuple(fields.shape)}")
        if len(np.asarray(times)) != len(fields):
            raise ValueError(f"{len(np.asarray(times))} times for {len(fields)} days; pass the "
                             "times of the evaluation days")
        if distinct_masks is not None and distinct_masks < 1:
            raise ValueError(f"distinct_masks must be >= 1 (or None for one mask per day), got "
                             f"{distinct_masks}")
        self.distinct_masks = distinct_masks
        self.models = dict(models)
        self.fields, self.times = fields, np.asarray(times)
        self.lat, self.to_physical = np.asarray(lat), to_physical
        self.channels, self.seed, self.noise_length = list(channels), seed, noise_length
        self.truth = np.asarray(to_physical(fields.numpy()))
        self.complete_latents = {name: model.latents(fields) for name, model in models.items()
                                 if model.has_latent}
        self.centres = {name: z.mean(dim=0) for name, z in self.complete_latents.items()}
        self._scores: dict[tuple[str, float, float], dict[str, ReconstructionScore]] = {}

    def observe(self, kind: str, ratio: float, noise_std: float = 0.0,
                days: Any = None) -> tuple[Tensor, Tensor]:
        """``(observed fields, mask)`` of the evaluation days (or the subset ``days``, the same
        observation those days get in the full set) for ``kind``, ``ratio``, ``noise_std``."""
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0 (standardised units), got {noise_std}")
        n = len(self.fields)
        k = n if self.distinct_masks is None else min(self.distinct_masks, n)
        mask = make_mask((k, *self.fields.shape[-2:]), float(ratio), kind,
                         observation_generator(self.seed, kind))[torch.arange(n) % k]
        fields = self.fields
        if noise_std > 0:
            noisy = Observation(kind=kind, min_ratio=0.0, max_ratio=0.0, noise_std=noise_std,
                                noise_length=self.noise_length)
            fields, _ = noisy(fields, torch.Generator().manual_seed(self.seed + 20))
        fields = fields * mask[:, None]
        if days is not None:
            days = np.atleast_1d(np.asarray(days, dtype=np.int64))
            return fields[days], mask[days]
        return fields, mask

    def scores(self, kind: str, ratio: float, noise_std: float = 0.0
               ) -> dict[str, ReconstructionScore]:
        """name -> :class:`ReconstructionScore` for one observation setting (memoised)."""
        key = (kind, float(ratio), float(noise_std))
        if key not in self._scores:
            fields, mask = self.observe(kind, ratio, noise_std)
            self._scores[key] = {
                name: score_reconstruction(
                    model, fields, mask, self.truth, self.lat, self.to_physical, self.channels,
                    self.times, self.complete_latents.get(name), self.centres.get(name),
                    noise_std)[0]
                for name, model in self.models.items()}
        return self._scores[key]

    def reconstruct_days(self, name: str, days: Any, kind: str, ratio: float,
                         noise_std: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One model's reconstruction of ``days`` from the same observation :meth:`scores`
        uses: ``(reconstruction, observation, mask)``, the first two ``(n, C, H, W)`` physical
        (the observation NaN where missing), the mask bool ``(n, H, W)``."""
        days = np.atleast_1d(np.asarray(days, dtype=np.int64))
        fields, mask = self.observe(kind, ratio, noise_std, days)
        standardised = self.models[name].reconstruct(fields, mask, self.times[days], noise_std)
        observation = np.where(mask.numpy()[:, None], self.to_physical(fields.numpy()), np.nan)
        return np.asarray(self.to_physical(standardised.numpy())), observation, mask.numpy()

    def day_cosine(self, name: str, day: int, kind: str, ratio: float,
                   noise_std: float = 0.0) -> float:
        """Centred latent cosine of one day's observation to its complete day (NaN for a
        model without a latent)."""
        model = self.models[name]
        if not model.has_latent:
            return math.nan
        fields, mask = self.observe(kind, ratio, noise_std, [day])
        mu = self.centres[name]
        z = model.latents(fields, mask)[0]
        return float(F.cosine_similarity(z - mu, self.complete_latents[name][day] - mu, dim=0))

    def curves(self, kinds: Sequence[str], ratios: Sequence[float],
               noise_stds: Sequence[float] = (0.0,)) -> pd.DataFrame:
        """Long table of every model under every ``(kind, ratio, noise_std)``.

        Columns ``model, kind, missing_fraction, noise_std, variable, rmse`` (physical units),
        ``rmse_low, rmse_high`` (its 95 % block-bootstrap interval over the days,
        :meth:`ReconstructionScore.rmse_interval`), ``centred_cosine, centred_cosine_low,
        centred_cosine_high, cosine`` (the model's, repeated per variable; NaN for baselines).
        """
        rows = []
        for kind in kinds:
            for ratio in ratios:
                for std in noise_stds:
                    for name, score in self.scores(kind, ratio, std).items():
                        rmse_ci = score.rmse_interval(self.seed)
                        cos_ci = score.cosine_interval(self.seed)
                        for c, variable in enumerate(self.channels):
                            rows.append({"model": name, "kind": kind,
                                         "missing_fraction": float(ratio),
                                         "noise_std": float(std), "variable": variable,
                                         "rmse": score.rmse[variable],
                                         "rmse_low": float(rmse_ci.low[c]),
                                         "rmse_high": float(rmse_ci.high[c]),
                                         "centred_cosine": score.centred_cosine,
                                         "centred_cosine_low": float(cos_ci.low),
                                         "centred_cosine_high": float(cos_ci.high),
                                         "cosine": score.cosine})
        table = pd.DataFrame(rows)
        table.attrs["n_days"] = len(self.fields)
        return table

    def scorecard(self, ratios: Sequence[float] = (0.0, 0.5, 0.9), kind: str = "pixel",
                  climatology: str = "climatology") -> dict[str, Any]:
        """The notebook-06 part of ``reports/results.json`` (issue 13, section 4).

        ``climatology_rmse`` {variable: RMSE of the ``climatology`` model}, and
        ``reconstruction_rmse`` {model: {missing fraction ("0", "0.5", ...): {variable: RMSE}}}
        for every other model under ``kind`` masks without noise, with their 95 %
        block-bootstrap intervals under ``intervals`` in the same nesting (physical units).
        """
        if climatology not in self.models:
            raise ValueError(f"no model named {climatology!r} to report as the climatology; "
                             f"the models are {sorted(self.models)}")
        climatology_score = self.scores(kind, 0.0)[climatology]
        card: dict[str, Any] = {"climatology_rmse": dict(climatology_score.rmse),
                                "reconstruction_rmse": {}}
        intervals: dict[str, Any] = {
            "climatology_rmse": climatology_score.rmse_interval(self.seed).by_name(self.channels),
            "reconstruction_rmse": {}}
        for name in self.models:
            if name == climatology:
                continue
            card["reconstruction_rmse"][name] = {}
            intervals["reconstruction_rmse"][name] = {}
            for ratio in ratios:
                score = self.scores(kind, ratio)[name]
                card["reconstruction_rmse"][name][fraction_key(ratio)] = dict(score.rmse)
                intervals["reconstruction_rmse"][name][fraction_key(ratio)] = \
                    score.rmse_interval(self.seed).by_name(self.channels)
        card["intervals"] = intervals
        return card

    def summary(self, curves: pd.DataFrame, kind: str, mode: str, baselines: Sequence[str],
                reference: str = "climatology") -> pd.DataFrame:
        """One row per model condensing ``curves`` (:meth:`curves`) for mask ``kind``.

        With ``first, middle, last`` the smallest, middle and largest missing fraction of the
        curves: RMSE relative to ``reference`` (mean over variables) at the three, the RMSE of
        ``mode`` at the first and last, the centred cosine at the middle and last, the raw
        cosine at the last and between different complete days, the centred cosine under the
        largest noise with nothing missing (NaN when the curves hold no noise), and how the
        model compares with the best of ``baselines`` at the last fraction (its name, the
        RMSE ratio and on how many variables the model wins).
        """
        clean = curves[(curves["kind"] == kind) & (curves["noise_std"] == 0)]
        ratios = sorted(set(clean["missing_fraction"]))
        if not ratios:
            raise ValueError(f"the curves hold no noise-free {kind!r} scores; pass curves of "
                             f"that kind (e.g. evaluation.curves([{kind!r}], ratios))")
        first, middle, last = ratios[0], ratios[len(ratios) // 2], ratios[-1]
        skill = relative_skill(curves, reference)
        versus = versus_best_baseline(curves, baselines, reference)
        noisy = curves[(curves["kind"] == kind) & (curves["missing_fraction"] == 0)]
        top_noise = float(noisy["noise_std"].max()) if len(noisy) else 0.0
        different = self.different_day_cosine()
        rows = {}
        for name in dict.fromkeys(curves["model"]):
            def at(r: float, column: str, std: float = 0.0, name: str = name) -> Any:
                return skill.loc[(name, kind, float(r), float(std)), column]
            mode_rmse = clean[(clean["model"] == name) & (clean["variable"] == mode)] \
                .set_index("missing_fraction")["rmse"]
            best = versus.loc[(name, kind, float(last), 0.0)]
            rows[name] = {
                **{f"RMSE/{reference}, {r:g} missing": at(r, "rmse_over_reference")
                   for r in (first, middle, last)},
                **{f"{mode} RMSE, {r:g} missing": float(mode_rmse[r]) for r in (first, last)},
                f"centred cosine, {middle:g} missing": at(middle, "centred_cosine"),
                f"centred cosine, {last:g} missing": at(last, "centred_cosine"),
                f"raw cosine, {last:g} missing": at(last, "cosine"),
                "raw cosine, different days": different.get(name, math.nan),
                f"centred cosine, noise {top_noise:g}": (at(0.0, "centred_cosine", top_noise)
                                                         if top_noise > 0 else math.nan),
                f"best baseline, {last:g} missing": best["best_baseline"],
                "RMSE / best baseline": float(best["rmse_over_best_baseline"]),
                "variables better": f"{int(best['variables_better'])} of "
                                    f"{int(best['n_variables'])}",
            }
        return pd.DataFrame(rows).T.infer_objects()

    def different_day_cosine(self) -> dict[str, float]:
        """Raw cosine between latents of different complete days (day ``n`` against day
        ``n + N/2``, circularly): the level a raw cosine must beat to mean anything."""
        return {name: float(F.cosine_similarity(z, z.roll(len(z) // 2, dims=0)).mean())
                for name, z in self.complete_latents.items()}


_SETTING = ("kind", "missing_fraction", "noise_std")


def relative_skill(curves: pd.DataFrame, reference: str = "climatology") -> pd.DataFrame:
    """One row per ``(model, kind, missing_fraction, noise_std)`` of :meth:`SparsityEvaluation
    .curves`: ``rmse_over_reference``, the mean over variables of ``RMSE_c / RMSE_c(reference)``
    under the same observation (1 = no better than the reference), and the latent cosines
    (:func:`geofusion.verification.baseline_comparison.relative_skill`).

    Example:
        >>> import pandas as pd
        >>> rows = [("m", 2.0, 0.5), ("m", 9.0, 0.5), ("climatology", 4.0, None),
        ...         ("climatology", 9.0, None)]
        >>> curves = pd.DataFrame([{"model": m, "kind": "pixel", "missing_fraction": 0.0,
        ...     "noise_std": 0.0, "variable": v, "rmse": r, "centred_cosine": c, "cosine": c}
        ...     for (m, r, c), v in zip(rows, ["a", "b", "a", "b"])])
        >>> float(relative_skill(curves).loc[("m", "pixel", 0.0, 0.0), "rmse_over_reference"])
        0.75
    """
    return baseline_comparison.relative_skill(curves, reference, _SETTING,
                                              extra=("centred_cosine", "cosine"))

def fraction_key(ratio: float) -> str:
    """The scorecard key of a missing fraction: ``"0"``, ``"0.5"``, ``"0.9"`` (``f"{r:g}"``)."""
    return f"{float(ratio):g}"


def versus_best_baseline(curves: pd.DataFrame, baselines: Sequence[str],
                         reference: str = "climatology") -> pd.DataFrame:
    """Each model against the best of ``baselines`` under the same observation ``(kind,
    missing_fraction, noise_std)`` of :meth:`SparsityEvaluation.curves`: ``best_baseline``,
    ``rmse_over_best_baseline``, ``variables_better``, ``n_variables``
    (:func:`geofusion.verification.baseline_comparison.versus_best_baseline`, best = lowest RMSE
    relative
    to ``reference``)."""
    return baseline_comparison.versus_best_baseline(curves, baselines, reference, _SETTING)
