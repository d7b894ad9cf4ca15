r"""An encoder and a decoder that start as the EOF code and learn a nonlinear residual.

For anomaly fields ``a`` ``(B, C, H, W)`` (:mod:`geofusion.data.anomalies`) and the ``k`` leading
area-weighted EOFs ``V`` ``(k, C H W)`` of the training days (:mod:`geofusion.data.eof`):

.. math:: z = V (\sqrt{w} \odot a) + r(a), \qquad
          \hat a = (V^\top z) / \sqrt{w} + s(z),

with ``r`` a ResNet encoder and ``s`` a convolutional field decoder whose last layers start at
zero. At initialisation the pair *is* the EOF-``k`` code, the best linear code of that size,
so training can only move away from the linear twin when the loss says so; ``V`` is trainable
in both paths. Measured on the synthetic default (``reports/benchmarks/quick_convergence.md``):
a ResNet trained from scratch at the quick budget underfits (final training loss 0.69-0.82 of
the climatology's error, against 0.42 for the EOF code of the same size).

The linear path reads the first ``C`` input channels (a mask channel, when present, reaches
only the residual) on the EOFs' grid; input on another grid (the report's 72 x 144 views) is
resampled bilinearly to it first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geofusion.models.fusion_encoders import FusionEncoder, zero_fill
from geofusion.models.resnet import FieldDecoder, ResNetEncoder

__all__ = ["EOFResidualEncoder", "EOFResidualDecoder", "EOFResidualFusionEncoder"]


def _check_basis(components: Tensor, sqrt_weights: Tensor, mean: Tensor | None
                 ) -> tuple[Tensor, Tensor, Tensor]:
    components = torch.as_tensor(components, dtype=torch.float32)
    sqrt_weights = torch.as_tensor(sqrt_weights, dtype=torch.float32)
    if sqrt_weights.dim() != 3 or components.dim() != 2 \
            or components.shape[1] != sqrt_weights.numel():
        raise ValueError(f"components must be (k, C*H*W) and sqrt_weights (C, H, W); got "
                         f"{tuple(components.shape)} and {tuple(sqrt_weights.shape)}")
    mean = torch.zeros_like(sqrt_weights) if mean is None \
        else torch.as_tensor(mean, dtype=torch.float32)
    if mean.shape != sqrt_weights.shape:
        raise ValueError(f"mean must be (C, H, W) = {tuple(sqrt_weights.shape)}, got "
                         f"{tuple(mean.shape)}")
    return components, sqrt_weights, mean


class EOFResidualEncoder(nn.Module):
    """``(B, C[+1], H', W')`` anomalies -> ``(B, k)``: EOF projection + ResNet residual.

    Args:
        components: ``(k, C*H*W)`` EOFs (:attr:`geofusion.data.eof.EOFCode.components`).
        sqrt_weights: ``(C, H, W)`` square-root area weights of the EOF space.
        mean: ``(C, H, W)`` training mean the EOFs are centred on (None: zero).
        in_channels: channels the residual reads (``C``, or ``C + 1`` with a mask channel).
        width, stem: of the residual :class:`geofusion.models.resnet.ResNetEncoder`.
        residual: False = the linear (trainable) EOF encoder alone.
    """

    def __init__(self, components: Tensor, sqrt_weights: Tensor, mean: Tensor | None = None,
                 in_channels: int | None = None, width: int = 8, stem: str = "imagenet",
                 residual: bool = True) -> None:
        super().__init__()
        components, sqrt_weights, mean = _check_basis(components, sqrt_weights, mean)
        self.register_buffer("mean", mean)
        self.field_shape = tuple(sqrt_weights.shape)
        self.latent_dim = int(components.shape[0])
        self.register_buffer("sqrt_weights", sqrt_weights)
        self.basis = nn.Parameter(components.clone())
        self.in_channels = int(in_channels or self.field_shape[0])
        self.residual: ResNetEncoder | None = None
        if residual:
            self.residual = ResNetEncoder(in_channels=self.in_channels, latent_dim=self.latent_dim,
                                          width=width, stem=stem)
            nn.init.zeros_(self.residual.fc.weight)
            nn.init.zeros_(self.residual.fc.bias)

    def forward(self, a: Tensor) -> Tensor:
        c, h, w = self.field_shape
        fields = a[:, :c]
        if fields.shape[-2:] != (h, w):
            fields = F.interpolate(fields, size=(h, w), mode="bilinear", align_corners=False)
        z = ((fields - self.mean) * self.sqrt_weights).flatten(1) @ self.basis.T
        if self.residual is not None:
            z = z + self.residual(a)
        return z


class EOFResidualDecoder(nn.Module):
    """``(B, k)`` -> ``(B, C, H, W)`` anomalies: EOF reconstruction + convolutional residual.

    Args:
        components, sqrt_weights, mean: as :class:`EOFResidualEncoder`.
        width: of the residual :class:`geofusion.models.resnet.FieldDecoder`.
        residual: False = the linear (trainable) EOF decoder alone.
    """

    def __init__(self, components: Tensor, sqrt_weights: Tensor, mean: Tensor | None = None,
                 width: int = 8, residual: bool = True) -> None:
        super().__init__()
        components, sqrt_weights, mean = _check_basis(components, sqrt_weights, mean)
        self.register_buffer("mean", mean)
        self.field_shape = tuple(sqrt_weights.shape)
        self.register_buffer("sqrt_weights", sqrt_weights)
        self.basis = nn.Parameter(components.clone())
        self.residual: FieldDecoder | None = None
        if residual:
            c, h, w = self.field_shape
            self.residual = FieldDecoder(latent_dim=components.shape[0], out_channels=c,
                                         grid=(h, w), width=width)
            last = [m for m in self.residual.modules() if isinstance(m, nn.Conv2d)][-1]
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def forward(self, z: Tensor) -> Tensor:
        out = (z @ self.basis).view(len(z), *self.field_shape) / self.sqrt_weights + self.mean
        if self.residual is not None:
            out = out + self.residual(z)
        return out


def _final_layer(base: nn.Module) -> nn.Linear:
    """The last linear map of a fusion encoder: ``backbone.fc`` (early fusion) or the fusion
    operator's ``proj`` (late / hybrid fusion)."""
    backbone = getattr(base, "backbone", None)
    if backbone is not None and isinstance(getattr(backbone, "fc", None), nn.Linear):
        return backbone.fc
    fuse = getattr(base, "fuse", None)
    if fuse is not None and isinstance(getattr(fuse, "proj", None), nn.Linear):
        return fuse.proj
    raise ValueError(f"{type(base).__name__} has neither backbone.fc nor fuse.proj; build the "
                     "base with geofusion.models.fusion_encoders.build_encoder")


class EOFResidualFusionEncoder(FusionEncoder):
    r"""A fusion scheme that starts as the all-mode EOF code of the zero-filled input.

    For anomalies ``a`` ``(B, C, H, W)`` with presence ``p`` ``(B, C)`` (None = all present):

    .. math:: z = V \bigl(\sqrt{w} \odot (\mathrm{zf}(a, p) - \mu)\bigr) + f(a, p),

    with ``zf`` :func:`geofusion.models.fusion_encoders.zero_fill` (an absent mode is 0, the
    climatology in the anomaly space), ``V`` ``(k, C H W)`` the ``k = latent_dim`` leading
    all-mode EOFs of the training days (trainable, as in :class:`EOFResidualEncoder`),
    ``mu`` their training mean (about 0) and ``f`` the scheme's fusion encoder ``base``, whose
    final linear layer (``backbone.fc`` for early fusion, the fusion operator's ``proj`` for
    late / hybrid) is set to zero here: at initialisation ``z`` *is*
    :meth:`geofusion.data.eof.EOFCode.encode` of the zero-filled anomaly, and the scheme's fusion
    machinery learns only a residual. Input on another grid than the EOFs' (the contrastive
    methods' 72 x 144 views) is resampled bilinearly to it for the linear path only.

    Args:
        base: a :class:`FusionEncoder` with ``n_modes == C`` and ``latent_dim == k``.
        components: ``(k, C*H*W)`` EOFs (:attr:`geofusion.data.eof.EOFCode.components`).
        sqrt_weights: ``(C, H, W)`` square-root area weights of the EOF space.
        mean: ``(C, H, W)`` training mean the EOFs are centred on (None: zero).
    """

    def __init__(self, base: FusionEncoder, components: Tensor, sqrt_weights: Tensor,
                 mean: Tensor | None = None) -> None:
        if not isinstance(base, FusionEncoder):
            raise ValueError(f"base must be a FusionEncoder, got {type(base).__name__}; build it "
                             "with geofusion.models.fusion_encoders.build_encoder")
        super().__init__(base.n_modes, base.latent_dim)
        components, sqrt_weights, mean = _check_basis(components, sqrt_weights, mean)
        if components.shape[0] != base.latent_dim or sqrt_weights.shape[0] != base.n_modes:
            raise ValueError(
                f"the EOF basis has k={components.shape[0]} components over "
                f"{sqrt_weights.shape[0]} channels, the fusion encoder latent_dim="
                f"{base.latent_dim} over {base.n_modes} modes: fit the EOFs with "
                "k = latent_dim on all the modes (geofusion.data.eof.fit_eof)")
        self.kind, self.fusion = base.kind, base.fusion
        self.base = base
        self.register_buffer("mean", mean)
        self.register_buffer("sqrt_weights", sqrt_weights)
        self.field_shape = tuple(sqrt_weights.shape)
        self.basis = nn.Parameter(components.clone())
        last = _final_layer(base)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    @property
    def fuse(self) -> nn.Module | None:
        """The base's fusion operator (None for early fusion), for
        :func:`geofusion.models.fusion_encoders.fusion_cost`."""
        return getattr(self.base, "fuse", None)

    @property
    def n_tokens(self) -> int:
        """The base's number of tokens (``n_modes`` for early fusion)."""
        return int(getattr(self.base, "n_tokens", self.n_modes))

    def eof_code(self, fields: Tensor, present: Tensor | None) -> Tensor:
        """``(B, C, H', W')``, presence ``(B, C)`` -> ``(B, k)``: the linear path alone."""
        c, h, w = self.field_shape
        filled = zero_fill(fields, present)
        if filled.shape[-2:] != (h, w):
            filled = F.interpolate(filled, size=(h, w), mode="bilinear", align_corners=False)
        return ((filled - self.mean) * self.sqrt_weights).flatten(1) @ self.basis.T

    def encode(self, fields: Tensor, present: Tensor | None) -> Tensor:
        linear = self.eof_code(fields, present)
        residual = self.base.encode(fields, present)
        return linear + residual.to(linear.dtype)
