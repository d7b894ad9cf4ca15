"""Latent LSTM forecaster learns a known linear rule; windows; persistence and climatology."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geofusion.data import PreparedData
from geofusion.downstream.embeddings import encode_series
from geofusion.downstream.forecast_scores import (
    climatology_source,
    persistence_source,
    score_forecasts,
    skill_vs_mask_ratio,
)
from geofusion.downstream.forecasting import (
    ForecastMethod,
    LatentForecaster,
    LatentSeq2Seq,
    LatentStandardiser,
    LatentWindowDataset,
    fit_latent_forecaster,
    make_windows,
    rollout,
)
from geofusion.learning.methods import build_method
from geofusion.verification import metrics
from geofusion.verification.baselines import climatology, day_of_year, lag_regression


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


def test_forecast_method_trains_with_shared_loop(tmp_path):
    from geofusion.learning.config import TrainConfig
    from geofusion.learning.training import fit

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


# --------------------------------------------------------------------------------------------
# The forecast chain of one representation and the scores
# --------------------------------------------------------------------------------------------

TINY = dict(latent_dim=8, width=4, proj_dim=8, proj_hidden_dim=16)
LAT = np.linspace(-87.1875, 87.1875, 32)


def smooth_series(days: int, seed: int = 0) -> np.ndarray:
    """(days, 5, 32, 64) smooth fields drifting slowly from day to day, float32."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(days, 5, 4, 8, generator=g).cumsum(0) / 4
    return torch.nn.functional.interpolate(coarse, size=(32, 64), mode="bilinear").numpy()


def tiny_prepared(days: int = 60) -> PreparedData:
    fields = smooth_series(days)
    times = np.arange("2001-01-01", days, dtype="datetime64[D]").astype("datetime64[ns]")
    n = int(days * 0.75)
    return PreparedData(
        train=fields[:n], valid=fields[n:], train_times=times[:n], valid_times=times[n:],
        channels=("2m_temperature", "geopotential", "u_component_of_wind",
                  "v_component_of_wind", "specific_humidity"),
        mean=np.array([280, 5e4, 5, 0, 5e-3], np.float32),
        std=np.array([10, 3e3, 8, 6, 3e-3], np.float32),
        lat=LAT, lon=np.arange(64) * 5.625, level=500, synthetic=True)


def test_encode_series_goes_through_embed_observed():
    torch.manual_seed(0)
    method = build_method("barlow_twins", **TINY).eval()
    x = torch.from_numpy(smooth_series(6))
    with torch.no_grad():
        expected = method.embed(x)
    z = encode_series(method, x, batch_size=4)
    assert z.shape == (6, 8)
    torch.testing.assert_close(z, expected)
    # Missing points are 0 (the standardised mean) before the method's inference view.
    observed = torch.rand(6, 32, 64, generator=torch.Generator().manual_seed(1)) > 0.5
    with torch.no_grad():
        expected_masked = method.embed(x * observed[:, None])
    torch.testing.assert_close(encode_series(method, x, observed=observed), expected_masked)
    assert not torch.allclose(expected_masked, expected)
    # A bare encoder is called on the fields themselves (no canonical view), without masks.
    with torch.no_grad():
        raw = method.encoder(x)
    torch.testing.assert_close(encode_series(method.encoder, x), raw)
    with pytest.raises(ValueError, match="needs a method"):
        encode_series(method.encoder, x, observed=observed)
    with pytest.raises(ValueError, match="one \\(H, W\\) mask per day"):
        encode_series(method, x, observed=observed[:3])


def test_latent_standardiser_uses_training_statistics():
    g = torch.Generator().manual_seed(0)
    train = 5 + 3 * torch.randn(500, 4, generator=g)
    train[:, 3] = 7.0  # a dead dimension
    scaler = LatentStandardiser.fit(train)
    z = scaler.transform(train)
    torch.testing.assert_close(z[:, :3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :3].std(0), torch.ones(3), atol=1e-5, rtol=0)
    assert torch.isfinite(z).all() and torch.all(z[:, 3] == 0)
    other = torch.randn(10, 4, generator=g)
    torch.testing.assert_close(scaler.inverse(scaler.transform(other)), other)
    with pytest.raises(ValueError, match="latents must be"):
        LatentStandardiser.fit(torch.zeros(1, 4))


def score_inputs(days: int = 24):
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(days, 2, 4, 8)).astype(np.float32)
    times = np.arange("2001-03-01", days, dtype="datetime64[D]")
    clim = climatology(fields[:12], times[:12], window=3)
    std, mean = torch.tensor([2.0, 10.0]), torch.tensor([280.0, 5.0])

    def to_physical(x):
        return x * std[:, None, None] + mean[:, None, None]

    return fields, times, np.linspace(-60, 60, 4), clim, to_physical


def test_score_forecasts_aligns_leads_and_matches_the_metrics():
    fields, times, lat, clim, to_physical = score_inputs()
    context, steps = 5, 3

    def perfect(inits, steps):
        return torch.from_numpy(fields[np.asarray(inits)[:, None] + np.arange(1, steps + 1)])

    table = score_forecasts(
        {"perfect": perfect, "persistence": persistence_source(fields),
         "climatology": climatology_source(clim, times)},
        fields, times, lat, clim, to_physical, ["a", "b"], context=context, steps=steps,
        batch_size=4)
    assert len(table) == 3 * steps * 2
    inits = np.arange(context - 1, len(fields) - steps)
    assert (table["n"] == len(inits)).all()
    scores = table.set_index(["forecaster", "lead", "variable"]).sort_index()
    phys = lambda a: to_physical(torch.from_numpy(np.ascontiguousarray(a))).numpy()  # noqa: E731
    for lead in range(1, steps + 1):
        truth = phys(fields[inits + lead])
        reference = phys(clim[day_of_year_index(times[inits + lead])])
        # The perfect forecast: zero error, correlation 1.
        assert np.allclose(scores.loc[("perfect", lead), "rmse"], 0, atol=1e-4)
        assert np.allclose(scores.loc[("perfect", lead), "acc"], 1, atol=1e-5)
        # Persistence from the init day: the WB2 scores of fields[i] against fields[i + lead].
        forecast = phys(fields[inits])
        np.testing.assert_allclose(scores.loc[("persistence", lead), "rmse"],
                                   metrics.lat_weighted_rmse(forecast, truth, lat, time_axis=0),
                                   rtol=1e-4)
        np.testing.assert_allclose(
            scores.loc[("persistence", lead), "acc"],
            metrics.lat_weighted_acc(forecast, truth, reference, lat, time_axis=0), rtol=1e-4)
        np.testing.assert_allclose(scores.loc[("climatology", lead), "rmse"],
                                   metrics.lat_weighted_rmse(reference, truth, lat, time_axis=0),
                                   rtol=1e-4)
        assert scores.loc[("climatology", lead), "acc"].isna().all()  # zero anomaly
    # Physical units: the variable with std 10 has 5 times the RMSE scale of the one with 2.
    pers = scores.loc[("persistence", 1), "rmse"]
    assert 2 < pers["b"] / pers["a"] < 12.5

    with pytest.raises(ValueError, match="expected"):
        score_forecasts({"bad": lambda i, s: torch.zeros(len(i), s, 2, 4, 4)}, fields, times,
                        lat, clim, to_physical, ["a", "b"], context=context)
    with pytest.raises(ValueError, match="initialisation indices"):
        score_forecasts({"p": persistence_source(fields)}, fields, times, lat, clim,
                        to_physical, ["a", "b"], context=context, inits=[len(fields) - 1])


def test_score_forecasts_intervals_are_the_block_bootstrap_of_the_per_day_scores():
    from geofusion.verification.bootstrap import bootstrap_acc, bootstrap_rmse

    fields, times, lat, clim, to_physical = score_inputs()
    context, steps = 2, 2
    table = score_forecasts({"persistence": persistence_source(fields)}, fields, times, lat,
                            clim, to_physical, ["a", "b"], context=context, steps=steps,
                            batch_size=3, intervals=True, block=3, n_resamples=200, seed=5)
    without = score_forecasts({"persistence": persistence_source(fields)}, fields, times, lat,
                              clim, to_physical, ["a", "b"], context=context, steps=steps)
    np.testing.assert_allclose(table["rmse"], without["rmse"])  # the estimate is unchanged
    scores = table.set_index(["lead", "variable"]).sort_index()
    inits = np.arange(context - 1, len(fields) - steps)
    phys = lambda a: to_physical(torch.from_numpy(np.ascontiguousarray(a))).numpy()  # noqa: E731
    for lead in (1, 2):
        truth, forecast = phys(fields[inits + lead]), phys(fields[inits])
        reference = phys(clim[day_of_year_index(times[inits + lead])])
        # Per-day scores by the metrics module, one day at a time, then the bootstrap.
        mse = np.stack([metrics.lat_weighted_mse(forecast[i], truth[i], lat)
                        for i in range(len(inits))])
        acc = metrics.lat_weighted_acc(forecast, truth, reference, lat)
        rmse_ci = bootstrap_rmse(mse, block=3, n_resamples=200, seed=5)
        acc_ci = bootstrap_acc(acc, block=3, n_resamples=200, seed=5)
        row = scores.loc[lead]
        np.testing.assert_allclose(row["rmse_low"], rmse_ci.low, rtol=1e-4)
        np.testing.assert_allclose(row["rmse_high"], rmse_ci.high, rtol=1e-4)
        np.testing.assert_allclose(row["acc_low"], acc_ci.low, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(row["acc_high"], acc_ci.high, rtol=1e-4, atol=1e-6)
        assert (row["rmse_low"] < row["rmse"]).all() and (row["rmse"] < row["rmse_high"]).all()


def day_of_year_index(times):
    return day_of_year(times) - 1


def untrained_forecaster(context: int = 4) -> tuple[LatentForecaster, torch.Tensor]:
    torch.manual_seed(0)
    method = build_method("autoencoder", **TINY).eval()
    fields = smooth_series(20)
    scaler = LatentStandardiser.fit(encode_series(method, fields))
    forecaster = LatentForecaster(method, method.decoder, LatentSeq2Seq(8, 8), scaler, context)
    return forecaster, torch.from_numpy(fields)


def test_untrained_forecaster_is_latent_persistence_from_the_init_day():
    forecaster, fields = untrained_forecaster(context=4)
    latents = forecaster.encode(fields)
    assert latents.shape == (20, 8)
    torch.testing.assert_close(latents.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    inits = np.array([3, 7, 15])
    # The untrained LSTM predicts no change: every lead is the latent of the init day.
    z = forecaster.forecast_latents(latents, inits, steps=3)
    assert z.shape == (3, 3, 8)
    torch.testing.assert_close(z, latents[inits][:, None].expand(3, 3, 8))
    with torch.no_grad():
        decoded_init = forecaster.method.decoder(forecaster.method.embed(fields[inits]))
    out = forecaster.source(latents)(inits, 3)
    assert out.shape == (3, 3, 5, 32, 64)
    for lead in range(3):
        torch.testing.assert_close(out[:, lead], decoded_init, atol=1e-5, rtol=1e-4)
    # The ceiling decodes the true latent of each verification day.
    ceiling = forecaster.ceiling_source(latents)(inits, 2)
    with torch.no_grad():
        decoded_next = forecaster.method(fields[inits + 2])
    torch.testing.assert_close(ceiling[:, 1], decoded_next, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="initialisation indices"):
        forecaster.forecast_latents(latents, [2], 1)  # needs 4 days of context


def test_damped_residual_forecast_adds_the_damped_residual_of_the_init_day():
    forecaster, fields = untrained_forecaster(context=4)
    latents = forecaster.encode(fields)
    inits = np.array([3, 9, 15])
    with pytest.raises(ValueError, match="fit_residual_damping"):
        forecaster.source(latents, fields)
    with torch.no_grad():
        decoded = forecaster.method(fields)  # d(e(x)) through the method, not the forecaster
    residual = fields - decoded
    # rho = 1 with an untrained LSTM (latent persistence): the forecast is field persistence.
    forecaster.residual_rho = torch.ones(3, 5, 32, 64)
    out = forecaster.source(latents, fields)(inits, 3)
    for lead in range(3):
        torch.testing.assert_close(out[:, lead], fields[inits], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(forecaster.latent_persistence_source(latents, fields)(inits, 3),
                               out, atol=1e-5, rtol=1e-5)
    # Any rho: decoded forecast + rho_k r_t; the ceiling variant decodes the true latent.
    rho = torch.rand(3, 5, 32, 64, generator=torch.Generator().manual_seed(0))
    forecaster.residual_rho = rho
    out = forecaster.source(latents, fields)(inits, 2)
    ceiling = forecaster.ceiling_source(latents, fields)(inits, 2)
    for lead in range(2):
        expected = decoded[inits] + rho[lead] * residual[inits]
        torch.testing.assert_close(out[:, lead], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ceiling[:, lead],
                                   decoded[inits + lead + 1] + rho[lead] * residual[inits],
                                   atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="max_lead"):
        forecaster.source(latents, fields)(inits, 4)
    with pytest.raises(ValueError, match="latents"):
        forecaster.source(latents, fields[:10])


def test_fit_residual_damping_regresses_training_residuals_only():
    forecaster, _ = untrained_forecaster(context=4)
    prepared = tiny_prepared(40)
    rho = forecaster.fit_residual_damping(prepared, max_lead=3)
    assert rho.shape == (3, 5, 32, 64) and forecaster.residual_rho is rho
    x = torch.from_numpy(prepared.train)
    with torch.no_grad():
        residual = (x - forecaster.method(x)).numpy()
    np.testing.assert_allclose(rho.numpy(), lag_regression(residual, prepared.train_times, 3),
                               rtol=1e-3, atol=1e-4)
    # Latents given (already encoded): the same fit without encoding again.
    given = forecaster.fit_residual_damping(prepared, 3, latents=forecaster.encode(x))
    torch.testing.assert_close(given, rho)
    with pytest.raises(ValueError, match="latents"):
        forecaster.fit_residual_damping(prepared, 3, latents=forecaster.encode(x[:5]))
    # The residual of slowly drifting fields persists: rho well above 0 at lead 1.
    assert np.median(rho[0].numpy()) > 0.5


def test_residual_damping_fitted_to_the_forecast_error_matches_a_loop_reference():
    forecaster, _ = untrained_forecaster(context=4)  # untrained: forecast d(z_t) at every lead
    prepared = tiny_prepared(40)
    rho = forecaster.fit_residual_damping(prepared, max_lead=2, target="forecast", stride=3)
    x = torch.from_numpy(prepared.train).double()
    with torch.no_grad():
        decoded = forecaster.method(torch.from_numpy(prepared.train)).double()
    num, den = torch.zeros(2, 5, 32, 64, dtype=torch.float64), 0.0
    for t in range(3, len(x) - 2, 3):  # start days with 4 days of context, every 3rd
        r = x[t] - decoded[t]
        for k in (1, 2):
            num[k - 1] += (x[t + k] - decoded[t]) * r
        den = den + r * r
    torch.testing.assert_close(rho.double(), num / den, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="target"):
        forecaster.fit_residual_damping(prepared, 2, target="errors")
    with pytest.raises(ValueError, match="gridpoint"):
        forecaster.fit_residual_damping(prepared, 2, pooling="global", target="forecast")


def test_lag_regression_recovers_ar1_damping_and_follows_dates():
    rng = np.random.default_rng(0)
    a = np.zeros((3000, 1, 2, 2))
    for t in range(1, len(a)):
        a[t] = 0.8 * a[t - 1] + rng.normal(size=(1, 2, 2))
    times = np.arange("2001-01-01", len(a), dtype="datetime64[D]")
    rho = lag_regression(a, times, 3)
    np.testing.assert_allclose(rho[:, 0, 0, 0], [0.8, 0.64, 0.512], atol=0.04)
    lat = np.array([-45.0, 45.0])
    pooled = lag_regression(a, times, 1, "global", lat)
    assert np.all(pooled == pooled[0, 0, 0, 0])  # one value over the grid
    # Two halves with a 10-day gap and a jump between them: pairs follow the dates, so only
    # pairs within a half count (the reference sums them by hand); with contiguous dates the
    # pair across the jump would count.
    gap = np.concatenate([times[:1500], times[1500:] + np.timedelta64(10, "D")])
    jump = a.copy()
    jump[1500:] += 50.0
    halves = (jump[:1500], jump[1500:])
    num = sum((h[:-1] * h[1:]).sum(0) for h in halves)
    den = sum((h[:-1] ** 2).sum(0) for h in halves)
    np.testing.assert_allclose(lag_regression(jump, gap, 1)[0], num / den, rtol=1e-5)
    assert not np.allclose(lag_regression(jump, times, 1)[0], num / den, rtol=1e-5)
    with pytest.raises(ValueError, match="lat"):
        lag_regression(a, times, 1, "global")
    with pytest.raises(ValueError, match="pooling"):
        lag_regression(a, times, 1, "zonal")


def test_skill_vs_mask_ratio_reuses_masks_and_scores_the_complete_field():
    forecaster, fields = untrained_forecaster(context=4)
    times = np.arange("2001-01-01", 20, dtype="datetime64[D]")
    clim = climatology(fields[:10].numpy(), times[:10])
    names = ["2m_temperature", "geopotential", "u", "v", "q"]
    args = (fields, times, LAT, clim, lambda x: 3 * x + 1, names)
    table = skill_vs_mask_ratio({"ae": forecaster}, *args, ratios=[0.0, 0.6], seed=3)
    assert list(table.columns) == ["forecaster", "ratio", "variable", "rmse", "acc", "n"]
    assert len(table) == 2 * 5 and (table["n"] == 20 - 4).all()
    # Ratio 0 is the unmasked forecast, scored against the next (complete) day.
    full = score_forecasts({"ae": forecaster.source(forecaster.encode(fields))}, *args,
                           context=4)
    np.testing.assert_allclose(table[table.ratio == 0]["rmse"], full["rmse"], rtol=1e-5)
    masked = table[table.ratio == 0.6]["rmse"].to_numpy()
    assert np.all(np.isfinite(masked)) and not np.allclose(masked, full["rmse"])
    again = skill_vs_mask_ratio({"ae": forecaster}, *args, ratios=[0.6], seed=3)
    np.testing.assert_array_equal(again["rmse"].to_numpy(), masked)
    some = skill_vs_mask_ratio({"ae": forecaster}, *args, ratios=[0.0], inits=[5, 9])
    assert (some["n"] == 2).all()
    np.testing.assert_allclose(
        some["rmse"], score_forecasts({"ae": forecaster.source(forecaster.encode(fields))}, *args,
                                      context=4, inits=[5, 9])["rmse"], rtol=1e-5)


def test_fit_latent_forecaster_trains_once_then_loads(tmp_path):
    from geofusion.learning.config import TrainConfig

    torch.manual_seed(0)
    prepared = tiny_prepared(60)
    method = build_method("autoencoder", **TINY).eval()
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, device="cpu")
    kwargs = dict(representation="autoencoder-test", context=6, hidden_dim=16, seed=0,
                  progress=False)
    forecaster, history, directory = fit_latent_forecaster(
        method, method.decoder, prepared, tmp_path, config, **kwargs)
    assert len(history) == 2 and "valid_loss" in history and "skill_ratio" in history
    assert directory.name.startswith("latent_seq2seq-")
    assert "autoencoder-test" in (directory / "description.json").read_text()
    train, valid = forecaster.latents["train"], forecaster.latents["valid"]
    assert train.shape == (45, 8) and valid.shape == (15, 8)
    torch.testing.assert_close(train.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    # Trained: no longer the zero-initialised (persistence) head.
    assert forecaster.model.head.weight.abs().sum() > 0
    stamp = (directory / "checkpoint.pt").stat().st_mtime_ns
    again, history2, directory2 = fit_latent_forecaster(
        method, method.decoder, prepared, tmp_path, config, **kwargs)
    assert directory2 == directory and (directory / "checkpoint.pt").stat().st_mtime_ns == stamp
    for a, b in zip(forecaster.model.state_dict().values(), again.model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b)
    # Another representation is another model.
    _, _, other = fit_latent_forecaster(method, method.decoder, prepared, tmp_path, config,
                                        **{**kwargs, "representation": "other"})
    assert other != directory


def two_spaces(years: int = 3) -> tuple[PreparedData, PreparedData]:
    """The same three-way split (60/20/20) in the report space and in the anomaly space."""
    from geofusion.data.anomalies import to_space

    times = np.arange(np.datetime64("2001-01-01"), np.datetime64("2001-01-01")
                      + np.timedelta64(365 * years, "D")).astype("datetime64[ns]")
    g = torch.Generator().manual_seed(3)
    weather = torch.randn(len(times), 5, 2, 4, generator=g).cumsum(0) / 6
    weather = torch.nn.functional.interpolate(weather, size=(4, 8), mode="bilinear").numpy()
    doy = day_of_year(times)[:, None, None, None]
    lat = np.linspace(-67.5, 67.5, 4)
    seasonal = np.sin(2 * np.pi * doy / 365.25) * np.cos(np.deg2rad(lat))[:, None]
    fields = (2 * seasonal + weather).astype(np.float32)
    n_train, n_valid = int(0.6 * len(times)), int(0.2 * len(times))
    split = np.cumsum([n_train, n_valid])
    report = PreparedData(
        train=fields[:split[0]], valid=fields[split[0]:split[1]],
        train_times=times[:split[0]], valid_times=times[split[0]:split[1]],
        channels=("2m_temperature", "geopotential", "u_component_of_wind",
                  "v_component_of_wind", "specific_humidity"),
        mean=np.array([280, 5e4, 5, 0, 5e-3], np.float32),
        std=np.array([10, 3e3, 8, 6, 3e-3], np.float32),
        lat=lat, lon=np.arange(8) * 45.0, level=500, synthetic=True,
        test=fields[split[1]:], test_times=times[split[1]:])
    return report, to_space(report, "anomaly")


def baseline_scores(prepared: PreparedData, steps: int = 3):
    from geofusion.verification.baselines import (
        damped_persistence_source,
        fit_damped_persistence,
        training_climatology,
    )
    from geofusion.verification.linear_regression import (
        fit_linear_regression,
        linear_regression_source,
    )

    x, t = prepared.test, prepared.test_times
    clim = training_climatology(prepared)
    sources = {
        "persistence": persistence_source(x, t, prepared.as_valid_at),
        "climatology": climatology_source(clim, t),
        "damped_persistence": damped_persistence_source(
            fit_damped_persistence(prepared, max_lead=steps), x, t),
        "linear_regression": linear_regression_source(
            fit_linear_regression(prepared, max_lead=steps, n_components=8), x, t)}
    return score_forecasts(sources, x, t, prepared.lat, clim, prepared.destandardise,
                           list(prepared.channels), context=1, steps=steps)


def test_baselines_score_the_same_in_the_report_and_the_anomaly_space():
    """Persistence (the physical x_t), the climatology, damped persistence and linear
    regression are the same physical forecasts in either space, scored on the test block."""
    report, anomaly = two_spaces()
    assert anomaly.space == "anomaly" and anomaly.climatology is not None
    a, b = baseline_scores(report), baseline_scores(anomaly)
    assert list(a.forecaster.unique()) == ["persistence", "climatology", "damped_persistence",
                                           "linear_regression"]
    # Same days, same forecasts; the spaces differ by float32 rounding of values ~280 K,
    # 5e4 m^2 s^-2 (a few ulps of the physical fields, relative ~1e-6) and the fits by float
    # products of the anomalies: rtol 1e-4 of the RMSE.
    np.testing.assert_allclose(a.rmse, b.rmse, rtol=1e-4)
    np.testing.assert_allclose(a.acc.fillna(0), b.acc.fillna(0), rtol=1e-4, atol=1e-5)
    # Persistence in the anomaly space is the physical field of the init day, not the
    # persisted anomaly: it differs from persisting the anomaly itself.
    anomaly_persistence = score_forecasts(
        {"anomaly persisted": persistence_source(anomaly.test)}, anomaly.test,
        anomaly.test_times, anomaly.lat, np.zeros((366, 5, 4, 8), np.float32),
        anomaly.destandardise, list(anomaly.channels), context=1, steps=3)
    assert not np.allclose(anomaly_persistence.rmse, b[b.forecaster == "persistence"].rmse,
                           rtol=1e-3)


def test_persistence_source_re_expresses_the_init_day_for_each_valid_day():
    report, anomaly = two_spaces(years=2)
    x, t = anomaly.test, anomaly.test_times
    forecast = persistence_source(x, t, anomaly.as_valid_at)([3, 10], 2).numpy()
    for b, init in enumerate([3, 10]):
        for k in range(2):
            physical = anomaly.destandardise(forecast[b, k][None], t[init + k + 1:init + k + 2])
            np.testing.assert_allclose(physical[0], anomaly.destandardise(x[init][None],
                                                                          t[init:init + 1])[0],
                                       rtol=1e-5)
    with pytest.raises(ValueError, match="times"):
        persistence_source(x, as_valid_at=anomaly.as_valid_at)


def test_fit_latent_forecaster_encodes_the_test_block_without_reading_it(tmp_path):
    """With a test block the forecaster carries its latents for scoring; the LSTM, the
    standardiser and the residual damping are bit for bit those fitted with other test days
    (the very same computation on the same training and validation days)."""
    import dataclasses

    from geofusion.learning.config import TrainConfig

    base = tiny_prepared(80)
    three = dataclasses.replace(base, valid=base.valid[:10], valid_times=base.valid_times[:10],
                                test=base.valid[10:], test_times=base.valid_times[10:])
    other = dataclasses.replace(three, test=three.test + 5.0)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, device="cpu")
    fitted = []
    for i, prepared in enumerate([three, other]):
        torch.manual_seed(0)
        method = build_method("autoencoder", **TINY).eval()
        forecaster, _, _ = fit_latent_forecaster(
            method, method.decoder, prepared, tmp_path / str(i), config,
            representation="ae", context=4, hidden_dim=8, seed=0, progress=False)
        forecaster.fit_residual_damping(prepared, 2, latents=forecaster.latents["train"])
        fitted.append(forecaster)
    first, second = fitted
    assert first.latents["test"].shape == (len(three.test), 8)
    torch.testing.assert_close(first.latents["test"],
                               first.standardiser.transform(encode_series(first.method,
                                                                          three.test)))
    assert not torch.equal(first.latents["test"], second.latents["test"])
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(first.standardiser.mean, second.standardiser.mean, rtol=0, atol=0)
    torch.testing.assert_close(first.residual_rho, second.residual_rho, rtol=0, atol=0)


def test_a_latent_forecaster_decodes_with_a_buffers_only_ridge_decoder():
    """The closed-form ridge decoder holds buffers only: LatentForecaster.decode still finds
    its device and decodes the raw latents."""
    from geofusion.models.ridge_decoder import fit_ridge_decoder

    forecaster, fields = untrained_forecaster(context=2)
    raw = encode_series(forecaster.method, fields)
    ridge = fit_ridge_decoder(raw, fields, ridge=1.0)
    assert not list(ridge.parameters())
    forecaster.decoder = ridge
    with torch.no_grad():
        expected = ridge(raw[:3])
    # Standardised and back in float32 before decoding.
    torch.testing.assert_close(forecaster.decode(forecaster.standardiser.transform(raw[:3])),
                               expected, rtol=1e-5, atol=1e-5)
