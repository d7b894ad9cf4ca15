"""Shared trained models: one training per description, reloaded everywhere else."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from geofusion.data import PreparedData
from geofusion.learning.config import TrainConfig
from geofusion.learning.model_cache import model_dir, pretrained

TINY = dict(latent_dim=8, width=4, proj_dim=4, proj_hidden_dim=8)
CONFIG = TrainConfig(epochs=2, batch_size=8, lr=1e-3, device="cpu")


def tiny_prepared(shift: float = 0.0) -> PreparedData:
    rng = np.random.default_rng(0)
    times = pd.date_range("2000-01-01", periods=30, freq="D").values
    fields = rng.normal(size=(30, 5, 8, 16)).astype("float32")
    return PreparedData(
        train=fields[:24], valid=fields[24:], train_times=times[:24], valid_times=times[24:],
        channels=("2m_temperature", "geopotential", "u_component_of_wind",
                  "v_component_of_wind", "specific_humidity"),
        mean=np.full(5, shift, dtype="float32"), std=np.ones(5, dtype="float32"),
        lat=np.linspace(-80, 80, 8), lon=np.linspace(0, 337.5, 16), level=500, synthetic=True)


def test_second_request_loads_the_finished_model_without_training(tmp_path):
    prepared = tiny_prepared()
    first, history, directory = pretrained("simclr", prepared, tmp_path, CONFIG, progress=False,
                                           temperature=0.3, **TINY)
    checkpoint_time = (directory / "checkpoint.pt").stat().st_mtime_ns
    again, history_again, directory_again = pretrained(
        "simclr", prepared, tmp_path, CONFIG, progress=False, temperature=0.3, **TINY)
    assert directory_again == directory
    assert (directory / "checkpoint.pt").stat().st_mtime_ns == checkpoint_time  # not retrained
    pd.testing.assert_frame_equal(history_again, history)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    description = json.loads((directory / "description.json").read_text())
    assert description["params"]["temperature"] == 0.3 and description["data"]["synthetic"]


def test_any_change_to_method_training_or_data_gets_its_own_directory(tmp_path):
    prepared = tiny_prepared()
    base = {"name": "simclr", "params": {"temperature": 0.3}}
    directory = model_dir(tmp_path, base, CONFIG)
    assert model_dir(tmp_path, {**base, "params": {"temperature": 0.1}}, CONFIG) != directory
    assert model_dir(tmp_path, base, TrainConfig(epochs=3, batch_size=8, lr=1e-3)) != directory
    # The device is not part of the key: a GPU-trained model serves a CPU notebook.
    assert model_dir(tmp_path, base, TrainConfig(epochs=2, batch_size=8, lr=1e-3,
                                                 device="cuda")) == directory
    _, _, a = pretrained("autoencoder", prepared, tmp_path, CONFIG, progress=False, **TINY)
    _, _, b = pretrained("autoencoder", tiny_prepared(shift=1.0), tmp_path, CONFIG,
                         progress=False, **TINY)
    assert a != b and a.name.startswith("autoencoder-")


def test_eof_residual_encoder_larger_than_the_training_days_says_how_to_fix_it():
    from geofusion.learning.model_cache import data_dependent_parameters
    prepared = tiny_prepared()
    n_train = len(prepared.train)
    # The anomalies about their mean span n_train - 1 directions: n_train EOFs are too many.
    with pytest.raises(ValueError, match=f"latent_dim={n_train} needs more than "
                                         f"{n_train} training days.*lower latent_dim"):
        data_dependent_parameters(prepared, {"encoder": "eof_residual",
                                             "latent_dim": n_train})
    extra = data_dependent_parameters(prepared, {"encoder": "eof_residual", "latent_dim": 4})
    assert tuple(extra["eof_basis"]["components"].shape)[0] == 4
