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

from geofusion.variables import VARIABLES

__all__ = [
    "ENCODER_POOLS",
    "ENCODER_STEMS",
    "Autoencoder",
    "BasicBlock",
    "FieldDecoder",
    "LinearFieldDecoder",
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
    reach a model). Channels are named after :data:`geofusion.variables.VARIABLES` (+ the mask
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
        "geofusion.data.observations.fill_missing(x)` then "
        "`geofusion.data.observations.apply_mask(filled, "
        "observed, mask_channel=True)` for an encoder with a mask channel (a method with "
        "mask_channel=True, such as SparseViewMethod)")


#: Stems of :class:`ResNetEncoder`: the report's, and two for small grids (CIFAR-style).
ENCODER_STEMS: tuple[str, ...] = ("imagenet", "cifar", "cifar_stride2")
#: How :class:`ResNetEncoder` turns its final map into the latent.
ENCODER_POOLS: tuple[str, ...] = ("mean", "flatten")


def _final_size(n: int, stem: str) -> int:
    """Size of one grid dimension ``n`` after ``stem`` and the three stride-2 stages (every
    stride-2 convolution or pool here pads so that it maps ``n`` to ``ceil(n / 2)``)."""
    halvings = {"imagenet": 2, "cifar": 0, "cifar_stride2": 1}[stem] + 3
    for _ in range(halvings):
        n = math.ceil(n / 2)
    return n


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
        stem: ``"imagenet"`` (the report: 7x7 stride-2 convolution + 3x3 stride-2 max pool, the
            grid divided by 4), ``"cifar"`` (one 3x3 stride-1 convolution, no pool: the grid
            kept) or ``"cifar_stride2"`` (one 3x3 stride-2 convolution, no pool: halved).
        pool: ``"mean"`` (the report: global average pooling, so the latent has rank at most
            ``stage_channels[-1]``) or ``"flatten"`` (the final map flattened into the linear
            layer, keeping where things are; needs ``grid`` and then accepts only that grid).
        grid: ``(H, W)`` of the input, required by ``pool="flatten"``.
        stage_channels: channels of the four stages; default ``width * (1, 2, 4, 8)``
            (e.g. ``(8, 16, 32, 128)`` widens only the last stage).

    Stages 2-4 divide the grid by 2 each (``ceil``), so with the report's stem (32, 64) reaches
    (1, 2) before pooling, with ``"cifar"`` (4, 8) and with ``"cifar_stride2"`` (2, 4).
    With ``pool="mean"`` any ``H, W >= 16`` works.
    """

    def __init__(self, in_channels: int = 5, latent_dim: int = 1000, width: int = 64,
                 blocks: Sequence[int] = (2, 2, 2, 2), stem: str = "imagenet",
                 pool: str = "mean", grid: tuple[int, int] | None = None,
                 stage_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        if in_channels < 1 or latent_dim < 1 or width < 1:
            raise ValueError(
                f"in_channels, latent_dim and width must be positive, got {in_channels}, "
                f"{latent_dim}, {width}")
        if len(blocks) != 4 or any(b < 1 for b in blocks):
            raise ValueError(
                f"blocks must be four positive counts, e.g. (2, 2, 2, 2); got {blocks}")
        if stem not in ENCODER_STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {ENCODER_STEMS}")
        if pool not in ENCODER_POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {ENCODER_POOLS}")
        channels = (tuple(int(c) for c in stage_channels) if stage_channels is not None
                    else tuple(width * 2**i for i in range(4)))
        if len(channels) != 4 or any(c < 1 for c in channels):
            raise ValueError(f"stage_channels must be four positive counts, got {stage_channels}")
        if pool == "flatten":
            if grid is None or len(grid) != 2 or any(int(g) < 1 for g in grid):
                raise ValueError(f"pool='flatten' needs the input grid (H, W), got {grid}")
            grid = (int(grid[0]), int(grid[1]))
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.width = width
        self.stem = stem
        self.pool = pool
        self.grid = grid
        self.stage_channels = channels
        self.relu = nn.ReLU(inplace=True)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, channels[0], 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            stride = 1 if stem == "cifar" else 2
            self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=stride, padding=1,
                                   bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(channels[0])
        stages = []
        in_planes = channels[0]
        for i, n in enumerate(blocks):
            planes = channels[i]
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(in_planes, planes, stride)]
            layers += [BasicBlock(planes, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        features = in_planes
        if pool == "flatten":
            assert grid is not None
            self.final_map = tuple(_final_size(g, stem) for g in grid)
            features = in_planes * self.final_map[0] * self.final_map[1]
        self.fc = nn.Linear(features, latent_dim)
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
        if self.pool == "flatten" and tuple(x.shape[-2:]) != self.grid:
            raise ValueError(
                f"this encoder flattens its final map and takes only the grid {self.grid}, got "
                f"{tuple(x.shape[-2:])}; use pool='mean' for inputs of any size")
        check_no_nan(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.pool == "flatten":
            return self.fc(x.flatten(1))
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


def _decoder_grid(grid: tuple[int, int], **sizes: int) -> tuple[int, int]:
    """``grid`` as ints, after checking it and every size in ``sizes`` is positive."""
    h, w = (int(g) for g in grid)
    if h < 1 or w < 1 or any(v < 1 for v in sizes.values()):
        given = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise ValueError(f"grid, {', '.join(sizes)} must be positive, got grid={grid}, {given}")
    return h, w


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
        h, w = _decoder_grid(grid, latent_dim=latent_dim, out_channels=out_channels, width=width)
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


class LinearFieldDecoder(nn.Module):
    """Linear decoder ``(B, latent_dim) -> (B, out_channels, H, W)``: one affine map, so the
    reconstructions span a ``latent_dim``-dimensional affine subspace of the fields, the model
    class of a PCA of that size (the encoder, unlike PCA's projection, stays nonlinear).

    ``latent_dim * out_channels * H * W`` weights: 10.2 M for 1000 -> (5, 32, 64).

    Args:
        latent_dim: size of the representation.
        out_channels: channels of the reconstruction.
        grid: (H, W) of the reconstruction.
    """

    def __init__(self, latent_dim: int = 1000, out_channels: int = 5,
                 grid: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        h, w = _decoder_grid(grid, latent_dim=latent_dim, out_channels=out_channels)
        self.latent_dim = latent_dim
        self.out_channels = out_channels
        self.grid = (h, w)
        self.fc = nn.Linear(latent_dim, out_channels * h * w)

    def forward(self, z: Tensor) -> Tensor:
        """``z`` (B, latent_dim) -> (B, out_channels, H, W)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.fc(z).view(z.shape[0], self.out_channels, *self.grid)


class ProjectionHead(nn.Module):
    """Projector ``(B, in_dim) -> (B, out_dim)`` of Barlow Twins (Zbontar et al. 2021), which the
    report also uses for SimCLR and SupCon.

    ``Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear`` and, with
    ``final_batchnorm=True``, a ``BatchNorm1d(out_dim, affine=False)`` on the output, so the
    embeddings have mean 0 and variance 1 over the batch (report 3.3.1; the official Barlow Twins
    code applies that BN inside its loss). Linear layers followed by BN have no bias (BN's shift
    cancels it). Without the final BN (the SimCLR/SupCon default of
    :func:`geofusion.learning.methods.build_method`) the output is the plain last linear layer, as
    in the
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
