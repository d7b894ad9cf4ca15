"""Result files and the scorecard schema of reports/results.json (issue 13, section 4)."""

from __future__ import annotations

import copy
import doctest
import json
import math

import pytest

from geofusion.experiments import scorecard
from geofusion.experiments.scorecard import ScorecardError, merge_scorecards, validate_scorecard

T2M, Z = "2m_temperature", "geopotential"


def full_card():
    """A complete card in the documented schema, written out by hand."""
    vars2 = lambda a, b: {T2M: a, Z: b}  # noqa: E731
    models = ("autoencoder", "barlow_twins", "sparse_barlow_twins")
    return {
        "profile": "quick", "synthetic": True, "commit": "abc1234", "seconds": 612.5,
        "environment": {"torch": "2.13.0", "cuda": None, "deterministic_algorithms": True},
        "notebooks": {"06_sparsity": 96.0}, "overrides": {},
        "climatology_rmse": vars2(2.8, 310.0),
        "persistence_rmse": {"1": vars2(2.0, 250.0), "7": vars2(3.5, 600.0)},
        "reconstruction_rmse": {
            **{m: {f: vars2(1.0, 100.0) for f in ("0", "0.5", "0.9")} for m in models},
            "optimal_interpolation": {"0": vars2(0.5, 50.0), "0.5": vars2(None, None),
                                      "0.9": vars2(2.0, 200.0)}},
        "forecast_rmse": {m: {"1": vars2(2.1, 260.0)} for m in
                          (*models, "linear_regression", "damped_persistence")},
        "table_3_1": {"barlow_twins": {"positive_cosine": 0.9, "negative_cosine": 0.1,
                                       "embedding_variance": 0.4},
                      "simclr": None},
        "assimilation": {"latent_3dvar": {"0.1": vars2(1.5, 150.0)}},
        "ablations": {"baseline": {"season_accuracy": 0.9,
                                   "crps_diffusion": vars2(1.2, 150.0)},
                      "all": None},
        "intervals": {"ablations": {"baseline": {"season_accuracy": [0.85, 0.95],
                                                 "crps_diffusion": {T2M: [1.1, 1.3]}}},
                      "climatology_rmse": {T2M: [2.7, 2.9]},
                      "forecast_rmse": {"autoencoder": {"1": {T2M: [2.0, 2.2], Z: None}}},
                      "table_3_1": {"barlow_twins": {"positive_cosine": [0.88, 0.92]}}},
    }


def test_a_complete_card_in_the_documented_schema_is_valid_and_complete():
    card = full_card()
    assert validate_scorecard(card) is card
    assert scorecard.missing_entries(card) == []


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(scorecard_version=1), r"\['scorecard_version'\]: unknown top-level"),
    (lambda c: c["climatology_rmse"].update(t2m=1.0), r"\['t2m'\]: 't2m' is not a variable"),
    (lambda c: c["persistence_rmse"].update({"01": {}}), r"\['01'\]: leads are whole days"),
    (lambda c: c["persistence_rmse"].update({"0": {}}), r"\['0'\]: leads are whole days"),
    (lambda c: c["reconstruction_rmse"]["autoencoder"].update({"0.50": {}}),
     r"\['autoencoder'\]\['0.50'\]: missing/observed fractions"),
    (lambda c: c["reconstruction_rmse"]["autoencoder"].update({"1.5": {}}), "fractions"),
    (lambda c: c["table_3_1"]["barlow_twins"].update(cosine=0.3), r"Table 3.1 figures"),
    (lambda c: c["climatology_rmse"].update({T2M: math.inf}), "finite number or null"),
    (lambda c: c["climatology_rmse"].update({T2M: True}), "finite number or null"),
    (lambda c: c["climatology_rmse"].update({T2M: "2.8"}), "finite number or null"),
    (lambda c: c["persistence_rmse"].update({"1": 2.0}), r"\['1'\]: expected an object"),
    (lambda c: c["intervals"]["climatology_rmse"].update({T2M: [3.0, 2.0]}),
     "low 3.0 exceeds high 2.0"),
    (lambda c: c["intervals"]["climatology_rmse"].update({T2M: 2.8}), r"\[low, high\]"),
    (lambda c: c["intervals"].update(skill={}), r"intervals are kept for the sections"),
    (lambda c: c.update(synthetic="yes"), r"\['synthetic'\]: expected bool"),
    (lambda c: c.update(seconds=True), r"\['seconds'\]: expected"),
    (lambda c: c["ablations"]["baseline"].update(crps=1.0), r"'crps' is not an ablation score"),
    (lambda c: c["ablations"]["baseline"].update(crps_decoder={"t2m": 1.0}),
     r"\['crps_decoder'\]\['t2m'\]: 't2m' is not a variable"),
    (lambda c: c["ablations"].update(baseline=1.0), r"\['baseline'\]: expected an object"),
    (lambda c: c["intervals"]["ablations"]["baseline"].update(season_accuracy=0.9),
     r"\[low, high\]"),
])
def test_the_validator_names_the_bad_key(mutate, message):
    card = full_card()
    mutate(card)
    with pytest.raises(ScorecardError, match=message):
        validate_scorecard(card)


def test_merge_is_deep_in_order_and_keeps_the_first_value_on_a_conflict():
    card = full_card()
    part_06 = {k: card[k] for k in ("climatology_rmse", "reconstruction_rmse")}
    part_06["intervals"] = {"climatology_rmse": card["intervals"]["climatology_rmse"]}
    part_08 = {"climatology_rmse": {T2M: 2.9, Z: 310.0},  # t2m differs, z agrees
               "persistence_rmse": card["persistence_rmse"],
               "forecast_rmse": card["forecast_rmse"],
               "intervals": {"forecast_rmse": card["intervals"]["forecast_rmse"]}}
    table = [(name, {"table_3_1": {name: card["table_3_1"]["barlow_twins"]}})
             for name in ("autoencoder", "barlow_twins")]
    before = copy.deepcopy([part_06, part_08])
    merged, conflicts = merge_scorecards([("06", part_06), ("08", part_08), *table])
    assert merged["climatology_rmse"] == {T2M: 2.8, Z: 310.0}
    assert conflicts == ["scorecard['climatology_rmse']['2m_temperature']: 06 gives 2.8, "
                         "08 gives 2.9; kept 06's"]
    assert merged["intervals"] == {"climatology_rmse": {T2M: [2.7, 2.9]},
                                   "forecast_rmse": card["intervals"]["forecast_rmse"]}
    assert set(merged["table_3_1"]) == {"autoencoder", "barlow_twins"}
    assert merged["forecast_rmse"] == card["forecast_rmse"]
    assert [part_06, part_08] == before  # the parts are not modified
    merged["persistence_rmse"]["1"][T2M] = -1.0
    assert part_08["persistence_rmse"]["1"][T2M] == 2.0  # nor aliased


def test_merge_names_the_notebook_whose_part_breaks_the_schema():
    with pytest.raises(ScorecardError, match=r"^08_forecasting: scorecard\['forecast_rmse'\]"
                                             r"\['lstm'\]\['lead1'\]"):
        merge_scorecards([("06_sparsity", {}),
                          ("08_forecasting", {"forecast_rmse": {"lstm": {"lead1": {}}}})])


def test_missing_entries_lists_required_models_and_fractions():
    card = full_card()
    del card["forecast_rmse"]["damped_persistence"]
    del card["reconstruction_rmse"]["barlow_twins"]["0.9"]
    card["persistence_rmse"] = {}
    assert scorecard.missing_entries(card) == [
        "persistence_rmse", "reconstruction_rmse['barlow_twins']['0.9']",
        "forecast_rmse['damped_persistence']"]


def test_write_scorecard_writes_nan_as_null_and_refuses_an_invalid_card(tmp_path):
    path = scorecard.write_scorecard(tmp_path / "results.json",
                                   {"climatology_rmse": {T2M: float("nan"), Z: 300.0}})
    assert json.loads(path.read_text()) == {"climatology_rmse": {T2M: None, Z: 300.0}}
    with pytest.raises(ScorecardError):
        scorecard.write_scorecard(tmp_path / "bad.json", {"climatology": {}})
    assert not (tmp_path / "bad.json").exists()


def test_save_and_load_results_round_trip_and_name_the_missing_notebook(tmp_path):
    scorecard.save_results(tmp_path, "03_x", {"scorecard": {"table_3_1": {}}, "v": float("nan")})
    assert scorecard.load_results(tmp_path, "03_x") == {"scorecard": {"table_3_1": {}}, "v": None}
    with pytest.raises(FileNotFoundError, match="run notebook 04_y"):
        scorecard.load_results(tmp_path, "04_y")


def test_docstring_examples_of_results_pass():
    outcome = doctest.testmod(scorecard, optionflags=doctest.ELLIPSIS)
    assert outcome.failed == 0 and outcome.attempted >= 8


def test_seed_spread_uses_the_sample_std_and_skips_missing_values():
    cards = [{"climatology_rmse": {T2M: 1.0, Z: 10.0}, "profile": "quick",
              "intervals": {"climatology_rmse": {T2M: [0.0, 2.0]}}},
             {"climatology_rmse": {T2M: 3.0, Z: None}},
             {"climatology_rmse": {T2M: 8.0}}]
    spread = scorecard.seed_spread(cards)
    assert set(spread) == {"climatology_rmse"}  # provenance and intervals are not spread
    t2m, z = spread["climatology_rmse"][T2M], spread["climatology_rmse"][Z]
    assert t2m["mean"] == pytest.approx(4.0)
    assert t2m["std"] == pytest.approx(math.sqrt((9 + 1 + 16) / 2))
    assert (t2m["min"], t2m["max"], t2m["n"]) == (1.0, 8.0, 3)
    assert z == {"mean": 10.0, "std": None, "min": 10.0, "max": 10.0, "n": 1,
                 "values": [10.0, None, None]}


def test_scored_block_and_the_anomaly_sections_of_issue_23():
    card = {"scored_block": "test",
            "reconstruction_acc": {"eof_code": {"0": {"geopotential": 0.9}}},
            "reconstruction_anomaly_variance_explained": {
                "autoencoder_report_space": {"0": {"2m_temperature": 0.3}}},
            "intervals": {"reconstruction_acc": {"eof_code": {"0": {"geopotential": [0.8,
                                                                                    0.95]}}}}}
    assert validate_scorecard(card) is card
    with pytest.raises(ScorecardError, match="scored_block"):
        validate_scorecard({"scored_block": "train"})
    merged, conflicts = merge_scorecards([("02", {"scored_block": "test"}),
                                          ("03", {"scored_block": "test"})])
    assert merged["scored_block"] == "test" and conflicts == []
