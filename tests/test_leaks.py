"""Tests that catch a leak of validation days into training (issue 13, section 5).

Each test changes only the validation days of a copy of the data, or inspects what a fit
receives, so it fails as soon as a validation day reaches training: the latent LSTM's windows or
standardiser, the encoders of ``model_cache.pretrained``, the LSTM's logged ``valid_loss``, and the
day-of-year climatology of the forecasting notebooks, and every baseline and decoder the
experiments fit (unchanged by other validation days and a NaN test block).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from geofusion.data import PreparedData
from geofusion.downstream import embeddings, forecasting
from geofusion.downstream.forecasting import fit_latent_forecaster, make_windows
from geofusion.learning import model_cache
from geofusion.learning.config import TrainConfig
from geofusion.learning.methods import build_method
from geofusion.verification import (
    baselines,
    eof_3dvar,
    linear_regression,
    optimal_interpolation,
)

TINY = dict(latent_dim=8, width=4, proj_dim=4, proj_hidden_dim=8)
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def prepared() -> PreparedData:
    """40 smooth synthetic days (labelled synthetic): 30 training, 10 validation."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2000-01-01", periods=40, freq="D").values
    walk = np.cumsum(rng.normal(size=(40, 5, 2, 4)), axis=0) / 4
    fields = torch.nn.functional.interpolate(torch.from_numpy(walk).float(), size=(8, 16),
                                             mode="bilinear").numpy()
    return PreparedData(
        train=fields[:30], valid=fields[30:], train_times=times[:30], valid_times=times[30:],
        channels=("2m_temperature", "geopotential", "u_component_of_wind",
                  "v_component_of_wind", "specific_humidity"),
        mean=np.zeros(5, dtype="float32"), std=np.ones(5, dtype="float32"),
        lat=np.linspace(-78.75, 78.75, 8), lon=np.arange(16) * 22.5, level=500, synthetic=True)


def other_validation_days(prepared: PreparedData) -> PreparedData:
    """The same data with different validation days (the training days untouched)."""
    noise = np.random.default_rng(1).normal(size=prepared.valid.shape).astype("float32")
    return dataclasses.replace(prepared, valid=prepared.valid + 3 * noise)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=key)


def frozen_autoencoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method("autoencoder", grid=(8, 16), **TINY).eval()


def test_latent_lstm_weights_do_not_depend_on_the_validation_days(prepared, tmp_path):
    # Separate run directories: the cache key holds the validation period, not its values.
    method = frozen_autoencoder()
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, device="cpu")
    trained = []
    for name, data in (("a", prepared), ("b", other_validation_days(prepared))):
        forecaster, history, _ = fit_latent_forecaster(
            method, method.decoder, data, tmp_path / name, config, representation="ae",
            context=5, hidden_dim=8, progress=False)
        trained.append((forecaster, history))
    (first, history_a), (second, history_b) = trained
    assert_same_weights(first.model, second.model)  # windows and standardiser: training only
    torch.testing.assert_close(first.standardiser.mean, second.standardiser.mean)
    # The validation days did differ, and reached the validation loss only.
    assert not np.allclose(history_a["valid_loss"], history_b["valid_loss"])
    np.testing.assert_array_equal(history_a["loss"], history_b["loss"])


@pytest.mark.parametrize("horizon", [1, 3])
def test_latent_lstm_valid_loss_is_the_mse_on_validation_windows(prepared, tmp_path, horizon):
    method = frozen_autoencoder()
    # One batch holds every validation window, so the logged mean is the mean over windows.
    config = TrainConfig(epochs=2, batch_size=64, lr=1e-2, device="cpu")
    forecaster, history, _ = fit_latent_forecaster(
        method, method.decoder, prepared, tmp_path, config, representation="ae", context=5,
        hidden_dim=8, horizon=horizon, progress=False)
    # Trained on `horizon` leads: rolled out as trained (decoder rollout) beyond one step.
    assert forecaster.sliding == (horizon == 1)

    def window_mse(latents: torch.Tensor) -> float:
        inputs, targets = make_windows(latents, context=5, horizon=horizon)
        with torch.no_grad():
            prediction = forecaster.model.eval()(inputs, horizon=horizon)
        return torch.mean((prediction - targets) ** 2).item()

    on_valid = window_mse(forecaster.latents["valid"])
    on_train = window_mse(forecaster.latents["train"])
    assert abs(on_valid - on_train) > 1e-3  # the two sets of windows are told apart
    assert history["valid_loss"].iloc[-1] == pytest.approx(on_valid, rel=1e-5)
    # The latents themselves: validation days encoded, standardised with training statistics.
    raw_valid = embeddings.encode_series(method, prepared.valid)
    torch.testing.assert_close(forecaster.latents["valid"],
                               forecaster.standardiser.transform(raw_valid))


@pytest.mark.parametrize("target", ["residual", "forecast"])
def test_residual_damping_does_not_depend_on_the_validation_days(prepared, target):
    method = frozen_autoencoder()
    rhos = []
    for data in (prepared, other_validation_days(prepared)):
        scaler = forecasting.LatentStandardiser.fit(embeddings.encode_series(method, data.train))
        forecaster = forecasting.LatentForecaster(
            method, method.decoder, forecasting.LatentSeq2Seq(TINY["latent_dim"], 4), scaler, 5)
        rhos.append(forecaster.fit_residual_damping(data, max_lead=2, target=target))
    assert rhos[0].abs().sum() > 0
    torch.testing.assert_close(rhos[0], rhos[1], rtol=0, atol=0)


def test_pretrained_encoders_see_the_training_days_only(prepared, tmp_path, monkeypatch):
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, device="cpu")
    received = []
    real_fit = model_cache.fit

    def recording_fit(method, train_set, *args, **kwargs):
        received.append(train_set)
        return real_fit(method, train_set, *args, **kwargs)

    monkeypatch.setattr(model_cache, "fit", recording_fit)
    first, _, _ = model_cache.pretrained("barlow_twins", prepared, tmp_path / "a", config,
                                  progress=False, **TINY)
    second, _, _ = model_cache.pretrained("barlow_twins", other_validation_days(prepared),
                                   tmp_path / "b", config, progress=False, **TINY)
    assert_same_weights(first, second)  # weights and batch-norm statistics
    # The dataset the fit received is exactly the training days, in order, with their seasons.
    dataset = received[0]
    assert len(dataset) == len(prepared.train)
    fields = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(len(dataset))])
    np.testing.assert_array_equal(fields.numpy(), prepared.train)
    seasons = [int(dataset[i][1]) for i in range(len(dataset))]
    assert seasons == list(prepared.season_labels("train"))


CLIMATOLOGY_CALL = re.compile(r"\b(training_)?climatology\(([^()]*(?:\([^()]*\)[^()]*)*)\)")


@pytest.mark.parametrize("notebook", ["08_forecasting.ipynb", "09_fusion.ipynb"])
def test_forecast_notebooks_build_the_climatology_from_training_days_only(notebook):
    # The library function only sees what it is given (its own tests feed it validation days
    # too); what can leak is the call. Every climatology a forecasting notebook builds is
    # either baselines.training_climatology(prepared) or climatology() of the training split.
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    calls = CLIMATOLOGY_CALL.findall(code)
    assert calls, f"{notebook} builds no day-of-year climatology"
    for training_helper, arguments in calls:
        args = [a.strip() for a in arguments.split(",")]
        if training_helper:
            assert args[0] == "prepared", f"{notebook}: training_climatology({arguments})"
        else:
            assert args[:2] == ["prepared.train", "prepared.train_times"], (
                f"{notebook}: climatology({arguments}) must take the training split only")


def three_way(prepared: PreparedData) -> PreparedData:
    """The fixture split train / valid / test (30 / 5 / 5 days)."""
    return dataclasses.replace(prepared, valid=prepared.valid[:5],
                               valid_times=prepared.valid_times[:5], test=prepared.valid[5:],
                               test_times=prepared.valid_times[5:])


def poisoned(prepared: PreparedData) -> PreparedData:
    """Other validation days and a test block of NaNs: a fit that reads either changes."""
    other = other_validation_days(prepared)
    return dataclasses.replace(other, test=np.full_like(prepared.test, np.nan))


def frozen_decoder_weights(prepared: PreparedData, tmp_path: Path) -> dict:
    from geofusion.downstream.reconstruction import fit_frozen_decoder

    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, device="cpu")
    model, _ = fit_frozen_decoder(frozen_autoencoder(), tmp_path / "autoencoder", prepared,
                                  tmp_path, config, TINY["latent_dim"], width=4, progress=False)
    return model.decoder.state_dict()


def fitted_arrays(fitted) -> dict:
    if isinstance(fitted, dict):
        return fitted
    if dataclasses.is_dataclass(fitted):
        return {f.name: getattr(fitted, f.name) for f in dataclasses.fields(fitted)}
    return {"value": fitted}


FITS = {
    "training_climatology": lambda p, _: baselines.training_climatology(p),
    "damped_persistence": lambda p, _: baselines.fit_damped_persistence(p, max_lead=2),
    "linear_regression": lambda p, _: linear_regression.fit_linear_regression(p, max_lead=2,
                                                                      n_components=4, folds=2),
    "optimal_interpolation": lambda p, _: optimal_interpolation.fit_optimal_interpolation(
        p, noise_std=0.1, noise_length=2.0),
    "frozen_decoder": frozen_decoder_weights,
    # Notebook 10's classical schemes with memory (issue 24).
    "persistence_optimal_interpolation": lambda p, _: {
        "rho": (f := optimal_interpolation.fit_persistence_optimal_interpolation(
            p, noise_std=0.1, noise_length=2.0)).rho, **fitted_arrays(f.interpolator)},
    "eof_3dvar": lambda p, _: {
        "representation_var": (f := eof_3dvar.fit_eof_3dvar(p, k=4, noise_std=0.1,
                                                          noise_length=2.0)).representation_var,
        "propagator": f.model.propagator, "error_covariance": f.model.error_covariance,
        "components": f.model.code.components},
}


@pytest.mark.parametrize("name", list(FITS))
def test_statistics_fitted_in_the_experiments_see_training_days_only(prepared, tmp_path, name):
    """Every statistic the notebooks' experiments fit (climatology, baselines, optimal
    interpolation's B, the frozen decoder) is the same when the validation days change and the
    test block is NaN: the same computation on the same training days, so bit for bit."""
    split = three_way(prepared)
    first = fitted_arrays(FITS[name](split, tmp_path / "a"))
    second = fitted_arrays(FITS[name](poisoned(split), tmp_path / "b"))
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, (np.ndarray, torch.Tensor)):
            torch.testing.assert_close(torch.as_tensor(second[key]), torch.as_tensor(value),
                                       rtol=0, atol=0, msg=f"{name}.{key}")
        else:
            assert second[key] == value, f"{name}.{key}"
