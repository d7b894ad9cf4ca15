"""Notebook 09's linear twins: latents with a mode absent, the equal-size EOF code and ridge
decoders, the missing-mode errors (scored as by hand, blind to validation days) and the
assessment (selection on validation days, paired ratio, the target's count)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from geofusion.data import PreparedData
from geofusion.data.eof import fit_eof
from geofusion.experiments import fusion_linear_twins as twins
from geofusion.experiments import fusion_study
from geofusion.learning.decoders import FrozenEncoderDecoder
from geofusion.learning.fusion_methods import build_fusion_method
from geofusion.models.resnet import FieldDecoder
from geofusion.verification import metrics
from geofusion.verification.baselines import climatology
from geofusion.verification.mode_regression import fit_missing_mode_regression

CHANNELS = ("2m_temperature", "geopotential", "specific_humidity")


def prepared_data(n_train: int = 100) -> PreparedData:
    """Three modes on a 4 x 8 grid sharing two patterns' amplitudes (so each is nearly a
    linear function of the others), with a seasonal cycle; physical mean and std."""
    rng = np.random.default_rng(0)
    n = n_train + 60
    times = pd.date_range("2000-01-01", periods=n, freq="D").values
    amplitude = rng.normal(size=(n, 2))
    fields = np.einsum("tk,kchw->tchw", amplitude, rng.normal(size=(2, 3, 4, 8)))
    fields += 0.2 * rng.normal(size=fields.shape)
    fields += np.sin(2 * np.pi * np.arange(n) / 365.25)[:, None, None, None]
    fields = fields.astype("float32")
    return PreparedData(train=fields[:n_train], valid=fields[n_train:n_train + 30],
                        test=fields[n_train + 30:], train_times=times[:n_train],
                        valid_times=times[n_train:n_train + 30], test_times=times[n_train + 30:],
                        channels=CHANNELS, mean=np.array([280.0, 5000.0, 0.01], "float32"),
                        std=np.array([2.0, 50.0, 0.002], "float32"),
                        lat=np.linspace(-67.5, 67.5, 4), lon=np.arange(8) * 45.0, level=500,
                        synthetic=True)


def tiny_schemes(latent_dim: int = 6):
    methods, probes = {}, {}
    for scheme, (kind, fusion) in {"early": ("early", "concat"),
                                   "late_concat": ("late", "concat")}.items():
        torch.manual_seed(0)
        methods[scheme] = build_fusion_method("barlow_twins", kind=kind, fusion=fusion,
                                              in_channels=3, grid=(4, 8), latent_dim=latent_dim,
                                              width=2, token_dim=4, proj_dim=4,
                                              proj_hidden_dim=8).eval()
        probes[scheme] = FrozenEncoderDecoder(methods[scheme],
                                              FieldDecoder(latent_dim, 3, (4, 8), width=2))
    return methods, probes


def test_latents_with_a_mode_absent_never_read_it_and_match_the_encoder():
    prepared = prepared_data()
    methods, _ = tiny_schemes()
    x = prepared.valid[:8]
    scrambled = x.copy()
    scrambled[:, 1] = 1e3
    for method in methods.values():
        z = twins.scheme_latents(method, x, absent=1, batch_size=3)
        np.testing.assert_array_equal(z, twins.scheme_latents(method, scrambled, absent=1,
                                                                batch_size=3))
        present = torch.ones(8, 3, dtype=torch.bool)
        present[:, 1] = False
        with torch.no_grad():
            direct = method.encoder(method.inference_view(torch.from_numpy(x)), present)
        # Batches of 3 against one batch of 8: float32 convolutions, a few ulps.
        np.testing.assert_allclose(z, direct.double().numpy(), rtol=1e-5, atol=1e-5)
        assert not np.allclose(twins.scheme_latents(method, x), z)


def test_complete_input_rows_are_the_eof_code_and_ridge_decoders_of_the_training_days():
    prepared = prepared_data()
    methods, _ = tiny_schemes()
    out = twins.complete_input_twins(methods, prepared, np.arange(0, 100, 2), prepared.test,
                                     prepared.test_times, k=4)
    assert list(out) == ["EOF code (k = 4)", "early + ridge decoder",
                         "late_concat + ridge decoder"]
    # Independent path: the EOFs of the training anomalies, the climatology added back.
    clim = climatology(prepared.train, prepared.train_times)
    doy = pd.DatetimeIndex(prepared.test_times).day_of_year.to_numpy() - 1
    doy_train = pd.DatetimeIndex(prepared.train_times).day_of_year.to_numpy() - 1
    code = fit_eof(prepared.train - clim[doy_train], prepared.lat, 4)
    expected = code.decode(code.encode(prepared.test - clim[doy])) + clim[doy]
    # float32 and float64 paths of the same EOF code: ulps of O(1) fields.
    np.testing.assert_allclose(out["EOF code (k = 4)"], expected, rtol=1e-4, atol=1e-4)
    for name in methods:
        assert out[f"{name} + ridge decoder"].shape == prepared.test.shape
    # Scored exactly like the conv decoders (reconstruction_scores' extra rows).
    table = fusion_study.reconstruction_scores({}, prepared.test, prepared.test_times, prepared,
                                                clim, n_resamples=50,
                                                extra={**out, "perfect": prepared.test})
    np.testing.assert_allclose(table.loc["perfect", "rmse"], 0, atol=1e-3)
    truth = prepared.destandardise(prepared.test, prepared.test_times)
    by_hand = metrics.lat_weighted_rmse(prepared.destandardise(expected, prepared.test_times),
                                        truth, prepared.lat, time_axis=0)
    np.testing.assert_allclose(table.loc["EOF code (k = 4)", "rmse"], by_hand, rtol=1e-4)


@pytest.fixture(scope="module")
def errors():
    prepared = prepared_data()
    methods, probes = tiny_schemes()
    blocks = {"valid": (prepared.valid, prepared.valid_times),
              "test": (prepared.test, prepared.test_times)}
    return prepared, methods, probes, twins.missing_mode_errors(
        methods, probes, prepared, np.arange(0, 100, 2), blocks, k=4)


def test_missing_mode_rows_are_scored_as_by_hand(errors):
    prepared, methods, _, result = errors
    mse = result.mse["test"]
    assert list(mse) == list(CHANNELS)
    rows = set(mse["geopotential"])
    assert {f"{s} + {d}" for s in methods for d in twins.DECODERS} <= rows
    assert {twins.BASELINE, "gappy EOF code (k = 4)", "day-of-year climatology"} <= rows
    # The regression row: the verification fit, scored by hand in physical units.
    regression = fit_missing_mode_regression(prepared, 1, 4)
    predicted = regression.predict(prepared.test, prepared.test_times)
    by_hand = ((predicted - prepared.test[:, 1]) * prepared.std[1]) ** 2
    weights = np.cos(np.deg2rad(prepared.lat))
    by_hand = (by_hand * (weights / weights.mean())[:, None]).mean(axis=(1, 2))
    # Physical units via destandardise (float32) against the model-space difference x std.
    np.testing.assert_allclose(mse["geopotential"][twins.BASELINE], by_hand, rtol=1e-3)
    # A mode that is nearly linear in the others: the twin is far better than the climatology.
    for mode in CHANNELS:
        assert mse[mode][twins.BASELINE].mean() < 0.5 * mse[mode]["day-of-year climatology"].mean()


def test_test_scores_are_blind_to_the_validation_days(errors):
    prepared, methods, probes, result = errors
    other = (prepared.valid[::-1] * 3.0 + 1.0, prepared.valid_times)
    again = twins.missing_mode_errors(methods, probes, prepared, np.arange(0, 100, 2),
                                      {"valid": other, "test": (prepared.test,
                                                                prepared.test_times)}, k=4)
    for mode, rows in result.mse["test"].items():
        for row, values in rows.items():
            np.testing.assert_array_equal(values, again.mse["test"][mode][row], err_msg=row)


def test_assessment_selects_on_validation_and_counts_the_modes():
    rng = np.random.default_rng(0)
    base = rng.gamma(3.0, size=28)
    mse = {"valid": {}, "test": {}}
    # Mode a: row "s1" is best on validation but worse on test than "s2"; the pick is s1.
    for mode, (v1, v2, t1, t2) in {"a": (0.5, 0.9, 0.81, 0.25), "b": (0.5, 0.6, 0.25, 0.36),
                                   "c": (1.0, 2.0, 1.0, 4.0)}.items():
        mse["valid"][mode] = {"s1": v1 * base, "s2": v2 * base, twins.BASELINE: base,
                              "gappy EOF code (k = 2)": 2 * base}
        mse["test"][mode] = {"s1": t1 * base, "s2": t2 * base, twins.BASELINE: base,
                             "gappy EOF code (k = 2)": 4 * base}
    result = twins.MissingModeErrors(mse, {"s1": "x", "s2": "y"}, 2)
    table = twins.assess_missing_modes(result, n_resamples=100)
    assert table["best scheme"].tolist() == ["s1", "s1", "s1"]
    np.testing.assert_allclose(table["ratio"], [0.9, 0.5, 1.0], rtol=1e-12)
    np.testing.assert_allclose(table["eof_rmse"], 2 * np.sqrt(base.mean()), rtol=1e-12)
    assert table["beats"].tolist() == [True, True, False]
    assert table["clear"].tolist() == [True, True, False]  # proportional errors: no spread
    summary = twins.assessment_summary(table, required=3)
    assert summary["modes_beaten"] == 2 and summary["met"] is False
    assert twins.assessment_summary(table, required=2)["met"] is True
    ranked = twins.missing_mode_rmse(result, "test", n_resamples=50)
    assert ranked.loc[("a", "s2"), "kind"] == "scheme"
    assert ranked.loc[("a", twins.BASELINE), "kind"] == "reference"
    with pytest.raises(ValueError, match="no block"):
        twins.missing_mode_rmse(result, "train")


def test_versus_baseline_and_results_section_carry_the_same_numbers():
    base = np.linspace(1.0, 2.0, 14)
    mse = {"test": {"a": {"s": 0.64 * base, twins.BASELINE: base, "day-of-year climatology":
                          4 * base, f"{twins.CEILING} (k = 2)": 0.01 * base}},
           "valid": {"a": {"s": base, twins.BASELINE: base, "day-of-year climatology": base,
                           f"{twins.CEILING} (k = 2)": base}}}
    result = twins.MissingModeErrors(mse, {"s": "scheme"}, 2)
    ranked = twins.missing_mode_rmse(result, n_resamples=50)
    ratios = twins.versus_baseline(ranked)
    assert ratios.loc["s", "a"] == pytest.approx(0.8)
    assert ratios.loc["day-of-year climatology", "a"] == pytest.approx(2.0)
    assert ranked.loc[("a", f"{twins.CEILING} (k = 2)"), "kind"] == "ceiling"
    assessment = twins.assess_missing_modes(result, n_resamples=50)
    # The ceiling sees the mode: never the best baseline, though its RMSE is the lowest.
    assert assessment.loc["a", "best_baseline"] == twins.BASELINE
    assert assessment.loc["a", "ratio_to_best_baseline"] == pytest.approx(0.8)
    section = twins.results_section(result, assessment, twins.assessment_summary(assessment),
                                    seed=0)
    assert section["rmse"]["a"]["s"] == pytest.approx(ranked.loc[("a", "s"), "rmse"])
    assert section["assessment"]["a"]["best scheme"] == "s"
    assert section["target"]["modes_beaten"] == 1 and section["target"]["met"] is False
    assert "not met" in section["target"]["verdict"]
