"""Folding notebook 11's runs over training seeds: hand-worked cases."""

from __future__ import annotations

import json

import pytest

from geofusion.experiments.ablation_seeds import (
    MIN_SEEDS,
    comparison_records,
    fold_marks,
    load_seed_table,
    mark_single_run,
    robust_verdict,
    seed_robustness,
    seed_values,
    settings_mismatch,
)


def run(baseline_t: float, smooth_t: float, smooth_bounds: tuple[float, float],
        accuracy: float = 0.5) -> tuple[dict, dict]:
    """One hand-made notebook-11 run: RMSE of t and z for two variants and climatology."""
    values = {"baseline": {"reconstruction_rmse_50": {"t": baseline_t, "z": 10.0},
                           "season_accuracy": 0.5},
              "smoothness": {"reconstruction_rmse_50": {"t": smooth_t, "z": 10.0},
                             "season_accuracy": accuracy},
              "climatology": {"reconstruction_rmse_50": {"t": 3.0, "z": 10.0}}}
    intervals = {"baseline": {"reconstruction_rmse_50": {"t": [baseline_t - 0.1,
                                                               baseline_t + 0.1],
                                                         "z": [9.0, 11.0]},
                              "season_accuracy": [0.45, 0.55]},
                 "smoothness": {"reconstruction_rmse_50": {"t": list(smooth_bounds),
                                                           "z": [9.0, 11.0]},
                                "season_accuracy": [accuracy - 0.05, accuracy + 0.05]},
                 "climatology": {"reconstruction_rmse_50": {"t": [2.9, 3.1], "z": [9.0, 11.0]}}}
    return values, intervals


def test_comparison_records_give_the_difference_and_the_better_side():
    values, intervals = run(2.0, 1.5, (1.4, 1.6), accuracy=0.4)
    records = comparison_records(values, intervals).set_index(
        ["comparison", "row", "score", "variable"])
    cell = records.loc[("vs baseline", "smoothness", "reconstruction_rmse_50", "t")]
    # RMSE 1.5 against 2.0: difference -0.5, lower is better, intervals [1.4, 1.6] < [1.9, 2.1]
    assert cell["difference"] == pytest.approx(-0.5) and cell["side"] == 1
    assert cell["verdict"] == "better"
    cell = records.loc[("vs baseline", "smoothness", "season_accuracy", "")]
    assert cell["difference"] == pytest.approx(-0.1) and cell["side"] == -1  # lower accuracy
    assert cell["verdict"] == "overlap"  # [0.35, 0.45] touches [0.45, 0.55]
    assert records.loc[("vs baseline", "smoothness", "reconstruction_rmse_50", "z"),
                       "side"] == 0
    # both variants against climatology (RMSE 3.0): better beyond the intervals
    assert records.loc[("vs climatology", "baseline", "reconstruction_rmse_50", "t"),
                       "verdict"] == "better"
    assert "vs persistence" not in records.index.get_level_values(0)  # no persistence row


def test_comparison_records_read_the_mapped_score_of_persistence():
    values = {"baseline": {"crps_forecast_diffusion": {"t": 1.0}},
              "persistence": {"crps_forecast_deterministic": {"t": 1.5}}}
    intervals = {"baseline": {"crps_forecast_diffusion": {"t": [0.9, 1.1]}},
                 "persistence": {"crps_forecast_deterministic": {"t": [1.4, 1.6]}}}
    record = comparison_records(values, intervals).iloc[0]
    assert (record["comparison"], record["difference"], record["verdict"]) == (
        "vs persistence", pytest.approx(-0.5), "better")


def test_seed_values_mean_and_range_per_variable():
    table = seed_values({0: run(2.0, 1.5, (1.4, 1.6))[0], 1: run(2.2, 1.9, (1.8, 2.0))[0],
                         2: run(2.4, 2.6, (2.5, 2.7))[0]}).set_index(["row", "score",
                                                                      "variable"])
    cell = table.loc[("smoothness", "reconstruction_rmse_50", "t")]
    assert cell["seeds"] == 3 and cell["mean"] == pytest.approx(2.0)
    assert (cell["min"], cell["max"]) == (1.5, 2.6)
    assert table.loc[("baseline", "season_accuracy", ""), "mean"] == pytest.approx(0.5)


def test_robust_verdict_cases():
    assert robust_verdict([1, 1, 1], ["better"] * 3, 3) == ("holds", "better")
    assert robust_verdict([-1, -1, -1], ["worse"] * 3, 3) == ("holds", "worse")
    assert robust_verdict([1, 1, 1], ["better", "overlap", "better"], 3) == ("sign only",
                                                                             "better")
    assert robust_verdict([1, -1, 1], ["better", "overlap", "better"], 3) == ("flips", "")
    assert robust_verdict([1, 0, 1], ["better", "overlap", "better"], 3) == ("flips", "")
    assert robust_verdict([1, 1], ["better", "better"], 3) == ("incomplete", "")
    with pytest.raises(ValueError, match="one of each a seed"):
        robust_verdict([1], [], 1)


def three_seeds() -> tuple[dict, dict]:
    """Smoothness beats the baseline's t in seeds 0 and 1 beyond the intervals, loses in 2
    (a sign flip); it beats climatology's t in every seed, beyond the intervals in 0 and 1
    only (sign only)."""
    runs = {0: run(2.0, 1.5, (1.4, 1.6)), 1: run(2.2, 1.9, (1.8, 2.0)),
            2: run(2.4, 2.6, (2.5, 2.7))}
    runs[2][0]["smoothness"]["reconstruction_rmse_50"]["t"] = 2.95
    runs[2][1]["smoothness"]["reconstruction_rmse_50"]["t"] = [2.85, 3.05]
    return {s: r[0] for s, r in runs.items()}, {s: r[1] for s, r in runs.items()}


def test_a_sign_flip_across_seeds_is_not_robust():
    values, intervals = three_seeds()
    table = seed_robustness(values, intervals).set_index(["comparison", "row", "score",
                                                          "variable"])
    flip = table.loc[("vs baseline", "smoothness", "reconstruction_rmse_50", "t")]
    # differences -0.5, -0.3, +0.55: the sign flips although two seeds are "better"
    assert flip["robust"] == "flips" and flip["better_seeds"] == 2
    assert flip["mean_difference"] == pytest.approx((-0.5 - 0.3 + 0.55) / 3)
    assert (flip["min_difference"], flip["max_difference"]) == (pytest.approx(-0.5),
                                                                pytest.approx(0.55))
    sign_only = table.loc[("vs climatology", "smoothness", "reconstruction_rmse_50", "t")]
    assert (sign_only["robust"], sign_only["side"], sign_only["better_seeds"]) == (
        "sign only", "better", 2)
    held = table.loc[("vs climatology", "baseline", "reconstruction_rmse_50", "t")]
    assert (held["robust"], held["side"], held["seeds"]) == ("holds", "better", 3)
    assert table.loc[("vs baseline", "smoothness", "reconstruction_rmse_50", "z"),
                     "robust"] == "flips"  # equal in every seed: no side
    with pytest.raises(ValueError, match="two or more seeds"):
        seed_robustness({0: values[0]}, {0: intervals[0]})
    with pytest.raises(ValueError, match="pass both"):
        seed_robustness(values, {0: intervals[0], 1: intervals[1]})


def test_mark_single_run_against_a_seed_table():
    values, intervals = three_seeds()
    settings = {"epochs": 2, "hard_range": (10, 40), "lr": 1e-4}
    table = {"settings": {"epochs": 2, "hard_range": [10, 40], "lr": 1e-4},
             "seeds": [0, 1, 2], "values": values, "intervals": intervals}
    records = comparison_records(values[0], intervals[0])
    marks = mark_single_run(records, table, settings).set_index(["comparison", "row",
                                                                  "score", "variable"])
    assert "overlap" not in set(marks["verdict"])  # only the differences the run states
    assert marks.loc[("vs climatology", "baseline", "reconstruction_rmse_50", "t"),
                     "across seeds"] == "holds across seeds"
    flip = marks.loc[("vs baseline", "smoothness", "reconstruction_rmse_50", "t")]
    assert flip["across seeds"] == "does not" and "flips" in flip["why"]
    sign_only = marks.loc[("vs climatology", "smoothness", "reconstruction_rmse_50", "t")]
    assert sign_only["across seeds"] == "does not" and "in 2 of 3" in sign_only["why"]

    held = fold_marks(marks.reset_index())
    assert held.loc[("vs climatology", "baseline"), "reconstruction_rmse_50"] == "better: t"
    assert ("vs baseline", "smoothness") not in held.index  # its only difference flips
    assert fold_marks(marks.reset_index(), "does not").loc[
        ("vs baseline", "smoothness"), "reconstruction_rmse_50"] == "better: t"

    # a variant the seed table did not run
    extra_values = {**values[0], "all": values[0]["smoothness"]}
    extra_bounds = {**intervals[0], "all": intervals[0]["smoothness"]}
    marks = mark_single_run(comparison_records(extra_values, extra_bounds), table, settings)
    assert set(marks.loc[marks["row"] == "all", "across seeds"]) == {"not measured"}

    for seed_table, reason in ((None, "no seed table"),
                               ({**table, "settings": {**table["settings"], "epochs": 3}},
                                "other settings (epochs)"),
                               ({**table, "values": {0: values[0], 1: values[1]},
                                 "intervals": {0: intervals[0], 1: intervals[1]}},
                                f"fewer than {MIN_SEEDS}")):
        marks = mark_single_run(records, seed_table, settings)
        assert set(marks["across seeds"]) == {"not measured"}
        assert reason in marks["why"].iloc[0]


def test_settings_mismatch_and_load_seed_table(tmp_path):
    assert settings_mismatch({"a": (1, 2), "b": 0.1 + 0.2}, {"a": [1, 2], "b": 0.3}) == []
    assert settings_mismatch({"a": 1, "b": None}, {"a": 2, "c": 1}) == ["a", "b", "c"]
    # limit_batches came later: a table without it was measured with every batch (None).
    assert settings_mismatch({"a": 1, "limit_batches": None}, {"a": 1}) == []
    assert settings_mismatch({"a": 1, "limit_batches": 1}, {"a": 1}) == ["limit_batches"]
    assert load_seed_table(None) is None and load_seed_table(tmp_path / "absent.json") is None
    values, intervals = three_seeds()
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"settings": {}, "seeds": [0, 1, 2], "values": values,
                                "intervals": intervals}))
    table = load_seed_table(path)
    assert sorted(table["values"]) == [0, 1, 2]  # JSON's string keys back to seeds
    assert table["values"][2] == values[2]
    path.write_text(json.dumps({"values": {}}))
    with pytest.raises(ValueError, match="not a seed table"):
        load_seed_table(path)
