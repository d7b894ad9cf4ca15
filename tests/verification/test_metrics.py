"""Latitude-weighted scores against hand-computed WeatherBench 2 values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofusion.verification.metrics import (
    lat_weighted_acc,
    lat_weighted_mae,
    lat_weighted_mse,
    lat_weighted_rmse,
    latitude_weights,
    per_variable_table,
)

# Three rows with cell bounds -90, -30, 30, 90: areas sin differences 0.5, 1, 0.5, mean 2/3.
LAT3 = np.array([-60.0, 0.0, 60.0])
W3 = np.array([0.75, 1.5, 0.75])
LAT32 = np.linspace(-87.1875, 87.1875, 32)  # the 5.625-degree WB2 grid


def test_latitude_weights_hand_case_and_wb2_grid():
    np.testing.assert_allclose(latitude_weights(LAT3), W3, rtol=1e-12)
    w = latitude_weights(LAT32)
    assert w.shape == (32,)
    assert w.mean() == pytest.approx(1.0)
    # Equal-width cells without poles: the cell area is proportional to cos(lat).
    cos = np.cos(np.deg2rad(LAT32))
    np.testing.assert_allclose(w, cos / cos.mean(), rtol=1e-10)
    # A grid with pole rows: cell areas, not cos (the pole row keeps a positive weight).
    lat_poles = np.linspace(-90, 90, 5)  # bounds -90,-67.5,-22.5,22.5,67.5,90
    areas = np.diff(np.sin(np.deg2rad([-90, -67.5, -22.5, 22.5, 67.5, 90])))
    np.testing.assert_allclose(latitude_weights(lat_poles), areas / areas.mean(), rtol=1e-12)
    assert latitude_weights(lat_poles)[0] > 0


def test_latitude_weights_torch_and_errors():
    wt = latitude_weights(torch.tensor(LAT3, dtype=torch.float32))
    assert isinstance(wt, torch.Tensor) and wt.dtype == torch.float32
    np.testing.assert_allclose(wt.numpy(), W3, rtol=1e-6)
    with pytest.raises(ValueError, match="increasing"):
        latitude_weights(LAT3[::-1].copy())
    with pytest.raises(ValueError, match="90"):
        latitude_weights(np.array([-95.0, 0.0]))


def test_constant_error_gives_that_rmse():
    truth = np.random.default_rng(0).normal(size=(2, 32, 64))
    rmse = lat_weighted_rmse(truth + 0.7, truth, LAT32)
    np.testing.assert_allclose(rmse, [0.7, 0.7], rtol=1e-12)


def test_error_on_one_row_is_weighted_by_its_area():
    truth = np.zeros((3, 4))
    forecast = truth.copy()
    forecast[1] = 2.0  # equator row, weight 1.5
    # MSE = sum(w e^2) / (nlat * nlon) = 1.5 * 4 * 4 / 12 = 2
    assert lat_weighted_mse(forecast, truth, LAT3) == pytest.approx(2.0)
    assert lat_weighted_rmse(forecast, truth, LAT3) == pytest.approx(np.sqrt(2.0))
    forecast = truth.copy()
    forecast[0] = 2.0  # polar row, weight 0.75 -> MSE = 0.75 * 4 / 3 = 1
    assert lat_weighted_rmse(forecast, truth, LAT3) == pytest.approx(1.0)
    assert lat_weighted_mae(forecast, truth, LAT3) == pytest.approx(0.75 * 2 / 3)


def test_root_after_time_mean():
    truth = np.zeros((2, 3, 4))
    forecast = np.stack([np.full((3, 4), 1.0), np.full((3, 4), 3.0)])
    # WB2: sqrt(mean(1, 9)) = sqrt(5), not mean(1, 3) = 2.
    assert lat_weighted_rmse(forecast, truth, LAT3, time_axis=0) == pytest.approx(np.sqrt(5))
    per_time = lat_weighted_rmse(forecast, truth, LAT3)
    np.testing.assert_allclose(per_time, [1.0, 3.0])


def test_channel_axis_kept_and_time_axis_checked():
    rng = np.random.default_rng(1)
    f, t = rng.normal(size=(2, 6, 5, 3, 4))
    out = lat_weighted_rmse(f, t, LAT3, time_axis=0)
    assert out.shape == (5,)
    expected = np.sqrt((((f - t) ** 2) * W3[:, None]).mean(axis=(-2, -1)).mean(axis=0))
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="time_axis"):
        lat_weighted_rmse(f, t, LAT3, time_axis=2)
    with pytest.raises(ValueError, match="latitude rows"):
        lat_weighted_rmse(f, t, LAT32)


def _acc_reference(f, t, c, w):
    fa, ta = f - c, t - c
    wf = w[:, None]
    return (wf * fa * ta).sum() / np.sqrt((wf * fa**2).sum() * (wf * ta**2).sum())


def test_acc_scale_invariant_sign_and_weighted():
    rng = np.random.default_rng(2)
    clim = rng.normal(size=(3, 4))
    anomaly = rng.normal(size=(3, 4))
    truth = clim + anomaly
    assert lat_weighted_acc(clim + 2 * anomaly, truth, clim, LAT3) == pytest.approx(1.0)
    assert lat_weighted_acc(clim - anomaly, truth, clim, LAT3) == pytest.approx(-1.0)
    forecast = clim + anomaly + rng.normal(size=(3, 4))
    acc = lat_weighted_acc(forecast, truth, clim, LAT3)
    assert acc == pytest.approx(_acc_reference(forecast, truth, clim, W3), rel=1e-12)
    # The weights matter: the unweighted correlation differs.
    assert acc != pytest.approx(_acc_reference(forecast, truth, clim, np.ones(3)), rel=1e-6)
    # Uncentred: a constant anomaly offset lowers the ACC (a centred correlation stays 1).
    assert lat_weighted_acc(clim + anomaly + 5.0, truth, clim, LAT3) < 0.9


def test_acc_time_mean_of_per_time_values():
    rng = np.random.default_rng(3)
    clim = np.zeros((3, 4))
    a = rng.normal(size=(3, 4))
    truth = np.stack([a, a])
    forecast = np.stack([a, -3 * a])  # per-time ACC 1 and -1
    assert lat_weighted_acc(forecast, truth, clim, LAT3, time_axis=0) == pytest.approx(0.0,
                                                                                       abs=1e-12)


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(4)
    f, t, c = rng.normal(size=(3, 7, 2, 32, 64)).astype(np.float32)
    for fn, args in ((lat_weighted_rmse, ()), (lat_weighted_mae, ()), (lat_weighted_acc, (c,))):
        out_np = fn(f, t, *args, LAT32, time_axis=0)
        out_t = fn(torch.from_numpy(f), torch.from_numpy(t), *args, LAT32, time_axis=0)
        assert isinstance(out_t, torch.Tensor) and out_t.shape == (2,)
        np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-5)


def test_per_variable_table():
    table = per_variable_table({"rmse": torch.tensor([1.0, 2.0]), "acc": np.array([0.9, 0.8])},
                               ["2m_temperature", "geopotential"],
                               units={"2m_temperature": "K"})
    assert list(table.index) == ["2m_temperature", "geopotential"]
    assert table.loc["geopotential", "rmse"] == 2.0
    assert table.loc["2m_temperature", "units"] == "K"
    with pytest.raises(ValueError, match="channels"):
        per_variable_table({"rmse": [1.0, 2.0, 3.0]}, ["a", "b"])
