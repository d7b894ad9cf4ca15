"""notebooks/09_fusion.ipynb runs end to end with tiny networks on two synthetic years."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

SCHEMES = ["early", "late_cross_attention"]


@pytest.mark.notebook
def test_notebook_09_compares_fusion_schemes(run_notebook, tmp_path):
    run_notebook(
        "09_fusion.ipynb", start="2000-01-01", end="2001-12-31", schemes=SCHEMES,
        dropout_scheme="late_cross_attention", mode_group_scheme="late_concat", epochs=1,
        batch_size=16, width=4, mode_width=2, token_dim=8, latent_dim=16, proj_dim=8,
        proj_hidden_dim=16, n_train_days=48, n_eval=24, decoder_epochs=1, decoder_width=2,
        context=5, lstm_hidden=8, forecast_epochs=1, forecast_lr=1e-3, forecast_train_days=120,
        fine_start="2001-01-01", fine_end="2001-01-31")
    runs = tmp_path / "runs"
    results = json.loads((runs / "results" / "09_fusion.json").read_text())
    expected = [*SCHEMES, "late_cross_attention+dropout", "late_concat+mode_group"]
    baseline_rows = ["persistence", "damped persistence", "linear regression"]
    assert sorted(results["summary"]) == sorted([*expected, *baseline_rows])
    # The notebook's default encoder (issue 24): every scheme is the residual of the EOF code,
    # its checkpoints apart from those of the schemes alone.
    assert not (runs / "09_fusion").exists()
    for name in expected:
        assert (runs / "09_fusion_eof_residual" / name / "checkpoint.pt").exists()
        assert (runs / "09_fusion_eof_residual" / name / "decoder" / "checkpoint.pt").exists()
        row = results["summary"][name]
        assert -1 <= row["missing-mode cosine (worst)"] <= row["missing-mode cosine (mean)"] <= 1
        assert row["recon RMSE / climatology"] > 0 and math.isfinite(row["MFLOPs/sample"])
        # Season probe and smoothness of every fusion encoder (issue 15).
        assert 0 <= row["season accuracy"] <= 1 and row["latent second difference"] >= 0
    # The mode-dropout twin shares its architecture with the plain scheme: same cost.
    plain, twin = results["summary"]["late_cross_attention"], \
        results["summary"]["late_cross_attention+dropout"]
    assert plain["parameters"] == twin["parameters"]
    assert results["synthetic"] is True and results["n_train_days"] == 48
    # Issue 23: the anomaly space, a 60/20/20 split in time, every score on the test block
    # (the last fifth of 2000-2001: from August 2001; two years so that the training days
    # hold every season the probe scores), never on training or validation days.
    assert results["space"] == "anomaly" and results["scored_block"] == "test"
    assert results["n_eval_days"] == 24 and results["eval_days"][0] >= "2001-08-01"
    assert results["fine_grid"] == [64, 128]
    assert results["fine_skipped"] is None  # synthetic data: a synthetic fine grid
    assert set(results["fine_rmse"]) == {"new fine-grid decoder",
                                         "training-grid decoder, upsampled", "training mean"}
    # Physical units: the climatology RMSE of 2 m temperature is kelvins, not standardised; the
    # reference called climatology is the day-of-year climatology, the training mean is named.
    climatology_t2m = results["rmse"]["day-of-year climatology"]["2m_temperature [K]"]
    assert 0.1 < climatology_t2m < 50
    assert climatology_t2m < results["rmse"]["training mean"]["2m_temperature [K]"]
    for model, row in results["intervals"]["rmse"].items():  # 95 % block-bootstrap intervals
        for unit, (low, high) in row.items():
            assert low <= results["rmse"][model][unit] <= high, (model, unit)
    # Each encoder is scored on its training input: the mode-group one trained on the native grid.
    views = {name: row["view"] for name, row in results["table_3_1"].items()}
    for row in results["table_3_1"].values():
        assert row["negative_cosine_low"] <= row["negative_cosine"] <= row["negative_cosine_high"]
    assert views == {**{name: "augmented" for name in expected[:-1]},
                     "late_concat+mode_group": "native_grid"}
    # Issue 24: the linear twins. Complete input: the equal-size EOF code (k = latent_dim) and a
    # ridge decoder on every scheme's latent, scored like the conv decoders (intervals above).
    assert {"EOF code (k = 16)", *(f"{n} + ridge decoder" for n in expected)} <= \
        set(results["rmse"])
    for name in expected:
        row = results["summary"][name]
        assert row["recon RMSE / best baseline"] > 0
        assert row["recon RMSE / climatology (ridge decoder)"] > 0
    # A missing mode: every scheme with three decoders against the regression, per mode.
    missing = results["missing_mode"]
    assert missing["k"] == 16 and missing["scored_block"] == "test"
    assert missing["selected_on"] == "valid"
    assert set(missing["rmse"]) == {u.split(" [")[0] for u in results["rmse"]["training mean"]}
    for mode, rows in missing["rmse"].items():
        decoders = ("conv decoder", "ridge decoder", "ridge readout (mode absent)")
        assert {"linear regression", "gappy EOF code (k = 16)", "day-of-year climatology",
                *(f"{n} + {d}" for n in expected for d in decoders)} <= set(rows)
        for row, value in rows.items():
            low, high = missing["intervals"][mode][row]
            assert 0 < low <= value <= high, (mode, row)
        verdict = missing["assessment"][mode]
        assert verdict["best scheme"].split(" + ")[0] in expected
        assert verdict["rmse"] == pytest.approx(rows[verdict["best scheme"]])
        assert verdict["baseline_rmse"] == pytest.approx(rows["linear regression"])
        assert verdict["ratio"] == pytest.approx(verdict["rmse"] / verdict["baseline_rmse"])
        assert verdict["ratio_low"] <= verdict["ratio"] <= verdict["ratio_high"]
        assert verdict["clear"] == (verdict["ratio_high"] < 1)
    target = missing["target"]
    clear = sum(v["clear"] for v in missing["assessment"].values())
    assert target["modes_clearly_beaten"] == clear and target["met"] == (clear >= 3)
    # 1-day forecast in latent space: every scheme, persistence and climatology, per variable.
    forecast = results["forecast"]
    assert forecast["context"] == 5 and forecast["n_inits"] > 0
    # The LSTM trains on the last 120 consecutive training days (the encoders on random days).
    first, last = (np.datetime64(day) for day in forecast["lstm_train_days"])
    assert (last - first).astype(int) == 119
    ceilings = [f"{name} (decoder ceiling)" for name in expected]
    assert set(forecast["rmse"]) == {*expected, *ceilings, *baseline_rows, "climatology"}
    for name, row in forecast["rmse"].items():
        assert set(row) == set(results["rmse"]["training mean"])  # every variable, with its unit
        for unit, (low, high) in results["intervals"]["forecast_rmse"][name].items():
            assert low <= row[unit] <= high
        assert all(math.isfinite(v) and v > 0 for v in row.values()), (name, row)
        acc = forecast["acc"][name]
        if name == "climatology":
            assert all(v is None for v in acc.values())  # zero anomaly: no correlation
        else:
            assert all(math.isfinite(v) and -1 <= v <= 1 for v in acc.values()), (name, acc)
    for name in expected:
        assert math.isfinite(forecast["lstm_skill_ratio"][name])
        ratio = results["summary"][name]["forecast RMSE / climatology (1 day)"]
        assert math.isfinite(ratio) and ratio > 0
        # Against the best of the four baselines, variable by variable, then averaged.
        versus_best = [forecast["rmse"][name][v] / min(forecast["rmse"][b][v] for b in
                                                       [*baseline_rows, "climatology"])
                       for v in forecast["rmse"][name]]
        assert results["summary"][name]["forecast RMSE / best baseline (1 day)"] == \
            pytest.approx(np.mean(versus_best))
    # Physical units: a 1-day 2 m temperature forecast is off by kelvins, not standardised units,
    # and persistence beats the climatology one day ahead.
    t2m = {name: row["2m_temperature [K]"] for name, row in forecast["rmse"].items()}
    assert all(0.1 < v < 50 for v in t2m.values()), t2m
    assert t2m["persistence"] < t2m["climatology"]
    persistence = results["summary"]["persistence"]
    assert persistence["parameters"] is None
    assert 0 < persistence["forecast RMSE / climatology (1 day)"] < 1
    # The summary column is the mean over variables of RMSE / climatology RMSE.
    ratios = [forecast["rmse"]["persistence"][v] / forecast["rmse"]["climatology"][v]
              for v in forecast["rmse"]["climatology"]]
    assert persistence["forecast RMSE / climatology (1 day)"] == pytest.approx(np.mean(ratios))
