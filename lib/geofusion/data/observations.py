"""Observation masks and spatially correlated noise (report chapter 4, step 4).

Masks
    :func:`make_mask` draws boolean masks (True = observed) of three kinds: isolated
    ``"pixel"`` gaps, square ``"patch"`` gaps and slanted satellite-like ``"swath"`` gaps that
    wrap around in longitude. Every ``(H, W)`` slice misses *exactly* ``round(ratio * H * W)``
    points (Python/torch rounding, half to even). All kinds use one exact construction: each
    grid point gets an integer key, and the ``k`` points with the largest keys are missing.
    The key's primary part is the priority of the highest-priority gap shape (patch or stripe)
    covering the point, its secondary part a random tie-break, so the missing set is a union of
    whole shapes taken in random order, the last one cut to size by the random tie-break.
    :func:`apply_mask` zeros the missing points (0 is the training mean after
    standardisation) and optionally appends the mask as a channel; :func:`fill_missing` does
    the same for real observations whose gaps are NaN.

Noise
    :func:`correlated_noise` draws stationary Gaussian random fields with covariance
    ``std^2 exp(-r^2 / (2 L^2))`` (``r`` and ``L`` in grid points) by filtering white noise in
    Fourier space; :func:`realised_correlation_length` measures ``L`` back from a field.

Observation model
    :class:`Observation` combines both into what a sensor network or a satellite delivers:
    each sample misses a random fraction of its grid points (drawn per sample in
    ``[min_ratio, max_ratio]``) and the points it sees carry correlated noise. It is built from
    JSON-friendly settings (``Observation.from_dict``), so a training description can hold it.

Everything random takes an explicit ``torch.Generator``; numbers are drawn on the
generator's device (CPU by default) and moved to ``device`` afterwards, so a CPU generator
gives the same masks whatever device the model runs on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MASK_KINDS", "missing_count", "make_mask", "random_ratios", "apply_mask", "fill_missing",
    "EARTH_RADIUS_KM", "km_to_gridpoints", "gaussian_correlation", "correlated_noise",
    "add_noise", "correlated_noise_covariance", "autocorrelation_lon",
    "realised_correlation_length", "Observation",
]

MASK_KINDS: tuple[str, ...] = ("pixel", "patch", "swath")
EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------

def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _check_ratio(ratio: float | Tensor, leading: tuple[int, ...]) -> Tensor:
    """Missing fractions as float64 ``(B,)`` (one per first leading index) or a 0-d tensor."""
    if isinstance(ratio, (np.ndarray, list, tuple)):
        ratio = torch.as_tensor(np.asarray(ratio, dtype=np.float64))
    if isinstance(ratio, Tensor) and ratio.ndim > 0:
        r = ratio.detach().to("cpu", torch.float64)
        if r.ndim != 1:
            raise ValueError(f"per-sample ratio must be 1-D (B,), got shape {tuple(r.shape)}")
        if not leading or r.shape[0] != leading[0]:
            raise ValueError(f"per-sample ratio has {r.shape[0]} values but the mask shape has "
                             f"leading dims {leading}; pass one ratio per sample (shape[0])")
        bad = ~((r >= 0) & (r < 1))
        if bool(bad.any()):
            raise ValueError(f"ratio (missing fraction) must be in [0, 1), got "
                             f"{r[bad][0].item()} among the per-sample ratios")
        return r
    value = float(ratio)
    if not 0 <= value < 1:  # also rejects NaN
        raise ValueError(f"ratio (missing fraction) must be in [0, 1), got {value}")
    return torch.tensor(value, dtype=torch.float64)


def missing_count(ratio: float | Tensor, height: int, width: int) -> Tensor:
    """Number of missing points per slice, ``round(ratio * H * W)`` (int64, shape of ratio)."""
    r = torch.as_tensor(ratio, dtype=torch.float64)
    return torch.round(r * (height * width)).to(torch.int64)


def _ranks(values: Tensor) -> Tensor:
    """Rank (0 = smallest) of each entry along the last axis; ties broken by position."""
    order = values.argsort(dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(values.shape[-1], device=values.device)
                   .expand_as(order))
    return ranks


def _patch_priority(n: int, h: int, w: int, patch: int, generator, device) -> Tensor:
    """Per point, the rank of the highest-priority ``patch x patch`` square covering it.

    Every square position is a candidate: anchors (top-left corners) at rows
    ``-(patch-1) .. H-1`` (squares are clipped at the poles, so every row is covered by the
    same number of candidates and edges are not favoured) and every column (wrapping in lon).
    """
    p = max(1, min(patch, h, w))
    n_anchor = (h + p - 1) * w
    anchor_rank = _ranks(torch.rand(n, n_anchor, generator=generator, device=device))
    grid = anchor_rank.to(torch.float64).view(n, 1, h + p - 1, w)
    # Anchor (a, b) covers rows a..a+p-1 and columns b..b+p-1 (mod W): a max over the window
    # of anchors above-left of a point. Circular padding on the left handles the wrap.
    grid = torch.cat([grid[..., w - (p - 1):], grid], dim=-1) if p > 1 else grid
    return F.max_pool2d(grid, kernel_size=p, stride=1).view(n, h * w).to(torch.int64)


def _swath_priority(n: int, h: int, w: int, width: int, max_slope: float, generator,
                    device) -> Tensor:
    """Per point, the rank of the highest-priority slanted stripe covering it.

    A stripe starting at longitude index ``b`` covers, in row ``i``, the columns
    ``b + shift_i .. b + shift_i + width - 1`` (mod W) with ``shift_i = round(slope * i)``: an
    along-track band crossing the globe from pole to pole, as the gap between two swaths of a
    polar-orbiting satellite. One slope per sample (one orbit inclination), uniform in
    ``[-max_slope, max_slope]`` lon points per lat row.
    """
    sw = max(1, min(width, w))
    slope = (torch.rand(n, 1, generator=generator, device=device, dtype=torch.float64) * 2 - 1
             ) * max_slope
    stripe_rank = _ranks(torch.rand(n, w, generator=generator, device=device))
    # Column c of a row (after removing the row's shift) is covered by stripes c-sw+1 .. c.
    padded = torch.cat([stripe_rank[:, w - (sw - 1):], stripe_rank], dim=-1) if sw > 1 \
        else stripe_rank
    covered = F.max_pool1d(padded.to(torch.float64)[:, None], kernel_size=sw, stride=1)[:, 0]
    shift = torch.round(slope * torch.arange(h, device=device, dtype=torch.float64)
                        ).to(torch.int64)  # (n, h)
    cols = (torch.arange(w, device=device)[None, None, :] - shift[:, :, None]) % w  # (n, h, w)
    prio = torch.gather(covered.to(torch.int64)[:, None, :].expand(n, h, w), 2, cols)
    return prio.reshape(n, h * w)


def make_mask(
    shape: Sequence[int],
    ratio: float | Tensor,
    kind: str = "pixel",
    generator: torch.Generator | None = None,
    patch_size: int = 4,
    swath_width: int = 4,
    max_slope: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random observation mask, True = observed, with an exact number of missing points.

    Args:
        shape: ``(..., H, W)``; every leading index gets an independent mask.
        ratio: missing fraction in [0, 1), a float, or a 1-D tensor/array ``(shape[0],)`` of
            per-sample fractions (see :func:`random_ratios`), shared by any further leading dims.
        kind: ``"pixel"`` (independent points), ``"patch"`` (``patch_size`` squares at random
            positions, clipped at the poles, wrapping in longitude) or ``"swath"`` (stripes
            ``swath_width`` longitude points wide, slanted by up to ``max_slope`` longitude
            points per latitude row, wrapping in longitude).
        generator: source of randomness (a seeded ``torch.Generator`` makes masks
            reproducible); None uses a fresh unseeded one.
        patch_size, swath_width: sizes in grid points.
        max_slope: largest slant of the swaths, longitude points per latitude row.
        device: device of the returned mask (default: the generator's).

    Returns:
        ``torch.bool`` tensor of ``shape``; each ``(H, W)`` slice has exactly
        :func:`missing_count` ``(ratio, H, W)`` False entries. For patch and swath masks the
        missing set is whole squares/stripes added in random order (overlaps allowed), the last
        one only partly, its points chosen at random, to reach the count exactly.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape[-2:]) < 1:
        raise ValueError(f"shape must be (..., H, W) with H, W >= 1, got {shape}")
    if kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {MASK_KINDS}, got {kind!r}")
    leading, (h, w) = shape[:-2], shape[-2:]
    r = _check_ratio(ratio, leading)
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    gdev = _gen_device(generator)
    n = math.prod(leading)
    hw = h * w

    if n == 0:
        return torch.ones(shape, dtype=torch.bool, device=device or gdev)
    if kind == "pixel":
        primary = torch.zeros(n, hw, dtype=torch.int64, device=gdev)
    elif kind == "patch":
        primary = _patch_priority(n, h, w, patch_size, generator, gdev)
    else:
        primary = _swath_priority(n, h, w, swath_width, max_slope, generator, gdev)
    tie_break = _ranks(torch.rand(n, hw, generator=generator, device=gdev))
    key = primary * hw + tie_break  # lexicographic (primary, tie_break), all keys distinct
    order_rank = hw - 1 - _ranks(key)  # 0 = the largest key = first point to go missing

    k = missing_count(r, h, w).to(gdev)
    if k.ndim == 1:  # per sample, shared by the other leading dims
        k = k.repeat_interleave(n // leading[0])
    observed = order_rank >= k.reshape(-1, 1) if k.ndim else order_rank >= k
    return observed.reshape(shape).to(device or gdev)


def random_ratios(batch: int, low: float, high: float,
                  generator: torch.Generator | None = None) -> Tensor:
    """Per-sample missing fractions, uniform in ``[low, high]``: float64 ``(batch,)``.

    The report's "random mask ratios": each sample of a batch is masked at its own ratio, so
    the model aligns views of every sparsity with the full field. Requires
    ``0 <= low <= high < 1``.
    """
    if not (0 <= low <= high < 1):
        raise ValueError(f"need 0 <= low <= high < 1 for missing fractions, got low={low}, "
                         f"high={high}")
    u = torch.rand(batch, generator=generator, device=_gen_device(generator),
                   dtype=torch.float64)
    return (low + (high - low) * u).cpu()


def apply_mask(x: Tensor, mask: Tensor, mask_channel: bool = False) -> Tensor:
    """Set missing points to 0 (the standardised training mean); optionally add a mask channel.

    Args:
        x: ``(B, C, H, W)`` standardised fields.
        mask: bool, True = observed, ``(B, H, W)``, ``(B, 1, H, W)`` or ``(B, C, H, W)``.
        mask_channel: append one channel holding the observed fraction: the float mask (1 =
            observed, 0 = missing) for a shared mask; for a per-channel mask, the mean over
            channels of the mask (fraction of variables observed at each point).

    Returns:
        ``(B, C, H, W)`` or ``(B, C + 1, H, W)``, dtype of ``x``. Points of ``x`` that are NaN
        or infinite are treated as missing too (zeroed, 0 in the mask channel), so the output
        is always finite.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be torch.bool (True = observed), got {mask.dtype}")
    if mask.ndim == 3:
        mask = mask[:, None]
    b, c, h, w = x.shape
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] not in (1, c) \
            or mask.shape[2:] != (h, w):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not fit x {tuple(x.shape)}; "
                         "use (B, H, W), (B, 1, H, W) or (B, C, H, W)")
    mask = mask.to(x.device)
    observed = mask & torch.isfinite(x)
    out = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if not mask_channel:
        return out
    if mask.shape[1] == 1 and bool(torch.isfinite(x).all()):
        channel = mask.to(x.dtype)
    else:
        channel = observed.to(x.dtype).mean(dim=1, keepdim=True)
    return torch.cat([out, channel], dim=1)


def fill_missing(x: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Real sparse observations with NaN gaps -> ``(filled, mask)``.

    Args:
        x: any shape, NaN (or +-inf) where nothing was observed, standardised units.

    Returns:
        ``filled``: float tensor with the gaps set to 0; ``mask``: bool tensor of the same
        shape, True = observed. Feed ``filled`` (and ``mask`` via :func:`apply_mask`'s mask
        channel) to a model; NaNs never reach it.
    """
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    mask = torch.isfinite(t)
    return torch.where(mask, t, torch.zeros((), dtype=t.dtype, device=t.device)), mask


# --------------------------------------------------------------------------------------------
# Spatially correlated noise
# --------------------------------------------------------------------------------------------

def km_to_gridpoints(km: float, lat_spacing_deg: float = 5.625) -> float:
    """Distance in km -> grid points along a meridian (1 point = ``R * spacing`` in radians).

    On the 5.625-degree grid one point is ~625 km. Along a parallel a grid point is shorter by
    ``cos(lat)``; :func:`correlated_noise` works in grid-index space and ignores this, as do
    the convolutional models it perturbs.
    """
    return float(km) / (EARTH_RADIUS_KM * math.radians(lat_spacing_deg))


def gaussian_correlation(lag: float | np.ndarray, length_scale: float) -> np.ndarray | float:
    """Correlation ``exp(-lag^2 / (2 L^2))`` of :func:`correlated_noise` at a lag (grid points).

    The e-folding distance (correlation 1/e) is ``sqrt(2) * L``.
    """
    lag = np.asarray(lag, dtype=np.float64)
    if length_scale == 0:
        return np.where(lag == 0, 1.0, 0.0)
    return np.exp(-(lag**2) / (2.0 * length_scale**2))


def _noise_filter(h: int, w: int, length_scale: float) -> Tensor:
    """Fourier amplitude ``sqrt(S)`` on an ``(h, w)`` torus, normalised to unit variance.

    ``S`` is the DFT of the covariance ``exp(-d^2 / (2 L^2))`` sampled on the torus (``d`` the
    wrap-around distance). Filtering unit white noise by ``sqrt(S)`` gives a field whose
    covariance is that kernel and whose variance is ``mean(S)``; dividing by
    ``sqrt(mean(S))`` (after clipping round-off negatives of ``S``) makes the variance exactly 1
    in expectation, analytically, without rescaling samples.
    """
    di = torch.arange(h, dtype=torch.float64)
    dj = torch.arange(w, dtype=torch.float64)
    di = torch.minimum(di, h - di)
    dj = torch.minimum(dj, w - dj)
    d2 = di[:, None] ** 2 + dj[None, :] ** 2
    if length_scale == 0:
        kernel = (d2 == 0).to(torch.float64)
    else:
        kernel = torch.exp(-d2 / (2.0 * length_scale**2))
    spectrum = torch.fft.fft2(kernel).real.clamp(min=0.0)
    return torch.sqrt(spectrum / spectrum.mean())


def correlated_noise(
    shape: Sequence[int],
    length_scale: float,
    std: float,
    generator: torch.Generator | None = None,
    periodic_lon: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gaussian random field with Gaussian covariance, independent for every leading index.

    Covariance between points ``r`` grid points apart (Euclidean in index space):
    ``std^2 exp(-r^2 / (2 L^2))`` with ``L = length_scale`` (0 gives white noise). White noise
    is filtered in Fourier space (:func:`_noise_filter`), so the field is periodic in
    longitude, as the globe is. Latitude is not periodic: the field is drawn on a grid padded
    by ``ceil(4 L)`` rows and cropped, which leaves the pole rows correlated by at most
    ``exp(-8) ~ 3e-4`` through the wrap. With ``periodic_lon=False`` longitude is padded too.

    Args:
        shape: ``(..., H, W)``.
        length_scale: ``L`` in grid points (see :func:`km_to_gridpoints`), >= 0.
        std: marginal standard deviation (units of the field it is added to), >= 0.
        generator: source of randomness.
        device, dtype: of the result (drawn on the generator's device, in float64).

    Returns:
        ``shape`` tensor with mean 0 and variance ``std^2`` in expectation at every point.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be (..., H, W), got {shape}")
    if not length_scale >= 0:
        raise ValueError(f"length_scale must be >= 0 grid points, got {length_scale}")
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std}")
    h, w = shape[-2:]
    pad = math.ceil(4 * length_scale) if length_scale > 0 else 0
    hp = h + pad
    wp = w + pad if not periodic_lon else w
    gdev = _gen_device(generator)
    white = torch.randn(*shape[:-2], hp, wp, generator=generator, device=gdev,
                        dtype=torch.float64)
    filt = _noise_filter(hp, wp, float(length_scale)).to(gdev)
    field = torch.fft.ifft2(torch.fft.fft2(white) * filt).real[..., :h, :w]
    return (field * std).to(device=device or gdev, dtype=dtype)


def correlated_noise_covariance(grid: Sequence[int], length_scale: float, std: float,
                                periodic_lon: bool = True) -> Tensor:
    """The exact covariance matrix of :func:`correlated_noise` on an ``(H, W)`` grid.

    :func:`correlated_noise` filters white noise on a torus of ``(H + pad, W)`` points (``pad``
    rows against the latitude wrap) with the Fourier amplitude ``sqrt(S / mean(S))``, so the
    covariance between grid points ``p = (i, j)`` and ``q`` is
    ``std^2 k[(i_p - i_q) mod H', (j_p - j_q) mod W']`` with ``k = ifft2(S / mean(S))`` the
    realised kernel (``k[0, 0] = 1``; it equals ``exp(-d^2 / 2L^2)`` up to the clipping of
    round-off negatives of ``S``). This is the observation-error covariance ``R`` that matches
    the project's noise model (data assimilation, optimal interpolation).

    Args:
        grid: ``(H, W)``.
        length_scale, std, periodic_lon: as for :func:`correlated_noise`.

    Returns:
        float64 ``(H * W, H * W)``, points in row-major ``(lat, lon)`` order (``x.reshape(-1)``).

    Example::

        >>> cov = correlated_noise_covariance((4, 8), 1.0, 0.5)
        >>> tuple(cov.shape), round(float(cov[0, 0]), 6)
        ((32, 32), 0.25)
    """
    h, w = (int(s) for s in grid)
    if not length_scale >= 0 or not std >= 0:
        raise ValueError(f"length_scale and std must be >= 0, got {length_scale}, {std}")
    pad = math.ceil(4 * length_scale) if length_scale > 0 else 0
    hp, wp = h + pad, (w if periodic_lon else w + pad)
    kernel = torch.fft.ifft2(_noise_filter(hp, wp, float(length_scale)) ** 2).real
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    return std**2 * kernel[(i[:, None] - i[None, :]) % hp, (j[:, None] - j[None, :]) % wp]


def add_noise(x: Tensor, length_scale: float, std: float,
              generator: torch.Generator | None = None) -> Tensor:
    """``x + correlated_noise(x.shape, length_scale, std)``: noisy sensors, ``x`` (..., H, W).

    ``std`` is in the units of ``x`` (standard deviations for standardised fields).
    """
    noise = correlated_noise(x.shape, length_scale, std, generator=generator, device=x.device,
                             dtype=x.dtype if x.is_floating_point() else torch.float32)
    return x + noise


def autocorrelation_lon(noise: Tensor | np.ndarray) -> Tensor:
    """Mean autocorrelation along longitude (periodic) at lags ``0 .. W-1``: float64 ``(W,)``.

    Computed over every row of every leading index as ``sum_j x_j x_{j+r} / sum_j x_j^2``
    (pooled), without removing a mean: meant for zero-mean fields such as anomalies or
    :func:`correlated_noise`.
    """
    x = torch.as_tensor(noise).to(torch.float64)
    spec = torch.fft.rfft(x, dim=-1)
    acov = torch.fft.irfft(spec.abs() ** 2, n=x.shape[-1], dim=-1)
    acov = acov.reshape(-1, x.shape[-1]).sum(dim=0)
    return acov / acov[0]


def realised_correlation_length(noise: Tensor | np.ndarray, min_correlation: float = 0.05
                                ) -> float:
    """Estimate ``L`` of a field with Gaussian correlation ``exp(-r^2 / (2 L^2))``.

    Least-squares fit through the origin of ``-2 log rho(r) = r^2 / L^2`` over the lags
    ``r = 1, 2, ...`` (along longitude, :func:`autocorrelation_lon`) up to the first one whose
    correlation drops below ``min_correlation`` (where noise in the estimate dominates).
    Returns ``L`` in grid points (0.0 if even lag 1 is below ``min_correlation``); the e-folding
    distance is ``sqrt(2) * L``.
    """
    rho = autocorrelation_lon(noise).numpy()
    lags, values = [], []
    for r in range(1, len(rho) // 2 + 1):
        if rho[r] < min_correlation:
            break
        lags.append(r)
        values.append(-2.0 * math.log(rho[r]))
    if not lags:
        return 0.0
    r2 = np.asarray(lags, dtype=np.float64) ** 2
    inv_l2 = float((r2 * np.asarray(values)).sum() / (r2**2).sum())
    return math.inf if inv_l2 <= 0 else 1.0 / math.sqrt(inv_l2)


# --------------------------------------------------------------------------------------------
# Observation model: masks + noise
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    """What an observing system delivers of a field: missing points plus correlated noise.

    Settings (all JSON-friendly, see :meth:`from_dict` / :meth:`to_dict`):

    - ``kind``: mask kind, one of :data:`MASK_KINDS` (isolated stations, ``"patch"`` gaps such as
      cloud cover, ``"swath"`` gaps between satellite tracks);
    - ``min_ratio``, ``max_ratio``: each sample misses a fraction of its points drawn uniformly in
      ``[min_ratio, max_ratio]`` (:func:`random_ratios`), ``0 <= min_ratio <= max_ratio < 1``;
    - ``noise_std``: standard deviation of the noise in standardised units (>= 0; 0 = none);
    - ``noise_length``: its Gaussian correlation length ``L`` in grid points (>= 0; 0 = white),
      see :func:`correlated_noise` (one grid point is ~625 km on the 32 x 64 grid);
    - ``both_views``: read by the sparse-view training methods
      (:class:`geofusion.learning.methods.SparseViewMethod`): corrupt both views of a positive pair
      instead of pairing a corrupted view with the full field. Calling the observation ignores it.

    Calling ``observation(fields, generator)`` draws, in this order from ``generator``, the
    per-sample ratios, the masks, then (if ``noise_std > 0``) the noise, one independent field
    per sample and channel, and returns ``(corrupted, observed)``:

    - ``corrupted`` ``(B, C, H, W)``: ``fields + noise`` where observed, 0 (the standardised
      training mean, :func:`apply_mask`) where missing;
    - ``observed`` ``(B, H, W)`` bool, True = observed, the same for every channel; each sample
      misses exactly ``round(ratio_b * H * W)`` points.

    Feed both to :func:`geofusion.learning.methods.observe` for a model's input (mask channel
    included).
    """

    kind: str = "pixel"
    min_ratio: float = 0.0
    max_ratio: float = 0.9
    noise_std: float = 0.0
    noise_length: float = 0.0
    both_views: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(f"observation kind must be one of {MASK_KINDS}, got {self.kind!r}")
        for name in ("min_ratio", "max_ratio", "noise_std", "noise_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"observation {name} must be a finite number, got {value!r}")
        if not 0 <= self.min_ratio < 1 or not 0 <= self.max_ratio < 1:
            raise ValueError(
                f"observation ratios are missing fractions and must lie in [0, 1), got "
                f"min_ratio={self.min_ratio}, max_ratio={self.max_ratio}")
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"observation needs min_ratio <= max_ratio, got "
                             f"min_ratio={self.min_ratio} > max_ratio={self.max_ratio}")
        if self.noise_std < 0:
            raise ValueError(f"observation noise_std must be >= 0 (standardised units), got "
                             f"{self.noise_std}")
        if self.noise_length < 0:
            raise ValueError(f"observation noise_length must be >= 0 grid points, got "
                             f"{self.noise_length}")
        if not isinstance(self.both_views, bool):
            raise ValueError(f"observation both_views must be True or False, got "
                             f"{self.both_views!r}")

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any] | Observation) -> Observation:
        """Build from a settings dict (keys of the class; missing keys take the defaults).

        Unknown keys are refused, so a typo cannot silently fall back to a default.
        """
        if isinstance(settings, Observation):
            return settings
        if not isinstance(settings, Mapping):
            raise ValueError(f"observation settings must be a dict, got "
                             f"{type(settings).__name__}")
        known = {f.name for f in dataclass_fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown observation settings {unknown}; the keys are "
                             f"{sorted(known)}")
        return cls(**dict(settings))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (round-trips through JSON and :meth:`from_dict`)."""
        return asdict(self)

    def __call__(self, fields: Tensor, generator: torch.Generator
                 ) -> tuple[Tensor, Tensor]:
        """``fields`` (B, C, H, W) standardised -> ``(corrupted (B, C, H, W), observed (B, H, W))``.

        ``generator`` is required (a CPU generator gives the same draws on any device).
        """
        if not isinstance(generator, torch.Generator):
            raise ValueError("Observation needs an explicit torch.Generator "
                             "(e.g. torch.Generator().manual_seed(0)) so that runs reproduce")
        if fields.ndim != 4 or not fields.is_floating_point():
            raise ValueError(f"fields must be a floating-point (B, C, H, W) tensor, got "
                             f"{fields.dtype} {tuple(fields.shape)}")
        b, _, h, w = fields.shape
        ratios = random_ratios(b, self.min_ratio, self.max_ratio, generator)
        observed = make_mask((b, h, w), ratios, kind=self.kind, generator=generator,
                             device=fields.device)
        if self.noise_std > 0:
            fields = add_noise(fields, self.noise_length, self.noise_std, generator=generator)
        return apply_mask(fields, observed), observed
