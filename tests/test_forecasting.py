"""Latent LSTM forecaster learns a known linear rule; windows; persistence and climatology."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geofusion.forecasting import (
    ForecastMethod,
    LatentSeq2Seq,
    LatentWindowDataset,
    climatology,
    climatology_forecast,
    make_windows,
    persistence_forecast,
    rollout,
)


def rotation(angles: tuple[float, ...]) -> torch.Tensor:
    """Block-diagonal rotation, one 2x2 block per angle."""
    a = torch.zeros(2 * len(angles), 2 * len(angles))
    for i, t in enumerate(angles):
        c, s = math.cos(t), math.sin(t)
        a[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[c, -s], [s, c]])
    return a


def trajectories(a: torch.Tensor, n: int, length: int, generator: torch.Generator):
    """``n`` sequences ``z_{t+1} = A z_t`` from random starts: ``(n, length, D)``."""
    z = torch.randn(n, a.shape[0], generator=generator)
    steps = [z]
    for _ in range(length - 1):
        z = z @ a.T
        steps.append(z)
    return torch.stack(steps, dim=1)


def test_lstm_learns_rotation_far_better_than_persistence():
    torch.manual_seed(0)  # parameter initialisation
    g = torch.Generator().manual_seed(0)
    a = rotation((0.3, 0.8))
    context, horizon = 8, 2
    method = ForecastMethod(LatentSeq2Seq(latent_dim=4, hidden_dim=32))
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    for _ in range(250):
        seq = trajectories(a, 64, context + horizon, g)
        loss, metrics = method.loss((seq[:, :context], seq[:, context:]), g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert set(metrics) == {"persistence_mse", "skill_ratio"}

    test = trajectories(a, 256, context + 3, torch.Generator().manual_seed(99))
    ctx, truth = test[:, :context], test[:, context:]
    prediction = rollout(method.model, ctx, steps=3)
    assert prediction.shape == (256, 3, 4)
    persistence = ctx[:, -1:].expand_as(truth)
    for step in range(2):
        model_mse = torch.mean((prediction[:, step] - truth[:, step]) ** 2)
        persistence_mse = torch.mean((persistence[:, step] - truth[:, step]) ** 2)
        assert model_mse < 0.05 * persistence_mse, (step, model_mse, persistence_mse)
    # One-step forecasts re-encoded on a sliding window match the first step.
    sliding = rollout(method.model, ctx, steps=2, sliding=True)
    torch.testing.assert_close(sliding[:, 0], prediction[:, 0])
    assert torch.mean((sliding[:, 1] - truth[:, 1]) ** 2) < 0.05 * torch.mean(
        (persistence[:, 1] - truth[:, 1]) ** 2)


def test_untrained_model_is_persistence_and_checks_input():
    torch.manual_seed(0)
    model = LatentSeq2Seq(latent_dim=3, hidden_dim=8, num_layers=2, dropout=0.1)
    ctx = torch.randn(5, 30, 3)
    out = model(ctx, horizon=4)
    assert out.shape == (5, 4, 3)
    torch.testing.assert_close(out, ctx[:, -1:].expand(5, 4, 3))
    with pytest.raises(ValueError, match="context must be"):
        model(torch.randn(5, 30, 4))
    with pytest.raises(ValueError, match="horizon"):
        model(ctx, horizon=0)


def test_make_windows_targets_follow_context():
    series = np.arange(40 * 2, dtype=np.float32).reshape(40, 2)
    inputs, targets = make_windows(series, context=30, horizon=3)
    assert inputs.shape == (8, 30, 2) and targets.shape == (8, 3, 2)
    for n in range(8):
        np.testing.assert_array_equal(inputs[n], series[n:n + 30])
        np.testing.assert_array_equal(targets[n], series[n + 30:n + 33])
    fields = torch.arange(12 * 2 * 3 * 4, dtype=torch.float32).reshape(12, 2, 3, 4)
    x, y = make_windows(fields, context=4, horizon=1)
    assert isinstance(x, torch.Tensor) and x.shape == (8, 4, 2, 3, 4) and y.shape == (8, 1, 2, 3, 4)
    assert torch.equal(y[:, 0], fields[4:])
    with pytest.raises(ValueError, match="too short"):
        make_windows(series[:30], context=30, horizon=1)


def test_window_dataset_never_crosses_series():
    train = torch.arange(50, dtype=torch.float32)[:, None]
    valid = 1000 + torch.arange(35, dtype=torch.float32)[:, None]
    ds = LatentWindowDataset([train, valid], context=30, horizon=2)
    assert len(ds) == (50 - 31) + (35 - 31)
    seen = 0
    for i in range(len(ds)):
        ctx, tgt = ds[i]
        assert ctx.shape == (30, 1) and tgt.shape == (2, 1)
        whole = torch.cat([ctx, tgt])[:, 0]
        # Consecutive steps of one series: no jump from training into validation days.
        assert torch.equal(whole - whole[0], torch.arange(32, dtype=torch.float32))
        seen += int(whole[0] >= 1000)
    assert seen == 35 - 31
    x, y = make_windows(train, 30, 2)
    assert torch.equal(ds[3][0], x[3]) and torch.equal(ds[3][1], y[3])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_persistence_shifts_by_lead():
    fields = np.random.default_rng(0).normal(size=(10, 2, 3, 4)).astype(np.float32)
    for lead in (1, 3):
        forecast = persistence_forecast(fields, lead)
        assert forecast.shape == (10 - lead, 2, 3, 4)
        # The forecast valid at t + lead (verified against fields[lead:]) is the field at t.
        np.testing.assert_array_equal(forecast[2], fields[2])
        truth = fields[lead:]
        assert truth.shape == forecast.shape
    with pytest.raises(ValueError, match="lead"):
        persistence_forecast(fields, 0)


def test_climatology_uses_training_days_only_and_day_of_year():
    times = np.arange("2001-01-01", "2004-01-01", dtype="datetime64[D]")
    doy = np.array([t.astype("datetime64[D]").item().timetuple().tm_yday for t in times])
    rng = np.random.default_rng(0)
    # A seasonal cycle plus noise, (T, C=2, lat=3, lon=4).
    signal = np.sin(2 * np.pi * doy / 365.25)[:, None, None, None]
    fields = (signal + 0.1 * rng.normal(size=(len(times), 2, 3, 4))).astype(np.float32)
    n_train = 2 * 365
    clim = climatology(fields[:n_train], times[:n_train], window=15)
    assert clim.shape == (366, 2, 3, 4) and clim.dtype == np.float32

    # Changing the validation data does not change the climatology.
    other = fields.copy()
    other[n_train:] += 100.0
    np.testing.assert_array_equal(climatology(other[:n_train], times[:n_train]), clim)

    # Window mean by hand for 10 January (doy 10): training days with doy 3..17.
    pool = (doy[:n_train] >= 3) & (doy[:n_train] <= 17)
    np.testing.assert_allclose(clim[9], fields[:n_train][pool].mean(axis=0), rtol=1e-5)
    # Circular on 366 days: 1 January pools doy 360..366 (late December) and 1..8.
    pool = (doy[:n_train] >= 360) | (doy[:n_train] <= 8)
    np.testing.assert_allclose(clim[0], fields[:n_train][pool].mean(axis=0), rtol=1e-5)

    valid_times = times[n_train:]
    forecast = climatology_forecast(clim, valid_times)
    assert forecast.shape == (len(valid_times), 2, 3, 4)
    np.testing.assert_array_equal(forecast[0], clim[doy[n_train] - 1])
    # It beats persistence of noise: close to the seasonal signal.
    assert np.abs(forecast - signal[n_train:]).mean() < 0.05
    t = climatology_forecast(torch.from_numpy(clim), valid_times)
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(forecast))


def test_climatology_short_training_fills_from_nearest_day():
    times = np.arange("2001-03-01", "2001-03-11", dtype="datetime64[D]")  # doy 60..69
    fields = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2))
    clim = climatology(fields, times, window=1)
    assert np.isfinite(clim).all()
    np.testing.assert_array_equal(clim[59:69, 0, 0, 0], np.arange(10))
    assert clim[0, 0, 0, 0] == 0.0 and clim[200, 0, 0, 0] == 9.0  # nearest: doy 60 and 69


def test_forecast_method_trains_with_shared_loop(tmp_path):
    from geofusion.training import TrainConfig, fit

    torch.manual_seed(0)
    a = rotation((0.5,))
    series = trajectories(a, 1, 80, torch.Generator().manual_seed(0))[0]  # (80, 2)
    train, valid = series[:60], series[60:]
    method = ForecastMethod(LatentSeq2Seq(latent_dim=2, hidden_dim=16))
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2, device="cpu", amp=False)
    history = fit(method, LatentWindowDataset(train, context=10, horizon=1), config,
                  run_dir=tmp_path / "run", progress=False,
                  valid_set=LatentWindowDataset(valid, context=10, horizon=1))
    assert len(history) == 3
    assert {"loss", "valid_loss", "persistence_mse", "skill_ratio"} <= set(history.columns)
    assert np.isfinite(history["loss"]).all()
    assert history["skill_ratio"].iloc[-1] < history["skill_ratio"].iloc[0]
