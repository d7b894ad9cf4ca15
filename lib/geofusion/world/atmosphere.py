r"""The simulated atmosphere behind :mod:`geofusion.world.synthetic`: a forced-dissipative
equivalent-barotropic model on the sphere with advected temperature and moisture.

Why this model: the experiments need weather that *emerges* (nonlinear, chaotic, predictable
for days), seasons, land and sea, a tropical intraseasonal mode and year-to-year variability,
for a few CPU seconds per simulated year. A single-level equivalent-barotropic vorticity model
(the 500 hPa "steering level") is the cheapest dynamics with all of that: no gravity waves (so
hour-long steps), Rossby waves, barotropic instability, topographic forcing. It is not a
general circulation model: there is no baroclinic instability (a stochastic vorticity source in
the storm tracks stands in for it), no vertical structure beyond a fixed profile, no radiation
or clouds.

**Dynamics** (T21 spectral on a 32 x 64 Gauss-Legendre grid, transforms from
:mod:`geofusion.world.spherical`). Prognostic: the relative potential vorticity
:math:`Q = \zeta - \psi/L_R^2` (:math:`\zeta = \nabla^2\psi`), with

.. math::
   \partial_t Q = -(\mathbf v_\psi + \mathbf v_\chi)\cdot\nabla\big(Q + f + f\,\gamma h/H\big)
   - (\zeta + f) D - \frac{\zeta - \zeta_{eq}(\varphi, t)}{\tau_R} + F_s - \nu\nabla^8 Q ,

where :math:`\mathbf v_\psi = \mathbf k\times\nabla\psi` is the rotational wind,
:math:`L_R` an equivalent-barotropic deformation radius (slows the unrealistically fast
retrogression of planetary waves in a purely barotropic model), :math:`h` the orography
(:mod:`geofusion.world.geography`) with scale height :math:`H` and a coupling :math:`\gamma < 1`
(the flow at the surface is weaker than at the steering level), :math:`D` a prescribed
upper-level divergence from tropical convection (MJO-like and ENSO-like heating, below) with its
divergent wind :math:`\mathbf v_\chi = \nabla\nabla^{-2}D`, so :math:`-(\zeta+f)D -
\mathbf v_\chi\cdot\nabla(\zeta+f)` is the Rossby wave source of Sardeshmukh & Hoskins (1988)
that sends wave trains from the tropics to mid-latitudes, :math:`\zeta_{eq}` the vorticity of a
seasonally varying zonal jet (:func:`jet_profile`), :math:`\tau_R` a relaxation (diabatic
forcing + surface drag: 2.5 days for the zonal mean and planetary scales, degrees <= 6, whose slow
wandering would otherwise dominate the variance; 30 days for synoptic eddies, so they stay
chaotic), :math:`F_s` a red-noise vorticity source confined to the
mid-latitude storm tracks (standing in for baroclinic eddy generation, stronger in winter), and
:math:`\nu\nabla^8` a scale-selective hyperdiffusion (e-folding time ``hyperdiffusion_hours``
at the truncation degree). Time stepping: classical RK4 with the forcings frozen over each
6-hour window, hyperdiffusion applied exactly (integrating factor).

**Tropical modes.** MJO-like: :math:`D_M = A_M\,a(t)\cos(\lambda - \theta(t))\,e^{-(\varphi/
12^\circ)^2}\,w(\lambda)` moving east with a period :math:`2\pi/\dot\theta` wandering in
30-60 days (red noise), an amplitude :math:`a(t)` of slowly varying red noise and a weight
:math:`w(\lambda)` favouring the Indo-Pacific warm pool. ENSO-like: an index :math:`N(t)` from
a damped stochastic oscillator (period ~4 years, damping 1.5 years: a broad 2-7 year peak),
shifting convection into the central Pacific (divergence there, convergence over the Maritime
Continent) and warming the equatorial central-eastern Pacific sea surface.

**Surface temperature** :math:`T` (2 m) and **moisture** :math:`q` (near-surface specific
humidity) are tracers on the Gauss grid, advected semi-Lagrangian (departure points on the
sphere, bilinear interpolation, so no over- and undershoots) by ``surface_wind_factor`` times
the steering-level wind, every 6 hours, then

.. math::
   T \leftarrow T_{eq} + (T - T_{eq})\,e^{-\Delta t/\tau_T},\qquad
   q \leftarrow \min\big(q + (r_{src}\,q_s(T) - q)(1 - e^{-\Delta t/\tau_q}),\;
   r_{max}\,q_s(T)\big),

with the equilibrium :math:`T_{eq}` of :func:`equilibrium_temperature` (latitude, season, land,
height, sea-surface anomalies), :math:`\tau_T` shorter over land, the moisture source
:math:`r_{src}` relative humidity and rate largest over warm oceans (evaporation), drying over
land, and condensation where :math:`q` exceeds :math:`r_{max}` of saturation
:math:`q_s(T) = 0.622\,e_s(T)/p_0` (Magnus :math:`e_s`, Clausius-Clapeyron).

Everything is float64 numpy; randomness comes from ``numpy.random.Generator`` streams spawned
from the seed, one per process and drawn in time order, so a run is a deterministic function of
``(seed, start, spin-up)`` and a longer run starts exactly like a shorter one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from geofusion.world.geography import land_fraction, orography
from geofusion.world.spherical import GaussianGrid

__all__ = ["WorldParameters", "WorldRun", "simulate", "simulate_twins", "jet_profile",
           "equilibrium_temperature", "saturation_specific_humidity", "season_index",
           "balanced_fields", "EARTH_RADIUS", "OMEGA", "P0"]

EARTH_RADIUS = 6.371e6  # m
OMEGA = 7.292e-5  # s^-1
P0 = 1013.25  # hPa
DAY = 86400.0  # s
WINDOW_HOURS = 6.0  # forcing window and output step


@dataclass(frozen=True)
class WorldParameters:
    """Every tunable number of the world (calibrated against ERA5 statistics, see issue 9).

    Units are in the names: ``_days``, ``_hours``, ``_km``, ``_m``, ``_ms`` (m/s), ``_k`` (K).
    """

    nlat: int = 32
    nlon: int = 64
    truncation: int = 21
    steps_per_window: int = 2  # RK4 steps per 6 h: dt = 3 h
    spinup_days: int = 60
    deformation_radius_km: float = 1500.0
    scale_height_m: float = 8000.0
    orography_coupling: float = 0.35
    relaxation_days: float = 30.0  # synoptic eddies
    planetary_relaxation_days: float = 2.5  # zonal mean (m = 0) and degrees <= planetary_degree
    planetary_degree: int = 6
    hyperdiffusion_hours: float = 96.0
    # Zonal jet (per hemisphere: summer value, plus winter increment).
    jet_speed_ms: float = 20.0
    jet_winter_extra_ms: float = 10.0
    jet_latitude_deg: float = 45.0
    jet_winter_shift_deg: float = 7.0
    jet_width_deg: float = 8.0
    tropical_easterly_ms: float = 5.0
    # Storm-track stochastic vorticity source.
    storm_forcing: float = 2.3e-10  # s^-2, rms of the band-passed source before the envelope
    storm_degrees: tuple[int, int] = (12, 21)
    storm_correlation_days: float = 0.5
    storm_latitude_deg: float = 45.0
    storm_width_deg: float = 15.0
    # Tropical divergence (s^-1).
    mjo_divergence: float = 2.5e-6
    mjo_period_days: tuple[float, float] = (30.0, 60.0)
    enso_divergence: float = 2.0e-6
    enso_period_years: float = 4.0
    enso_damping_years: float = 1.5
    # Surface temperature.
    surface_wind_factor: float = 0.3
    t_relax_land_days: float = 2.0
    t_relax_ocean_days: float = 2.0
    seasonal_amp_ocean_k: float = 7.5
    seasonal_amp_land_k: float = 36.0
    seasonal_amp_seaice_k: float = 14.0
    ocean_lag_days: float = 25.0
    lapse_rate_k_per_m: float = 0.0065
    enso_sst_k: float = 1.5
    sst_noise_k: float = 2.0
    sst_noise_days: float = 120.0
    # Moisture.
    q_source_rh_ocean: float = 0.85
    q_source_rh_land: float = 0.45
    q_tau_ocean_days: float = 1.5
    q_tau_land_days: float = 6.0
    q_max_rh: float = 0.97

    def with_(self, **changes: object) -> WorldParameters:
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return replace(self, **changes)


def season_index(day_of_year: np.ndarray, lag_days: float = 0.0) -> np.ndarray:
    """:math:`S = -\\cos(2\\pi (d - 20 - lag) / 365.25)`: +1 in late July (boreal summer)."""
    return -np.cos(2 * np.pi * (np.asarray(day_of_year, np.float64) - 20.0 - lag_days) / 365.25)


def jet_profile(lat_deg: np.ndarray, season: float, p: WorldParameters) -> np.ndarray:
    """Zonal wind (m/s) the flow relaxes to: one jet per hemisphere, stronger and further
    equatorward in winter, weak easterlies in the tropics. ``season`` is :func:`season_index`."""
    lat = np.asarray(lat_deg, np.float64)
    u = -p.tropical_easterly_ms * np.exp(-((lat / 12.0) ** 2))
    for sign, winter in ((1.0, 0.5 * (1 - season)), (-1.0, 0.5 * (1 + season))):
        centre = sign * (p.jet_latitude_deg - p.jet_winter_shift_deg * winter)
        speed = p.jet_speed_ms + p.jet_winter_extra_ms * winter
        u = u + speed * np.exp(-(((lat - centre) / p.jet_width_deg) ** 2))
    # No flow across the poles: taper to zero there.
    return u * np.cos(np.deg2rad(lat)) ** 0.5


def saturation_specific_humidity(t: np.ndarray, p_hpa: float = P0) -> np.ndarray:
    """:math:`q_s = 0.622\\,e_s/p` with Magnus :math:`e_s = 6.112\\exp(17.67(T-273.15)/(T-29.65))`
    hPa (kg/kg; ``t`` in K)."""
    e_s = 6.112 * np.exp(17.67 * (t - 273.15) / (t - 29.65))
    return 0.622 * e_s / p_hpa


def _bump(lat: np.ndarray, lon: np.ndarray, clat: float, clon: float, wlat: float,
          wlon: float) -> np.ndarray:
    dlon = np.mod(lon - clon + 180.0, 360.0) - 180.0
    return np.exp(-(((lat - clat) / wlat) ** 2) - (dlon / wlon) ** 2)


# Climatological sea-surface features (K; centre lat, lon E, half-widths lat, lon): the
# equatorial cold tongues, the warm pool, the North Atlantic drift, the cold eastern-boundary
# currents (California, Humboldt, Benguela, Canary). They make 2 m temperature vary along
# latitude circles over the ocean as in ERA5, not only between land and sea.
SEA_FEATURES = (
    (-4.0, 0.0, 255.0, 6.0, 30.0),
    (-2.0, 0.0, 350.0, 5.0, 15.0),
    (1.5, 0.0, 140.0, 12.0, 40.0),
    (8.0, 58.0, 340.0, 10.0, 25.0),
    (-4.0, 30.0, 235.0, 8.0, 12.0),
    (-4.0, -20.0, 285.0, 8.0, 10.0),
    (-4.0, -20.0, 10.0, 8.0, 10.0),
    (-2.0, 25.0, 340.0, 8.0, 10.0),
)


def sea_surface_pattern(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Sum of :data:`SEA_FEATURES` (K) on the broadcast ``lat_deg`` x ``lon_deg``, plus
    :math:`8\\exp(-((|\\varphi| - 60^\\circ)/12^\\circ)^2)` K: the open subpolar oceans, warmed by
    ocean heat transport, are much warmer than land at the same latitude."""
    subpolar = 8.0 * np.exp(-(((np.abs(lat_deg) - 60.0) / 12.0) ** 2))
    return subpolar + sum(amp * _bump(lat_deg, lon_deg, clat, clon, wl, wn)
                          for amp, clat, clon, wl, wn in SEA_FEATURES)


def land_offset(lat_deg: np.ndarray) -> np.ndarray:
    """Annual-mean land excess (K): +4 K over the subtropical deserts (|lat| ~ 25), -6 K over
    the continental interiors of high northern latitudes (lat ~ 62; continentality; Antarctica
    is cold through its height already)."""
    lat = np.asarray(lat_deg, np.float64)
    deserts = 4.0 * np.exp(-(((np.abs(lat) - 25.0) / 10.0) ** 2))
    return deserts - 6.0 * np.exp(-(((lat - 62.0) / 12.0) ** 2)) * (lat > 0)


def equilibrium_temperature(lat_deg: np.ndarray, land: np.ndarray, height_m: np.ndarray,
                            day_of_year: float, sst_anomaly: np.ndarray,
                            p: WorldParameters, sea_pattern: np.ndarray | float = 0.0,
                            land_offset: np.ndarray | float = 0.0) -> np.ndarray:
    """2 m temperature (K) the surface relaxes to (``lat_deg`` broadcasts against ``land``):

    :math:`T_{eq} = 300 - 45\\sin^2\\varphi - \\Gamma h
    + \\sin\\varphi\\,[(A_o + A_i\\sin^8\\varphi)(1-l)\\,S(d - lag)
    + A_l(1 - 0.55\\sin^8\\varphi)\\,l\\,S(d)] + l\\,T_{land} + (1 - l)(T_{sea} + T'_{sst})`
    with land fraction :math:`l`: a larger seasonal cycle over land
    and over polar (sea-ice) ocean, lagging over the ocean, opposite in the two hemispheres
    (through :math:`\\sin\\varphi`), colder on high ground (lapse rate :math:`\\Gamma`), warm
    subtropical deserts (``land_offset``), climatological sea-surface features (``sea_pattern``,
    :func:`sea_surface_pattern`) and sea-surface anomalies ``sst_anomaly`` (ENSO, red noise).
    """
    phi = np.deg2rad(np.asarray(lat_deg, np.float64))
    s_land = season_index(day_of_year)
    s_ocean = season_index(day_of_year, p.ocean_lag_days)
    # Over land the cycle weakens towards the poles (factor 0.45 there: the Antarctic plateau
    # swings ~30 K, Siberia ~40 K peak to peak); over the polar ocean sea ice makes it large.
    sin8 = np.sin(phi) ** 8
    land_amp = p.seasonal_amp_land_k * (1 - 0.55 * sin8)
    ocean_amp = p.seasonal_amp_ocean_k + p.seasonal_amp_seaice_k * sin8
    seasonal = np.sin(phi) * (ocean_amp * (1 - land) * s_ocean + land_amp * land * s_land)
    base = 300.0 - 45.0 * np.sin(phi) ** 2 - p.lapse_rate_k_per_m * height_m
    return base + seasonal + land * land_offset + (1 - land) * (sea_pattern + sst_anomaly)


@dataclass
class WorldRun:
    """Output of :func:`simulate` on the model's Gauss grid, one entry per output time.

    ``psi`` and ``chi``: streamfunction and velocity potential coefficients ``(T, M, L, 2)``
    (m^2/s, :class:`GaussianGrid` layout); ``t2m`` (K) and ``q`` (kg/kg) ``(T, nlon, nlat)``
    (rows north to south);
    ``mjo_phase`` (rad), ``enso`` (index) ``(T,)``; ``grid`` the :class:`GaussianGrid`.
    """

    times: pd.DatetimeIndex
    psi: np.ndarray
    chi: np.ndarray
    t2m: np.ndarray
    q: np.ndarray
    mjo_phase: np.ndarray
    enso: np.ndarray
    grid: GaussianGrid
    params: WorldParameters
    land: np.ndarray = field(repr=False, default=None)


class _Forcing:
    """Seeded forcing processes, each from its own generator, drawn window by window."""

    def __init__(self, seed: int, grid: GaussianGrid, p: WorldParameters) -> None:
        ss = np.random.SeedSequence([int(seed), 9])
        g_storm, g_mjo, g_enso, g_sst, g_init = (np.random.default_rng(s) for s in ss.spawn(5))
        self.g_storm, self.g_mjo, self.g_enso, self.g_sst, self.g_init = (
            g_storm, g_mjo, g_enso, g_sst, g_init)
        self.grid, self.p = grid, p
        win_days = WINDOW_HOURS / 24.0
        self.win_days = win_days
        lo, hi = p.storm_degrees
        self.band = grid.valid & (grid.degree >= lo) & (grid.degree <= hi)
        n_band = int(self.band.sum())
        self.rho_storm = float(np.exp(-win_days / p.storm_correlation_days))
        # Normalise so the band-passed source has rms ``storm_forcing`` on the sphere.
        self._storm_scale = p.storm_forcing * np.sqrt(4 * np.pi / max(n_band, 1))
        self.storm = self._storm_noise() * self._storm_scale
        # MJO: phase, period and amplitude red noises.
        self.mjo_phase = float(g_mjo.uniform(0, 2 * np.pi))
        self.mjo_period_state, self.mjo_amp_state = g_mjo.standard_normal(2)
        # ENSO: damped oscillator (2-vector rotated and damped each window).
        omega = 2 * np.pi * win_days / (365.25 * p.enso_period_years)
        rho = np.exp(-win_days / (365.25 * p.enso_damping_years))
        self.enso_matrix = rho * np.array([[np.cos(omega), -np.sin(omega)],
                                           [np.sin(omega), np.cos(omega)]])
        self.enso_noise = np.sqrt(1 - rho**2)  # unit stationary variance per component
        self.enso = g_enso.standard_normal(2)
        # Sea-surface anomaly red noise: large-scale (degrees 1-6) field.
        self.sst_band = grid.valid & (grid.degree >= 1) & (grid.degree <= 6)
        self.rho_sst = float(np.exp(-win_days / p.sst_noise_days))
        self.sst_coef = self._band_noise(self.g_sst, self.sst_band)
        sst_grid = grid.synthesis(self.sst_coef)[..., 0]
        self._sst_norm = 1.0 / max(float(np.sqrt(np.mean(sst_grid**2))), 1e-12)

    def _band_noise(self, gen: np.random.Generator, band: np.ndarray) -> np.ndarray:
        """Unit complex white noise on the coefficients in ``band``, layout ``(M, L, 2, 1)``."""
        c = gen.standard_normal((self.grid.M, self.grid.L, 2, 1))
        c[0, :, 0] *= np.sqrt(2)  # m = 0 coefficients are real
        c[0, :, 1] = 0.0
        return c * band

    def _storm_noise(self) -> np.ndarray:
        return self._band_noise(self.g_storm, self.band)

    def advance(self) -> None:
        """Step every process by one 6-hour window."""
        p = self.p
        r = self.rho_storm
        self.storm = r * self.storm + np.sqrt(1 - r * r) * self._storm_scale * self._storm_noise()
        g = self.g_mjo
        rho_slow = np.exp(-self.win_days / 90.0)
        self.mjo_period_state = (rho_slow * self.mjo_period_state
                                 + np.sqrt(1 - rho_slow**2) * g.standard_normal())
        rho_amp = np.exp(-self.win_days / 40.0)
        self.mjo_amp_state = (rho_amp * self.mjo_amp_state
                              + np.sqrt(1 - rho_amp**2) * g.standard_normal())
        lo, hi = p.mjo_period_days
        period = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.tanh(self.mjo_period_state)
        self.mjo_phase = float((self.mjo_phase + 2 * np.pi * self.win_days / period)
                               % (2 * np.pi))
        self.enso = self.enso_matrix @ self.enso + self.enso_noise * self.g_enso.standard_normal(2)
        rs = self.rho_sst
        self.sst_coef = rs * self.sst_coef + np.sqrt(1 - rs * rs) * self._band_noise(
            self.g_sst, self.sst_band)

    @property
    def mjo_amplitude(self) -> float:
        return float(np.clip(1.0 + 0.5 * self.mjo_amp_state, 0.1, 2.5))

    @property
    def enso_index(self) -> float:
        return float(self.enso[0])


class _Model:
    """State, operators and one 6-hour window of the world (see the module docstring)."""

    def __init__(self, p: WorldParameters, seed: int) -> None:
        self.p = p
        g = GaussianGrid(p.nlat, p.nlon, p.truncation, EARTH_RADIUS)
        self.g = g
        lat, lon = g.lat, g.lon
        # Grid arrays are (longitude, latitude row) like GaussianGrid's (N, K, B) layout.
        self.lat_nk = lat[None, :]
        self.phi = np.deg2rad(lat)[None, :]
        self.lam = np.deg2rad(lon)[:, None]
        self.f = 2 * OMEGA * np.sin(self.phi) * np.ones((p.nlon, 1))
        self.land = land_fraction(lat, lon).T
        self.height = orography(lat, lon).T
        lap = g.laplacian_eigenvalues()
        self.lap = lap
        self.kappa = 1.0 / (p.deformation_radius_km * 1e3) ** 2
        inv = lap - self.kappa
        self.q_to_psi = np.where(g.degree > 0, 1.0 / np.where(inv == 0, 1.0, inv), 0.0) * g.valid
        self.inv_lap = np.where(g.degree > 0, 1.0 / np.where(lap == 0, 1.0, lap), 0.0) * g.valid
        # Static background PV f (1 + gamma h / H) and its gradient, band-limited.
        background = self.f * (1 + p.orography_coupling * self.height / p.scale_height_m)
        self.background_spec = g.analysis(background[..., None])
        _, self.bg_dx, self.bg_dy = g.fields(self.background_spec)[..., 0]
        self.dt = WINDOW_HOURS * 3600.0 / p.steps_per_window
        # Relaxation rate per coefficient: planetary scales and the zonal mean are held near
        # the seasonal jet (their slow wandering would otherwise dominate the variance, as it
        # does not in ERA5), synoptic eddies are damped weakly so they stay chaotic.
        planetary = (g.order == 0) | (g.degree <= p.planetary_degree)
        self.rate = np.where(planetary, 1.0 / (p.planetary_relaxation_days * DAY),
                             1.0 / (p.relaxation_days * DAY))
        ll = g.degree
        t = p.truncation
        damp = (ll * (ll + 1) / (t * (t + 1))) ** 4 / (p.hyperdiffusion_hours * 3600.0)
        self.hyper = np.exp(-damp * self.dt)
        # Jet vorticity for the two seasonal extremes: zeta_eq is linear in the season index
        # only approximately (the jet moves), so it is evaluated per window from the profile.
        self._fine_lat = np.linspace(-90, 90, 721)
        self.forcing = _Forcing(seed, g, p)
        # Storm-track and tropical envelopes.
        self.warm_pool = 0.35 + 0.65 * np.exp(-((np.mod(lon - 120.0 + 180, 360) - 180) / 55.0)
                                                ** 2)[:, None]
        self.tropics = np.exp(-((lat / 12.0) ** 2))[None, :]
        dl_cp = np.mod(lon - 190.0 + 180, 360) - 180
        dl_mc = np.mod(lon - 120.0 + 180, 360) - 180
        dipole = np.exp(-((dl_cp / 30.0) ** 2)) - 0.6 * np.exp(-((dl_mc / 20.0) ** 2))
        self.enso_pattern = np.exp(-((lat / 10.0) ** 2))[None, :] * dipole[:, None]
        self.enso_sst_pattern = (np.exp(-((lat / 8.0) ** 2))[None, :]
                                 * np.exp(-(((np.mod(lon - 225.0 + 180, 360) - 180) / 40.0) ** 2))
                                 [:, None])
        # Semi-Lagrangian geometry: unit vectors of every grid point.
        cphi, sphi = np.cos(self.phi), np.sin(self.phi)
        clam, slam = np.cos(self.lam), np.sin(self.lam)
        self.r = np.stack(np.broadcast_arrays(cphi * clam, cphi * slam, sphi), axis=0)
        self.e_lam = np.stack(np.broadcast_arrays(-slam, clam, 0 * sphi * clam), axis=0)  # (3,N,K)
        self.e_phi = np.stack(np.broadcast_arrays(-sphi * clam, -sphi * slam, cphi), axis=0)
        self.asc_lat = lat[::-1]  # ascending, for np.interp
        self.sea_pattern = sea_surface_pattern(lat[None, :], lon[:, None])
        self.land_excess = land_offset(lat[None, :])
        self.t_relax_days = np.where(self.land > 0.5, p.t_relax_land_days, p.t_relax_ocean_days)
        self.q_src_rh = p.q_source_rh_land * self.land + p.q_source_rh_ocean * (1 - self.land)
        self.q_tau_days = p.q_tau_land_days * self.land + p.q_tau_ocean_days * (1 - self.land)
        # The hot path (RK4 tendencies) runs in float32: twice as fast, and a chaotic flow
        # forgets rounding within days anyway; forcing, tracers and diagnostics stay float64.
        f32 = np.float32
        self.g32 = g.with_dtype(f32)
        self.h = {name: np.ascontiguousarray(getattr(self, name), dtype=f32) for name in
                  ("f", "bg_dx", "bg_dy", "rate", "lap", "q_to_psi", "hyper")}
        self.Q = np.zeros((g.M, g.L, 2, 1), np.float32)
        self.chi = np.zeros((g.M, g.L, 2, 1))
        self.t2m = np.zeros((p.nlon, p.nlat))
        self.q = np.zeros((p.nlon, p.nlat))

    # ---- forcing fields for one window -------------------------------------------------
    def zeta_eq(self, season: float) -> np.ndarray:
        """Spectral vorticity of :func:`jet_profile` (via the streamfunction on a fine grid)."""
        fine = np.deg2rad(self._fine_lat)
        u = jet_profile(self._fine_lat, season, self.p)
        # u = -(1/a) d psi / d phi  =>  psi = -a int u dphi (trapezoid), sampled at Gauss rows.
        psi = -EARTH_RADIUS * np.concatenate(
            [[0.0], np.cumsum(0.5 * (u[1:] + u[:-1]) * np.diff(fine))])
        psi_rows = np.interp(self.g.lat, self._fine_lat, psi)[None, :] * np.ones((self.p.nlon, 1))
        return self.lap * self.g.analysis(psi_rows[..., None])

    def divergence(self) -> np.ndarray:
        """Prescribed upper-level divergence (s^-1) on the grid, global mean removed."""
        fc, p = self.forcing, self.p
        mjo = (p.mjo_divergence * fc.mjo_amplitude * np.cos(self.lam - fc.mjo_phase)
               * self.tropics * self.warm_pool)
        enso = p.enso_divergence * fc.enso_index * self.enso_pattern
        spec = self.g.analysis((mjo + enso)[..., None])
        spec[0, 0] = 0.0  # no global-mean divergence
        return spec

    def storm_source(self, season: float) -> np.ndarray:
        """Storm-track vorticity source (spectral), stronger in the winter hemisphere."""
        p = self.p
        lat = self.lat_nk
        winter_n, winter_s = 0.5 * (1 - season), 0.5 * (1 + season)
        env = (np.exp(-(((lat - p.storm_latitude_deg) / p.storm_width_deg) ** 2))
               * (0.6 + 0.6 * winter_n)
               + np.exp(-(((lat + p.storm_latitude_deg) / p.storm_width_deg) ** 2))
               * (0.8 + 0.4 * winter_s))
        grid = self.g.synthesis(self.forcing.storm) * env[..., None]
        return self.g.analysis(grid)

    # ---- dynamics -------------------------------------------------------------------
    def tendency(self, Q: np.ndarray, ctx: dict) -> np.ndarray:
        """dQ/dt (spectral, float32) for the forcing context ``ctx`` of the current window."""
        g, h = self.g32, self.h
        psi = h["q_to_psi"] * Q
        val, dx, dy = g.fields(np.concatenate([psi, Q], axis=-1))
        u = -dy[..., 0] + ctx["u_chi"]
        v = dx[..., 0] + ctx["v_chi"]
        zeta = val[..., 1] + self.kappa * val[..., 0]
        adv = u * (dx[..., 1] + h["bg_dx"]) + v * (dy[..., 1] + h["bg_dy"])
        nonlinear = -adv - (zeta + h["f"]) * ctx["div"]
        return g.analysis(nonlinear[..., None]) + ctx["linear"] - h["lap"] * psi * h["rate"]

    def window(self, doy: float, tracers: bool = True) -> None:
        """Integrate dynamics (and tracers unless ``tracers`` is False: they do not feed back
        on the flow) over one 6-hour window starting at day-of-year ``doy``."""
        p, g = self.p, self.g
        season = float(season_index(doy))
        div_spec = self.divergence()
        chi = self.inv_lap * div_spec
        self.chi = chi
        _, dxc, dyc = g.fields(chi)[..., 0]
        ctx = {"u_chi": dxc, "v_chi": dyc, "div": g.synthesis(div_spec)[..., 0],
               "linear": self.zeta_eq(season) * self.rate + self.storm_source(season)}
        ctx = {k: np.ascontiguousarray(x, dtype=np.float32) for k, x in ctx.items()}
        dt = self.dt
        # Tracers: one semi-Lagrangian step per window (unconditionally stable; at
        # surface_wind_factor 0.3 a 6-hour trajectory stays within one grid cell).
        if tracers:
            self.tracers(doy, WINDOW_HOURS * 3600.0, dxc, dyc)
        for _ in range(p.steps_per_window):
            Q = self.Q
            k1 = self.tendency(Q, ctx)
            k2 = self.tendency(Q + 0.5 * dt * k1, ctx)
            k3 = self.tendency(Q + 0.5 * dt * k2, ctx)
            k4 = self.tendency(Q + dt * k3, ctx)
            self.Q = (Q + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)) * self.h["hyper"]
        self.forcing.advance()

    # ---- tracers --------------------------------------------------------------------
    def sst_anomaly(self) -> np.ndarray:
        fc, p = self.forcing, self.p
        noise = self.g.synthesis(fc.sst_coef)[..., 0] * fc._sst_norm
        return p.enso_sst_k * fc.enso_index * self.enso_sst_pattern + p.sst_noise_k * noise

    def t_equilibrium(self, doy: float) -> np.ndarray:
        return equilibrium_temperature(self.lat_nk, self.land, self.height, doy,
                                       self.sst_anomaly(), self.p, self.sea_pattern,
                                       self.land_excess)

    def tracers(self, doy: float, dt: float, u_chi: np.ndarray, v_chi: np.ndarray) -> None:
        """Advect T and q semi-Lagrangian over ``dt`` seconds, then relax/source/condense."""
        p, g = self.p, self.g
        psi = self.q_to_psi * self.Q
        _, dx, dy = g.fields(psi)[..., 0]
        u = (-dy + u_chi) * p.surface_wind_factor
        v = (dx + v_chi) * p.surface_wind_factor
        vel = u[None] * self.e_lam + v[None] * self.e_phi  # (3, lat, lon) m/s
        dep = self.r - (dt / EARTH_RADIUS) * vel
        dep /= np.sqrt((dep**2).sum(axis=0, keepdims=True))
        lat_d = np.rad2deg(np.arcsin(np.clip(dep[2], -1, 1)))
        lon_d = np.rad2deg(np.arctan2(dep[1], dep[0]))
        fields = np.stack([self.t2m, self.q])
        moved = _bilinear(fields, self.asc_lat, lat_d, lon_d, p.nlon)
        t_eq = self.t_equilibrium(doy)
        relax = np.exp(-dt / (self.t_relax_days * DAY))
        self.t2m = t_eq + (moved[0] - t_eq) * relax
        qs = saturation_specific_humidity(self.t2m)
        warm = np.clip((self.t2m - 270.0) / 30.0, 0.05, 1.0)  # evaporation favours warm water
        rate = 1 - np.exp(-dt * warm / (self.q_tau_days * DAY))
        q = moved[1] + (self.q_src_rh * qs - moved[1]) * rate
        self.q = np.minimum(q, p.q_max_rh * qs)

    def initialise(self, doy: float) -> None:
        """Jet at rest state plus small seeded noise; tracers at equilibrium."""
        season = float(season_index(doy))
        z_eq = self.zeta_eq(season)
        psi_eq = self.inv_lap * z_eq
        noise = self.forcing._band_noise(self.forcing.g_init, self.forcing.band) * 1e-6
        self.Q = (z_eq - self.kappa * psi_eq + noise).astype(np.float32)
        self.t2m = self.t_equilibrium(doy)
        self.q = 0.7 * saturation_specific_humidity(self.t2m)


def _bilinear(fields: np.ndarray, asc_lat: np.ndarray, lat: np.ndarray, lon: np.ndarray,
              nlon: int) -> np.ndarray:
    """Bilinear interpolation of ``fields (F, nlon, nlat)`` (rows north to south, i.e.
    ``asc_lat[::-1]``) at points ``lat, lon`` (deg); latitudes beyond the outermost rows take
    those rows' values (the polar caps are one cell)."""
    nlat = len(asc_lat)
    jf = np.interp(lat, asc_lat, np.arange(nlat, dtype=np.float64))  # ascending index
    j0 = np.clip(np.floor(jf).astype(np.int64), 0, nlat - 2)
    wj = jf - j0
    xf = np.mod(lon, 360.0) / (360.0 / nlon)
    i0 = np.floor(xf).astype(np.int64) % nlon
    wi = xf - np.floor(xf)
    i1 = (i0 + 1) % nlon
    r0, r1 = nlat - 1 - j0, nlat - 2 - j0  # ascending index -> row (north to south)
    f = fields
    return ((1 - wj) * ((1 - wi) * f[:, i0, r0] + wi * f[:, i1, r0])
            + wj * ((1 - wi) * f[:, i0, r1] + wi * f[:, i1, r1]))


def balanced_fields(run: WorldRun, chunk: slice = slice(None), f0_latitude: float = 10.0
                    ) -> dict[str, np.ndarray]:
    """Steering-level (500 hPa) geopotential anomaly and winds on the model grid, ``(T, N, K)``.

    ``phi``: :math:`\\Phi'` from the linear balance :math:`\\nabla^2\\Phi' = \\nabla\\cdot(f\\nabla
    \\psi)` (m^2/s^2, zero global mean); ``u``, ``v``: geostrophic winds of :math:`\\Phi'` with
    :math:`1/f` regularised as :math:`f/(f^2+f_0^2)` (:math:`f_0` at ``f0_latitude``) plus
    :math:`(1 - s)` times the model wind (rotational + divergent), :math:`s = f^2/(f^2+f_0^2)`
    (m/s); ``u_model``, ``v_model``: the model wind itself.
    """
    g = run.grid
    psi = np.ascontiguousarray(run.psi[chunk].transpose(1, 2, 3, 0))  # (M, L, 2, T)
    chi = np.ascontiguousarray(run.chi[chunk].transpose(1, 2, 3, 0))
    lat = np.deg2rad(g.lat)[None, :, None]
    f = 2 * OMEGA * np.sin(lat)
    _, dxp, dyp = g.fields(psi)
    u_psi, v_psi = -dyp, dxp
    zeta = g.synthesis(g.laplacian_eigenvalues() * psi)
    # Linear balance: lap(Phi) = div(f grad psi) = f zeta + (1/a) df/dlat * dpsi/dy.
    rhs = f * zeta - (2 * OMEGA * np.cos(lat) / EARTH_RADIUS) * u_psi
    lap = g.laplacian_eigenvalues()
    inv_lap = np.where(g.degree > 0, 1.0 / np.where(lap == 0, 1.0, lap), 0.0)
    phi_val, phi_dx, phi_dy = g.fields(inv_lap * g.analysis(rhs))
    _, u_chi, v_chi = g.fields(chi)
    f0 = 2 * OMEGA * np.sin(np.deg2rad(f0_latitude))
    inv_f = f / (f**2 + f0**2)
    s = f * inv_f
    u = -phi_dy * inv_f + (1 - s) * (u_psi + u_chi)
    v = phi_dx * inv_f + (1 - s) * (v_psi + v_chi)
    return {name: x.transpose(2, 0, 1) for name, x in
            (("phi", phi_val), ("u", u), ("v", v), ("u_model", u_psi + u_chi),
             ("v_model", v_psi + v_chi))}


@dataclass
class _Schedule:
    """The 6-hour windows of a run: spin-up, then outputs every ``every`` windows."""

    times: pd.DatetimeIndex
    every: int
    n_spin: int
    n_total: int
    window_times: pd.DatetimeIndex
    doys: np.ndarray


def _schedule(times: pd.DatetimeIndex, p: WorldParameters) -> _Schedule:
    times = pd.DatetimeIndex(times)
    if len(times) == 0:
        raise ValueError("no output times; give at least one")
    step_h = (times[1] - times[0]) / pd.Timedelta(hours=1) if len(times) > 1 else WINDOW_HOURS
    if len(times) > 1 and (np.any(np.diff(times.asi8) != times.asi8[1] - times.asi8[0])
                           or step_h % WINDOW_HOURS != 0):
        raise ValueError(f"times must be regularly spaced by a multiple of 6 hours, got a step "
                         f"of {step_h} h; use freq='6h' (or '12h', '1D')")
    every = int(round(step_h / WINDOW_HOURS))
    t0 = times[0] - pd.Timedelta(days=p.spinup_days)
    n_spin = int(p.spinup_days * 24 / WINDOW_HOURS)
    n_total = n_spin + (len(times) - 1) * every + 1
    window_times = t0 + pd.to_timedelta(np.arange(n_total) * WINDOW_HOURS, unit="h")
    doys = (window_times.day_of_year.to_numpy(np.float64)
            + window_times.hour.to_numpy(np.float64) / 24.0)
    return _Schedule(times, every, n_spin, n_total, window_times, doys)


def _step(model: _Model, sched: _Schedule, i: int, tracers: bool) -> None:
    model.window(sched.doys[i], tracers)
    if not np.all(np.isfinite(model.Q)):
        raise FloatingPointError(f"the world blew up at {sched.window_times[i]} (non-finite "
                                 f"vorticity); reduce the time step (steps_per_window)")


def _perturb(model: _Model, seed: int, perturbation: float) -> None:
    """Add white vorticity noise of rms ``perturbation`` (s^-1), degrees 1-21, own generator."""
    g = model.g
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), 99]))
    noise = model.forcing._band_noise(gen, g.valid & (g.degree >= 1))
    noise_grid = g.synthesis(noise)
    model.Q = (model.Q + noise * perturbation / np.sqrt(np.mean(noise_grid**2))
               ).astype(np.float32)


def _run_from_spinup(model: _Model, sched: _Schedule, seed: int, perturbation: float,
                     tracers: bool) -> WorldRun:
    """Integrate a spun-up ``model`` (at window ``sched.n_spin``) through the output times."""
    g, p, times = model.g, model.p, sched.times
    nt = len(times)
    out = WorldRun(times=times, psi=np.empty((nt, g.M, g.L, 2)), chi=np.empty((nt, g.M, g.L, 2)),
                   t2m=np.full((nt, p.nlon, p.nlat), np.nan, np.float32),
                   q=np.full((nt, p.nlon, p.nlat), np.nan, np.float32),
                   mjo_phase=np.empty(nt), enso=np.empty(nt), grid=g, params=p, land=model.land)
    if perturbation:
        _perturb(model, seed, perturbation)
    k = 0
    for i in range(sched.n_spin, sched.n_total):
        if (i - sched.n_spin) % sched.every == 0:
            out.psi[k] = (model.q_to_psi * model.Q)[..., 0]
            out.chi[k] = model.chi[..., 0]
            if tracers:
                out.t2m[k], out.q[k] = model.t2m, model.q
            out.mjo_phase[k] = model.forcing.mjo_phase
            out.enso[k] = model.forcing.enso_index
            k += 1
            if k == nt:
                break
        _step(model, sched, i, tracers)
    return out


def _spun_up(times: pd.DatetimeIndex, seed: int, p: WorldParameters, tracers: bool
             ) -> tuple[_Model, _Schedule]:
    sched = _schedule(times, p)
    model = _Model(p, seed)
    model.initialise(sched.doys[0])
    for i in range(sched.n_spin):
        _step(model, sched, i, tracers)
    return model, sched


def simulate(times: pd.DatetimeIndex, seed: int = 0, params: WorldParameters | None = None,
             perturbation: float = 0.0, tracers: bool = True) -> WorldRun:
    """Integrate the world and sample it at ``times`` (6-hourly multiples, after a spin-up).

    Args:
        times: regularly spaced output times; the step must be a multiple of 6 hours.
        seed: the only source of randomness.
        params: :class:`WorldParameters` (default: the calibrated ones).
        perturbation: rms (s^-1) of a white-noise vorticity perturbation (degrees 1-21, its
            own generator) added at the first output time, after the spin-up: the twin
            experiment of :func:`geofusion.experiments.world_calibration.twin_experiment`.
        tracers: False skips the surface temperature and moisture (a third of the cost; they
            do not feed back on the flow, so ``psi`` and ``chi`` are unchanged); ``t2m`` and
            ``q`` are then NaN.

    Returns:
        :class:`WorldRun` on the Gauss grid.

    Example:
        >>> run = simulate(pd.date_range("2000-01-01", periods=8, freq="6h"),
        ...                params=WorldParameters(spinup_days=2))
        >>> run.psi.shape, run.t2m.shape
        ((8, 22, 22, 2), (8, 64, 32))
    """
    p = params or WorldParameters()
    model, sched = _spun_up(times, seed, p, tracers)
    return _run_from_spinup(model, sched, seed, perturbation, tracers)


def simulate_twins(times: pd.DatetimeIndex, seed: int = 0, params: WorldParameters | None = None,
                   perturbation: float = 1e-7) -> tuple[WorldRun, WorldRun]:
    """The control and perturbed runs of a twin experiment, flow only (``tracers=False``).

    Exactly ``simulate(times, seed, params, 0.0, tracers=False)`` and ``simulate(times, seed,
    params, perturbation, tracers=False)``, but the spin-up is integrated once and copied, so
    the pair costs one spin-up instead of two.

    Example:
        >>> control, perturbed = simulate_twins(pd.date_range("2000-01-01", periods=4,
        ...                                     freq="6h"), params=WorldParameters(spinup_days=1))
        >>> bool((control.psi[0] != perturbed.psi[0]).any()), control.psi.shape
        (True, (4, 22, 22, 2))
    """
    p = params or WorldParameters()
    model, sched = _spun_up(times, seed, p, tracers=False)
    twin = copy.deepcopy(model)
    return (_run_from_spinup(model, sched, seed, 0.0, tracers=False),
            _run_from_spinup(twin, sched, seed, perturbation, tracers=False))
