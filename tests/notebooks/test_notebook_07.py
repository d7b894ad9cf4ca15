"""notebooks/07_decoder.ipynb runs end to end with tiny networks on two synthetic years (the
60 % training block must hold every season)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

MODELS = ["autoencoder", "frozen_bt", "kadeethum", "quetin", "yao_dippel"]


@pytest.mark.notebook
def test_notebook_07_compares_frozen_and_joint_decoders(run_notebook, tmp_path):
    run_notebook(
        "07_decoder.ipynb", start="2000-01-01", end="2001-12-31", batch_size=16, width=4,
        latent_dim=16, proj_dim=8, proj_hidden_dim=16, ae_epochs=1, encoder_epochs=1,
        decoder_epochs=1, decoder_width=4, joint_epochs=2, n_train_days=64, inner_batch=8,
        alpha_start=0.8, alpha_end=0.2, yao_mask_ratio=0.5, n_eval=24)
    runs = tmp_path / "runs"
    results = json.loads((runs / "results" / "07_decoder.json").read_text())
    assert results["synthetic"] is True and results["n_train_days"] == 64
    assert results["n_eval"] == 24
    baselines = results["baselines"]
    assert baselines == ["climatology", "optimal_interpolation", "eof", "gappy_eof"]
    # Issue 23: anomaly space, eof_residual encoders, latitude-weighted reconstruction terms,
    # scored on evenly spaced days of the TEST block (the last 20 % of the two years).
    assert results["scored_block"] == "test" and results["space"] == "anomaly"
    assert results["encoder"] == "eof_residual" and results["reconstruction_loss"] == "lat_weighted"
    assert results["eval_days"][0] >= "2001-08-01" and results["eval_days"][1] <= "2001-12-31"
    for description in (runs / "models").glob("joint_*/description.json"):
        params = json.loads(description.read_text())["params"]
        assert params["encoder"] == "eof_residual"
        assert params["reconstruction_loss"] == "lat_weighted"
    frozen = [json.loads(d.read_text())
              for d in (runs / "models").glob("frozen_decoder*/description.json")]
    assert len(frozen) == 1 and frozen[0]["reconstruction_loss"] == "lat_weighted"
    assert sorted(results["summary"]) == sorted([*MODELS, *baselines])
    assert {results["best"], results["worst"]} <= set(MODELS)
    for name in MODELS:
        row = results["summary"][name]
        for key in ("RMSE / climatology", "RMSE / climatology (sparse input)",
                    "2m temperature RMSE [K]", "positive_cosine", "negative_cosine",
                    "embedding_variance", "final reconstruction MSE"):
            assert row[key] is not None and math.isfinite(row[key]), (name, key)
        assert -1 <= row["negative_cosine"] <= 1 and -1 <= row["positive_cosine"] <= 1
        assert row["vs best baseline (sparse input)"].split(" x ")[1].split(" (")[0] in baselines
        for key in ("anomaly correlation", "anomaly variance explained"):
            assert math.isfinite(row[key]) and row[key] <= 1, (name, key)
    # The equal-size linear code beats the climatology on complete days (it is fitted to the
    # training anomalies and the climatology is 0 there).
    assert results["summary"]["eof"]["RMSE / climatology"] < 1
    curves = pd.DataFrame(results["curves"])
    assert sorted(set(curves.missing_fraction)) == [0.0, 0.5]
    assert set(curves.model) == {*MODELS, *baselines}
    assert ((curves.rmse_low <= curves.rmse) & (curves.rmse <= curves.rmse_high)).all()
    # Physical units: 2 m temperature errors are kelvins (standardised errors would be ~1);
    # the climatology is the day-of-year one and ignores the observation.
    t2m = curves[(curves.model == "climatology") & (curves.variable == "2m_temperature")].rmse
    assert t2m.nunique() == 1 and 0.1 < t2m.iloc[0] < 10
    assert 0.1 < results["summary"]["kadeethum"]["2m temperature RMSE [K]"] < 100
    # Both terms of each joint objective are logged per epoch; Quetin's alpha follows its schedule.
    for scheme in ("kadeethum", "quetin", "yao_dippel"):
        history = results["histories"][scheme]
        assert len(history["contrastive"]) == 2 and len(history["reconstruction"]) == 2
    assert results["histories"]["quetin"]["alpha"] == pytest.approx([0.8, 0.2])
    assert results["summary"]["autoencoder"]["final contrastive loss"] is None
    # The joint models are cached under the run directory (a rerun loads them).
    assert len(list((runs / "models").glob("joint_*/checkpoint.pt"))) == 3
