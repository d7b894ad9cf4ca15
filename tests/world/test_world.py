"""The simulated world's parts: spherical transforms, dynamical core, regridding, geography,
determinism. (Calibration against ERA5 statistics is in tests/test_synthetic.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch_harmonics as th
import xarray as xr

from geofusion.experiments.world_calibration import daily_fields
from geofusion.grids import (
    ConservativeRegridder,
    equiangular_lat_edges,
    normalised_overlap_weights,
    periodic_overlap_weights,
)
from geofusion.world.atmosphere import (
    EARTH_RADIUS,
    OMEGA,
    WorldParameters,
    _Model,
    balanced_fields,
    jet_profile,
    saturation_specific_humidity,
    simulate,
    simulate_twins,
)
from geofusion.world.geography import land_fraction, orography
from geofusion.world.spherical import GaussianGrid
from geofusion.world.synthetic import grid


@pytest.fixture(scope="module")
def g():
    return GaussianGrid(32, 64, truncation=21)


def _random_spec(g, n, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n, g.L, g.M)) + 1j * rng.standard_normal((n, g.L, g.M))
    c[..., 0] = c[..., 0].real
    return c * g.valid[:, :, 0, 0].T


def test_transforms_match_torch_harmonics(g):
    c = _random_spec(g, 3)
    spec = g.from_complex(c)
    ref_inv = th.InverseRealSHT(32, 64, grid="legendre-gauss", csphase=False).double()
    ref_vec = th.InverseRealVectorSHT(32, 64, grid="legendre-gauss", csphase=False).double()
    ref_fwd = th.RealSHT(32, 64, grid="legendre-gauss", csphase=False).double()
    full = g.to_torch_harmonics(c)
    expected = ref_inv(full).numpy()
    np.testing.assert_allclose(g.grid_to_latlon(g.synthesis(spec)), expected, atol=1e-10)
    # torch-harmonics' inverse vector transform of a spheroidal potential is its gradient
    # on the unit sphere: (d/dx, d/dy).
    grad = ref_vec(torch.stack([torch.zeros_like(full), full], dim=-3)).numpy() / g.radius
    val, dx, dy = g.fields(spec)
    np.testing.assert_allclose(g.grid_to_latlon(dx), grad[:, 0], atol=1e-16)
    np.testing.assert_allclose(g.grid_to_latlon(dy), grad[:, 1], atol=1e-16)
    np.testing.assert_allclose(g.grid_to_latlon(val), expected, atol=1e-10)
    coeffs = ref_fwd(torch.from_numpy(expected)).numpy()[:, : g.L, : g.M]
    np.testing.assert_allclose(g.to_complex(g.analysis(g.synthesis(spec))), coeffs, atol=1e-10)
    np.testing.assert_allclose(g.to_complex(g.analysis(g.synthesis(spec))), c, atol=1e-10)


def test_derivatives_of_known_fields(g):
    lat = np.deg2rad(g.lat)[None, :]
    lon = g.lon_rad[:, None]
    field = np.cos(lat) * np.cos(lon) + np.sin(lat)  # (lon, lat)
    val, dx, dy = g.fields(g.analysis(field[..., None]))
    a = g.radius
    np.testing.assert_allclose(val[..., 0], field, atol=1e-12)
    np.testing.assert_allclose(dx[..., 0] * a, -np.sin(lon) * np.ones_like(lat), atol=1e-10)
    np.testing.assert_allclose(dy[..., 0] * a, -np.sin(lat) * np.cos(lon) + np.cos(lat),
                               atol=1e-10)
    lap = g.laplacian_eigenvalues()
    np.testing.assert_allclose(lap[1, 1, 0, 0] * a**2, -2.0)  # l = 1
    assert lap[0, 0, 0, 0] == 0


def test_rossby_haurwitz_wave_moves_at_its_exact_speed():
    """Unforced, inviscid core: the wavenumber-4 Rossby-Haurwitz wave is an exact solution
    that keeps its shape and moves east at nu = (R(3+R)w - 2 Omega) / ((1+R)(2+R))."""
    p = WorldParameters(deformation_radius_km=1e9, steps_per_window=4, hyperdiffusion_hours=1e9)
    m = _Model(p, 0)
    g = m.g
    phi, lam = np.deg2rad(g.lat)[None, :], g.lon_rad[:, None]
    a, w, r = EARTH_RADIUS, 7.848e-6, 4

    def psi_at(t):
        nu = (r * (3 + r) * w - 2 * OMEGA) / ((1 + r) * (2 + r))
        return (-a * a * w * np.sin(phi)
                + a * a * w * np.cos(phi) ** r * np.sin(phi) * np.cos(r * (lam - nu * t)))

    ps = g.analysis(psi_at(0.0)[..., None])
    m.Q = (g.laplacian_eigenvalues() * ps - m.kappa * ps).astype(np.float32)
    # Background PV f only (no orography): grad f = (0, 2 Omega cos(lat) / a).
    m.h["bg_dx"] = np.zeros_like(m.h["f"])
    m.h["bg_dy"] = np.broadcast_to(2 * OMEGA * np.cos(phi) / a, m.f.shape).astype(np.float32)
    zero = np.zeros_like(m.h["f"])
    ctx = {"u_chi": zero, "v_chi": zero, "div": zero, "linear": 0 * m.Q}
    m.h["rate"] = np.zeros_like(m.h["rate"])
    dt, seconds = m.dt, 2 * 86400.0
    for _ in range(int(seconds / dt)):
        q = m.Q
        k1 = m.tendency(q, ctx)
        k2 = m.tendency(q + 0.5 * dt * k1, ctx)
        k3 = m.tendency(q + 0.5 * dt * k2, ctx)
        k4 = m.tendency(q + dt * k3, ctx)
        m.Q = q + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    got = g.synthesis(m.q_to_psi * m.Q)[..., 0]
    scale = np.abs(psi_at(0.0)).max()
    # float32 hot path: rounding ~1e-7 per step.
    assert np.abs(got - psi_at(seconds)).max() / scale < 1e-4
    assert np.abs(psi_at(0.0) - psi_at(seconds)).max() / scale > 0.3  # it did move


def test_conservative_regridding():
    # Hand-worked: source cells [1, .5] and [.5, -1] in sin(lat); targets [1, 0] and [0, -1].
    w = normalised_overlap_weights(np.array([1.0, 0.5, -1.0]), np.array([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(w[0], [0.5, 0.5])  # target [1, 0]: half in each source cell
    np.testing.assert_allclose(w[1], [0.0, 1.0])
    np.testing.assert_allclose(periodic_overlap_weights(np.arange(4) * 90.0, [0.0, 180.0]),
                               [[0.5, 0.25, 0.0, 0.25], [0.0, 0.25, 0.5, 0.25]])
    g = GaussianGrid(32, 64, 21)
    lat, lon = grid(32, 64)
    rg = ConservativeRegridder(g.cell_bounds_sin_lat(), g.lon, equiangular_lat_edges(lat), lon)
    np.testing.assert_allclose(rg(np.full((64, 32), 7.0)), 7.0, atol=1e-12)
    rng = np.random.default_rng(0)
    field = rng.standard_normal((64, 32))
    src_mean = (field * g.quad_weights[None]).sum() / g.quad_weights.sum()
    dst_w = np.diff(equiangular_lat_edges(lat))
    out = rg(field)
    np.testing.assert_allclose((out * dst_w[None]).sum() / dst_w.sum(), src_mean, atol=1e-12)
    smooth = np.sin(np.deg2rad(g.lat))[None, :] * np.ones((64, 1))
    np.testing.assert_allclose(rg(smooth), np.sin(np.deg2rad(lat))[None] * np.ones((64, 1)),
                               atol=0.03)


def test_land_mask_and_orography_at_real_places():
    lat, lon = grid(32, 64)
    land = land_fraction(lat, lon)  # (lat, lon)
    w = np.cos(np.deg2rad(lat))[:, None]
    share = float((land * w).sum() / (w.sum() * len(lon)))
    assert 0.26 < share < 0.32  # Earth: 29 % land
    at = lambda la, lo: land[np.argmin(np.abs(lat - la)), np.argmin(np.abs(lon - lo))]  # noqa: E731
    assert at(22, 12) > 0.9 and at(-80, 100) > 0.9 and at(60, 100) > 0.9  # Sahara, Antarctica
    assert at(0, 200) < 0.05 and at(-40, 320) < 0.05 and at(30, 320) < 0.05  # Pacific, Atlantic
    h = orography(lat, lon)
    assert h[np.argmin(np.abs(lat - 33)), np.argmin(np.abs(lon - 87))] > 3000  # Tibet
    assert h[np.argmin(np.abs(lat + 80)), 10] > 2000  # Antarctic plateau
    assert np.abs(h[np.abs(lat) < 30][:, np.abs(lon - 200) < 20]).max() < 50  # open Pacific


def test_jet_and_saturation_humidity():
    lat = np.linspace(-90, 90, 181)
    p = WorldParameters()
    boreal_winter, boreal_summer = jet_profile(lat, -1.0, p), jet_profile(lat, 1.0, p)
    north = lat > 0
    assert boreal_winter[north].max() > boreal_summer[north].max() + 5
    assert lat[north][np.argmax(boreal_winter[north])] < lat[north][np.argmax(boreal_summer[north])]
    assert abs(boreal_winter[0]) < 1e-6 and abs(boreal_winter[-1]) < 1e-6
    # Clausius-Clapeyron: ~7 %/K near 288 K, and 0.622 e_s / p at 20 C (e_s = 23.4 hPa).
    q = saturation_specific_humidity(np.array([288.0, 289.0, 293.15]))
    assert 0.06 < q[1] / q[0] - 1 < 0.08
    np.testing.assert_allclose(q[2], 0.622 * 23.37 / 1013.25, rtol=0.01)


def test_simulation_is_deterministic_and_prefix_consistent():
    p = WorldParameters(spinup_days=5)
    short = simulate(pd.date_range("2000-01-01", periods=8, freq="6h"), seed=3, params=p)
    long = simulate(pd.date_range("2000-01-01", periods=16, freq="6h"), seed=3, params=p)
    other = simulate(pd.date_range("2000-01-01", periods=8, freq="6h"), seed=4, params=p)
    for name in ("psi", "chi", "t2m", "q"):
        np.testing.assert_array_equal(getattr(short, name), getattr(long, name)[:8])
        assert not np.allclose(getattr(short, name), getattr(other, name))
    daily = simulate(pd.date_range("2000-01-01", periods=4, freq="1D"), seed=3, params=p)
    np.testing.assert_array_equal(daily.psi, long.psi[::4])
    with pytest.raises(ValueError, match="multiple of 6 hours"):
        simulate(pd.date_range("2000-01-01", periods=4, freq="4h"), params=p)


def test_twins_share_the_spinup_yet_equal_two_independent_runs():
    """simulate_twins integrates the spin-up once: the pair must be exactly the two runs
    simulate() gives, and skipping the tracers must leave the flow unchanged."""
    p = WorldParameters(spinup_days=2)
    times = pd.date_range("2000-01-01", periods=6, freq="6h")
    control, perturbed = simulate_twins(times, seed=5, params=p, perturbation=1e-7)
    full = simulate(times, seed=5, params=p)
    alone = simulate(times, seed=5, params=p, perturbation=1e-7, tracers=False)
    for name in ("psi", "chi", "mjo_phase", "enso"):
        np.testing.assert_array_equal(getattr(control, name), getattr(full, name))
        np.testing.assert_array_equal(getattr(perturbed, name), getattr(alone, name))
    assert np.abs(perturbed.psi - control.psi).max() > 0
    assert np.isnan(alone.t2m).all() and np.isfinite(full.t2m).all()


def test_balanced_geopotential_is_geostrophic_in_midlatitudes():
    run = simulate(pd.date_range("2000-01-01", periods=4, freq="6h"),
                   params=WorldParameters(spinup_days=20))
    f = balanced_fields(run)
    mid = np.abs(run.grid.lat) > 30
    # Linear balance => the geostrophic wind of Phi' is close to the model's own wind.
    for model, out in (("u_model", "u"), ("v_model", "v")):
        a, b = f[model][..., mid].ravel(), f[out][..., mid].ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.9
    w = run.grid.quad_weights / run.grid.quad_weights.sum()
    area_mean = (f["phi"] * w[None, None, :]).sum(axis=2).mean()
    assert abs(float(area_mean)) < 1e-6 * float(f["phi"].std()) and float(f["phi"].std()) > 1000


def test_daily_fields_reshape_path_equals_xarray_resampling():
    """Whole 6-hourly days are averaged by a reshape; the result must be xarray's resample,
    and a series not starting at 00 UTC must fall back to resampling."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2000-02-27", periods=4 * 5, freq="6h")  # across 29 February
    lat, lon = np.array([-30.0, 30.0]), np.array([0.0, 120.0, 240.0])
    ds = xr.Dataset(
        {"2m_temperature": (("time", "longitude", "latitude"), rng.standard_normal((20, 3, 2))),
         "geopotential": (("time", "level", "longitude", "latitude"),
                          rng.standard_normal((20, 1, 3, 2)))},
        coords={"time": times, "level": [500], "longitude": lon, "latitude": lat})
    for part in (ds, ds.isel(time=slice(1, None))):
        got = daily_fields(part)
        for name in ("2m_temperature", "geopotential"):
            da = part[name].isel(level=0) if "level" in part[name].dims else part[name]
            ref = da.resample(time="1D").mean().transpose("time", "latitude", "longitude")
            np.testing.assert_allclose(got[name], ref.values, rtol=1e-12)
            np.testing.assert_array_equal(got["times"], ref["time"].values)
    assert daily_fields(ds)["2m_temperature"].shape == (5, 2, 3)
