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
from geofusion.data.eof import EOFCode, area_weights, fit_eof
from geofusion.data.observations import MASK_KINDS, Observation
from geofusion.learning import model_cache
from geofusion.learning.decoders import FrozenEncoderDecoder, JointContrastiveDecoder, build_joint
from geofusion.learning.methods import RECONSTRUCTION_LOSSES, embed_observed
from geofusion.models.resnet import FieldDecoder
from geofusion.models.ridge_decoder import RidgeDecoder, fit_ridge_decoder
from geofusion.verification.baselines import climatology_forecast, training_climatology
from geofusion.verification.bootstrap import BootstrapInterval, bootstrap_mean, bootstrap_rmse
from geofusion.verification.metrics import lat_weighted_acc, lat_weighted_mean, lat_weighted_mse

__all__ = [
    "Reconstructor", "LatentReconstructor", "FunctionReconstructor", "ReconstructionScore",
    "score_reconstruction", "observation_generator",
    "decoder_training_days", "build_frozen_decoder", "fit_frozen_decoder", "fit_joint_decoder",
    "climatology_reconstructor",
    "optimal_interpolation_reconstructor", "fit_eof_code", "eof_reconstructor",
    "gappy_eof_reconstructor", "fit_masked_ridge_decoder", "choose_decoder", "physical",
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
    ``geofusion.verification.optimal_interpolation.OptimalInterpolation``
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


def physical(to_physical: Callable[..., Any], x: np.ndarray, times: Any = None) -> np.ndarray:
    """``to_physical(x, times)`` as numpy: model-space fields ``(N, C, H, W)`` of days
    ``times`` to physical units (``prepared.destandardise``, which in the anomaly space needs
    the days to add the climatology back); ``to_physical(x)`` when ``times`` is None.

    Example:
        >>> import numpy as np
        >>> float(physical(lambda x, times: x + 1, np.zeros(1), ["2001-01-01"])[0])
        1.0
    """
    return np.asarray(to_physical(x) if times is None else to_physical(x, times))


def fit_eof_code(prepared: Any, k: int) -> EOFCode:
    """The ``k`` leading area-weighted EOFs of the training days (``prepared.train``, in the
    model space: anomalies in the anomaly space), :func:`geofusion.data.eof.fit_eof`: the
    equal-size linear code of a latent of size ``k``. Reads no validation or test day."""
    return fit_eof(prepared.train, prepared.lat, int(k))


def eof_reconstructor(code: EOFCode) -> FunctionReconstructor:
    """The EOF code as a reconstruction from its projection: ``x_hat = decode(encode(x_obs))``.

    On complete input this is the best linear code of its size (the bar every latent of that
    size is measured against); on sparse input the projection sees the missing points as 0
    (the climatology in the anomaly space), as the learned encoders do: compare with
    :func:`gappy_eof_reconstructor`, which fits the coefficients to the observed points only.

    Example:
        >>> import numpy as np, torch
        >>> from geofusion.data.eof import fit_eof
        >>> a = np.random.default_rng(0).normal(size=(30, 2, 4, 6)).astype("float32")
        >>> code = fit_eof(a, np.linspace(-60, 60, 4), k=29)  # 30 days span 29 directions
        >>> out = eof_reconstructor(code).reconstruct(torch.from_numpy(a[:3]), None, None)
        >>> bool(torch.allclose(out, torch.from_numpy(a[:3]), atol=1e-4))
        True
    """
    return FunctionReconstructor(
        lambda fields, observed, times, noise_std: code.decode(code.encode(fields.numpy())))


def gappy_eof_reconstructor(code: EOFCode) -> FunctionReconstructor:
    """Gappy EOF (Everson & Sirovich 1995) as a reconstruction: the EOF coefficients fitted
    to the observed points only (:meth:`geofusion.data.eof.EOFCode.encode_observed`, ridge
    to the training coefficient variance), decoded to the complete grid: the linear code's
    sparse-input form.

    Example:
        >>> import numpy as np, torch
        >>> from geofusion.data.eof import fit_eof
        >>> rng = np.random.default_rng(0)
        >>> a = (rng.normal(size=(40, 3)) @ rng.normal(size=(3, 48))).reshape(40, 2, 4, 6)
        >>> code = fit_eof(a.astype("float32"), np.linspace(-60, 60, 4), k=3)
        >>> observed = torch.from_numpy(rng.random((2, 4, 6)) < 0.5)
        >>> x = torch.from_numpy(a[:2].astype("float32")) * observed[:, None]
        >>> out = gappy_eof_reconstructor(code).reconstruct(x, observed, None)
        >>> bool(torch.allclose(out, torch.from_numpy(a[:2].astype("float32")), atol=1e-2))
        True
    """
    return FunctionReconstructor(
        lambda fields, observed, times, noise_std: code.decode(
            code.encode_observed(fields.numpy(), observed.numpy())))


def fit_masked_ridge_decoder(method: nn.Module, prepared: Any, observation: Mapping[str, Any],
                             n_days: int | None = None, seed: int = 0, ridge: float = 1.0,
                             batch_size: int = 256) -> RidgeDecoder:
    """A closed-form ridge decoder (:func:`geofusion.models.ridge_decoder.fit_ridge_decoder`)
    of the latents of *masked* training days to the complete days.

    Each of the :func:`decoder_training_days` of ``prepared.train`` is observed once through
    ``Observation.from_dict(observation)`` (masks and noise drawn from a generator seeded
    ``seed``), encoded by ``embed_observed(method, x_obs, m)`` and the decoder fitted to map
    those latents to the complete day. For a sparse-view encoder this is the decoder of its
    sparse-input latents; one fitted on complete days sees a latent off its training cloud.
    Only training days are read.
    """
    days = decoder_training_days(len(prepared.train), n_days, seed)
    fields = torch.as_tensor(np.asarray(prepared.train[days]), dtype=torch.float32)
    observed_fields, observed = Observation.from_dict(dict(observation))(
        fields, torch.Generator().manual_seed(seed))
    latents = LatentReconstructor(method, nn.Identity(), batch_size=batch_size).latents(
        observed_fields, observed)
    return fit_ridge_decoder(latents, fields, ridge=ridge)


def choose_decoder(method: nn.Module, candidates: Mapping[str, nn.Module], prepared: Any,
                   days: np.ndarray, missing: float = 0.0, kind: str = "pixel", seed: int = 0
                   ) -> tuple[str, pd.DataFrame]:
    """The decoder of ``method``'s latents to use, chosen on **validation** days.

    Each candidate decodes ``method``'s latents of the validation days ``prepared.valid[days]``,
    observed with a ``missing`` fraction of ``kind`` masks (one mask a day, from a generator
    seeded ``seed + 99``; ``missing = 0``: the complete days). The chosen one has the lowest
    mean over variables ``c`` of ``RMSE_c / RMSE_c(climatology)`` (latitude-weighted, physical
    units, the training day-of-year climatology as reference), so that no variable's units
    dominate. Only ``prepared.valid`` (and the training climatology) is read: the test block
    stays unseen until it is scored.

    Args:
        method: a trained method (its inference view, :func:`embed_observed`).
        candidates: name -> decoder ``(B, D) -> (B, C, H, W)`` standardised.
        prepared: :class:`geofusion.data.PreparedData`.
        days: indices into ``prepared.valid`` (e.g.
            :func:`geofusion.data.prepared.evenly_spaced_days`).
        missing: missing fraction in ``[0, 1)`` of the choice.
        kind: mask kind (:data:`geofusion.data.observations.MASK_KINDS`).
        seed: seed of the masks.

    Returns:
        ``(name, table)``: the chosen candidate and a table (one row per candidate) of the
        RMSE of each variable and the ``"mean RMSE / climatology"`` it was chosen on.
    """
    from geofusion.data.observations import make_mask

    if not candidates:
        raise ValueError("choose_decoder needs at least one candidate decoder")
    if not 0 <= missing < 1:
        raise ValueError(f"missing must be a fraction in [0, 1), got {missing}")
    days = np.asarray(days, dtype=np.int64)
    fields = torch.as_tensor(np.asarray(prepared.valid[days]), dtype=torch.float32)
    times = np.asarray(prepared.valid_times)[days]
    observed = None
    if missing > 0:
        observed = make_mask((len(days), *fields.shape[-2:]), missing, kind,
                             torch.Generator().manual_seed(seed + 99))
        fields = fields * observed[:, None]
    channels = list(prepared.channels)
    truth = prepared.destandardise(np.asarray(prepared.valid[days]), times)
    reference = prepared.destandardise(
        climatology_forecast(training_climatology(prepared), times), times)
    clim_rmse = np.sqrt(np.asarray(lat_weighted_mse(reference, truth, prepared.lat)).mean(axis=0))
    rows = {}
    for name, decoder in candidates.items():
        model = LatentReconstructor(method, decoder)
        complete = model.latents(torch.as_tensor(np.asarray(prepared.valid[days])))
        score, _ = score_reconstruction(model, fields, observed, truth, prepared.lat,
                                        prepared.destandardise, channels, times, complete)
        rows[name] = {**score.rmse, "mean RMSE / climatology": float(np.mean(
            [score.rmse[c] / clim_rmse[i] for i, c in enumerate(channels)]))}
    table = pd.DataFrame(rows).T
    return str(table["mean RMSE / climatology"].idxmin()), table


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
        daily_acc: ``(N, C)`` latitude-weighted anomaly correlation per day and variable
            against the climatology (NaN when none was given).
        daily_anomaly_variance: ``(N, C)`` latitude-weighted mean squared anomaly of the
            truth (the climatology's daily MSE; NaN when none was given).
    """

    rmse: dict[str, float]
    daily_mse: np.ndarray
    centred_cosine: float
    cosine: float
    daily_centred_cosine: np.ndarray
    daily_acc: np.ndarray | None = None
    daily_anomaly_variance: np.ndarray | None = None

    def _per_variable(self, values: np.ndarray) -> dict[str, float]:
        return dict(zip(self.rmse, (float(v) for v in values), strict=True))

    @property
    def acc(self) -> dict[str, float]:
        """variable -> anomaly correlation averaged over the days (WeatherBench 2's ACC)."""
        if self.daily_acc is None:
            return {name: math.nan for name in self.rmse}
        return self._per_variable(np.nanmean(self.daily_acc, axis=0))

    @property
    def anomaly_variance_explained(self) -> dict[str, float]:
        """variable -> fraction of the anomaly variance explained,
        ``1 - sum_n MSE_nc / sum_n A_nc`` (``A_nc`` the daily mean squared anomaly of the
        truth): ``1 - (RMSE / RMSE_climatology)^2``; 0 = the climatology, 1 = perfect."""
        if self.daily_anomaly_variance is None:
            return {name: math.nan for name in self.rmse}
        return self._per_variable(1.0 - self.daily_mse.sum(axis=0)
                                  / self.daily_anomaly_variance.sum(axis=0))

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


def build_frozen_decoder(method: nn.Module, latent_dim: int, channels: int,
                         grid: tuple[int, int], width: int = 16, seed: int = 0,
                         reconstruction_loss: str = "mse", lat: Any = None,
                         observation: Mapping[str, Any] | None = None) -> FrozenEncoderDecoder:
    """The untrained model :func:`fit_frozen_decoder` trains: a
    :class:`geofusion.models.resnet.FieldDecoder` ``(B, latent_dim) -> (B, channels, *grid)`` of
    base width ``width`` (initial weights seeded by ``seed``) on the frozen ``method``
    (:class:`geofusion.learning.decoders.FrozenEncoderDecoder`).

    Args:
        reconstruction_loss: "mse" or "lat_weighted" (then ``lat``, the ``(H,)`` latitudes in
            degrees, give the cell-area weights :func:`geofusion.data.eof.area_weights`).
        observation: None, or the settings of the
            :class:`geofusion.data.observations.Observation` the training batches are seen
            through.

    Example:
        >>> from geofusion.learning.methods import build_method
        >>> method = build_method("autoencoder", latent_dim=8, width=2)
        >>> model = build_frozen_decoder(method, 8, 5, (32, 64), width=2)
        >>> model(torch.randn(2, 5, 32, 64)).shape
        torch.Size([2, 5, 32, 64])
    """
    if reconstruction_loss not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"unknown reconstruction_loss {reconstruction_loss!r}; choose one of "
                         f"{RECONSTRUCTION_LOSSES}")
    if reconstruction_loss == "lat_weighted" and lat is None:
        raise ValueError("reconstruction_loss='lat_weighted' needs the grid's latitudes (lat)")
    weights = area_weights(lat) if reconstruction_loss == "lat_weighted" else None
    torch.manual_seed(seed)
    return FrozenEncoderDecoder(method, FieldDecoder(latent_dim, channels, tuple(grid),
                                                     width=width),
                                latitude_weights=weights,
                                observation=None if observation is None else dict(observation))


def fit_frozen_decoder(method: nn.Module, encoder_dir: Any, prepared: Any, run_dir: Any,
                       config: Any, latent_dim: int, n_days: int | None = None, width: int = 16,
                       seed: int = 0, progress: bool = True, reconstruction_loss: str = "mse",
                       observation: Mapping[str, Any] | None = None
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
        reconstruction_loss: "mse" (the report's) or "lat_weighted" (the latitude-weighted
            MSE of the scores, :func:`geofusion.learning.decoders.reconstruction_error`).
        observation: None to decode latents of complete days, or the settings of a
            :class:`geofusion.data.observations.Observation` to train on latents of masked
            training days (for a sparse-view encoder).

    Returns:
        ``(model, history)``; ``model.decoder`` maps latents to standardised fields.
    """
    days = decoder_training_days(len(prepared.train), n_days, seed)
    train_set = FieldDataset(prepared.train[days], prepared.season_labels("train")[days])
    grid = tuple(int(s) for s in prepared.train.shape[-2:])

    if reconstruction_loss not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"unknown reconstruction_loss {reconstruction_loss!r}; choose one of "
                         f"{RECONSTRUCTION_LOSSES}")
    observation = None if observation is None else dict(observation)

    def make() -> FrozenEncoderDecoder:
        return build_frozen_decoder(method, latent_dim, len(prepared.channels), grid,
                                    width=width, seed=seed,
                                    reconstruction_loss=reconstruction_loss, lat=prepared.lat,
                                    observation=observation)

    description = {"name": "frozen_decoder", "encoder": Path(encoder_dir).name,
                   "decoder_width": width, "init_seed": seed, "train_days": len(train_set),
                   "data": model_cache.data_fingerprint(prepared)}
    # Only when not the defaults, so the decoders cached by earlier runs keep their keys.
    if reconstruction_loss != "mse":
        description["reconstruction_loss"] = reconstruction_loss
    if observation is not None:
        description["observation"] = observation
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
            lambd, decoder_width`` and optionally ``encoder`` and ``reconstruction_loss``
            (JSON-friendly: they key the cache). What these ask to be fitted on the data (the
            EOF basis of ``encoder="eof_residual"``, the latitudes of
            ``reconstruction_loss="lat_weighted"``) comes from ``prepared.train`` through
            :func:`geofusion.learning.model_cache.data_dependent_parameters`, as for
            :func:`geofusion.learning.model_cache.pretrained`: no validation or test day.
        prepared, run_dir, config, progress: as :func:`fit_frozen_decoder`.
        n_days: training days (None for all); seed: initial weights and the day draw.

    Returns:
        ``(model, history)``; the history logs each term of the objective per epoch.
    """
    days = decoder_training_days(len(prepared.train), n_days, seed)
    train_set = FieldDataset(prepared.train[days], prepared.season_labels("train")[days])

    extra = model_cache.data_dependent_parameters(prepared, dict(architecture))

    def make() -> JointContrastiveDecoder:
        torch.manual_seed(seed)
        return build_joint(scheme, **architecture, **params, **extra)

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
                         noise_std: float = 0.0, climatology: np.ndarray | None = None
                         ) -> tuple[ReconstructionScore, np.ndarray]:
    """Score ``model``'s reconstruction of the complete days ``truth`` from an observation.

    Args:
        model: a :class:`Reconstructor`.
        fields: ``(N, C, H, W)`` standardised observations (0 where missing, noise included).
        observed: bool ``(N, H, W)``, True = observed; None = complete.
        truth: ``(N, C, H, W)`` complete days in physical units.
        lat: ``(H,)`` degrees ascending.
        to_physical: model-space numpy -> physical units, ``to_physical(x, times)``
            (``prepared.destandardise``; called as ``to_physical(x)`` when ``times`` is None).
        channels: the ``C`` variable names (keys of ``rmse``).
        times: ``(N,)`` datetime64 of the days (for baselines with a day-of-year background).
        complete_latents: ``(N, D)`` latents of the complete days, ``model.latents(complete)``
            (required for a latent model, ignored otherwise).
        centre: ``(D,)`` the mean latent of the complete evaluation days, subtracted before
            the centred cosine (default: the mean of ``complete_latents``).
        noise_std: std of the observation noise in ``fields`` (standardised), for baselines
            that model the observation error.
        climatology: ``(N, C, H, W)`` the physical climatology of the days, for the anomaly
            metrics (anomaly correlation, fraction of anomaly variance explained); None
            leaves them NaN.

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
    reconstruction = physical(to_physical, standardised.numpy(), times)
    lat = np.asarray(lat)
    daily_mse = np.asarray(lat_weighted_mse(reconstruction, truth, lat), dtype=np.float64)
    rmse = np.sqrt(daily_mse.mean(axis=0))
    daily_acc = anomaly_variance = None
    if climatology is not None:
        climatology = np.asarray(climatology)
        if climatology.shape != truth.shape:
            raise ValueError(f"climatology {climatology.shape} must match the days "
                             f"{truth.shape}")
        daily_acc = np.asarray(lat_weighted_acc(reconstruction.astype(np.float64),
                                                truth.astype(np.float64), climatology, lat))
        anomaly_variance = np.asarray(lat_weighted_mean(
            (truth.astype(np.float64) - climatology) ** 2, lat), dtype=np.float64)
    score = ReconstructionScore(
        rmse=dict(zip(channels, rmse.tolist(), strict=True)), daily_mse=daily_mse,
        centred_cosine=float(np.mean(daily_centred)), cosine=cosine,
        daily_centred_cosine=daily_centred, daily_acc=daily_acc,
        daily_anomaly_variance=anomaly_variance)
    return score, reconstruction


def observation_generator(seed: int, kind: str) -> torch.Generator:
    """The mask generator of ``kind``: one seed per kind, so masks of a kind drawn at several
    missing fractions are nested (a higher fraction removes more of the same points)."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    return torch.Generator().manual_seed(seed + 10 + MASK_KINDS.index(kind))


