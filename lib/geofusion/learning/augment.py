"""The report's augmentations (section 3.3, after Wang et al. 2022), batched on the input's device.

A view of a field ``(B, C, 32, 64)`` is made by

1. :func:`resize` to 80 x 160 (lat x lon; "160x80" in the report's width x height),
2. :func:`random_crop` of 72 x 144 at an independent offset per sample,
3. :func:`mean_filter`: each channel smoothed with a 5 x 5 average.

:class:`ReportAugmentation` chains them and :func:`two_views` makes a positive pair.

**Presets** (:data:`AUGMENTATION_PRESETS`, :func:`augmentation_preset`): ``"report"`` is the
report's exact setting above; ``"native"`` is its scale-equivalent at the native resolution,
for CPU profiles: resize 32 x 64 -> 36 x 72, random crop 32 x 64, 3 x 3 mean filter.

- crop fraction: 32/36 = 0.889 of each axis (report 72/80 = 0.9; integer sizes allow no
  closer match), so the random offsets span 3.6 x 7.1 native cells (report 3.2 x 6.4);
- filter: 3 native cells (the report's 5 view pixels are 5 / 2.5 = 2 native cells; a centred
  filter has an odd size, and 1 would not smooth);
- the encoder sees 32 x 64 instead of 72 x 144 inputs: 5.06x fewer pixels for the same
  information (the upsampling adds none).

A method's canonical inference view follows its augmentation
(:meth:`ReportAugmentation.canonical`), so an encoder trained on native views is also
evaluated on native-size views.

Randomness: every random draw takes an explicit ``torch.Generator`` (never the global RNG). The
generator may live on another device than the data (the training loop's generators are on the
CPU): offsets are drawn on the generator's device and then moved, so the same seed gives the same
views on CPU and GPU.

dtype and device are preserved (float32, float16 and bfloat16 work).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AUGMENTATION_PRESETS",
    "ReportAugmentation",
    "augmentation_preset",
    "crop",
    "mean_filter",
    "random_crop",
    "random_crop_offsets",
    "resize",
    "two_views",
]


def _check_fields(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name}: expected fields (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def _check_generator(generator: torch.Generator | None, name: str) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            f"{name}: pass an explicit torch.Generator (e.g. torch.Generator().manual_seed(0)); "
            "augmentations never read the global RNG, so runs stay reproducible")
    return generator


def resize(x: Tensor, size: tuple[int, int] = (80, 160), mode: str = "bilinear") -> Tensor:
    """Resize fields to ``size = (H, W)`` (lat, lon): ``(B, C, h, w) -> (B, C, H, W)``.

    Bilinear (``align_corners=False``, i.e. cell centres map to cell centres) by default; any
    :func:`torch.nn.functional.interpolate` mode is accepted. Longitude is not wrapped: the
    first and last output columns are extrapolated from their side only (a sub-cell effect).
    """
    _check_fields(x, "resize")
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"resize: size must be positive, got {size}")
    if tuple(x.shape[-2:]) == size:
        return x
    align = False if mode in ("linear", "bilinear", "bicubic", "trilinear") else None
    return F.interpolate(x, size=size, mode=mode, align_corners=align)


def random_crop_offsets(batch: int, in_size: tuple[int, int], size: tuple[int, int],
                        generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Top-left corners of ``batch`` uniformly random ``size`` windows inside ``in_size``.

    Drawn on the generator's device, rows first then columns.

    Returns:
        ``(top, left)``, each (batch,) int64 on the generator's device, with
        ``0 <= top <= in_size[0] - size[0]`` and ``0 <= left <= in_size[1] - size[1]``.
    """
    _check_generator(generator, "random_crop_offsets")
    (h_in, w_in), (h, w) = in_size, size
    if not (0 < h <= h_in and 0 < w <= w_in):
        raise ValueError(
            f"random_crop: crop size {tuple(size)} must be positive and fit in the input "
            f"{tuple(in_size)}; resize first or choose a smaller crop")
    top = torch.randint(0, h_in - h + 1, (batch,), generator=generator, device=generator.device)
    left = torch.randint(0, w_in - w + 1, (batch,), generator=generator, device=generator.device)
    return top, left


def crop(x: Tensor, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
    """Per-sample windows: ``out[b] = x[b, :, top[b]:top[b]+H, left[b]:left[b]+W]``.

    Vectorised as one ``gather`` on the flattened grid (no loop over the batch; several times
    faster than 4-D advanced indexing on CPU, one kernel on GPU).

    Args:
        x: (B, C, h, w) fields.
        top, left: (B,) integer offsets (any device; moved to ``x``'s).
        size: (H, W) of the windows.

    Returns:
        (B, C, H, W), same dtype and device as ``x``.
    """
    _check_fields(x, "crop")
    b, c, h_in, w_in = x.shape
    h, w = int(size[0]), int(size[1])
    top = top.to(device=x.device, dtype=torch.long)
    left = left.to(device=x.device, dtype=torch.long)
    if top.shape != (b,) or left.shape != (b,):
        raise ValueError(f"crop: top and left must have shape ({b},), got "
                         f"{tuple(top.shape)} and {tuple(left.shape)}")
    if not (0 < h <= h_in and 0 < w <= w_in):
        raise ValueError(f"crop: window {(h, w)} does not fit in the input {(h_in, w_in)}")
    # Flat index of window cell (i, j) of sample b: (top_b + i) * w_in + left_b + j.
    window = (torch.arange(h, device=x.device)[:, None] * w_in
              + torch.arange(w, device=x.device)[None, :]).reshape(1, 1, h * w)
    index = (top * w_in + left)[:, None, None] + window
    flat = x.reshape(b, c, h_in * w_in)
    return flat.gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


def random_crop(x: Tensor, size: tuple[int, int] = (72, 144),
                generator: torch.Generator | None = None) -> Tensor:
    """Crop each sample at an independent uniformly random offset: ``(B, C, h, w) -> (B, C, H, W)``.

    Args:
        x: (B, C, h, w) fields with ``h >= H``, ``w >= W``.
        size: (H, W) of the crop.
        generator: source of the offsets (required; may be on another device than ``x``).
    """
    _check_fields(x, "random_crop")
    generator = _check_generator(generator, "random_crop")
    top, left = random_crop_offsets(x.shape[0], tuple(x.shape[-2:]), size, generator)
    return crop(x, top, left, size)


def mean_filter(x: Tensor, kernel_size: int = 5, periodic_lon: bool = True) -> Tensor:
    """Per-channel ``k x k`` moving average, output the same size: ``(B, C, H, W) -> same``.

    Padding by ``k // 2`` on each side:

    - longitude (last dim): circular when ``periodic_lon`` (a full field is periodic in longitude,
      so the date line is smoothed across like any other meridian), else replicate (a cropped
      window's two sides are not neighbours);
    - latitude: replicate (beyond a pole is not the next row; zeros would pull the polar rows
      toward the standardised mean and create an artificial gradient there).

    Every output is then the mean of exactly ``k * k`` values.

    Args:
        x: (B, C, H, W) fields.
        kernel_size: odd k >= 1.
        periodic_lon: wrap longitude (True for global fields).
    """
    _check_fields(x, "mean_filter")
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"mean_filter: kernel_size must be odd and >= 1, got {kernel_size}")
    if k == 1:
        return x
    p = k // 2
    if periodic_lon and p > x.shape[-1]:
        raise ValueError(
            f"mean_filter: circular padding of {p} needs at least {p} longitudes, got "
            f"{x.shape[-1]}")
    x = F.pad(x, (p, p, 0, 0), mode="circular" if periodic_lon else "replicate")
    x = F.pad(x, (0, 0, p, p), mode="replicate")
    # A depthwise convolution with uniform weights: faster than avg_pool2d on CPU, cuDNN on GPU.
    channels = x.shape[1]
    weight = torch.full((channels, 1, k, k), 1.0 / (k * k), dtype=x.dtype, device=x.device)
    return F.conv2d(x, weight, groups=channels)


class ReportAugmentation(nn.Module):
    """Resize, random crop, mean filter (report section 3.3): ``(B, C, h, w) -> (B, C, *crop)``.

    Call as ``augmentation(x, generator)``. The smoothing comes after the crop, as in the report;
    its longitude padding is circular only when the crop keeps every longitude
    (``crop[1] == resize[1]``); otherwise replicate, since a cropped window does not wrap.

    Args:
        resize: (H, W) after resizing (80, 160).
        crop: (H, W) of the random crop (72, 144).
        kernel_size: mean filter size (5).
    """

    def __init__(self, resize: tuple[int, int] = (80, 160), crop: tuple[int, int] = (72, 144),
                 kernel_size: int = 5) -> None:
        super().__init__()
        self.resize = (int(resize[0]), int(resize[1]))
        self.crop = (int(crop[0]), int(crop[1]))
        if not (0 < self.crop[0] <= self.resize[0] and 0 < self.crop[1] <= self.resize[1]):
            raise ValueError(f"crop {self.crop} must be positive and fit in resize {self.resize}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        self.kernel_size = int(kernel_size)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x`` (B, C, h, w) -> one augmented view (B, C, crop[0], crop[1])."""
        generator = _check_generator(generator, "ReportAugmentation")
        x = random_crop(resize(x, self.resize), self.crop, generator)
        return mean_filter(x, self.kernel_size, periodic_lon=self.crop[1] == self.resize[1])

    def canonical(self, x: Tensor) -> Tensor:
        """The deterministic view used at inference: ``(B, C, h, w) -> (B, C, *crop)``.

        The whole field resized straight to the crop size and smoothed, so a trained encoder
        sees inputs at the scale and smoothness of its training views, without a random offset.
        Every longitude is kept, so the smoothing wraps around the globe.
        """
        _check_fields(x, "ReportAugmentation.canonical")
        return mean_filter(resize(x, self.crop), self.kernel_size, periodic_lon=True)

    def extra_repr(self) -> str:
        return f"resize={self.resize}, crop={self.crop}, kernel_size={self.kernel_size}"


def two_views(x: Tensor, augmentation: Callable[[Tensor, torch.Generator], Tensor],
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Two independently augmented views of each sample (a positive pair).

    Args:
        x: (B, C, H, W) fields.
        augmentation: callable ``(x, generator) -> (B, C, h, w)``, e.g. :class:`ReportAugmentation`.
        generator: consumed by both calls in turn, so the views differ and are reproducible.

    Returns:
        ``(view1, view2)``, each (B, C, h, w).
    """
    generator = _check_generator(generator, "two_views")
    return augmentation(x, generator), augmentation(x, generator)


#: Named augmentation settings (see the module docstring): resize, crop and mean-filter sizes.
AUGMENTATION_PRESETS: dict[str, dict[str, tuple[int, int] | int]] = {
    "report": {"resize": (80, 160), "crop": (72, 144), "kernel_size": 5},
    "native": {"resize": (36, 72), "crop": (32, 64), "kernel_size": 3},
}


def augmentation_preset(name: str) -> ReportAugmentation:
    """The augmentation of a named preset: "report" (80x160 -> 72x144, 5x5) or "native"
    (36x72 -> 32x64, 3x3, the scale-equivalent for CPU profiles).

    Example::

        >>> augmentation_preset("native")
        ReportAugmentation(resize=(36, 72), crop=(32, 64), kernel_size=3)
    """
    if name not in AUGMENTATION_PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; choose one of "
                         f"{sorted(AUGMENTATION_PRESETS)}")
    return ReportAugmentation(**AUGMENTATION_PRESETS[name])
