"""notebooks/08_forecasting.ipynb runs end to end with tiny models on one synthetic year."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

LEARNED = ["autoencoder", "barlow_twins", "sparse_barlow_twins"]
FORECASTERS = [*LEARNED, "eof_code"]  # the learned latents and their EOF twin
RESIDUAL = [f"{name} + residual" for name in FORECASTERS]
ABLATION = [f"{name} latent persistence + residual" for name in FORECASTERS]
REFERENCES = ["persistence", "climatology", "damped_persistence", "linear_regression",
              "linear_inverse_model"]
BASELINES = [*REFERENCES, "eof_code", "eof_code + residual"]
RATIOS = [0.0, 0.5, 0.9]


@pytest.mark.notebook
def test_notebook_08_forecasts_in_latent_space(run_notebook, tmp_path):
    run_notebook(
        "08_forecasting.ipynb", start="2000-01-01", end="2000-12-31", batch_size=32, width=4,
        latent_dim=16, proj_dim=8, ae_epochs=1, encoder_epochs=1, decoder_epochs=1,
        decoder_width=2, context=10, lstm_hidden=16, forecast_epochs=1, forecast_batch_size=32,
        n_eval_days=60, max_lead=5, context_mask_ratios=RATIOS, lr_components=8,
        space="anomaly", train_fraction=0.6, test_fraction=0.2, encoder="eof_residual")
    runs = tmp_path / "runs"
    results = json.loads((runs / "results" / "08_forecasting.json").read_text())
    assert results["synthetic"] is True and results["context"] == 10
    # Issue 23: anomaly space, EOF-residual encoders, every score on the held-out test block.
    assert results["scored_block"] == "test" and results["space"] == "anomaly"
    assert results["encoder"] == "eof_residual"
    # Forecasts start in the last 20 % of the year (test block from ~19 October), after the
    # 10 days of context.
    assert "2000-10-25" <= results["split"]["first_scored_day"] <= "2000-11-05"
    assert results["reproducibility"]["deterministic_algorithms"] is True
    # 60 evaluation days: starts from day 9 (10 days of context) to day 54 (5 days ahead).
    assert results["n_eval_days"] == 60 and results["n_forecasts"] == 46
    assert results["forecasters"] == FORECASTERS and results["baselines"] == BASELINES
    # One LSTM per representation (the EOF twin's too) and a frozen-encoder decoder per Barlow
    # Twins, all cached.
    models = runs / "models"
    assert len(list(models.glob("latent_seq2seq-*/checkpoint.pt"))) == 4
    assert results["models"]["eof_code"] == "eof_code-16"
    # Each Barlow Twins decoder chosen on validation days between the conv and ridge decoders.
    for name in ["barlow_twins", "sparse_barlow_twins"]:
        choice = results["decoders"][name]
        errors = {k: v["mean RMSE / climatology"] for k, v in choice["validation"].items()}
        assert set(errors) == {"conv", "ridge"} and choice["chosen"] == min(errors, key=errors.get)
    assert len(list(models.glob("frozen_decoder-*/checkpoint.pt"))) == 2
    assert results["models"]["sparse_barlow_twins"] != results["models"]["barlow_twins"]

    scores = pd.DataFrame(results["scores"])
    assert set(scores.forecaster) == {*FORECASTERS, *RESIDUAL, *ABLATION, *REFERENCES}
    assert sorted(set(scores.lead)) == [1, 2, 3, 4, 5] and (scores.n == 46).all()
    assert (scores.rmse > 0).all()
    assert ((scores.rmse_low <= scores.rmse) & (scores.rmse <= scores.rmse_high)).all()
    acc = scores[scores.forecaster != "climatology"].acc
    assert acc.between(-1, 1).all()
    assert scores[scores.forecaster == "climatology"].acc.isna().all()  # zero anomaly
    t2m = scores[scores.variable == "2m_temperature"].set_index(["forecaster", "lead"]).rmse
    # Physical units: 2 m temperature errors in kelvin; persistence error grows with lead.
    assert 1 < t2m[("climatology", 1)] < 30
    assert t2m[("persistence", 1)] < t2m[("persistence", 3)]
    z500 = scores[scores.variable == "geopotential"].set_index(["forecaster", "lead"]).rmse
    for name in FORECASTERS:
        # The 1-epoch decoders are poor; carrying the initial day's residual must help at lead 1.
        assert t2m[(f"{name} + residual", 1)] < t2m[(name, 1)]
        assert z500[(f"{name} + residual", 1)] < z500[(name, 1)]
        stop = results["lstm_stop"][name]
        assert stop["epochs_run"] == 1 and stop["reason"] == "epochs"
        assert sorted(results["residual_rho_median"][name]) == ["1", "2", "3", "4", "5"]
    ratio = results["lead1_rmse_over_persistence"]["autoencoder"]["2m_temperature"]
    assert ratio == pytest.approx(t2m[("autoencoder", 1)] / t2m[("persistence", 1)])
    ceilings = pd.DataFrame(results["ceilings"])
    assert set(ceilings.forecaster) == {f"{n} (decoder ceiling)" for n in FORECASTERS} | {
        f"{n} + residual (perfect latent)" for n in FORECASTERS}
    assert sorted(set(ceilings.lead)) == [1, 2, 3, 4, 5] and (ceilings.n == 46).all()
    # Issue 24: every forecaster with its decoder ceiling at lead 0, then leads 1..3.
    lead_table = pd.DataFrame(results["ceiling_lead_table"]).set_index(
        ["forecaster", "variable", "lead"]).rmse
    ceiling = ceilings.set_index(["forecaster", "variable", "lead"]).rmse
    for name in FORECASTERS:
        for row in (name, f"{name} + residual"):
            assert lead_table[(row, "2m_temperature", 0)] == pytest.approx(
                ceiling[(f"{name} (decoder ceiling)", "2m_temperature", 1)])
            assert lead_table[(row, "geopotential", 3)] == pytest.approx(
                scores.set_index(["forecaster", "variable", "lead"]).rmse[
                    (row, "geopotential", 3)])
    assert lead_table[("linear_inverse_model", "geopotential", 0)] == pytest.approx(
        ceiling[("eof_code (decoder ceiling)", "geopotential", 1)])
    assert math.isnan(lead_table[("damped_persistence", "geopotential", 0)])
    # The target assessment: the best latent forecast against damped persistence (leads 1, 3)
    # and against its EOF twin (leads 1, 3, 5).
    assessment = pd.DataFrame(results["target_assessment"])
    assert set(assessment.variable) == {"2m_temperature", "geopotential"}
    assert set(assessment.best_latent) <= {*LEARNED, *(f"{n} + residual" for n in LEARNED)}
    damped = assessment[assessment.target == "beats damped_persistence"]
    assert sorted(set(damped.lead)) == [1, 3] and (damped.reference == "damped_persistence").all()
    twin = assessment[assessment.target == "at least as good as its EOF twin"]
    assert sorted(set(twin.lead)) == [1, 3, 5]
    assert set(twin.reference) <= {"eof_code", "eof_code + residual"}
    for row in assessment.itertuples():
        assert row.rmse == pytest.approx(scores.set_index(["forecaster", "variable", "lead"])
                                         .rmse[(row.best_latent, row.variable, row.lead)])
        assert row.ratio == pytest.approx(row.rmse / row.reference_rmse)
    assert set(results["targets_met"]) == {"beats damped_persistence",
                                           "at least as good as its EOF twin", "all"}

    versus = pd.DataFrame(results["versus_best_baseline"])
    assert set(versus.best_baseline) <= set(BASELINES)
    assert (versus.variables_better <= 5).all()

    # Robustness: one RMSE per missing fraction; no mask is the lead-1 forecast.
    assert results["mask_ratios"] == RATIOS
    for name in FORECASTERS:
        values = results["mask_ratio_rmse"][name]["2m_temperature"]
        assert len(values) == len(RATIOS) and all(math.isfinite(v) for v in values)
        assert values[0] == pytest.approx(t2m[(name, 1)], rel=1e-5)
    assert set(results["summary"]) == {*FORECASTERS, *RESIDUAL, *ABLATION, *BASELINES,
                                       *ceilings.forecaster.unique()}

    # Scorecard section: persistence and every model for leads "1".."5", with intervals.
    card = results["scorecard"]
    assert sorted(card["persistence_rmse"]) == ["1", "2", "3", "4", "5"]
    assert sorted(card["forecast_rmse"]) == sorted(
        [*FORECASTERS, *(f"{name}_residual" for name in FORECASTERS), "linear_regression",
         "damped_persistence", "linear_inverse_model"])
    assert card["forecast_rmse"]["autoencoder_residual"]["1"]["2m_temperature"] == \
        pytest.approx(t2m[("autoencoder + residual", 1)])
    assert card["persistence_rmse"]["1"]["2m_temperature"] == pytest.approx(
        t2m[("persistence", 1)])
    low, high = card["intervals"]["forecast_rmse"]["damped_persistence"]["3"]["geopotential"]
    assert low <= card["forecast_rmse"]["damped_persistence"]["3"]["geopotential"] <= high
