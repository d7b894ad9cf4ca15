"""notebooks/11_beyond.ipynb trains every ablation variant tiny and writes `ablations`."""

from __future__ import annotations

import ast
import json
import math

import pytest

from geofusion.experiments.ablations import (
    DIRECTIONS,
    REFERENCES,
    SCORES,
    SETTING_KEYS,
    VARIANTS,
)
from geofusion.experiments.scorecard import validate_scorecard
from geofusion.reporting.notebooks import declared_parameters

#: Notebook 11's parameters that do not change what is measured (SETTING_KEYS: all others).
NOT_SETTINGS = {"profile", "deterministic", "device", "run_dir", "cache_dir", "variants",
                "train_seed", "seed_table", "fusion_scheme"}
TINY = dict(start="2000-01-01", end="2001-12-31", epochs=1, batch_size=16, width=2,
            latent_dim=8, proj_dim=4, proj_hidden_dim=8, easy_min=100, n_eval_days=16,
            members=4, diffusion_steps=10, diffusion_epochs=2, diffusion_batch_size=32,
            diffusion_hidden=16, diffusion_train_days=64, climatology_window=183,
            probe_hidden=[8], probe_iterations=50)
CHANNELS = ["2m_temperature", "geopotential", "u_component_of_wind", "v_component_of_wind",
            "specific_humidity"]


def test_notebook_11_settings_are_every_parameter_that_changes_the_measurement():
    """A new parameter of notebook 11 must join SETTING_KEYS (or NOT_SETTINGS), so that a
    seed table measured at other settings is never read as this run's."""
    assert set(SETTING_KEYS) == set(declared_parameters("11_beyond")) - NOT_SETTINGS


def _seed_table(settings):
    """Three hand-made seeds in which `all` beats every other row beyond the intervals in
    every score of DIRECTIONS, and `baseline` equals every reference row."""
    rows = {}
    for row in ("baseline", "all", *REFERENCES):
        good = row == "all"
        rows[row] = {score: ({c: (0.9 if good else 0.1) for c in CHANNELS}
                             if direction > 0 else {c: (1.0 if good else 2.0) for c in CHANNELS})
                     for score, direction in DIRECTIONS.items()}
        for score in ("season_accuracy", "season_cross_entropy"):
            rows[row][score] = rows[row][score]["geopotential"]
    bounds = {row: {score: ({c: [v, v] for c, v in entry.items()} if isinstance(entry, dict)
                            else [entry, entry]) for score, entry in scores.items()}
              for row, scores in rows.items()}
    return {"settings": settings, "seeds": [0, 1, 2], "commit": "test", "machine": "test",
            "values": {s: rows for s in range(3)}, "intervals": {s: bounds for s in range(3)}}


@pytest.mark.notebook
def test_notebook_11_writes_one_ablation_row_per_variant(run_notebook, tmp_path):
    defaults = {k: ast.literal_eval(v) for k, v in declared_parameters("11_beyond").items()}
    settings = {key: TINY.get(key, defaults[key]) for key in SETTING_KEYS}
    seed_table = tmp_path / "ablation_seeds.json"
    seed_table.write_text(json.dumps(_seed_table(settings)))
    (tmp_path / "runs" / "results").mkdir(parents=True)
    (tmp_path / "runs" / "results" / "09_fusion.json").write_text(json.dumps({
        "space": "anomaly", "scored_block": "test", "summary": {"late_graph_attention": {
            "season accuracy": 0.6, "latent second difference": 0.2}},
        "table_3_1": {"late_graph_attention": {"positive_cosine": 0.8}}}))
    run_notebook("11_beyond.ipynb", **TINY, variants=["baseline", "all"],
                 seed_table=str(seed_table))
    results = json.loads((tmp_path / "runs" / "results" / "11_beyond.json").read_text())
    card = validate_scorecard(results["scorecard"])
    # "all" switches every addition on, so it runs every code path of the other variants.
    assert set(card["ablations"]) == {"baseline", "all", *REFERENCES}
    for variant in ("baseline", "all"):
        row, bounds = card["ablations"][variant], card["intervals"]["ablations"][variant]
        assert set(row) == set(SCORES)
        assert 0 <= row["season_accuracy"] <= 1 and row["seconds_per_epoch"] > 0
        for score in ("reconstruction_rmse_50", "forecast_rmse_1day", "crps_decoder",
                      "crps_diffusion", "crps_forecast_deterministic",
                      "crps_forecast_diffusion"):
            for variable, value in row[score].items():
                low, high = bounds[score][variable]
                assert math.isfinite(value) and value > 0 and low <= value <= high
        # a one-member ensemble's CRPS is its MAE, never above its RMSE
        for variable, mae in row["crps_decoder"].items():
            assert mae <= row["reconstruction_rmse_50"][variable] * (1 + 1e-9)
        # physical units: kelvin, not standardised values
        assert 0.1 < row["crps_decoder"]["2m_temperature"] < 100
        assert all(v > 0 for v in row["spread_skill_forecast_diffusion"].values())
    references = card["ablations"]
    assert set(references["persistence"]) == {"forecast_rmse_1day",
                                              "crps_forecast_deterministic"}
    assert 0.1 < references["climatological_ensemble"]["crps_diffusion"]["2m_temperature"] < 30
    assert 0.1 < references["climatology"]["reconstruction_rmse_50"]["2m_temperature"] < 30
    assert set(VARIANTS) >= {"baseline", "all"}
    # Issue 23: the anomaly space, the EOF-residual encoder, every score on the test block (the
    # last fifth of 2000-2001, from August 2001), the references included.
    assert results["space"] == "anomaly" and results["encoder"] == "eof_residual"
    assert results["scored_block"] == "test" and results["eval_days"][0] >= "2001-08-01"
    assert results["decoder_observed"] is True  # the sparse latents meet a decoder fitted on them
    assert results["settings"] == settings and results["train_seed"] == results["settings"]["seed"]
    # Issue 24: each difference the run states is marked from the seed table, computed by code:
    # `all` beats every row in every seed (holds), `baseline` ties the references (does not).
    marks = results["across_seeds"]
    assert marks and all(m["verdict"] in ("better", "worse") for m in marks)
    for mark in marks:
        expected = ("holds across seeds" if mark["row"] == "all" and mark["verdict"] == "better"
                    else "does not")
        assert mark["across seeds"] == expected, mark
    # notebook 09's graph-attention scheme next to the variants, not among the compared rows
    assert results["fusion"]["values"] == {"late_graph_attention (09)": {
        "positive_cosine": 0.8, "season_accuracy": 0.6, "latent_second_difference": 0.2}}
    assert "late_graph_attention (09)" not in results["values"]
