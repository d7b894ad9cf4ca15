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

from geofusion.models.resnet import FieldDecoder, ResNetEncoder

__all__ = ["EOFResidualEncoder", "EOFResidualDecoder"]


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
