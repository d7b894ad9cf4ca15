"""Training objectives: the autoencoder baseline and the three contrastive methods.

Each method is an ``nn.Module`` holding its networks, with

- ``loss(batch, generator) -> (loss, metrics)``: the objective on one batch, where ``batch``
  is ``(fields, season)`` as yielded by :class:`geofusion.data.FieldDataset` (fields
  ``(B, C, H, W)`` standardised, season ``(B,)`` int64) and ``generator`` seeds the
  augmentations;
- ``encoder``: the network whose ``latent_dim``-d output is the representation
  (the report evaluates and forecasts on it, not on the projections);
- ``inference_view(fields)``: what the encoder sees at inference (the fields themselves for
  the autoencoder; the deterministic :meth:`ReportAugmentation.canonical` view for the
  contrastive methods, whose encoders were trained on resized, smoothed 72 x 144 views);
- ``embed(fields) -> (B, latent_dim)``: ``encoder(inference_view(fields))``, the representation
  of a day used by the decoders and the forecaster.

:func:`build_method` makes any of them by name with the report's defaults, so notebooks and
the pipeline switch method by a string parameter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from geofusion.augment import ReportAugmentation, two_views
from geofusion.losses import barlow_twins_loss, nt_xent_loss, supcon_loss
from geofusion.models import FieldDecoder, ProjectionHead, ResNetEncoder
from geofusion.sparsity import apply_mask

Batch = tuple[Tensor, ...]


class AutoencoderMethod(nn.Module):
    """Deterministic autoencoder: L = mean squared error of the reconstruction.

    Args:
        encoder: (B, C, H, W) -> (B, latent_dim).
        decoder: (B, latent_dim) -> (B, C, H, W).
    """

    #: Whether the encoder takes the observation mask as an extra input channel.
    mask_channel = False

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

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
        loss = nn.functional.mse_loss(reconstruction.float(), fields.float())
        return loss, {}


class ContrastiveMethod(nn.Module):
    """Encoder + projection head trained on two augmented views of each sample.

    Subclasses define :meth:`objective` on the projections. :meth:`make_views` produces the
    two views; the sparsity methods override it to mask or add noise to one view.

    Args:
        encoder: (B, C, H, W) -> (B, latent_dim).
        projector: (B, latent_dim) -> (B, proj_dim).
        augmentation: callable ``(fields, generator) -> augmented fields``.
    """

    #: Whether the encoder takes the observation mask as an extra input channel.
    mask_channel = False

    def __init__(self, encoder: nn.Module, projector: nn.Module,
                 augmentation: Any | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.augmentation = augmentation if augmentation is not None else ReportAugmentation()
        # Switched on by geofusion.distributed.fit_distributed: the losses then see the
        # global batch across processes.
        self.gather_distributed = False

    def inference_view(self, fields: Tensor) -> Tensor:
        """(B, C, H, W) -> the deterministic view (B, C, h, w) the encoder sees at inference."""
        canonical = getattr(self.augmentation, "canonical", None)
        return canonical(fields) if canonical is not None else fields

    def embed(self, fields: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, latent_dim) of the inference view."""
        return self.encoder(self.inference_view(fields))

    def make_views(self, fields: Tensor, generator: torch.Generator | None
                   ) -> tuple[Tensor, Tensor]:
        """Two views (B, C, h, w) of ``fields``; by default two independent augmentations."""
        return two_views(fields, self.augmentation, generator)

    def objective(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, batch: Batch, generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields, labels = batch[0], batch[1]
        view1, view2 = self.make_views(fields, generator)
        # One forward pass over both views: batch norm then sees the same statistics for both.
        z = self.projector(self.encoder(torch.cat([view1, view2])))
        z1, z2 = z.float().chunk(2)
        return self.objective(z1, z2, labels), {}


class BarlowTwinsMethod(ContrastiveMethod):
    """Barlow Twins (Zbontar et al. 2021): the cross-correlation of the projections of two
    views is driven to the identity,
    L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, lambd: float = 0.01,
                 augmentation: Any | None = None) -> None:
        super().__init__(encoder, projector, augmentation)
        self.lambd = lambd

    def objective(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, lambd=self.lambd,
                                 gather_distributed=self.gather_distributed)


class SimCLRMethod(ContrastiveMethod):
    """SimCLR (Chen et al. 2020): NT-Xent over the 2N views of a batch at temperature tau."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, temperature: float = 0.3,
                 augmentation: Any | None = None) -> None:
        super().__init__(encoder, projector, augmentation)
        self.temperature = temperature

    def objective(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, temperature=self.temperature,
                            gather_distributed=self.gather_distributed)


class SupConMethod(ContrastiveMethod):
    """Supervised contrastive (Khosla et al. 2020, L_out): all views sharing a season label
    are positives of each other."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, temperature: float = 0.1,
                 augmentation: Any | None = None) -> None:
        super().__init__(encoder, projector, augmentation)
        self.temperature = temperature

    def objective(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(torch.stack([z1, z2], dim=1), labels, temperature=self.temperature,
                           gather_distributed=self.gather_distributed)


def observe(method: nn.Module, fields: Tensor, observed: Tensor | None = None) -> Tensor:
    """The encoder input ``method`` expects for fields observed only where ``observed``.

    Missing points are 0 (the standardised training mean, :func:`geofusion.sparsity.apply_mask`);
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


def build_method(
    name: str,
    in_channels: int = 5,
    grid: tuple[int, int] = (32, 64),
    latent_dim: int = 1000,
    width: int = 64,
    proj_dim: int = 128,
    proj_hidden_dim: int = 1024,
    **loss_params: float,
) -> nn.Module:
    """Build a method by name with the report's architecture.

    Args:
        name: one of :data:`METHODS`.
        in_channels: input channels (5 modes; +1 with a mask channel).
        grid: (lat, lon) of the fields, for the autoencoder's decoder.
        latent_dim: size of the representation (1000 in the report).
        width: ResNet base width (64 = ResNet-18; smaller for tests and the quick profile).
        proj_dim: projection size (128 in the report).
        proj_hidden_dim: hidden size of the three-layer projection head.
        **loss_params: ``lambd`` (Barlow Twins) or ``temperature`` (SimCLR, SupCon).
    """
    encoder = ResNetEncoder(in_channels=in_channels, latent_dim=latent_dim, width=width)
    if name == "autoencoder":
        if loss_params:
            raise ValueError(f"the autoencoder takes no loss parameters, got {loss_params}")
        decoder = FieldDecoder(latent_dim=latent_dim, out_channels=in_channels, grid=grid,
                               width=width)
        return AutoencoderMethod(encoder, decoder)
    if name == "barlow_twins":
        projector = ProjectionHead(latent_dim, proj_hidden_dim, proj_dim, final_batchnorm=True)
        return BarlowTwinsMethod(encoder, projector, **loss_params)
    projector = ProjectionHead(latent_dim, proj_hidden_dim, proj_dim, final_batchnorm=False)
    if name == "simclr":
        return SimCLRMethod(encoder, projector, **loss_params)
    if name == "supcon":
        return SupConMethod(encoder, projector, **loss_params)
    raise ValueError(f"unknown method {name!r}; choose one of {METHODS}")
