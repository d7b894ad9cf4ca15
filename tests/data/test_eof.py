"""EOF code: orthonormal modes, best linear code of its size, gappy fit, errors."""

from __future__ import annotations

import numpy as np
import pytest

from geofusion.data.eof import area_weights, fit_eof

LAT = np.linspace(-75, 75, 6)


def fields(n=120, seed=0):
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(3, 2, 6, 8))
    amplitude = rng.normal(size=(n, 3)) * np.array([3.0, 2.0, 1.0])
    return (np.einsum("tk,kchw->tchw", amplitude, patterns)
            + 0.05 * rng.normal(size=(n, 2, 6, 8))).astype("float32")


def weighted_mse(a, b):
    w = area_weights(LAT)[None, None, :, None]
    return float((w * (a - b) ** 2).mean())


def test_modes_are_orthonormal_and_three_modes_hold_three_patterns():
    a = fields()
    code = fit_eof(a, LAT, k=3)
    gram = code.components.astype(np.float64) @ code.components.T
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-5)
    assert code.explained_variance > 0.99
    assert weighted_mse(code.decode(code.encode(a)), a) < 0.01 * weighted_mse(a, 0 * a)


def test_eof_is_the_best_linear_code_of_its_size():
    """Eckart-Young: no other rank-k projection reconstructs the training days better (in
    the area-weighted MSE); checked against random orthonormal bases and against a hand-made
    SVD of the weighted data matrix."""
    a = fields(seed=1)
    code = fit_eof(a, LAT, k=2)
    err = weighted_mse(code.decode(code.encode(a)), a)
    sqrt_w = np.sqrt(area_weights(LAT))[None, :, None]
    y = ((a - a.mean(0)) * sqrt_w).reshape(len(a), -1).astype(np.float64)
    _, s, vt = np.linalg.svd(y, full_matrices=False)
    assert err == pytest.approx((s[2:] ** 2).sum() / y.size, rel=1e-3)
    rng = np.random.default_rng(2)
    for _ in range(5):
        q, _ = np.linalg.qr(rng.normal(size=(y.shape[1], 2)))
        other = (y @ q) @ q.T
        assert err <= float(((other - y) ** 2).mean()) + 1e-9


def test_gappy_fit_recovers_the_coefficients_from_half_the_points():
    a = fields(seed=3)
    code = fit_eof(a, LAT, k=3)
    rng = np.random.default_rng(4)
    observed = rng.random((len(a), 6, 8)) > 0.5
    gappy = code.encode_observed(np.where(observed[:, None], a, 0.0), observed)
    np.testing.assert_allclose(gappy, code.encode(a), atol=0.05 * code.coefficient_std.max())
    # all observed: the ridge term is tiny and the fit is the projection
    full = code.encode_observed(a, np.ones((len(a), 6, 8), bool))
    np.testing.assert_allclose(full, code.encode(a), rtol=1e-3, atol=1e-3)


def test_bad_input_is_refused_with_the_fix():
    a = fields()
    with pytest.raises(ValueError, match="k must be in"):
        fit_eof(a, LAT, k=0)
    # T days about their mean span T - 1 directions: k = T would divide by a zero variance.
    few = a[:20]  # T = 20 < C*H*W = 96
    with pytest.raises(ValueError, match=r"k must be in \[1, min\(T - 1, C\*H\*W\)\] = \[1, 19\]"):
        fit_eof(few, LAT, k=20)
    assert np.isfinite(fit_eof(few, LAT, k=19).encode(few)).all()
    repeated = np.concatenate([a[:3]] * 4)  # 12 days, 3 distinct: 2 directions about the mean
    with pytest.raises(ValueError, match="span 2 directions, fewer than the 3"):
        fit_eof(repeated, LAT, k=3)
    bad = a.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_eof(bad, LAT, k=2)
    code = fit_eof(a, LAT, k=2)
    with pytest.raises(ValueError, match="same grid"):
        code.encode(a[:, :, :4])
    with pytest.raises(ValueError, match="observed must be"):
        code.encode_observed(a, np.ones((len(a), 6, 7), bool))


def test_channel_gappy_fit_ignores_the_absent_channel_and_fills_it_from_the_others():
    """Both channels carry the same three patterns, so the code fitted to channel 0 alone
    recovers the coefficients (and so channel 1); an explicit ridge solve on channel 0's
    columns is the independent reference."""
    a = fields(seed=5)
    code = fit_eof(a, LAT, k=3)
    scrambled = a.copy()
    scrambled[:, 1] = 1e6
    z = code.encode_channels(scrambled, present=[0])
    np.testing.assert_array_equal(z, code.encode_channels(a, present=[0]))
    columns = np.zeros(a.shape[1:], bool)
    columns[0] = True
    v = code.components.astype(np.float64)[:, columns.reshape(-1)]
    y = ((a.astype(np.float64) - code.mean) * code.sqrt_weights).reshape(len(a), -1)[
        :, columns.reshape(-1)]
    gram = v @ v.T + code.truncation_mse * np.diag(1 / code.coefficient_std.astype(float) ** 2)
    # float32 output of a float64 solve: a few ulps of coefficients of size ~10.
    np.testing.assert_allclose(z, np.linalg.solve(gram, v @ y.T).T, rtol=1e-5, atol=1e-4)
    filled = code.decode(z)[:, 1]
    assert weighted_mse(filled[:, None], a[:, 1:]) < 0.05 * weighted_mse(0 * a[:, 1:], a[:, 1:])
    with pytest.raises(ValueError, match="present must name channels"):
        code.encode_channels(a, present=[2])
