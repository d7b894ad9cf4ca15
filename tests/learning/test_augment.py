"""The report's augmentations: shapes, dtype/device, reproducibility, exact crop and filter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from geofusion.learning.augment import (
    AUGMENTATION_PRESETS,
    ReportAugmentation,
    augmentation_preset,
    crop,
    mean_filter,
    random_crop,
    random_crop_offsets,
    resize,
    two_views,
)
from geofusion.learning.methods import build_method
from geofusion.models.resnet import resnet18_encoder


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fields(b: int = 3, c: int = 5, h: int = 32, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=gen(seed))


def loop_mean_filter(x: torch.Tensor, k: int, periodic_lon: bool) -> torch.Tensor:
    """Direct k x k average; latitude clamped (replicate), longitude wrapped or clamped."""
    b, c, h, w = x.shape
    p = k // 2
    out = torch.empty_like(x, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            total = torch.zeros(b, c, dtype=torch.float64)
            for di in range(-p, p + 1):
                for dj in range(-p, p + 1):
                    ii = min(max(i + di, 0), h - 1)
                    jj = (j + dj) % w if periodic_lon else min(max(j + dj, 0), w - 1)
                    total += x[:, :, ii, jj].double()
            out[:, :, i, j] = total / k**2
    return out


# ---------------------------------------------------------------- mean filter

@pytest.mark.parametrize("periodic_lon", [True, False])
def test_mean_filter_equals_loop_average(periodic_lon: bool) -> None:
    x = fields(2, 2, 6, 9)
    expected = loop_mean_filter(x, 5, periodic_lon)
    got = mean_filter(x, 5, periodic_lon=periodic_lon)
    assert got.shape == x.shape
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)


def test_mean_filter_wraps_longitude() -> None:
    # A spike in the first column spreads to the last two columns only through the wrap.
    x = torch.zeros(1, 1, 5, 10)
    x[0, 0, 2, 0] = 25.0
    y = mean_filter(x, 5)
    assert y[0, 0, 2, -1] == pytest.approx(1.0) and y[0, 0, 2, -2] == pytest.approx(1.0)
    assert y[0, 0, 2, -3] == 0
    assert y.sum().item() == pytest.approx(25.0)  # circular + interior: mass conserved
    assert mean_filter(x, 5, periodic_lon=False)[0, 0, 2, -1] == 0


def test_mean_filter_keeps_constants_and_validates() -> None:
    x = torch.full((1, 2, 4, 4), 3.0)
    torch.testing.assert_close(mean_filter(x, 3), x)
    torch.testing.assert_close(mean_filter(x, 1), x)
    with pytest.raises(ValueError, match="odd"):
        mean_filter(x, 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        mean_filter(x[0], 5)


# ---------------------------------------------------------------- crop

def test_crop_is_the_slice_at_its_offset() -> None:
    x = resize(fields(), (80, 160))
    top, left = random_crop_offsets(x.shape[0], (80, 160), (72, 144), gen(3))
    out = random_crop(x, (72, 144), gen(3))
    assert out.shape == (3, 5, 72, 144)
    assert len({(int(t), int(v)) for t, v in zip(top, left, strict=True)}) > 1
    for b in range(x.shape[0]):
        t, v = int(top[b]), int(left[b])
        assert 0 <= t <= 8 and 0 <= v <= 16
        torch.testing.assert_close(out[b], x[b, :, t:t + 72, v:v + 144], rtol=0, atol=0)


def test_crop_offsets_cover_the_range() -> None:
    top, left = random_crop_offsets(4000, (10, 12), (8, 9), gen(4))
    assert set(top.tolist()) == {0, 1, 2} and set(left.tolist()) == {0, 1, 2, 3}


def test_crop_rejects_too_large_and_missing_generator() -> None:
    x = fields()
    with pytest.raises(ValueError, match="fit"):
        random_crop(x, (40, 64), gen())
    with pytest.raises(ValueError, match="Generator"):
        random_crop(x, (16, 16), None)
    with pytest.raises(ValueError, match="shape"):
        crop(x, torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long), (4, 4))


# ---------------------------------------------------------------- the report's augmentation

def test_resize_shape_and_identity() -> None:
    x = fields()
    assert resize(x).shape == (3, 5, 80, 160)
    assert resize(x, (32, 64)) is x
    # Bilinear upsampling of a constant is that constant.
    torch.testing.assert_close(resize(torch.full((1, 1, 4, 8), 2.0), (10, 20)),
                               torch.full((1, 1, 10, 20), 2.0))


def test_resize_maps_cell_centres() -> None:
    # align_corners=False: 2 cells -> 4 cells of half the size; the outer new centres lie
    # beyond the old ones and clamp, the inner ones interpolate at 1/4 and 3/4.
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 1, 2, 2)
    out = resize(x, (2, 4))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_report_augmentation_shape_dtype_device(dtype: torch.dtype) -> None:
    x = fields().to(dtype)
    out = ReportAugmentation()(x, gen())
    assert out.shape == (3, 5, 72, 144)
    assert out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out.float()).all()


def test_report_augmentation_equals_its_steps() -> None:
    x = fields()
    out = ReportAugmentation()(x, gen(5))
    top, left = random_crop_offsets(3, (80, 160), (72, 144), gen(5))
    expected = mean_filter(crop(resize(x, (80, 160)), top, left, (72, 144)), 5,
                           periodic_lon=False)  # a 144-of-160 crop does not wrap
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # A crop keeping every longitude is smoothed periodically.
    full_lon = ReportAugmentation(crop=(72, 160))(x, gen(5))
    top, left = random_crop_offsets(3, (80, 160), (72, 160), gen(5))
    torch.testing.assert_close(full_lon, mean_filter(crop(resize(x), top, left, (72, 160)), 5))


def test_two_views_differ_and_are_reproducible() -> None:
    x = fields()
    aug = ReportAugmentation()
    v1, v2 = two_views(x, aug, gen(7))
    assert v1.shape == v2.shape == (3, 5, 72, 144)
    assert not torch.equal(v1, v2)
    w1, w2 = two_views(x, aug, gen(7))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    u1, _ = two_views(x, aug, gen(8))
    assert not torch.equal(v1, u1)
    with pytest.raises(ValueError, match="Generator"):
        two_views(x, aug, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_data_matches_cpu() -> None:
    x = fields()
    on_gpu = ReportAugmentation()(x.cuda(), gen(9))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), ReportAugmentation()(x, gen(9)))


def test_augmentation_arithmetic_is_small_next_to_a_resnet18_step() -> None:
    # The two views' arithmetic against a ResNet-18 training step (forward + backward) on the
    # same batch, counted, not timed (their time share is measured by benchmarks/train_step.py,
    # column "augment share"). The mean filter is the only convolution: 2 k^2 FLOPs per output
    # value; the bilinear resize (not counted by FlopCounterMode) needs at most 8 per value.
    x = fields(4)
    aug = ReportAugmentation()
    counter = FlopCounterMode(display=False)
    with counter:
        views = two_views(x, aug, gen())
    b, c = x.shape[:2]
    filter_flops = 2 * b * c * aug.crop[0] * aug.crop[1] * 2 * aug.kernel_size**2
    assert counter.get_total_flops() == filter_flops
    augmentation_flops = filter_flops + 2 * b * c * aug.resize[0] * aug.resize[1] * 8
    step = FlopCounterMode(display=False)
    with step:
        resnet18_encoder()(torch.cat(views)).sum().backward()
    assert augmentation_flops < 0.01 * step.get_total_flops(), (augmentation_flops,
                                                                step.get_total_flops())


# ---------------------------------------------------------------- presets


def test_report_preset_is_the_report_augmentation() -> None:
    x = fields()
    torch.testing.assert_close(augmentation_preset("report")(x, gen(3)),
                               ReportAugmentation()(x, gen(3)), rtol=0, atol=0)


def test_native_preset_keeps_the_report_scales_at_native_resolution() -> None:
    report, native = AUGMENTATION_PRESETS["report"], AUGMENTATION_PRESETS["native"]
    assert native["crop"] == (32, 64)  # the native grid: no upsampling
    for axis in (0, 1):
        # crop fraction: 0.889 vs the report's 0.9 (the nearest integer sizes)
        assert abs(native["crop"][axis] / native["resize"][axis]
                   - report["crop"][axis] / report["resize"][axis]) < 0.012
    # filter width in native cells: 3 vs 5 / 2.5 = 2 (a centred filter has an odd size)
    cells = report["kernel_size"] * 32 / report["resize"][0]
    assert cells == 2 and native["kernel_size"] % 2 == 1 and abs(native["kernel_size"] - cells) <= 1
    x = fields()
    view = augmentation_preset("native")(x, gen(1))
    assert view.shape == (3, 5, 32, 64)
    # Its steps: bilinear resize to 36 x 72, per-sample crop, 3 x 3 filter (a crop does not wrap).
    top, left = random_crop_offsets(3, (36, 72), (32, 64), gen(1))
    steps = crop(resize(x, (36, 72)), top, left, (32, 64))
    torch.testing.assert_close(view.double(), loop_mean_filter(steps, 3, periodic_lon=False))
    # The canonical view is the native field smoothed 3 x 3 around the globe.
    torch.testing.assert_close(augmentation_preset("native").canonical(x).double(),
                               loop_mean_filter(x, 3, periodic_lon=True))


def test_unknown_preset_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown augmentation preset 'cpu'.*'native', 'report'"):
        augmentation_preset("cpu")


@pytest.mark.parametrize("name", ["barlow_twins", "simclr"])
def test_methods_take_the_preset_and_infer_on_its_canonical_view(name: str) -> None:
    tiny = dict(latent_dim=8, width=4, proj_dim=4, proj_hidden_dim=8)
    method = build_method(name, augmentation="native", **tiny)
    x = fields(b=4)
    assert method.inference_view(x).shape == (4, 5, 32, 64)
    torch.testing.assert_close(method.inference_view(x),
                               augmentation_preset("native").canonical(x))
    loss, _ = method.loss((x, torch.zeros(4, dtype=torch.long)), gen())
    assert torch.isfinite(loss)
    assert build_method(name, **tiny).inference_view(x).shape == (4, 5, 72, 144)
    sparse = build_method(name, augmentation="native", observation={"kind": "pixel"}, **tiny)
    assert sparse.inference_view(torch.randn(4, 6, 32, 64)).shape == (4, 6, 32, 64)
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        build_method(name, augmentation="tiny", **tiny)
    with pytest.raises(ValueError, match="autoencoder trains on the native grid"):
        build_method("autoencoder", augmentation="native", **tiny)
