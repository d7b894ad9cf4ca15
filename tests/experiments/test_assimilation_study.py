"""The cycling experiment of notebook 10 on a tiny hand-built dataset: shapes, bookkeeping,
scores that equal their definitions, and the bounds the schemes must respect."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from geofusion.data import PreparedData
from geofusion.data.observations import correlated_noise
from geofusion.downstream.forecasting import LatentForecaster, LatentSeq2Seq, LatentStandardiser
from geofusion.experiments.assimilation_study import (
    SCHEMES,
    draw_observations,
    run_assimilation_experiment,
)
from geofusion.variables import VARIABLES
from geofusion.verification.metrics import lat_weighted_rmse
from geofusion.verification.optimal_interpolation import fit_optimal_interpolation
from tests.downstream.test_assimilation import LinearMethod

C, H, W, D = 5, 4, 8, 6


def tiny_world() -> tuple[PreparedData, LatentForecaster]:
    """Three synthetic years on a 4 x 8 grid and an untrained linear latent forecaster."""
    times = pd.date_range("2000-01-01", periods=3 * 365, freq="D").to_numpy()
    seasonal = np.sin(2 * np.pi * np.arange(len(times)) / 365.25)[:, None, None, None]
    # spatially smooth anomalies (optimal interpolation fits their length scale)
    weather = correlated_noise((len(times), C, H, W), 1.5, 0.3, torch.Generator().manual_seed(0))
    fields = (seasonal + weather.numpy()).astype(np.float32)
    prepared = PreparedData(fields[:900], fields[900:], times[:900], times[900:], VARIABLES,
                            np.full(C, 10.0, np.float32), np.full(C, 2.0, np.float32),
                            np.linspace(-67.5, 67.5, H), np.arange(W) * 45.0, 500, True)
    method = LinearMethod((C, H, W), D)
    decoder = nn.Sequential(nn.Linear(D, C * H * W), nn.Unflatten(1, (C, H, W)))
    forecaster = LatentForecaster(method, decoder, LatentSeq2Seq(D, 8),
                                  LatentStandardiser(torch.zeros(D), torch.ones(D)), context=3)
    # As fit_latent_forecaster leaves it: the validation latents too, so a statistic that
    # wrongly reads them is computed (and caught below) rather than failing on a KeyError.
    forecaster.latents = {"train": forecaster.encode(prepared.train),
                          "valid": forecaster.encode(prepared.valid)}
    return prepared, forecaster


@pytest.fixture(scope="module")
def setting():
    prepared, forecaster = tiny_world()
    results = run_assimilation_experiment(forecaster, prepared, [0.2, 0.9], [0.1], days=10,
                                          n_stat_days=200, var_iterations=5, progress=False)
    return prepared, results


def test_optimal_interpolation_is_fitted_once_for_every_noise_level(monkeypatch):
    from geofusion.experiments import assimilation_study

    prepared, forecaster = tiny_world()
    fits = []
    monkeypatch.setattr(assimilation_study, "fit_optimal_interpolation",
                        lambda *a, **k: fits.append(k) or fit_optimal_interpolation(*a, **k))
    results = run_assimilation_experiment(forecaster, prepared, [0.5], [0.1, 0.5], days=4,
                                          n_stat_days=100, var_iterations=1, progress=False)
    assert len(fits) == 1
    for e, (_, noise) in enumerate(results.experiments):
        own = fit_optimal_interpolation(prepared, noise_std=noise, noise_length=2.0)
        np.testing.assert_allclose(
            results.analyses["optimal_interpolation"][:, e],
            own.analyse(results.observations[:, e], results.observed[:, e], results.times),
            rtol=1e-5, atol=1e-6)


def test_every_scheme_is_scored_on_every_day_and_experiment(setting):
    prepared, results = setting
    assert list(results.analyses) == list(SCHEMES)
    assert results.experiments == [(0.2, 0.1), (0.9, 0.1)]
    for name in SCHEMES:
        assert results.analyses[name].shape == (10, 2, C, H, W)
        assert results.mse[name].shape == (10, 2, C)
    # observations hit their observed fractions
    np.testing.assert_allclose(results.observed.mean(axis=(0, 2, 3)), [0.2, 0.9], atol=0.02)
    # scores are the lat-weighted RMSE of the analyses in physical units
    e, name = 1, "latent_3dvar"
    expected = lat_weighted_rmse(prepared.destandardise(results.analyses[name][:, e]),
                                 prepared.destandardise(results.truth), prepared.lat)
    np.testing.assert_allclose(np.sqrt(results.mse[name][:, e]), expected, rtol=1e-5)
    assert len(results.costs) == 10


def test_bounds_and_field_space_references(setting):
    _, results = setting
    # the free run never sees an observation: the same analysis in both experiments
    np.testing.assert_allclose(results.analyses["free_run"][:, 0],
                               results.analyses["free_run"][:, 1])
    # the climatology is the same in every experiment, OI improves on it with dense data
    table = results.table()
    mean = table.groupby(["scheme", "observed_fraction"]).rmse.mean()
    assert mean["optimal_interpolation", 0.9] < mean["climatology", 0.9]
    # OI of each experiment equals its own analysis (the experiment stacks them in one call)
    prepared = setting[0]
    oi = fit_optimal_interpolation(prepared, noise_std=0.1, noise_length=2.0)
    alone = oi.analyse(results.observations[:, 0], results.observed[:, 0], results.times)
    np.testing.assert_allclose(results.analyses["optimal_interpolation"][:, 0], alone,
                               rtol=1e-5, atol=1e-6)
    assert (table.low <= table.rmse + 1e-9).all() and (table.rmse <= table.high + 1e-9).all()


def test_scorecard_section_follows_the_schema(setting):
    _, results = setting
    card = results.scorecard(0.1)
    assert set(card) == {"assimilation", "intervals"}
    assert set(card["assimilation"]) == set(SCHEMES)
    assert set(card["assimilation"]["latent_blend"]) == {"0.2", "0.9"}
    entry = card["assimilation"]["latent_blend"]["0.9"]
    assert set(entry) == set(VARIABLES)
    low, high = card["intervals"]["assimilation"]["latent_blend"]["0.9"]["geopotential"]
    assert low <= entry["geopotential"] <= high
    with pytest.raises(ValueError, match="no experiment"):
        results.experiment(0.5, 0.1)


def fitted_statistics(monkeypatch, prepared, forecaster, block: str = "valid") -> dict:
    """Run a short experiment and return every statistic it fitted: ``B`` and ``R`` of 3D-Var,
    gains and bias corrections of the blend, optimal interpolation's fit, the climatology."""
    from geofusion.experiments import assimilation_study

    fitted: dict = {}
    real_cycle, real_oi = assimilation_study.run_cycle, assimilation_study.fit_optimal_interpolation
    real_climatology = assimilation_study.training_climatology

    def recording_cycle(forecaster, initial, scheme, days, progress=True):
        fitted[type(scheme).__name__] = scheme
        return real_cycle(forecaster, initial, scheme, days, progress=progress)

    def recording_oi(*args, **kwargs):
        fitted["oi"] = real_oi(*args, **kwargs)
        return fitted["oi"]

    def recording_climatology(*args, **kwargs):
        fitted["climatology"] = real_climatology(*args, **kwargs)
        return fitted["climatology"]

    real_eof, real_persistence = (assimilation_study.fit_eof_3dvar,
                                  assimilation_study.fit_persistence_optimal_interpolation)

    def recording_eof(*args, **kwargs):
        fitted["eof"] = real_eof(*args, **kwargs)
        return fitted["eof"]

    def recording_persistence(*args, **kwargs):
        fitted["persistence"] = real_persistence(*args, **kwargs)
        return fitted["persistence"]

    monkeypatch.setattr(assimilation_study, "fit_eof_3dvar", recording_eof)
    monkeypatch.setattr(assimilation_study, "fit_persistence_optimal_interpolation",
                        recording_persistence)
    monkeypatch.setattr(assimilation_study, "run_cycle", recording_cycle)
    monkeypatch.setattr(assimilation_study, "fit_optimal_interpolation", recording_oi)
    monkeypatch.setattr(assimilation_study, "training_climatology", recording_climatology)
    run_assimilation_experiment(forecaster, prepared, [0.5], [0.1], days=4, n_stat_days=100,
                                var_iterations=1, progress=False, block=block)
    var, blend, oi = fitted["Latent3DVar"], fitted["LatentBlend"], fitted["oi"]
    return {"b_diagonal": var.b.diagonal, "b_factors": var.b.factors,
            "r_representation": torch.stack([r.representation_var for r in var.r]),
            "blend_gain": blend.gain, "blend_bias": blend.observation_bias,
            "oi_climatology": oi.climatology, "oi_std": oi.background_std,
            "oi_length": oi.length_scale_km, "oi_fraction": oi.correlated_fraction,
            "climatology": fitted["climatology"],
            "eof_propagator": fitted["eof"].model.propagator,
            "eof_q": fitted["eof"].model.error_covariance,
            "eof_representation": fitted["eof"].representation_var,
            "persistence_rho": fitted["persistence"].rho,
            "persistence_std": fitted["persistence"].interpolator.background_std,
            "persistence_length": fitted["persistence"].interpolator.length_scale_km}


@pytest.mark.parametrize("block", ["valid", "test"])
def test_error_statistics_are_fitted_on_training_days_only(monkeypatch, block):
    """B, R, the blend's gains and bias, OI, the climatology and the classical cycled schemes'
    fits (the LIM, its Q and truncation error; damped persistence and its B) come from the
    training days:
    replacing every validation and test day (the cycle's days, and the held-out block of a
    three-way split) leaves each of them bit for bit the same (the very same computation on
    the very same training days, repeated on one machine)."""
    prepared, forecaster = tiny_world()
    # A three-way split of the same days: train / valid / test.
    prepared = dataclasses.replace(prepared, valid=prepared.valid[:120],
                                   valid_times=prepared.valid_times[:120],
                                   test=prepared.valid[120:], test_times=prepared.valid_times[120:])
    forecaster.latents["valid"] = forecaster.encode(prepared.valid)
    rng = np.random.default_rng(5)
    other = dataclasses.replace(
        prepared,
        valid=prepared.valid + 3 * rng.normal(size=prepared.valid.shape).astype(np.float32),
        test=prepared.test + 3 * rng.normal(size=prepared.test.shape).astype(np.float32))
    first = fitted_statistics(monkeypatch, prepared, forecaster, block)
    forecaster.latents["valid"] = forecaster.encode(other.valid)
    second = fitted_statistics(monkeypatch, other, forecaster, block)
    assert first["b_diagonal"].abs().sum() > 0 and first["r_representation"].abs().sum() > 0
    for name, value in first.items():
        torch.testing.assert_close(torch.as_tensor(second[name]), torch.as_tensor(value),
                                   rtol=0, atol=0, msg=name)


def test_bad_settings_are_refused(setting):
    prepared, results = setting
    with pytest.raises(ValueError, match="observed fractions"):
        run_assimilation_experiment(None, prepared, [0.0], [0.1])
    with pytest.raises(ValueError, match="days of the valid block"):
        run_assimilation_experiment(None, prepared, [0.5], [0.1], days=10_000)
    with pytest.raises(ValueError, match="never the training days"):
        run_assimilation_experiment(None, prepared, [0.5], [0.1], block="train")
    with pytest.raises(ValueError, match="no test split"):
        run_assimilation_experiment(None, prepared, [0.5], [0.1], block="test")


def test_observations_rotate_through_distinct_nested_masks_with_fresh_noise():
    truth = torch.zeros(7, 2, 8, 16)
    experiments = [(0.25, 0.0), (0.5, 0.0), (0.5, 0.3)]
    y, m = draw_observations(truth, experiments, distinct_masks=3, seed=4)
    assert y.shape == (7, 3, 2, 8, 16) and m.shape == (7, 3, 8, 16)
    np.testing.assert_allclose(m.float().mean(dim=(0, 2, 3)), [0.25, 0.5, 0.5])
    # day t uses mask t mod 3; the three masks differ
    assert torch.equal(m[3:6], m[0:3]) and torch.equal(m[6], m[0])
    assert not torch.equal(m[0, 0], m[1, 0])
    # nested across fractions, shared across noise levels
    assert bool((m[:, 1] | ~m[:, 0]).all()) and torch.equal(m[:, 1], m[:, 2])
    # noise-free observations of zero fields are zero; noisy ones are fresh every day and
    # zero where missing
    assert float(y[:, :2].abs().max()) == 0.0
    assert float(y[:, 2][~m[:, 2, None].expand(-1, 2, -1, -1)].abs().max()) == 0.0
    assert not torch.allclose(y[0, 2], y[3, 2])
    assert 0.2 < float(y[:, 2][m[:, 2, None].expand(-1, 2, -1, -1)].std()) < 0.4
    # None: a new mask every day
    _, fresh = draw_observations(truth, experiments[:1], seed=4)
    assert not torch.equal(fresh[3], fresh[0])
    with pytest.raises(ValueError, match="distinct_masks"):
        draw_observations(truth, experiments, distinct_masks=0)


def test_the_cycle_runs_over_the_test_block_in_the_anomaly_space():
    """block="test": the truth and days are the test block's; scores in physical units equal
    their definition with the days (destandardise(x, times)); the explorer's to_physical too."""
    from geofusion.data.anomalies import to_space

    prepared, forecaster = tiny_world()
    prepared = dataclasses.replace(prepared, valid=prepared.valid[:100],
                                   valid_times=prepared.valid_times[:100],
                                   test=prepared.valid[100:], test_times=prepared.valid_times[100:])
    anomaly = to_space(prepared, "anomaly")
    forecaster.latents = {"train": forecaster.encode(anomaly.train)}
    results = run_assimilation_experiment(forecaster, anomaly, [0.5], [0.1], days=6,
                                          n_stat_days=100, var_iterations=2, progress=False,
                                          block="test", first_day=2)
    assert results.settings["block"] == "test"
    np.testing.assert_array_equal(results.times, anomaly.test_times[2:8])
    np.testing.assert_array_equal(results.truth, anomaly.test[2:8])
    truth = anomaly.destandardise(results.truth, results.times)
    for name in ("latent_3dvar", "climatology", "optimal_interpolation"):
        analysis = anomaly.destandardise(results.analyses[name][:, 0], results.times)
        # the same float32 fields through the same metric, one batch shape against another
        expected = lat_weighted_rmse(analysis, truth, anomaly.lat)
        np.testing.assert_allclose(np.sqrt(results.mse[name][:, 0]), expected,
                                   rtol=1e-5)
    # The climatology analysis is the physical training climatology of each day.
    np.testing.assert_allclose(
        anomaly.destandardise(results.analyses["climatology"][:, 0], results.times),
        anomaly.climatology[pd.DatetimeIndex(results.times).day_of_year - 1], rtol=1e-6)
    np.testing.assert_allclose(results.to_physical(results.truth[3], 3), truth[3], rtol=1e-6)


def three_way(prepared, valid_days: int = 100):
    return dataclasses.replace(prepared, valid=prepared.valid[:valid_days],
                               valid_times=prepared.valid_times[:valid_days],
                               test=prepared.valid[valid_days:],
                               test_times=prepared.valid_times[valid_days:])


def test_classical_cycles_choose_their_inflation_on_validation_days_only():
    """eof_3dvar and oi_damped_persistence: B's multiplier is chosen per experiment on a
    validation cycle; other test days change the analyses, never the choice; the scored
    analyses are the schemes' own cycles with the chosen multiplier."""
    from geofusion.verification.eof_3dvar import fit_eof_3dvar
    from geofusion.verification.optimal_interpolation import (
        fit_persistence_optimal_interpolation,
    )

    prepared, forecaster = tiny_world()
    prepared = three_way(prepared)
    kwargs = {"days": 6, "n_stat_days": 50, "var_iterations": 1, "progress": False,
              "block": "test", "inflations": (1.0, 4.0)}
    results = run_assimilation_experiment(forecaster, prepared, [0.2, 0.9], [0.1], **kwargs)
    rng = np.random.default_rng(7)
    other = dataclasses.replace(
        prepared, test=prepared.test + rng.normal(size=prepared.test.shape).astype(np.float32))
    moved = run_assimilation_experiment(forecaster, other, [0.2, 0.9], [0.1], **kwargs)
    selection = results.settings["classical_inflation"]
    assert selection == moved.settings["classical_inflation"]
    assert selection["eof_3dvar"]["validation_days"] == 6
    assert np.array(selection["oi_damped_persistence"]["validation_mse"]).shape == (2, 2)
    assert not np.allclose(results.analyses["eof_3dvar"], moved.analyses["eof_3dvar"])
    fits = {"eof_3dvar": fit_eof_3dvar(prepared, D, noise_std=0.1, noise_length=2.0),
            "oi_damped_persistence": fit_persistence_optimal_interpolation(prepared, 0.1, 2.0)}
    for name, fit in fits.items():
        lam = selection[name]["inflation"]
        assert set(lam) <= {1.0, 4.0}
        own = fit.cycle(results.observations, results.observed, results.times, lam)
        # The same float64 computation, once in the experiment and once here.
        np.testing.assert_allclose(results.analyses[name], own, rtol=1e-6, atol=1e-6)


def _hand_results(mse: dict, experiments, channels=("geopotential", "2m_temperature")):
    from geofusion.experiments.assimilation_study import AssimilationResults

    days = next(iter(mse.values())).shape[0]
    return AssimilationResults(
        experiments=experiments, truth=np.zeros((days, 2, 1, 1)),
        times=np.arange(days).astype("datetime64[D]"), observations=None, observed=None,
        analyses={}, mse=mse, costs=[], channels=list(channels), units={}, lat=np.zeros(1),
        lon=np.zeros(1), synthetic=True)


def test_targets_are_assessed_with_paired_intervals():
    from geofusion.experiments.assimilation_study import assess_targets

    rng = np.random.default_rng(0)
    days, experiments = 28, [(0.02, 0.1), (0.5, 0.1)]
    base = rng.uniform(1.0, 2.0, size=(days, 2, 2))
    mse = {"latent_3dvar": base.copy(), "eof_3dvar": base * 1.21,
           "optimal_interpolation": base.copy()}
    mse["latent_3dvar"][:, 1, 1] *= 1.44           # loses to eof_3dvar at 50 %, t2m
    mse["optimal_interpolation"][:, 0, 0] *= 0.81  # OI better at 2 %, z
    table = assess_targets(_hand_results(mse, experiments), noise=0.1)
    assert len(table) == 2 * 2 + 2
    row = table.set_index(["reference", "observed_fraction", "variable"])
    win = row.loc[("eof_3dvar", 0.02, "geopotential")]
    # RMSE ratio 1 / 1.1 every day: a difference of -0.1 RMSE(eof), clearly below 0
    assert win.rmse == pytest.approx(np.sqrt(base[:, 0, 0].mean()))
    assert win.difference == pytest.approx(-win.reference_rmse * (1 - 1 / 1.1))
    assert win.met and win.evidence == "clear" and win.low <= win.difference <= win.high
    loss = row.loc[("eof_3dvar", 0.5, "2m_temperature")]
    assert not loss.met and loss.evidence == "clear" and loss.low > 0
    tie = row.loc[("optimal_interpolation", 0.02, "2m_temperature")]
    assert tie.difference == 0 and not tie.met       # "beats" is strict; equal is not
    assert row.loc[("eof_3dvar", 0.5, "geopotential")].met   # "at least as good": ties pass
    assert not row.loc[("optimal_interpolation", 0.02, "geopotential")].met
    with pytest.raises(ValueError, match="observed fraction 0.1"):
        assess_targets(_hand_results(mse, experiments), noise=0.1, low_fraction=0.1)
    with pytest.raises(ValueError, match="lack"):
        assess_targets(_hand_results({"latent_3dvar": base}, experiments), noise=0.1)
