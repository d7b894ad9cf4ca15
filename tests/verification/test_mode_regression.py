"""The missing-mode regression (notebook 09's linear twin): a hand-worked ridge, blocked
cross-validation that picks the right penalty, a known linear world recovered, the absent
channel never read, and the training days only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from geofusion.data.climatology import day_of_year
from geofusion.data.eof import area_weights, fit_eof
from geofusion.verification.baselines import training_climatology
from geofusion.verification.mode_regression import (
    fit_missing_mode_regression,
    fit_ridge_cv,
)
from tests.verification.test_baselines import make_prepared, perturb_valid


def test_ridge_matches_the_normal_equations_worked_by_hand():
    # One input, two outputs, one penalty: coef = sum(x_c y_c) / (sum(x_c^2) + alpha).
    x = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    y = np.column_stack([2.0 * x[:, 0] + 1.0, -x[:, 0]])
    y[:, 0] += np.array([0.1, -0.1, 0.2, -0.2, 0.0, 0.0])
    fit = fit_ridge_cv(x, y, relative_alphas=[0.5], folds=2)
    xc = x[:, 0] - 2.5                       # sum(xc^2) = 17.5, scale = 17.5 / 1
    alpha = 0.5 * 17.5
    assert fit.alpha == pytest.approx(alpha)
    expected = (xc @ (y - y.mean(0))) / (17.5 + alpha)
    np.testing.assert_allclose(fit.coef[0], expected, rtol=1e-12)
    np.testing.assert_allclose(fit.predict(x), y.mean(0) + xc[:, None] * expected, rtol=1e-12)


def test_cross_validation_error_is_the_held_out_error_of_each_penalty():
    """Independent loop: refit on the other blocks by lstsq of the augmented system."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = x @ rng.normal(size=(3, 5)) + 2.0 * rng.normal(size=(40, 5))
    w = np.array([0.5, 1.0, 1.5, 1.0, 1.0])
    fit = fit_ridge_cv(x, y, w, relative_alphas=[1e-3, 1.0, 100.0], folds=4)
    for alpha, error in zip(fit.alphas, fit.cv_error, strict=True):
        total = 0.0
        for held in np.array_split(np.arange(40), 4):
            keep = np.setdiff1d(np.arange(40), held)
            xm, ym = x[keep].mean(0), y[keep].mean(0)
            design = np.vstack([x[keep] - xm, np.sqrt(alpha) * np.eye(3)])
            target = np.vstack([y[keep] - ym, np.zeros((3, 5))])
            coef = np.linalg.lstsq(design, target, rcond=None)[0]
            total += float((((x[held] - xm) @ coef + ym - y[held]) ** 2 * w).sum())
        # float64 SVD against float64 lstsq of the same system: agree to ~1e-10 relative.
        assert error == pytest.approx(total / (40 * w.sum()), rel=1e-8)
    assert fit.alpha == fit.alphas[np.argmin(fit.cv_error)]


def test_penalty_grows_when_the_inputs_are_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 10))
    signal = fit_ridge_cv(x, x @ rng.normal(size=(10, 3)), folds=5)
    noise = fit_ridge_cv(x, rng.normal(size=(200, 3)), folds=5)
    assert noise.alpha > 100 * signal.alpha


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="same N"):
        fit_ridge_cv(np.zeros((10, 2)), np.zeros((9, 2)))
    with pytest.raises(ValueError, match="more days"):
        fit_ridge_cv(np.zeros((5, 2)), np.zeros((5, 2)), folds=5)
    with pytest.raises(ValueError, match="one weight per column"):
        fit_ridge_cv(np.ones((20, 2)), np.ones((20, 3)), np.ones(2))


def linear_world(n_days: int = 500, seed: int = 0):
    """Three channels on a 4 x 6 grid: channels 1 and 2 are noisy, fixed linear images of
    channel 0's two patterns' amplitudes, so channel 2 is (nearly) a linear function of the
    others."""
    rng = np.random.default_rng(seed)
    amplitude = rng.normal(size=(n_days, 2)) * np.array([2.0, 1.0])
    patterns = rng.normal(size=(2, 3, 4, 6))
    fields = np.einsum("tk,kchw->tchw", amplitude, patterns)
    fields += 0.01 * rng.normal(size=fields.shape)
    times = pd.date_range("2001-01-01", periods=n_days, freq="D").values
    return make_prepared(fields.astype(np.float32), times, n_train=400), amplitude, patterns


def test_recovers_a_mode_that_is_a_linear_function_of_the_others():
    prepared, _, _ = linear_world()
    regression = fit_missing_mode_regression(prepared, mode=2, k=2)
    assert regression.present == (0, 1)
    predicted = regression.predict(prepared.valid, prepared.valid_times)
    truth = prepared.valid[:, 2]
    assert np.sqrt(np.mean((predicted - truth) ** 2)) < 0.05 * truth.std()
    # A code too small to hold both patterns cannot: the size k matters.
    small = fit_missing_mode_regression(prepared, mode=2, k=1)
    small_error = np.sqrt(np.mean((small.predict(prepared.valid, prepared.valid_times)
                                   - truth) ** 2))
    assert small_error > 0.1 * truth.std()


def test_the_absent_channel_is_never_read():
    prepared, _, _ = linear_world()
    regression = fit_missing_mode_regression(prepared, mode=1, k=2)
    fields = prepared.valid.copy()
    scrambled = fields.copy()
    scrambled[:, 1] = 1e6
    np.testing.assert_array_equal(regression.predict(fields, prepared.valid_times),
                                  regression.predict(scrambled, prepared.valid_times))


def test_fit_reads_the_training_days_only():
    prepared, _, _ = linear_world()
    a = fit_missing_mode_regression(prepared, mode=0, k=2)
    b = fit_missing_mode_regression(perturb_valid(prepared), mode=0, k=2)
    c = fit_missing_mode_regression(dataclasses.replace(prepared, test=prepared.valid[:10],
                                                        test_times=prepared.valid_times[:10]),
                                    mode=0, k=2)
    for other in (b, c):
        np.testing.assert_array_equal(a.ridge.coef, other.ridge.coef)
        np.testing.assert_array_equal(a.code.components, other.code.components)
        assert a.ridge.alpha == other.ridge.alpha
    # And a different training block changes it.
    d = fit_missing_mode_regression(dataclasses.replace(prepared, train=prepared.train[::-1]
                                                        * 1.5), mode=0, k=2)
    assert not np.array_equal(a.ridge.coef, d.ridge.coef)


def test_code_is_the_eof_code_of_the_present_modes():
    prepared, _, _ = linear_world()
    regression = fit_missing_mode_regression(prepared, mode=0, k=2)
    # The EOFs of the present modes' anomalies against the training climatology.
    clim = training_climatology(prepared)[day_of_year(prepared.train_times) - 1]
    reference = fit_eof(prepared.train[:, 1:].astype(np.float64) - clim[:, 1:], prepared.lat, 2)
    np.testing.assert_allclose(regression.code.components, reference.components, rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(regression.ridge.x_mean, 0.0, atol=1e-5)  # centred codes
    assert area_weights(prepared.lat).shape == (4,)
    with pytest.raises(ValueError, match="channel index"):
        fit_missing_mode_regression(prepared, mode=3, k=2)
