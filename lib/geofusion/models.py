"""Networks: the ResNet-18 encoder, the field decoder, the projection head, the autoencoder.

All networks take and return float tensors in the package layout ``(batch, channel, lat, lon)``.

- :class:`ResNetEncoder`: torchvision's ResNet-18 rebuilt in plain torch (torchvision is not a
  dependency), first convolution taking ``in_channels`` (5 modes, 6 with a mask channel), final
  linear layer kept at 1000 outputs as the report does ("the output size is kept as is").
  ``(B, C, H, W) -> (B, latent_dim)`` for any ``H, W >= 16``.
- :class:`FieldDecoder`: ``(B, latent_dim) -> (B, C, H, W)`` for any target grid.
- :class:`ProjectionHead`: the three-layer Barlow Twins projector, also used by SimCLR and SupCon.
- :class:`Autoencoder`: encoder + decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geofusion.data import VARIABLES

__all__ = [
    "Autoencoder",
    "BasicBlock",
    "FieldDecoder",
    "ProjectionHead",
    "ResNetEncoder",
    "check_no_nan",
    "count_parameters",
    "resnet18_encoder",
]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (buffers such as BN running stats excluded,
    as torchvision's quoted counts do)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and an identity (or 1x1
    projection) shortcut, exactly as torchvision's ``BasicBlock``.

    ``(B, in_planes, H, W) -> (B, planes, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def check_no_nan(x: Tensor) -> None:
    """Raise if ``x`` (B, C, H, W) holds NaN, naming the channels (CONTRIBUTING: NaNs never
    reach a model). Channels are named after :data:`geofusion.data.VARIABLES` (+ the mask
    channel) for 5 or 6 channels. One reduction over the input; on a GPU one synchronisation,
    as the training loop's per-step ``loss.item()`` already makes."""
    if not bool(torch.isnan(x).any()):
        return
    per_channel = torch.isnan(x).flatten(2).any(dim=2)  # (B, C)
    n_chan = x.shape[1]
    names = [f"{name} (channel {c}, " for c, name in enumerate([*VARIABLES, "mask channel"])]
    if n_chan not in (len(VARIABLES), len(VARIABLES) + 1):
        names = [f"channel {c} (" for c in range(n_chan)]
    bad = [f"{names[c]}{int(per_channel[:, c].sum())} of {x.shape[0]} samples)"
           for c in per_channel.any(dim=0).nonzero().flatten().tolist()]
    raise ValueError(
        f"NaN in the encoder input: {', '.join(bad)}. NaNs never reach a model: set missing "
        "points to 0 and pass where they are, e.g. `filled, observed = "
        "geofusion.sparsity.fill_missing(x)` then `geofusion.sparsity.apply_mask(filled, "
        "observed, mask_channel=True)` for an encoder with a mask channel (a method with "
        "mask_channel=True, such as SparseViewMethod)")


class ResNetEncoder(nn.Module):
    """ResNet with basic blocks (ResNet-18 at the defaults): ``(B, C, H, W) -> (B, latent_dim)``.

    Same layers, initialisation scheme and parameter count as torchvision's ``resnet18`` except
    the first convolution, which takes ``in_channels``: at ``width=64``, ``in_channels=5``,
    ``latent_dim=1000`` it has 11,695,784 parameters (torchvision's 11,689,512 + 2 * 64 * 7 * 7).
    The report makes no other change, so padding is torchvision's zero padding (not periodic).

    Args:
        in_channels: input channels C (5 modes; 6 with a mask channel).
        latent_dim: size of the representation (the report keeps torchvision's 1000).
        width: base channel width; the four stages have ``width * (1, 2, 4, 8)`` channels
            (64 = ResNet-18; smaller for tests and quick runs).
        blocks: basic blocks per stage ((2, 2, 2, 2) = ResNet-18).

    The stem divides the grid by 4 and stages 2-4 by 2 each, so (32, 64) reaches (1, 2) before
    global average pooling; any ``H, W >= 16`` works.
    """

    def __init__(self, in_channels: int = 5, latent_dim: int = 1000, width: int = 64,
                 blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        if in_channels < 1 or latent_dim < 1 or width < 1:
            raise ValueError(
                f"in_channels, latent_dim and width must be positive, got {in_channels}, "
                f"{latent_dim}, {width}")
        if len(blocks) != 4 or any(b < 1 for b in blocks):
            raise ValueError(
                f"blocks must be four positive counts, e.g. (2, 2, 2, 2); got {blocks}")
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.width = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        in_planes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(in_planes, planes, stride)]
            layers += [BasicBlock(planes, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_planes, latent_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's scheme; nn.Linear keeps its default initialisation as there.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, in_channels, H, W) -> (B, latent_dim)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}; "
                "check in_channels (one more with a mask channel)")
        check_no_nan(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # Global average pool as a mean: the same numbers as nn.AdaptiveAvgPool2d(1), whose CUDA
        # backward has no deterministic implementation (it raises under
        # torch.use_deterministic_algorithms, see geofusion.reproducibility).
        return self.fc(x.mean(dim=(-2, -1)))


def resnet18_encoder(in_channels: int = 5, latent_dim: int = 1000, width: int = 64
                     ) -> ResNetEncoder:
    """ResNet-18 encoder (basic blocks, (2, 2, 2, 2)): ``(B, C, H, W) -> (B, latent_dim)``."""
    return ResNetEncoder(in_channels, latent_dim, width, blocks=(2, 2, 2, 2))


class _LonPeriodicConv(nn.Module):
    """3x3 convolution padded circularly in longitude (the last dim: fields are periodic there)
    and with zeros in latitude (the poles are not neighbours of each other)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=(1, 0), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (1, 1, 0, 0), mode="circular"))


class FieldDecoder(nn.Module):
    """Decoder ``(B, latent_dim) -> (B, out_channels, H, W)`` for any target ``grid = (H, W)``.

    A linear layer makes a coarse ``(width * 8, ceil(H / 8), ceil(W / 8))`` map; three stages of
    nearest x2 upsampling + 3x3 conv + BN + ReLU halve the channels each time
    (``width * 8 -> 4 -> 2 -> 1``); a final 3x3 conv gives ``out_channels`` at
    ``8 * ceil(H / 8) x 8 * ceil(W / 8)``, cropped (by at most 7 rows/columns, centred) to ``grid``.
    Convolutions pad circularly in longitude since fields are periodic there, so the decoder has
    no seam at the date line, and with zeros in latitude.

    The linear layer has ``latent_dim * width * 8 * ceil(H/8) * ceil(W/8)`` weights: 16.4 M at
    the defaults, but 246 M for (121, 240) at width 64 - use a smaller width for large grids.

    Args:
        latent_dim: size of the representation.
        out_channels: channels of the reconstruction.
        grid: (H, W) of the reconstruction.
        width: base width; the coarsest map has ``width * 8`` channels.
    """

    def __init__(self, latent_dim: int = 1000, out_channels: int = 5,
                 grid: tuple[int, int] = (32, 64), width: int = 64) -> None:
        super().__init__()
        h, w = (int(g) for g in grid)
        if h < 1 or w < 1 or latent_dim < 1 or out_channels < 1 or width < 1:
            raise ValueError(
                f"grid, latent_dim, out_channels and width must be positive, got grid={grid}, "
                f"latent_dim={latent_dim}, out_channels={out_channels}, width={width}")
        self.latent_dim = latent_dim
        self.out_channels = out_channels
        self.grid = (h, w)
        self.coarse = (math.ceil(h / 8), math.ceil(w / 8))
        self.coarse_channels = width * 8
        self.fc = nn.Linear(latent_dim, self.coarse_channels * self.coarse[0] * self.coarse[1])
        stages = []
        channels = self.coarse_channels
        for _ in range(3):
            stages += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                _LonPeriodicConv(channels, channels // 2, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        self.upsample = nn.Sequential(*stages)
        self.head = _LonPeriodicConv(channels, out_channels)

    def forward(self, z: Tensor) -> Tensor:
        """``z`` (B, latent_dim) -> (B, out_channels, H, W)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents (B, {self.latent_dim}), got {tuple(z.shape)}")
        x = self.fc(z).view(z.shape[0], self.coarse_channels, *self.coarse)
        x = self.head(self.upsample(x))
        h, w = self.grid
        top = (x.shape[-2] - h) // 2
        left = (x.shape[-1] - w) // 2
        return x[..., top:top + h, left:left + w]


class ProjectionHead(nn.Module):
    """Projector ``(B, in_dim) -> (B, out_dim)`` of Barlow Twins (Zbontar et al. 2021), which the
    report also uses for SimCLR and SupCon.

    ``Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear`` and, with
    ``final_batchnorm=True``, a ``BatchNorm1d(out_dim, affine=False)`` on the output, so the
    embeddings have mean 0 and variance 1 over the batch (report 3.3.1; the official Barlow Twins
    code applies that BN inside its loss). Linear layers followed by BN have no bias (BN's shift
    cancels it). Without the final BN (the SimCLR/SupCon default of
    :func:`geofusion.methods.build_method`) the output is the plain last linear layer, as in the
    SimCLR paper, whose loss normalises each embedding itself; the report (3.3.2) uses the
    Barlow Twins head for all three (``build_method(..., proj_final_batchnorm=True)``).

    Args:
        in_dim: representation size (1000).
        hidden_dim: width of the two hidden layers.
        out_dim: projection size (128 in the report).
        final_batchnorm: end with ``BatchNorm1d(affine=False)``.
    """

    def __init__(self, in_dim: int = 1000, hidden_dim: int = 1024, out_dim: int = 128,
                 final_batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=not final_batchnorm),
        ]
        if final_batchnorm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.final_batchnorm = final_batchnorm

    def forward(self, h: Tensor) -> Tensor:
        """``h`` (B, in_dim) -> (B, out_dim); B >= 2 in training mode (batch norm)."""
        if h.dim() != 2 or h.shape[1] != self.in_dim:
            raise ValueError(f"expected (B, {self.in_dim}), got {tuple(h.shape)}")
        return self.net(h)


class Autoencoder(nn.Module):
    """Encoder + decoder: ``forward`` reconstructs ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        encoder: ``(B, C, H, W) -> (B, latent_dim)``, e.g. :class:`ResNetEncoder`.
        decoder: ``(B, latent_dim) -> (B, C, H, W)``, e.g. :class:`FieldDecoder`.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x: Tensor) -> Tensor:
        """``x`` (B, C, H, W) -> latents (B, latent_dim)."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, C, H, W) -> reconstruction (B, C, H, W)."""
        return self.decoder(self.encoder(x))
