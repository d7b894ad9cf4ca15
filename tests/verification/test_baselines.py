"""Baselines: persistence, day-of-year climatology, damped anomaly persistence, ridge linear
regression and optimal interpolation; every fit reads the training days only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from geofusion.data import PreparedData
from geofusion.data.observations import correlated_noise, correlated_noise_covariance
from geofusion.verification import optimal_interpolation
from geofusion.verification.baselines import (
    _lag_pairs,
    climatology,
    climatology_forecast,
    damped_persistence_source,
    day_of_year,
    fit_damped_persistence,
    persistence_forecast,
    training_climatology,
)
from geofusion.verification.linear_regression import (
    _ridge_cv_errors,
    fit_linear_regression,
    linear_regression_source,
)
from geofusion.verification.optimal_interpolation import (
    chordal_distance_km,
    estimate_background_correlation,
    fit_optimal_interpolation,
)

CHANNELS = ("2m_temperature", "geopotential", "u_component_of_wind", "v_component_of_wind",
            "specific_humidity")


def make_prepared(fields: np.ndarray, times: np.ndarray, n_train: int, lat=None, lon=None
                  ) -> PreparedData:
    """Synthetic PreparedData: the first ``n_train`` days train, the rest validate."""
    c, h, w = fields.shape[1:]
    lat = np.linspace(-90 + 90 / h, 90 - 90 / h, h) if lat is None else lat
    lon = np.arange(w) * 360.0 / w if lon is None else lon
    times = np.asarray(times).astype("datetime64[ns]")
    return PreparedData(train=fields[:n_train], valid=fields[n_train:],
                        train_times=times[:n_train], valid_times=times[n_train:],
                        channels=CHANNELS[:c], mean=np.zeros(c, np.float32),
                        std=np.ones(c, np.float32), lat=lat, lon=lon, level=500,
                        synthetic=True)


def perturb_valid(prepared: PreparedData, seed: int = 99) -> PreparedData:
    """The same training days, completely different validation days."""
    rng = np.random.default_rng(seed)
    valid = (rng.normal(size=prepared.valid.shape) * 5 + 100).astype(np.float32)
    return dataclasses.replace(prepared, valid=valid)


def assert_same_fit(a, b) -> None:
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        else:
            assert x == y, field.name


def seasonal_ar1(days: int, phi: np.ndarray, grid=(4, 6), channels: int = 2, seed: int = 0,
                 start: str = "2001-01-01") -> tuple[np.ndarray, np.ndarray]:
    """Seasonal cycle plus an AR(1) anomaly whose coefficient ``phi`` varies per grid point."""
    rng = np.random.default_rng(seed)
    times = np.arange(start, days, dtype="datetime64[D]")
    doy = day_of_year(times)
    shape = (channels, *grid)
    anomaly = np.empty((days, *shape))
    anomaly[0] = rng.normal(size=shape)
    for t in range(1, days):
        anomaly[t] = phi * anomaly[t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=shape)
    season = 3 * np.sin(2 * np.pi * doy / 365.25)[:, None, None, None]
    return (season + anomaly).astype(np.float32), times


# --------------------------------------------------------------------------------------------
# Persistence and climatology (moved from test_forecasting)
# --------------------------------------------------------------------------------------------

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


def test_training_climatology_ignores_validation_days():
    fields, times = seasonal_ar1(3 * 365, np.full((2, 4, 6), 0.5))
    prepared = make_prepared(fields, times, 2 * 365)
    clim = training_climatology(prepared)
    np.testing.assert_array_equal(clim, climatology(fields[:730], times[:730]))
    np.testing.assert_array_equal(training_climatology(perturb_valid(prepared)), clim)
    with pytest.raises(ValueError, match="PreparedData"):
        training_climatology(fields)


# --------------------------------------------------------------------------------------------
# Damped anomaly persistence
# --------------------------------------------------------------------------------------------

def test_lag_pairs_follow_dates_across_gaps():
    times = np.array(["2001-01-01", "2001-01-02", "2001-01-03", "2001-01-10", "2001-01-11"],
                     dtype="datetime64[D]")
    i, j = _lag_pairs(times, 1)
    assert list(zip(i, j, strict=True)) == [(0, 1), (1, 2), (3, 4)]
    i, j = _lag_pairs(times, 7)
    assert list(zip(i, j, strict=True)) == [(2, 3)]


def test_damped_persistence_recovers_lag_autocorrelation_per_gridpoint():
    phi = np.random.default_rng(1).uniform(0.2, 0.9, size=(2, 4, 6))
    fields, times = seasonal_ar1(6 * 365, phi)
    prepared = make_prepared(fields, times, 5 * 365)
    model = fit_damped_persistence(prepared, max_lead=3)
    assert model.rho.shape == (3, 2, 4, 6)
    # rho_1 = phi for an AR(1) (sampling error ~ (1 - phi^2) / sqrt(1800) < 0.03; the
    # 15-day climatology of 5 years absorbs a little of the anomaly, biasing rho low).
    np.testing.assert_allclose(model.rho[0], phi, atol=0.08)
    assert np.corrcoef(model.rho[1].ravel(), (phi**2).ravel())[0, 1] > 0.9
    # Exactly the least-squares coefficient, against an explicit loop over day pairs.
    clim = climatology(fields[:1825], times[:1825])
    a = fields[:1825] - clim[day_of_year(times[:1825]) - 1]
    k = 2
    num = sum(a[t] * a[t + k] for t in range(1825 - k))
    den = sum(a[t] * a[t] for t in range(1825 - k))
    np.testing.assert_allclose(model.rho[1], num / den, rtol=1e-4)
    # Latitude pooling sums over longitude as well.
    banded = fit_damped_persistence(prepared, max_lead=2, pooling="latitude")
    np.testing.assert_allclose(banded.rho[1], np.broadcast_to(
        (num.sum(-1) / den.sum(-1))[..., None], num.shape), rtol=1e-4)
    assert fit_damped_persistence(prepared, 1, pooling="global").rho[0].std(axis=(1, 2)).max() \
        < 1e-6
    with pytest.raises(ValueError, match="pooling"):
        fit_damped_persistence(prepared, pooling="band")


def test_damped_persistence_forecast_formula_source_and_skill():
    phi = np.full((2, 4, 6), 0.8)
    fields, times = seasonal_ar1(5 * 365, phi, seed=2)
    prepared = make_prepared(fields, times, 4 * 365)
    model = fit_damped_persistence(prepared, max_lead=7)
    valid, vtimes = prepared.valid, prepared.valid_times
    inits = np.arange(0, len(valid) - 7)
    forecast = model.forecast(valid, vtimes, inits, 7)
    assert forecast.shape == (len(inits), 7, 2, 4, 6) and forecast.dtype == np.float32
    # By hand for one init and lead 3.
    i, k = 10, 3
    anomaly = valid[i] - model.climatology[day_of_year(vtimes[i:i + 1])[0] - 1]
    expected = model.climatology[day_of_year(vtimes[i + k:i + k + 1])[0] - 1] \
        + model.rho[k - 1] * anomaly
    np.testing.assert_allclose(forecast[i, k - 1], expected, rtol=1e-5, atol=1e-6)
    source = damped_persistence_source(model, valid, vtimes)
    out = source(inits[:5], 4)
    assert isinstance(out, torch.Tensor)
    # Exact: the source calls the same forecast, whose arithmetic is elementwise
    # (climatology + rho * anomaly, correctly rounded whatever the batch shape or SIMD width).
    np.testing.assert_array_equal(out.numpy(), forecast[:5, :4])
    # Beats both persistence and climatology at lead 3 on the validation days.
    truth = valid[inits + 3]
    mse = lambda f: float(np.mean((f - truth) ** 2))  # noqa: E731
    clim = climatology_forecast(model.climatology, vtimes[inits + 3])
    assert mse(forecast[:, 2]) < 0.9 * min(mse(valid[inits]), mse(clim))
    with pytest.raises(ValueError, match="max_lead"):
        model.forecast(valid, vtimes, inits, 8)


def test_damped_persistence_ignores_validation_days():
    fields, times = seasonal_ar1(3 * 365, np.full((2, 4, 6), 0.6))
    prepared = make_prepared(fields, times, 2 * 365)
    assert_same_fit(fit_damped_persistence(prepared), fit_damped_persistence(
        perturb_valid(prepared)))


# --------------------------------------------------------------------------------------------
# Linear regression
# --------------------------------------------------------------------------------------------

def rotating_patterns(days: int, seed: int = 0, grid=(6, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Anomalies made of 4 fixed spatial patterns whose amplitudes rotate in pairs (a damped
    rotation, 40 degrees a day): predictable by a linear map, not by damping each point."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(4, 2, *grid))
    angle = np.deg2rad(40)
    rot = 0.95 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    amp = np.zeros((days, 4))
    amp[0] = rng.normal(size=4)
    for t in range(1, days):
        amp[t, :2] = rot @ amp[t - 1, :2] + 0.3 * rng.normal(size=2)
        amp[t, 2:] = rot.T @ amp[t - 1, 2:] + 0.3 * rng.normal(size=2)
    fields = np.einsum("tk,kchw->tchw", amp, patterns) + 0.1 * rng.normal(
        size=(days, 2, *grid))
    times = np.arange("2001-01-01", days, dtype="datetime64[D]")
    return fields.astype(np.float32), times


def test_ridge_cv_errors_match_explicit_refits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = x @ rng.normal(size=(5, 6)) + rng.normal(size=(60, 6))
    groups, weights = np.array([0, 0, 0, 1, 1, 1]), rng.uniform(0.5, 1.5, 6)
    alphas = np.array([0.0, 1.0, 30.0])
    days = np.arange(60)
    errors = _ridge_cv_errors(x, y, weights, groups, 2, alphas, 3, days, gap=2)
    expected = np.zeros((3, 2))
    for held in np.array_split(days, 3):
        fit = np.flatnonzero((days < held.min() - 2) | (days > held.max() + 2))
        xm, ym = x[fit].mean(0), y[fit].mean(0)
        for a, alpha in enumerate(alphas):
            xf = x[fit] - xm
            coef = np.linalg.solve(xf.T @ xf + alpha * np.eye(5), xf.T @ (y[fit] - ym))
            err = (y[held] - ym - (x[held] - xm) @ coef) ** 2 * weights
            expected[a] += [err[:, :3].sum(), err[:, 3:].sum()]
    np.testing.assert_allclose(errors, expected, rtol=1e-8)


def test_linear_regression_learns_rotation_and_beats_damped_persistence():
    fields, times = rotating_patterns(900)
    prepared = make_prepared(fields, times, 700)
    model = fit_linear_regression(prepared, max_lead=3, n_components=10)
    assert model.coef.shape == (3, 10, 2 * 6 * 8) and model.alpha.shape == (3, 2)
    comps = model.components.astype(np.float64)
    np.testing.assert_allclose(comps @ comps.T, np.eye(10), atol=1e-4)
    assert model.explained_variance[:4].sum() > 0.9  # 4 patterns carry the variance
    damped = fit_damped_persistence(prepared, max_lead=3)
    valid, vtimes = prepared.valid, prepared.valid_times
    inits = np.arange(0, len(valid) - 3)
    lr = model.forecast(valid, vtimes, inits, 3)
    dp = damped.forecast(valid, vtimes, inits, 3)
    for k in (1, 2):
        truth = valid[inits + k]
        mse_lr = np.mean((lr[:, k - 1] - truth) ** 2)
        mse_dp = np.mean((dp[:, k - 1] - truth) ** 2)
        assert mse_lr < 0.6 * mse_dp
    source = linear_regression_source(model, valid, vtimes)
    # Three start days against all of them: the same formula, but float32 matrix products of
    # different shapes take different vectorised kernels and summation orders, which differ by
    # a few float32 ulps of the O(1) standardised values (1.4e-6 measured): compare to 1e-5.
    np.testing.assert_allclose(source(inits[:3], 2).numpy(), lr[:3, :2], rtol=1e-5, atol=1e-5)


def test_linear_regression_coefficients_are_the_ridge_solution():
    fields, times = rotating_patterns(400, seed=3)
    prepared = make_prepared(fields, times, 300)
    model = fit_linear_regression(prepared, max_lead=2, n_components=6,
                                  alphas=[0.1, 10.0, 1000.0], folds=3)
    clim = climatology(fields[:300], times[:300])
    a = (fields[:300] - clim[day_of_year(times[:300]) - 1]).astype(np.float64)
    x = model.scores(a.astype(np.float32)).astype(np.float64)
    lead = 2
    xi, yj = x[:-lead], a[lead:].reshape(300 - lead, -1)
    xc, yc = xi - xi.mean(0), yj - yj.mean(0)
    for ch in range(2):
        alpha = model.alpha[lead - 1, ch]
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(6), xc.T @ yc)
        cols = slice(ch * 48, (ch + 1) * 48)
        # float32 products: agreement to ~1e-4 of coefficients of order 0.1-0.5
        np.testing.assert_allclose(model.coef[lead - 1][:, cols], coef[:, cols], rtol=2e-3,
                                   atol=5e-4)


def test_linear_regression_ignores_validation_days():
    fields, times = rotating_patterns(400, seed=4)
    prepared = make_prepared(fields, times, 300)
    kwargs = dict(max_lead=2, n_components=5, folds=3)
    assert_same_fit(fit_linear_regression(prepared, **kwargs),
                    fit_linear_regression(perturb_valid(prepared), **kwargs))


# --------------------------------------------------------------------------------------------
# Optimal interpolation
# --------------------------------------------------------------------------------------------

GRID = (8, 16)
LAT8 = np.linspace(-78.75, 78.75, 8)
LON16 = np.arange(16) * 22.5


def gaussian_fields(n: int, std: np.ndarray, length_km: float, seed: int) -> np.ndarray:
    """``(n, H, W)`` zero-mean fields with covariance ``s_p s_q exp(-d^2 / 2L^2)``."""
    d = chordal_distance_km(LAT8, LON16)
    s = std.reshape(-1)
    cov = s[:, None] * s[None, :] * np.exp(-(d**2) / (2 * length_km**2))
    chol = np.linalg.cholesky(cov + 1e-9 * np.eye(len(cov)))
    z = np.random.default_rng(seed).normal(size=(n, len(cov)))
    return (z @ chol.T).reshape(n, *GRID)


@pytest.fixture(scope="module")
def oi_setting():
    """A 4-year training period whose anomalies follow the assumed B (L = 2500 km)."""
    days = 4 * 365 + 40
    std = np.linspace(0.5, 1.5, 8)[:, None] * np.ones(GRID)
    anomalies = np.stack([gaussian_fields(days, std, 2500.0, seed=s) for s in (0, 1)], axis=1)
    times = np.arange("2001-01-01", days, dtype="datetime64[D]")
    season = np.sin(2 * np.pi * day_of_year(times) / 365.25)[:, None, None, None]
    fields = (season + anomalies).astype(np.float32)
    prepared = make_prepared(fields, times, 4 * 365, lat=LAT8, lon=LON16)
    oi = fit_optimal_interpolation(prepared, noise_std=0.3, noise_length=1.0, window=61)
    return prepared, oi, std


def test_oi_estimates_background_statistics_from_training_anomalies(oi_setting):
    prepared, oi, std = oi_setting
    np.testing.assert_allclose(oi.length_scale_km, 2500.0, rtol=0.1)
    np.testing.assert_allclose(oi.correlated_fraction, 1.0, atol=0.05)  # no sub-grid part
    np.testing.assert_allclose(oi.background_std, np.broadcast_to(std, (2, *GRID)), rtol=0.1)
    assert_same_fit(oi, fit_optimal_interpolation(perturb_valid(prepared), 0.3, 1.0,
                                                  window=61))
    np.testing.assert_allclose(oi.observation_covariance(0),
                               correlated_noise_covariance(GRID, 1.0, 0.3).numpy())


def test_oi_without_observations_returns_the_background(oi_setting):
    prepared, oi, _ = oi_setting
    times = prepared.valid_times[:3]
    out = oi.analyse(prepared.valid[:3], np.zeros((3, *GRID), bool), times)
    np.testing.assert_array_equal(out, oi.background(times))


def test_oi_matches_dense_solve_and_beats_the_background(oi_setting):
    prepared, oi, _ = oi_setting
    n = 6
    truth = prepared.valid[:n].astype(np.float64)
    times = prepared.valid_times[:n]
    noise = correlated_noise((n, 2, *GRID), 1.0, 0.3, torch.Generator().manual_seed(0))
    y = truth + noise.numpy()
    rng = np.random.default_rng(0)
    mask = rng.random((n, *GRID)) < 0.5
    mask[1] = mask[0]  # two days share their observed points (one factorisation)
    analysis = oi.analyse(y, mask, times)
    xb = oi.background(times).astype(np.float64)
    for c in range(2):
        b, r = oi.background_covariance(c), oi.observation_covariance(c)
        for t in range(n):
            h = np.eye(GRID[0] * GRID[1])[mask[t].reshape(-1)]
            innov = h @ (y[t, c] - xb[t, c]).reshape(-1)
            gain = b @ h.T @ np.linalg.solve(h @ b @ h.T + h @ r @ h.T, innov)
            np.testing.assert_allclose(analysis[t, c].reshape(-1),
                                       xb[t, c].reshape(-1) + gain, rtol=1e-4, atol=1e-4)
    err_a = np.mean((analysis - truth) ** 2)
    err_b = np.mean((xb - truth) ** 2)
    assert err_a < 0.5 * err_b


def test_oi_reproduces_perfect_dense_observations(oi_setting):
    prepared, oi, _ = oi_setting
    exact = dataclasses.replace(oi, noise_std=1e-4, noise_length=0.0)
    truth = prepared.valid[:2]
    out = exact.analyse(truth, np.ones(GRID, bool), prepared.valid_times[:2])
    np.testing.assert_allclose(out, truth, atol=2e-3)


def test_background_correlation_estimator_finds_length_and_subgrid_share():
    std = np.ones(GRID)
    smooth = gaussian_fields(2000, std, 1500.0, seed=5)
    white = np.random.default_rng(6).normal(size=smooth.shape)
    # 70 % of the variance Gaussian-correlated, 30 % uncorrelated between grid points.
    fields = np.sqrt(0.7) * smooth + np.sqrt(0.3) * white
    length, share = estimate_background_correlation(fields, LAT8, LON16)
    assert length == pytest.approx(1500.0, rel=0.1)
    assert share == pytest.approx(0.7, abs=0.05)
    with pytest.raises(ValueError, match="N, H, W"):
        estimate_background_correlation(fields[0], LAT8, LON16)
    with pytest.raises(ValueError, match="noise_std"):
        fit_optimal_interpolation(make_prepared(fields[:, None], np.arange(
            "2001-01-01", 2000, dtype="datetime64[D]"), 1000, LAT8, LON16), -1.0, 1.0)


def test_oi_keeps_subgrid_signal_of_dense_observations():
    # Anomalies with 30 % of their variance uncorrelated between grid points, observed
    # everywhere with smooth noise of std 0.1: the analysis must be at least as good as the
    # observations. With a pure Gaussian B (c = 1) it smooths the sub-grid part away.
    days = 3 * 365
    smooth = gaussian_fields(days, np.ones(GRID), 2000.0, seed=7)
    white = np.random.default_rng(8).normal(size=smooth.shape)
    anomalies = (np.sqrt(0.7) * smooth + np.sqrt(0.3) * white)[:, None]
    times = np.arange("2001-01-01", days, dtype="datetime64[D]")
    prepared = make_prepared(anomalies.astype(np.float32), times, 2 * 365, LAT8, LON16)
    oi = fit_optimal_interpolation(prepared, noise_std=0.1, noise_length=1.0, window=61)
    truth = prepared.valid[:8].astype(np.float64)
    noise = correlated_noise(truth.shape, 1.0, 0.1, torch.Generator().manual_seed(1)).numpy()
    y = truth + noise
    rmse = lambda x: float(np.sqrt(np.mean((x - truth) ** 2)))  # noqa: E731
    analysis = oi.analyse(y, np.ones(GRID, bool), prepared.valid_times[:8])
    assert rmse(analysis) <= rmse(y)
    gaussian_only = dataclasses.replace(oi, correlated_fraction=np.ones(1))
    smoothed = gaussian_only.analyse(y, np.ones(GRID, bool), prepared.valid_times[:8])
    assert rmse(smoothed) > 1.5 * rmse(analysis)


def test_oi_builds_its_covariances_once_and_never_serves_stale_ones(oi_setting, monkeypatch):
    prepared, oi, _ = oi_setting
    mask = np.random.default_rng(3).random((3, *GRID)) < 0.6
    y, times = prepared.valid[:3], prepared.valid_times[:3]
    optimal_interpolation._COVARIANCES.clear()
    first = oi.analyse(y, mask, times)
    built = []
    real = optimal_interpolation.chordal_distance_km
    monkeypatch.setattr(optimal_interpolation, "chordal_distance_km",
                        lambda *a: built.append(1) or real(*a))
    noisier = dataclasses.replace(oi, noise_std=0.6)  # the same B, another R: B not rebuilt
    assert not np.array_equal(noisier.analyse(y, mask, times), first)
    np.testing.assert_array_equal(oi.analyse(y, mask, times), first)
    assert built == []
    # Other statistics (a refit) get their own B, and the result of a cold cache.
    wider = dataclasses.replace(oi, length_scale_km=oi.length_scale_km * 2)
    warm = wider.analyse(y, mask, times)
    assert built == [1]
    optimal_interpolation._COVARIANCES.clear()
    np.testing.assert_array_equal(warm, wider.analyse(y, mask, times))
    assert not np.allclose(warm, first)
