"""Season probe and latent smoothness of a method's embeddings, with bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from geofusion.data import PreparedData
from geofusion.downstream.encoder_diagnostics import (
    diagnostics_summary,
    eof_reconstruction,
    latent_smoothness_scores,
    reconstruction_skill,
    ridge_reconstruction,
    season_probe_scores,
    skill_scorecard,
    weighted_loss,
)
from geofusion.downstream.probes import season_probe


class _FlatMethod(nn.Module):
    """A 'method' whose representation is the flattened day itself."""

    mask_channel = False

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def embed(self, fields):
        return fields.flatten(1)


def _seasonal_days(seed: int) -> PreparedData:
    """Three years of 2x2 one-channel days whose season is one hot pixel, plus noise."""
    times = pd.date_range("2000-01-01", periods=3 * 365, freq="D").values
    season = (pd.DatetimeIndex(times).month.to_numpy() % 12) // 3
    rng = np.random.default_rng(seed)
    fields = (rng.normal(size=(len(times), 1, 2, 2)) * 0.3
              + np.eye(4)[season].reshape(-1, 1, 2, 2)).astype(np.float32)
    n = 2 * 365
    return PreparedData(train=fields[:n], valid=fields[n:], train_times=times[:n],
                        valid_times=times[n:], channels=("x",), mean=np.zeros(1),
                        std=np.ones(1), lat=np.zeros(2), lon=np.zeros(2), level=500,
                        synthetic=True)


def test_per_day_probe_terms_average_to_the_reported_scores():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 300)
    x = rng.normal(size=(300, 6)) + 1.0 * np.eye(6)[labels]
    scores = season_probe(x[:200], labels[:200], x[200:], labels[200:], per_day=True,
                          max_iter=200)
    assert scores["correct"].mean() == pytest.approx(scores["accuracy"])
    assert scores["log_loss"].mean() == pytest.approx(scores["cross_entropy"], rel=1e-9)
    assert 0.3 < scores["accuracy"] < 1.0  # overlapping classes: neither chance nor perfect


def test_latent_smoothness_of_a_great_circle_walk_and_its_interval():
    # Days on a great circle at a constant angle theta: step 2 sin(theta/2), second
    # difference 4 sin^2(theta/2) (chord of the arc, then the change of the chord).
    theta, n = 0.1, 40
    angles = theta * np.arange(n)
    days = np.stack([np.cos(angles), np.sin(angles)], axis=1)[:, None, :, None]
    scores = latent_smoothness_scores(_FlatMethod(), days.astype(np.float32), intervals=True,
                                      n_resamples=50)
    assert scores["mean_step"] == pytest.approx(2 * math.sin(theta / 2), rel=1e-5)
    assert scores["mean_second_difference"] == pytest.approx(4 * math.sin(theta / 2) ** 2,
                                                             rel=1e-3)
    low, high = scores["intervals"]["mean_step"]
    assert low == pytest.approx(high, rel=1e-5)  # every day the same step


def test_season_probe_scores_read_seasons_from_the_embeddings():
    prepared = _seasonal_days(seed=0)
    scores = season_probe_scores(_FlatMethod(), prepared, hidden=(8,), max_iter=200,
                                 intervals=True, n_resamples=50)
    assert scores["accuracy"] > 0.95 and scores["n_classes"] == 4
    low, high = scores["intervals"]["accuracy"]
    assert low <= scores["accuracy"] <= high
    with pytest.raises(ValueError, match="test_fraction"):
        season_probe_scores(_FlatMethod(), prepared, split="test")


def test_diagnostics_summary_is_the_two_diagnostics_as_one_flat_row():
    prepared = _seasonal_days(seed=2)
    row = diagnostics_summary(_FlatMethod(), prepared, seed=3)
    probe = season_probe_scores(_FlatMethod(), prepared, seed=3, intervals=True)
    smooth = latent_smoothness_scores(_FlatMethod(), prepared.valid, intervals=True, seed=3)
    assert row["season_accuracy"] == pytest.approx(probe["accuracy"])
    assert [row["season_accuracy_low"], row["season_accuracy_high"]] == pytest.approx(
        probe["intervals"]["accuracy"])
    assert row["latent_second_difference"] == pytest.approx(smooth["mean_second_difference"])
    assert row["season_chance_accuracy"] == pytest.approx(probe["chance_accuracy"])
    assert all(isinstance(v, float) for v in row.values()) and len(row) == 13


def _three_blocks(seed: int = 0, test_value: float | None = None) -> PreparedData:
    """Two-channel 4x8 days of a few random patterns, split 60/20/20 in time; ``test_value``
    overwrites every test field (a leak test: nothing fitted may read them)."""
    times = pd.date_range("2000-01-01", periods=200, freq="D").values
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(3, 2 * 4 * 8))
    fields = (rng.normal(size=(200, 3)) @ patterns + 0.05 * rng.normal(size=(200, 64))
              ).reshape(200, 2, 4, 8).astype(np.float32)
    if test_value is not None:
        fields[160:] = test_value
    return PreparedData(train=fields[:120], valid=fields[120:160], test=fields[160:],
                        train_times=times[:120], valid_times=times[120:160],
                        test_times=times[160:], channels=("a", "b"), mean=np.zeros(2),
                        std=np.ones(2), lat=np.linspace(-60.0, 60.0, 4), lon=np.arange(8.0),
                        level=500, synthetic=True)


class _WeightedAE(_FlatMethod):
    """Flat embedding plus the latitude-weighted loss of the autoencoders."""

    def __init__(self, lat) -> None:
        super().__init__()
        w = np.cos(np.deg2rad(lat))
        self.w = torch.as_tensor(w / w.mean(), dtype=torch.float32).view(1, 1, -1, 1)

    def reconstruction_loss(self, reconstruction, fields):
        return ((reconstruction - fields) ** 2 * self.w).mean()


def test_eof_and_ridge_reconstructions_fit_on_training_days_only():
    prepared = _three_blocks()
    # Three patterns: three EOFs reconstruct the test days up to the small noise.
    eof3 = eof_reconstruction(prepared, 3, "test")
    assert eof3.shape == prepared.test.shape and eof3.dtype == np.float32
    assert np.mean((eof3 - prepared.test) ** 2) < 0.01 < np.mean(prepared.test ** 2)
    ridge = ridge_reconstruction(_FlatMethod(), prepared, "test", ridge=1e-3)
    assert np.mean((ridge - prepared.test) ** 2) < 0.01
    # Leak test: other test fields change neither the EOF code nor the ridge decoder, so the
    # reconstructions of the validation days are bit for bit the same.
    other = _three_blocks(test_value=7.0)
    np.testing.assert_array_equal(eof_reconstruction(prepared, 3, "valid"),
                                  eof_reconstruction(other, 3, "valid"))
    np.testing.assert_array_equal(ridge_reconstruction(_FlatMethod(), prepared, "valid"),
                                  ridge_reconstruction(_FlatMethod(), other, "valid"))


def test_weighted_loss_is_the_method_loss_over_all_days_whatever_the_batches():
    prepared = _three_blocks()
    method = _WeightedAE(prepared.lat)
    recon = eof_reconstruction(prepared, 1, "train")
    whole = float(method.reconstruction_loss(torch.as_tensor(recon),
                                             torch.as_tensor(prepared.train)))
    # float32 sums in other batch shapes: a few ulps of O(1) values.
    assert weighted_loss(method, recon, prepared.train, batch_size=7) == pytest.approx(
        whole, rel=1e-5)
    assert weighted_loss(method, prepared.train, prepared.train) == 0.0
    with pytest.raises(ValueError, match="differ"):
        weighted_loss(method, recon[:3], prepared.train)


def test_reconstruction_skill_rows_ratios_and_anomaly_scores():
    rng = np.random.default_rng(1)
    lat = np.linspace(-60.0, 60.0, 4)
    climatology = np.full((40, 2, 4, 8), 10.0)
    truth = climatology + rng.normal(size=climatology.shape)
    table = reconstruction_skill(truth, {"perfect": truth, "climatology x": climatology},
                                 climatology, lat, ("a", "b"), n_resamples=50)
    rows = table.set_index(["name", "variable"])
    assert list(table["name"].unique()) == ["climatology", "perfect", "climatology x"]
    assert rows.loc[("perfect", "a"), "rmse"] == 0.0
    assert rows.loc[("perfect", "b"), "acc"] == pytest.approx(1.0)
    assert rows.loc[("perfect", "a"), "anomaly_variance_explained"] == 1.0
    assert rows.loc[("climatology x", "a"), "ratio_to_climatology"] == 1.0
    clim = rows.loc[("climatology", "a")]
    assert clim["rmse_low"] <= clim["rmse"] <= clim["rmse_high"] and math.isnan(clim["acc"])
    with pytest.raises(ValueError, match="differ"):
        reconstruction_skill(truth, {"bad": truth[:3]}, climatology, lat, ("a", "b"))


def test_skill_scorecard_is_a_valid_scorecard_of_the_chosen_rows():
    from geofusion.experiments.scorecard import validate_scorecard

    rng = np.random.default_rng(2)
    lat = np.linspace(-60.0, 60.0, 4)
    truth = rng.normal(size=(30, 2, 4, 8))
    table = reconstruction_skill(truth, {"ae": truth / 2}, np.zeros_like(truth), lat,
                                 ("2m_temperature", "geopotential"), n_resamples=20)
    card = skill_scorecard(table, {"ae": "autoencoder", "climatology": "climatology"})
    validate_scorecard(card)
    assert card["scored_block"] == "test"
    ae = card["reconstruction_rmse"]["autoencoder"]["0"]
    assert ae["geopotential"] == pytest.approx(
        float(table.query("name == 'ae' and variable == 'geopotential'")["rmse"].iloc[0]))
    assert card["reconstruction_acc"]["climatology"]["0"]["geopotential"] is None
    low, high = card["intervals"]["reconstruction_rmse"]["autoencoder"]["0"]["geopotential"]
    assert low <= ae["geopotential"] <= high
