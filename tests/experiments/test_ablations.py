"""Each ablation variant switches on exactly its own additions."""

from __future__ import annotations

import pytest

from geofusion.experiments.ablations import VARIANTS, ablation_table, variant_settings
from geofusion.learning.config import TrainConfig


def test_each_variant_switches_on_exactly_its_additions():
    config = TrainConfig(batch_size=12)
    seen = {}
    for variant in VARIANTS:
        kwargs, cfg = variant_settings(variant, config, max_shift=3, smoothness_weight=0.5)
        pairs = kwargs.get("temporal_pairs")
        seen[variant] = (bool(pairs) and kwargs["temporal_positives"],
                         kwargs.get("smoothness_weight", 0.0) > 0,
                         cfg.batch_sampler is not None)
        if kwargs.get("smoothness_weight"):
            assert pairs["with_mirror"] is True  # the smoothness term needs t - d, t, t + d
        if pairs:
            assert pairs["max_shift"] == 3
    assert seen == {"baseline": (False, False, False), "temporal_positives": (True, False, False),
                    "smoothness": (False, True, False),
                    "time_aware_batches": (False, False, True), "all": (True, True, True)}
    assert config.batch_sampler is None  # the caller's config is not changed
    with pytest.raises(ValueError, match="unknown ablation variant"):
        variant_settings("smooth", config)


def test_ablation_table_flattens_variables_and_formats_intervals():
    table = ablation_table({"a": {"crps": {"t": 1.23456, "z": 2.0}, "acc": 0.5}},
                           {"a": {"crps": {"t": [1.0, 1.5]}}})
    assert table.loc["a", "crps: t"] == "1.235 [1, 1.5]"
    assert table.loc["a", "crps: z"] == "2" and table.loc["a", "acc"] == "0.5"


def test_latent_ridge_forecast_is_exact_for_latents_that_evolve_linearly():
    import numpy as np
    import torch
    from torch import nn

    from geofusion.data import PreparedData
    from geofusion.downstream.reconstruction import LatentReconstructor
    from geofusion.experiments.ablations import latent_ridge_forecast

    class Flat(nn.Module):
        mask_channel = False

        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(1))

        def embed(self, fields):
            return fields.flatten(1)

    identity = nn.Linear(2, 2)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2))
        identity.bias.zero_()
    decoder = nn.Sequential(identity, nn.Unflatten(1, (1, 1, 2)))
    angles = 0.3 * np.arange(60)  # a rotation: z_{t+1} = R z_t exactly
    days = np.stack([np.cos(angles), np.sin(angles)], axis=1).reshape(60, 1, 1, 2)
    prepared = PreparedData(train=days[:40].astype(np.float32),
                            valid=days[40:].astype(np.float32), train_times=np.arange(40),
                            valid_times=np.arange(40, 60), channels=("x",),
                            mean=np.zeros(1), std=np.ones(1), lat=np.zeros(1), lon=np.zeros(2),
                            level=500, synthetic=True)
    forecast = latent_ridge_forecast(LatentReconstructor(Flat(), decoder), prepared, 10,
                                     ridge=1e-9)
    np.testing.assert_allclose(forecast, days[41:51], atol=1e-4)
    with pytest.raises(ValueError, match="n_days"):
        latent_ridge_forecast(LatentReconstructor(Flat(), decoder), prepared, 20)
    # The test block (issue 23): fitted on training days only (NaN validation days change
    # nothing), forecasting test days 1..n from days 0..n-1 of the test block.
    three_way = PreparedData(train=days[:30].astype(np.float32),
                             valid=np.full((15, 1, 1, 2), np.nan, np.float32),
                             test=days[45:].astype(np.float32), train_times=np.arange(30),
                             valid_times=np.arange(30, 45), test_times=np.arange(45, 60),
                             channels=("x",), mean=np.zeros(1), std=np.ones(1),
                             lat=np.zeros(1), lon=np.zeros(2), level=500, synthetic=True)
    forecast = latent_ridge_forecast(LatentReconstructor(Flat(), decoder), three_way, 10,
                                     ridge=1e-9, block="test")
    np.testing.assert_allclose(forecast, days[46:56], atol=1e-4)


def _prepared(n_train: int = 3 * 365, n_valid: int = 60, seed: int = 0):
    """Synthetic (labelled so) two-variable days: a seasonal cycle plus AR(1) weather."""
    import numpy as np
    import pandas as pd

    from geofusion.data import PreparedData

    rng = np.random.default_rng(seed)
    times = pd.date_range("2001-01-01", periods=n_train + n_valid, freq="D").to_numpy()
    season = np.cos(2 * np.pi * np.arange(len(times)) / 365.25)
    weather = np.zeros((len(times), 2, 3, 4))
    for t in range(1, len(times)):
        weather[t] = 0.8 * weather[t - 1] + 0.6 * rng.normal(size=(2, 3, 4))
    fields = (season[:, None, None, None] + weather).astype(np.float32)
    return PreparedData(train=fields[:n_train], valid=fields[n_train:],
                        train_times=times[:n_train], valid_times=times[n_train:],
                        channels=("2m_temperature", "geopotential"),
                        mean=np.array([280.0, 5000.0]), std=np.array([2.0, 100.0]),
                        lat=np.array([-30.0, 0.0, 30.0]), lon=np.arange(4) * 90.0, level=500,
                        synthetic=True)


def test_reference_rows_score_climatology_persistence_and_the_climatological_ensemble():
    import numpy as np

    from geofusion.experiments.ablations import REFERENCES, reference_scores
    from geofusion.experiments.scorecard import validate_scorecard
    from geofusion.verification.baselines import climatology_forecast, training_climatology
    from geofusion.verification.metrics import lat_weighted_mse, latitude_weights

    prepared = _prepared()
    values, bounds = reference_scores(prepared, n_eval_days=40, members=4, window=10)
    assert set(values) == set(REFERENCES) == set(bounds)
    validate_scorecard({"ablations": values, "intervals": {"ablations": bounds}})
    physical = np.asarray(prepared.destandardise(prepared.valid))
    lat = prepared.lat

    def rmse(forecast, truth):
        return np.sqrt(np.asarray(lat_weighted_mse(forecast, truth, lat)).mean(0))

    persistence = rmse(physical[:40], physical[1:41])
    np.testing.assert_allclose(list(values["persistence"]["forecast_rmse_1day"].values()),
                               persistence, rtol=1e-6)
    np.testing.assert_allclose(  # one-member CRPS = the area-weighted MAE
        values["persistence"]["crps_forecast_deterministic"]["geopotential"],
        (np.abs(physical[:40] - physical[1:41])[:, 1] * latitude_weights(lat)[:, None]).mean(),
        rtol=1e-6)
    clim = np.asarray(prepared.destandardise(climatology_forecast(
        training_climatology(prepared), prepared.valid_times)))
    np.testing.assert_allclose(
        list(values["climatology"]["reconstruction_rmse_50"].values()),
        rmse(clim[:40], physical[:40]), rtol=1e-6)
    np.testing.assert_allclose(list(values["climatology"]["forecast_rmse_1day"].values()),
                               rmse(clim[1:41], physical[1:41]), rtol=1e-6)
    # AR(1) weather with rho = 0.8 at lag 1: persistence beats climatology at one day
    assert values["persistence"]["forecast_rmse_1day"]["2m_temperature"] < \
        values["climatology"]["forecast_rmse_1day"]["2m_temperature"]
    ensemble = values["climatological_ensemble"]
    # a climatological ensemble is (nearly) reliable for a stationary climate
    assert 0.6 < ensemble["spread_skill_forecast_diffusion"]["2m_temperature"] < 1.5
    for row in values:
        for score, entry in values[row].items():
            for variable, value in (entry.items() if isinstance(entry, dict) else []):
                if score in bounds[row]:
                    low, high = bounds[row][score][variable]
                    assert low <= value <= high


def test_reference_rows_on_the_test_block_are_the_same_physical_forecasts_in_both_spaces():
    """Issue 23: the references are physical (climatology of the training days, yesterday's
    physical field through ``as_valid_at``, training days as the ensemble) whatever the space;
    scored on the test block; the validation block is never read (NaN there)."""
    import dataclasses

    import numpy as np

    from geofusion.data.anomalies import to_space
    from geofusion.experiments.ablations import reference_scores

    base = _prepared(n_valid=120)
    report = dataclasses.replace(base, valid=np.full_like(base.valid[:60], np.nan),
                                 valid_times=base.valid_times[:60], test=base.valid[60:],
                                 test_times=base.valid_times[60:])
    anomaly = to_space(report, "anomaly")
    assert anomaly.space == "anomaly"
    in_report, _ = reference_scores(report, n_eval_days=40, members=4, window=10,
                                    block="test")
    in_anomaly, bounds = reference_scores(anomaly, n_eval_days=40, members=4, window=10,
                                          block="test")
    for row, scores in in_report.items():
        for score, entry in scores.items():
            # float32 round trips through two spaces: a few ulps of O(1) standardised fields
            np.testing.assert_allclose(list(in_anomaly[row][score].values()),
                                       list(entry.values()), rtol=1e-4, err_msg=(row, score))
    physical = base.destandardise(base.valid[60:])
    lat = base.lat
    from geofusion.verification.metrics import lat_weighted_mse
    persistence = np.sqrt(np.asarray(lat_weighted_mse(physical[:40], physical[1:41], lat)
                                     ).mean(0))
    np.testing.assert_allclose(list(in_anomaly["persistence"]["forecast_rmse_1day"].values()),
                               persistence, rtol=1e-4)
    assert all(np.isfinite(v) for b in bounds.values() for e in b.values()
               for pair in (e.values() if isinstance(e, dict) else [e]) for v in pair)


def test_compare_rows_reads_the_direction_of_each_score_and_the_mapping():
    from geofusion.experiments.ablations import compare_rows

    values = {"ref": {"forecast_rmse_1day": {"2m_temperature": 2.0},
                      "crps_forecast_deterministic": {"2m_temperature": 1.5},
                      "season_accuracy": 0.5},
              "a": {"forecast_rmse_1day": {"2m_temperature": 1.0},
                    "crps_forecast_diffusion": {"2m_temperature": 1.6},
                    "season_accuracy": 0.3, "latent_step": 0.2},
              "b": {"forecast_rmse_1day": {"2m_temperature": 2.1}, "season_accuracy": 0.55}}
    bounds = {"ref": {"forecast_rmse_1day": {"2m_temperature": [1.8, 2.2]},
                      "crps_forecast_deterministic": {"2m_temperature": [1.4, 1.6]},
                      "season_accuracy": [0.45, 0.55]},
              "a": {"forecast_rmse_1day": {"2m_temperature": [0.9, 1.1]},
                    "crps_forecast_diffusion": {"2m_temperature": [1.61, 1.7]},
                    "season_accuracy": [0.25, 0.35], "latent_step": [0.1, 0.3]},
              "b": {"forecast_rmse_1day": {"2m_temperature": [2.0, 2.3]},
                    "season_accuracy": [0.5, 0.6]}}
    table = compare_rows(values, bounds, "ref")
    assert table.loc["a", "forecast_rmse_1day: 2m_temperature"] == "better"  # lower RMSE
    assert table.loc["a", "season_accuracy"] == "worse"  # lower accuracy
    assert table.loc["b", "forecast_rmse_1day: 2m_temperature"] == "overlap"
    assert "latent_step" not in table.columns  # no "better" for smoothness
    assert "crps_forecast_diffusion: 2m_temperature" not in table.columns
    mapped = compare_rows(values, bounds, "ref", rows=["a"],
                          against={"crps_forecast_diffusion": "crps_forecast_deterministic"})
    assert mapped.loc["a", "crps_forecast_diffusion: 2m_temperature"] == "worse"
    assert list(mapped.index) == ["a"]
    with pytest.raises(ValueError, match="no row"):
        compare_rows(values, bounds, "climatology")


def test_conditional_diffusion_needs_matching_latents():
    import torch

    from geofusion.experiments.ablations import fit_conditional_diffusion

    with pytest.raises(ValueError, match="must both be"):
        fit_conditional_diffusion(torch.zeros(8, 3), torch.zeros(8, 2), {}, seed=0)


def test_summarise_comparison_folds_variables_per_score():
    import pandas as pd

    from geofusion.experiments.ablations import summarise_comparison

    table = pd.DataFrame({"crps_decoder: t": ["better", "overlap"],
                          "crps_decoder: z": ["worse", "overlap"],
                          "season_accuracy": ["overlap", None]}, index=["a", "b"])
    summary = summarise_comparison(table)
    assert summary.loc["a", "crps_decoder"] == "better: t; worse: z"
    assert summary.loc["b", "crps_decoder"] == "overlap"
    assert summary.loc["a", "season_accuracy"] == "overlap"
    assert summary.loc["b", "season_accuracy"] == ""


def _tiny_settings():
    return dict(encoder="eof_residual", epochs=1, batch_size=16, lr=1e-4, width=2,
                latent_dim=8, proj_dim=4, proj_hidden_dim=8, lambd=0.01,
                augmentation="native", mask_kind="pixel", min_ratio=0.0, max_ratio=0.9,
                noise_std=0.1, noise_length=2.0, max_shift=3, shift_scale=10.0,
                smoothness_weight=1.0, hard=2, easy=1, hard_range=[10, 40], easy_min=60)


def test_train_variants_one_cached_model_per_variant_and_training_seed(tmp_path):
    """Issue 24: the training seed alone gives another model (other weights), the same seed
    the same cached one, every variant its own; unknown or missing settings raise."""
    import numpy as np
    import pandas as pd
    import torch

    from geofusion.data import PreparedData
    from geofusion.experiments.ablations import score_variants, train_variants

    rng = np.random.default_rng(0)
    times = pd.date_range("2000-01-01", periods=240, freq="D").to_numpy()
    fields = rng.normal(size=(240, 2, 8, 16)).astype(np.float32)
    prepared = PreparedData(
        train=fields[:160], valid=fields[160:200], test=fields[200:], train_times=times[:160],
        valid_times=times[160:200], test_times=times[200:],
        channels=("2m_temperature", "geopotential"), mean=np.array([280.0, 5000.0]),
        std=np.array([2.0, 100.0]), lat=np.linspace(-60, 60, 8), lon=np.arange(16) * 22.5,
        level=500, synthetic=True)
    settings = _tiny_settings()
    first = train_variants(prepared, tmp_path, settings, ["baseline", "all"], 0, progress=False)
    other = train_variants(prepared, tmp_path, settings, ["baseline"], 1, progress=False)
    again = train_variants(prepared, tmp_path, settings, ["baseline"], 0, progress=False)
    assert len({first["baseline"][2], first["all"][2], other["baseline"][2]}) == 3
    assert again["baseline"][2] == first["baseline"][2]
    weights = [dict(m[0].encoder.named_parameters()) for m in (first["baseline"],
                                                                 other["baseline"])]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with pytest.raises(ValueError, match="unknown ablation settings"):
        train_variants(prepared, tmp_path, {**settings, "epoch": 1}, ["baseline"], 0)
    with pytest.raises(ValueError, match="lack"):
        score_variants(first, prepared, tmp_path, settings)


def test_stated_comparisons_leave_out_an_absent_reference():
    from geofusion.experiments.ablations import stated_comparisons

    values = {"smoothness": {"season_accuracy": 0.9}, "climatology": {}}
    assert list(stated_comparisons(values, {"smoothness": {}})) == ["vs climatology"]


def test_fusion_row_reads_notebook_09s_scheme(tmp_path):
    import json

    from geofusion.experiments.ablations import FUSION_LINK, fusion_row

    path = tmp_path / "09_fusion.json"
    absent = fusion_row(path, "late_graph_attention")
    assert absent["values"] == {} and FUSION_LINK in absent["note"]
    assert fusion_row(path, None)["values"] == {}
    path.write_text(json.dumps({
        "space": "anomaly", "scored_block": "test", "n_eval_days": 192, "epochs": 2,
        "eval_days": ["2008-10-19", "2009-04-28"],
        "summary": {"early": {}, "late_graph_attention": {"season accuracy": 0.7,
                                                          "latent second difference": 0.3}},
        "table_3_1": {"late_graph_attention": {"positive_cosine": 0.8, "positive_cosine_low": 0.7,
                                               "positive_cosine_high": 0.9,
                                               "negative_cosine": 0.1,
                                               "embedding_variance": None}}}))
    row = fusion_row(path, "late_graph_attention")
    assert row["values"] == {"late_graph_attention (09)": {
        "positive_cosine": 0.8, "negative_cosine": 0.1, "season_accuracy": 0.7,
        "latent_second_difference": 0.3}}
    assert row["intervals"] == {"late_graph_attention (09)": {"positive_cosine": [0.7, 0.9]}}
    assert "test days 2008-10-19 .. 2009-04-28 in the anomaly space" in row["note"]
    with pytest.raises(ValueError, match="choose one of"):
        fusion_row(path, "graph")
