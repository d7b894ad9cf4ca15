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
    latent_smoothness_scores,
    season_probe_scores,
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
