"""Training objectives: the autoencoder baseline and the three contrastive methods.

Each method is an ``nn.Module`` holding its networks, with

- ``loss(batch, generator) -> (loss, metrics)``: the objective on one batch, where ``batch``
  is ``(fields, season)`` as yielded by :class:`geofusion.data.FieldDataset` (fields
  ``(B, C, H, W)`` standardised, season ``(B,)`` int64) and ``generator`` seeds the
  augmentations. The contrastive methods also take the batches of
  :class:`geofusion.data.samplers.TemporalPairDataset`: ``(fields, partner, season)`` (temporal
  positives: the second view is made from the partner day ``t +- delta``) and
  ``(fields, partner, mirror, season)`` (with the days ``t - s delta, t, t + s delta`` for the
  optional latent smoothness term, ``smoothness_weight``);
- ``encoder``: the network whose ``latent_dim``-d output is the representation
  (the report evaluates and forecasts on it, not on the projections);
- ``inference_view(fields)``: what the encoder sees at inference (the fields themselves for
  the autoencoder; the deterministic :meth:`ReportAugmentation.canonical` view for the
  contrastive methods, whose encoders were trained on resized, smoothed 72 x 144 views);
- ``embed(fields) -> (B, latent_dim)``: ``encoder(inference_view(fields))``, the representation
  of a day used by the decoders and the forecaster.

:func:`build_method` makes any of them by name with the report's defaults, so notebooks and
the pipeline switch method by a string parameter. Given ``observation`` settings
(:class:`geofusion.data.observations.Observation`) it builds the variants trained on sparse, noisy
observations (report chapter 4, step 4), whose encoders take the observation mask as an extra
channel (``mask_channel = True``): :class:`SparseViewMethod` for the contrastive methods (a
complete view paired with a masked, noisy one) and :class:`DenoisingAutoencoderMethod` for the
autoencoder (masked, noisy input, complete target).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from geofusion.data.eof import area_weights
from geofusion.data.observations import Observation, apply_mask
from geofusion.learning.augment import ReportAugmentation, augmentation_preset, two_views
from geofusion.learning.losses import barlow_twins_loss, nt_xent_loss, supcon_loss
from geofusion.learning.smoothness import latent_smoothness_loss
from geofusion.models.eof_residual import EOFResidualDecoder, EOFResidualEncoder
from geofusion.models.resnet import FieldDecoder, LinearFieldDecoder, ProjectionHead, ResNetEncoder

Batch = tuple[Tensor, ...]


class AutoencoderMethod(nn.Module):
    """Deterministic autoencoder: L = mean squared error of the reconstruction.

    Args:
        encoder: (B, C, H, W) -> (B, latent_dim).
        decoder: (B, latent_dim) -> (B, C, H, W).
        channel_weights: None (the report: every channel alike) or C non-negative weights,
            ``L = sum_c w_c MSE_c / sum_c w_c`` (e.g. the inverse of each channel's
            climatology error, so that no channel's residual is negligible in the loss).
        latitude_weights: None (the report: every grid point alike) or ``(H,)`` cell-area
            weights of mean 1 (:func:`geofusion.data.eof.area_weights`): each ``MSE_c`` is then
            ``mean_{b,i,j} w_i (x_hat - x)^2``, the latitude-weighted MSE the scores use. In the
            anomaly space (unit area-weighted variance per variable) this counts every variable
            equally: ``L = (1/C) sum_c mean w (x_hat - x)^2``.
    """

    #: Whether the encoder takes the observation mask as an extra input channel.
    mask_channel = False

    def __init__(self, encoder: nn.Module, decoder: nn.Module,
                 channel_weights: Sequence[float] | None = None,
                 latitude_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latitude_weights: Tensor | None
        self.register_buffer("latitude_weights", None if latitude_weights is None else
                             torch.as_tensor([float(w) for w in latitude_weights]))
        self.channel_weights: Tensor | None
        self.register_buffer("channel_weights", None)
        if channel_weights is not None:
            weights = torch.as_tensor([float(w) for w in channel_weights])
            if weights.dim() != 1 or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"channel_weights must be non-negative with a positive sum, "
                                 f"got {list(channel_weights)}")
            self.register_buffer("channel_weights", weights / weights.sum())

    def forward(self, fields: Tensor) -> Tensor:
        """Reconstruct ``fields`` (B, C, H, W) -> (B, C, H, W)."""
        return self.decoder(self.encoder(fields))

    def inference_view(self, fields: Tensor) -> Tensor:
        """The autoencoder encodes the native grid: the identity."""
        return fields

    def embed(self, fields: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, latent_dim)."""
        return self.encoder(fields)

    def loss(self, batch: Batch, generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields = batch[0]
        reconstruction = self(fields)
        return self.reconstruction_loss(reconstruction, fields), {}

    def reconstruction_loss(self, reconstruction: Tensor, fields: Tensor) -> Tensor:
        """The (channel- and latitude-weighted) mean squared error of the class docstring."""
        if self.channel_weights is None and self.latitude_weights is None:
            return nn.functional.mse_loss(reconstruction.float(), fields.float())
        error = (reconstruction.float() - fields.float()).pow(2)
        if self.latitude_weights is not None:
            if self.latitude_weights.shape[0] != error.shape[-2]:
                raise ValueError(f"{self.latitude_weights.shape[0]} latitude_weights for "
                                 f"fields with {error.shape[-2]} latitudes")
            error = error * self.latitude_weights[:, None]
        per_channel = error.mean(dim=(0, 2, 3))
        if self.channel_weights is None:
            return per_channel.mean()
        if per_channel.shape != self.channel_weights.shape:
            raise ValueError(f"{len(self.channel_weights)} channel_weights for "
                             f"{per_channel.shape[0]} channels")
        return (per_channel * self.channel_weights).sum()


class ContrastiveMethod(nn.Module):
    """Encoder + projection head trained on two augmented views of each sample.

    Subclasses define :meth:`objective` on the projections. :meth:`make_views` produces the
    two views; the sparsity methods override it to mask or add noise to one view.

    **Temporal positives** (SPARTA): a batch ``(fields, partner, labels)`` of
    :class:`geofusion.data.samplers.TemporalPairDataset` has the second view made from the partner
    day ``t + s delta`` (masked and noisy for the sparse methods) instead of from day ``t``
    itself; a plain ``(fields, labels)`` batch gives the report's same-day pairs.
    ``temporal_positives=False`` ignores the partner (same-day pairs even on temporal
    batches, for the ablation of the smoothness term alone).

    **Latent smoothness** (``smoothness_weight = w > 0``): on batches
    ``(fields, partner, mirror, labels)`` (``TemporalPairDataset(with_mirror=True)``, days
    ``t + s delta`` and ``t - s delta``) the loss becomes
    ``L = L_contrastive + w * mean ||u_{t+d} - 2 u_t + u_{t-d}||^2`` with ``u`` the
    L2-normalised embeddings (:meth:`embed`, the inference view of the complete days) of the
    three days (:func:`geofusion.learning.smoothness.latent_smoothness_loss`); the term is logged
    as the
    metric ``smoothness``.

    Args:
        encoder: (B, C, H, W) -> (B, latent_dim).
        projector: (B, latent_dim) -> (B, proj_dim).
        augmentation: callable ``(fields, generator) -> augmented fields``.
        temporal_positives: use the partner day of a temporal batch as the second view.
        smoothness_weight: ``w >= 0`` above (0: off).
    """

    #: Whether the encoder takes the observation mask as an extra input channel.
    mask_channel = False

    def __init__(self, encoder: nn.Module, projector: nn.Module,
                 augmentation: Any | None = None, temporal_positives: bool = True,
                 smoothness_weight: float = 0.0) -> None:
        super().__init__()
        if not smoothness_weight >= 0:
            raise ValueError(f"smoothness_weight must be >= 0 (0 = off), got "
                             f"{smoothness_weight}")
        self.encoder = encoder
        self.projector = projector
        self.augmentation = augmentation if augmentation is not None else ReportAugmentation()
        self.temporal_positives = bool(temporal_positives)
        self.smoothness_weight = float(smoothness_weight)
        # Switched on by geofusion.learning.distributed.fit_distributed: the losses then see the
        # global batch across processes.
        self.gather_distributed = False

    def inference_view(self, fields: Tensor) -> Tensor:
        """(B, C, H, W) -> the deterministic view (B, C, h, w) the encoder sees at inference."""
        canonical = getattr(self.augmentation, "canonical", None)
        return canonical(fields) if canonical is not None else fields

    def embed(self, fields: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, latent_dim) of the inference view."""
        return self.encoder(self.inference_view(fields))

    def make_views(self, fields: Tensor, generator: torch.Generator | None,
                   second: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Two views (B, C, h, w): augmentations of ``fields`` and of ``second`` (the partner
        days of temporal positives; None = ``fields`` again, two views of the same days)."""
        if second is None:
            return two_views(fields, self.augmentation, generator)
        if second.shape != fields.shape:
            raise ValueError(f"partner days {tuple(second.shape)} must have the shape of the "
                             f"days {tuple(fields.shape)}")
        if not isinstance(generator, torch.Generator):
            raise ValueError("temporal views need an explicit torch.Generator "
                             "(e.g. torch.Generator().manual_seed(0))")
        return self.augmentation(fields, generator), self.augmentation(second, generator)

    def objective(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, batch: Batch, generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields, labels = batch[0], batch[-1]
        if len(batch) not in (2, 3, 4):
            raise ValueError(f"a contrastive batch is (fields, labels), (fields, partner, "
                             f"labels) or (fields, partner, mirror, labels); got {len(batch)} "
                             "items")
        partner = batch[1] if len(batch) >= 3 and self.temporal_positives else None
        view1, view2 = self.make_views(fields, generator, partner)
        # One forward pass over both views: batch norm then sees the same statistics for both.
        z = self.projector(self.encoder(torch.cat([view1, view2])))
        z1, z2 = z.float().chunk(2)
        loss = self.objective(z1, z2, labels)
        if not self.smoothness_weight:
            return loss, {}
        if len(batch) != 4:
            raise ValueError("smoothness_weight > 0 needs the days t - d, t, t + d: train on "
                             "geofusion.data.samplers.TemporalPairDataset(..., with_mirror=True) "
                             "(runs.pretrained(..., temporal_pairs={'with_mirror': True})), "
                             "or set smoothness_weight=0")
        following, previous = batch[1], batch[2]
        u = self.embed(observe(self, torch.cat([previous, fields, following]))).float()
        smooth = latent_smoothness_loss(*u.chunk(3))
        return loss + self.smoothness_weight * smooth, {"smoothness": float(smooth.detach())}


class BarlowTwinsMethod(ContrastiveMethod):
    """Barlow Twins (Zbontar et al. 2021): the cross-correlation of the projections of two
    views is driven to the identity,
    L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, lambd: float = 0.01,
                 augmentation: Any | None = None, temporal_positives: bool = True,
                 smoothness_weight: float = 0.0) -> None:
        super().__init__(encoder, projector, augmentation, temporal_positives,
                         smoothness_weight)
        self.lambd = lambd

    def objective(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, lambd=self.lambd,
                                 gather_distributed=self.gather_distributed)


class SimCLRMethod(ContrastiveMethod):
    """SimCLR (Chen et al. 2020): NT-Xent over the 2N views of a batch at temperature tau."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, temperature: float = 0.3,
                 augmentation: Any | None = None, temporal_positives: bool = True,
                 smoothness_weight: float = 0.0) -> None:
        super().__init__(encoder, projector, augmentation, temporal_positives,
                         smoothness_weight)
        self.temperature = temperature

    def objective(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, temperature=self.temperature,
                            gather_distributed=self.gather_distributed)


class SupConMethod(ContrastiveMethod):
    """Supervised contrastive (Khosla et al. 2020, L_out): all views sharing a season label
    are positives of each other."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, temperature: float = 0.1,
                 augmentation: Any | None = None, temporal_positives: bool = True,
                 smoothness_weight: float = 0.0) -> None:
        super().__init__(encoder, projector, augmentation, temporal_positives,
                         smoothness_weight)
        self.temperature = temperature

    def objective(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(torch.stack([z1, z2], dim=1), labels, temperature=self.temperature,
                           gather_distributed=self.gather_distributed)


class SparseViewMethod(ContrastiveMethod):
    """A contrastive method whose positive pairs align sparse, noisy observations with full fields.

    The views of a day ``x`` (B, C, H, W) are built on the native grid, then augmented:

    - view 1: ``x`` complete, plus a mask channel of ones (or, with
      ``observation.both_views``, an independent corruption of ``x`` as view 2);
    - view 2: ``(x + eps) * m`` plus the mask channel ``m``, where ``m`` misses a random fraction
      ``r ~ U[min_ratio, max_ratio]`` of the points (kind pixel/patch/swath) and ``eps`` is
      correlated noise (:class:`geofusion.data.observations.Observation`).

    Both go through the method's augmentation (resize, random crop, mean filter), which treats
    the mask channel as a field, so the encoder sees ``C + 1`` channels in training and at
    inference (:func:`observe` builds them; :meth:`inference_view` resizes and smooths all of
    them). The loss is the objective of the class it is mixed with, on the projections of
    these views. Generator order in :meth:`make_views`: corruption of view 1 (``both_views``
    only), corruption of view 2, augmentation of view 1, augmentation of view 2.

    Use the concrete classes (:class:`SparseBarlowTwinsMethod`, :class:`SparseSimCLRMethod`,
    :class:`SparseSupConMethod`) or ``build_method(name, observation={...})``.

    Args:
        encoder: (B, C + 1, h, w) -> (B, latent_dim).
        projector: (B, latent_dim) -> (B, proj_dim).
        observation: :class:`~geofusion.data.observations.Observation` or its settings dict.
        **kwargs: the mixed-in method's parameters (``lambd``, ``temperature``,
            ``augmentation``).
    """

    mask_channel = True

    def __init__(self, encoder: nn.Module, projector: nn.Module,
                 observation: Observation | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(encoder, projector, **kwargs)
        self.observation = Observation.from_dict(observation)

    def make_views(self, fields: Tensor, generator: torch.Generator | None,
                   second: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Two views (B, C + 1, h, w): complete (or corrupted) ``fields`` and a corrupted
        ``second`` (the partner days of temporal positives; None = ``fields``), augmented."""
        if not isinstance(generator, torch.Generator):
            raise ValueError("sparse views need an explicit torch.Generator "
                             "(e.g. torch.Generator().manual_seed(0))")
        if second is not None and second.shape != fields.shape:
            raise ValueError(f"partner days {tuple(second.shape)} must have the shape of the "
                             f"days {tuple(fields.shape)}")
        if self.observation.both_views:
            first = observe(self, *self.observation(fields, generator))
        else:
            first = observe(self, fields)
        observed = observe(self, *self.observation(fields if second is None else second,
                                                   generator))
        return self.augmentation(first, generator), self.augmentation(observed, generator)


class SparseBarlowTwinsMethod(SparseViewMethod, BarlowTwinsMethod):
    """Barlow Twins on (complete, sparse noisy) pairs: see :class:`SparseViewMethod`."""


class SparseSimCLRMethod(SparseViewMethod, SimCLRMethod):
    """SimCLR on (complete, sparse noisy) pairs: see :class:`SparseViewMethod`."""


class SparseSupConMethod(SparseViewMethod, SupConMethod):
    """SupCon on (complete, sparse noisy) pairs: see :class:`SparseViewMethod`."""


class DenoisingAutoencoderMethod(AutoencoderMethod):
    """Autoencoder that reconstructs the complete field from a sparse, noisy observation of it.

    L = MSE(D(E(observe(x_obs, m))), x), with ``(x_obs, m) = observation(x)`` (masked, noisy
    input plus its mask channel, :class:`geofusion.data.observations.Observation`) and the complete,
    clean ``x`` as target: a masked/denoising autoencoder. The encoder takes ``C + 1``
    channels (``mask_channel = True``): :meth:`embed` takes what :func:`observe` produces,
    :meth:`forward` takes the fields and their mask (as
    :class:`geofusion.learning.decoders.FrozenEncoderDecoder` does, so
    :func:`geofusion.learning.decoders.reconstruct` serves it), and the decoder returns the ``C``
    modes.

    Args:
        encoder: (B, C + 1, H, W) -> (B, latent_dim).
        decoder: (B, latent_dim) -> (B, C, H, W).
        observation: :class:`~geofusion.data.observations.Observation` or its settings dict;
            ``both_views`` must be False (there is a single input).
    """

    mask_channel = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module,
                 observation: Observation | dict[str, Any],
                 latitude_weights: Sequence[float] | None = None) -> None:
        super().__init__(encoder, decoder, latitude_weights=latitude_weights)
        self.observation = Observation.from_dict(observation)
        if self.observation.both_views:
            raise ValueError("both_views has no meaning for the autoencoder (one input, the "
                             "complete field as target); set both_views=False")

    def forward(self, fields: Tensor, observed: Tensor | None = None) -> Tensor:
        """Complete field (B, C, H, W) reconstructed from ``fields`` (B, C, H, W) seen where
        ``observed`` (bool (B, H, W); None = everywhere)."""
        return self.decoder(self.embed(observe(self, fields, observed)))

    def loss(self, batch: Batch, generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields = batch[0]
        corrupted, observed = self.observation(fields, generator)
        reconstruction = self(corrupted, observed)
        loss = self.reconstruction_loss(reconstruction, fields)
        return loss, {"missing_fraction": float((~observed).float().mean())}


def observe(method: nn.Module, fields: Tensor, observed: Tensor | None = None) -> Tensor:
    """The encoder input ``method`` expects for fields observed only where ``observed``.

    Missing points are 0 (the standardised training mean,
    :func:`geofusion.data.observations.apply_mask`);
    methods with ``mask_channel`` (trained on sparse views) also get the mask as a last channel,
    all ones when the field is complete.

    Args:
        method: any method of this module (its ``mask_channel`` attribute decides).
        fields: (B, C, H, W) standardised.
        observed: bool, True = observed, (B, H, W), (B, 1, H, W) or (B, C, H, W); None = all.

    Returns:
        (B, C, H, W), or (B, C + 1, H, W) with the mask channel.
    """
    if observed is None:
        if not getattr(method, "mask_channel", False):
            return fields
        observed = torch.ones(fields.shape[0], *fields.shape[2:], dtype=torch.bool,
                              device=fields.device)
    return apply_mask(fields, observed, mask_channel=getattr(method, "mask_channel", False))


def embed_observed(method: nn.Module, fields: Tensor, observed: Tensor | None = None) -> Tensor:
    """Representation (B, latent_dim) of ``fields`` (B, C, H, W) seen only where ``observed``
    (see :func:`observe`; None = complete): ``method.embed(observe(method, fields, observed))``."""
    return method.embed(observe(method, fields, observed))


METHODS = ("autoencoder", "barlow_twins", "simclr", "supcon")
#: Decoders of the autoencoder: the convolutional FieldDecoder (the report's) or one linear map.
AE_DECODERS = ("conv", "linear")
#: Encoders of :func:`build_method`: the report's ResNet, or the EOF code plus a ResNet residual.
ENCODERS = ("resnet", "eof_residual")
#: Reconstruction losses of the autoencoders: plain MSE (the report) or latitude-weighted.
RECONSTRUCTION_LOSSES = ("mse", "lat_weighted")


def reconstruction_latitude_weights(reconstruction_loss: str, latitudes: Sequence[float] | None,
                                    n_lat: int) -> list[float] | None:
    """The ``(H,)`` cell-area weights (mean 1) of ``reconstruction_loss="lat_weighted"``, None
    for the report's plain "mse"; checks the name and that ``latitudes`` match the grid.

    Example:
        >>> [round(w, 3) for w in reconstruction_latitude_weights("lat_weighted",
        ...                                                        [-60.0, 0.0, 60.0], 3)]
        [0.75, 1.5, 0.75]
    """
    if reconstruction_loss not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"unknown reconstruction_loss {reconstruction_loss!r}; choose one of "
                         f"{RECONSTRUCTION_LOSSES}")
    if reconstruction_loss == "mse":
        return None
    if latitudes is None:
        raise ValueError("reconstruction_loss='lat_weighted' needs the grid's latitudes "
                         "(degrees): pass latitudes=prepared.lat")
    weights = area_weights(np.asarray(latitudes, dtype=np.float64))
    if len(weights) != int(n_lat):
        raise ValueError(f"{len(weights)} latitudes for a grid of {int(n_lat)} latitudes")
    return weights.tolist()


def build_method(
    name: str,
    in_channels: int = 5,
    grid: tuple[int, int] = (32, 64),
    latent_dim: int = 1000,
    width: int = 64,
    proj_dim: int = 128,
    proj_hidden_dim: int = 1024,
    observation: dict[str, Any] | None = None,
    augmentation: str = "report",
    proj_final_batchnorm: bool | None = None,
    encoder_stem: str = "imagenet",
    encoder_pool: str = "mean",
    encoder_stage_channels: Sequence[int] | None = None,
    ae_decoder: str = "conv",
    ae_decoder_width: int | None = None,
    ae_channel_weights: Sequence[float] | None = None,
    encoder: str = "resnet",
    eof_basis: dict[str, Any] | None = None,
    reconstruction_loss: str = "mse",
    latitudes: Sequence[float] | None = None,
    **loss_params: float,
) -> nn.Module:
    """Build a method by name with the report's architecture.

    Args:
        name: one of :data:`METHODS`.
        in_channels: number of modes of the fields (5); the encoder gets one more input
            channel (the mask) when ``observation`` is given.
        grid: (lat, lon) of the fields, for the autoencoder's decoder.
        latent_dim: size of the representation (1000 in the report).
        width: ResNet base width (64 = ResNet-18; smaller for tests and the quick profile).
        proj_dim: projection size (128 in the report).
        proj_hidden_dim: hidden size of the three-layer projection head.
        observation: None for the plain method, or the settings of a
            :class:`geofusion.data.observations.Observation` (``kind``, ``min_ratio``,
            ``max_ratio``,
            ``noise_std``, ``noise_length``, ``both_views``) to train on sparse, noisy
            observations: :class:`SparseViewMethod` variants of the contrastive methods,
            :class:`DenoisingAutoencoderMethod` for the autoencoder.
        augmentation: preset of the contrastive views and of the canonical inference view,
            :func:`geofusion.learning.augment.augmentation_preset`: "report" (80x160 -> 72x144, 5x5)
            or "native" (36x72 -> 32x64, 3x3; the CPU profile). The autoencoder, which sees
            the native grid, accepts only the default.
        proj_final_batchnorm: end the projection head with ``BatchNorm1d(affine=False)``
            (:class:`geofusion.models.resnet.ProjectionHead`). None = each method's default: True
            for
            Barlow Twins (its loss needs standardised projections), False for SimCLR and SupCon
            (the head of the SimCLR paper; NT-Xent normalises each projection itself). True for
            SimCLR / SupCon follows the report (3.3.2: "the same projection network as in
            Barlow Twins"); the full profile uses it.
        encoder_stem, encoder_pool, encoder_stage_channels: the encoder's ``stem``, ``pool``
            and ``stage_channels`` (:class:`geofusion.models.resnet.ResNetEncoder`); the defaults
            are
            the report's ResNet-18. ``encoder_pool="flatten"`` fixes the encoder's input grid
            to ``grid``, so it is for the autoencoder, which encodes only the native grid.
        encoder: "resnet" (the report's) or "eof_residual": the EOF code of the training days
            plus a zero-initialised ResNet residual
            (:class:`geofusion.models.eof_residual.EOFResidualEncoder`; the autoencoder's decoder
            is then :class:`~geofusion.models.eof_residual.EOFResidualDecoder`), which starts as
            the linear code of the same size. Needs ``eof_basis``.
        eof_basis: ``{"components": (k, C*H*W), "sqrt_weights": (C, H, W), "mean": (C, H,
            W)}`` of :func:`geofusion.data.eof.fit_eof` on the training days, ``k =
            latent_dim`` (:func:`geofusion.learning.model_cache.pretrained` fits it).
        reconstruction_loss: the autoencoders' loss, "mse" (the report's) or "lat_weighted"
            (the latitude-weighted MSE of the scores; needs ``latitudes``).
        latitudes: ``(H,)`` degrees, for ``reconstruction_loss="lat_weighted"``.
        **loss_params: ``lambd`` (Barlow Twins) or ``temperature`` (SimCLR, SupCon); for the
            contrastive methods also ``temporal_positives`` and ``smoothness_weight``
            (:class:`ContrastiveMethod`).

    Example:
        >>> method = build_method("simclr", latent_dim=8, width=2, proj_dim=4, proj_hidden_dim=8,
        ...                       proj_final_batchnorm=True, temperature=0.3)
        >>> method.projector.final_batchnorm
        True
    """
    sparse = Observation.from_dict(observation) if observation is not None else None
    encoder_channels = in_channels + (1 if sparse is not None else 0)
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")
    latitude_weights = reconstruction_latitude_weights(reconstruction_loss, latitudes, grid[0])
    if encoder == "eof_residual":
        if eof_basis is None:
            raise ValueError("encoder='eof_residual' needs eof_basis (fit_eof on the training "
                             "days; geofusion.learning.model_cache.pretrained passes it)")
        k = int(torch.as_tensor(eof_basis["components"]).shape[0])
        if k != latent_dim:
            raise ValueError(f"eof_basis has {k} components for latent_dim={latent_dim}; fit "
                             "as many EOFs as the latent has dimensions")
        basis = (eof_basis["components"], eof_basis["sqrt_weights"], eof_basis.get("mean"))
        network: nn.Module = EOFResidualEncoder(*basis, in_channels=encoder_channels,
                                                width=width, stem=encoder_stem)
    else:
        network = ResNetEncoder(in_channels=encoder_channels, latent_dim=latent_dim,
                                width=width, stem=encoder_stem, pool=encoder_pool, grid=grid,
                                stage_channels=encoder_stage_channels)
    views = augmentation_preset(augmentation)  # unknown presets raise here
    if name != "autoencoder":
        if ae_decoder != "conv" or ae_decoder_width is not None or ae_channel_weights:
            raise ValueError(f"ae_decoder and ae_decoder_width are the autoencoder's; {name!r} "
                             "has no decoder")
        loss_params = {**loss_params, "augmentation": views}
    elif augmentation != "report":
        raise ValueError(f"the autoencoder trains on the native grid without augmentation; "
                         f"drop augmentation={augmentation!r}")
    if name == "autoencoder":
        if loss_params:
            raise ValueError(f"the autoencoder takes no loss parameters, got {loss_params}")
        if ae_decoder not in AE_DECODERS:
            raise ValueError(f"unknown ae_decoder {ae_decoder!r}; choose one of {AE_DECODERS}")
        decoder: nn.Module
        if encoder == "eof_residual":
            decoder = EOFResidualDecoder(*basis, width=width if ae_decoder_width is None
                                         else ae_decoder_width)
        elif ae_decoder == "linear":
            decoder = LinearFieldDecoder(latent_dim=latent_dim, out_channels=in_channels,
                                         grid=grid)
        else:
            decoder = FieldDecoder(latent_dim=latent_dim, out_channels=in_channels, grid=grid,
                                   width=width if ae_decoder_width is None else ae_decoder_width)
        if sparse is not None:
            if ae_channel_weights is not None:
                raise ValueError("ae_channel_weights is for the plain autoencoder")
            return DenoisingAutoencoderMethod(network, decoder, sparse,
                                              latitude_weights=latitude_weights)
        return AutoencoderMethod(network, decoder, channel_weights=ae_channel_weights,
                                 latitude_weights=latitude_weights)
    if name == "barlow_twins":
        final_bn = True if proj_final_batchnorm is None else bool(proj_final_batchnorm)
        projector = ProjectionHead(latent_dim, proj_hidden_dim, proj_dim,
                                   final_batchnorm=final_bn)
        if sparse is not None:
            return SparseBarlowTwinsMethod(network, projector, sparse, **loss_params)
        return BarlowTwinsMethod(network, projector, **loss_params)
    projector = ProjectionHead(latent_dim, proj_hidden_dim, proj_dim,
                               final_batchnorm=bool(proj_final_batchnorm))
    if name == "simclr":
        if sparse is not None:
            return SparseSimCLRMethod(network, projector, sparse, **loss_params)
        return SimCLRMethod(network, projector, **loss_params)
    if name == "supcon":
        if sparse is not None:
            return SparseSupConMethod(network, projector, sparse, **loss_params)
        return SupConMethod(network, projector, **loss_params)
    raise ValueError(f"unknown method {name!r}; choose one of {METHODS}")
