"""The decoder of a frozen latent chosen on validation days: the errors are the latitude-
weighted MSE of an explicit loop, the better decoder wins, and no test day is read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from geofusion.downstream.decoder_choice import (
    choose_decoder,
    fit_training_ridge_decoder,
    validation_errors,
)
from geofusion.downstream.embeddings import encode_series
from geofusion.learning.methods import build_method
from geofusion.verification.metrics import latitude_weights
from tests.downstream.test_forecasting import TINY, tiny_prepared


class Constant(nn.Module):
    """Decodes every latent to the same field (a decoder that learnt nothing)."""

    def __init__(self, value: float, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.field = nn.Parameter(torch.full(shape, value), requires_grad=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.field.expand(len(z), *self.field.shape)


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    base = tiny_prepared(80)
    prepared = dataclasses.replace(base, valid=base.valid[:10],
                                   valid_times=base.valid_times[:10], test=base.valid[10:],
                                   test_times=base.valid_times[10:])
    return prepared, build_method("autoencoder", **TINY).eval()


def test_validation_errors_are_the_latitude_weighted_mse_per_channel(setting):
    prepared, method = setting
    decoders = {"zero": Constant(0.0, (5, 32, 64)), "own": method.decoder}
    table = validation_errors(method, decoders, prepared, n_days=4)
    days = [0, 3, 6, 9]  # evenly spaced over the 10 validation days
    x = torch.as_tensor(prepared.valid[days])
    w = latitude_weights(np.asarray(prepared.lat, dtype=np.float64))[:, None]
    with torch.no_grad():
        decoded = method.decoder(encode_series(method, x)).numpy()
    for name, out in [("zero", np.zeros_like(x.numpy())), ("own", decoded)]:
        loop = [np.mean([np.mean(w * (out[n, c] - x.numpy()[n, c]) ** 2) for n in range(4)])
                for c in range(5)]
        # float32 fields, float64 weights in the reference: relative 1e-5.
        np.testing.assert_allclose(table.loc[name, list(prepared.channels)].to_numpy(float),
                                   loop, rtol=1e-5)
        assert table.loc[name, "mean"] == pytest.approx(np.mean(loop), rel=1e-5)


def test_the_ridge_decoder_beats_a_decoder_that_learnt_nothing(setting):
    prepared, method = setting
    ridge = fit_training_ridge_decoder(method, prepared, n_days=30, seed=0)
    mean_field = float(np.mean(prepared.train))
    name, table = choose_decoder(method, {"constant": Constant(mean_field, (5, 32, 64)),
                                          "ridge": ridge}, prepared)
    assert name == "ridge" and table.loc["ridge", "mean"] < table.loc["constant", "mean"]
    with pytest.raises(ValueError, match="no decoders"):
        validation_errors(method, {}, prepared)


def test_the_choice_reads_no_test_day_and_the_ridge_only_training_days(setting):
    prepared, method = setting
    other = dataclasses.replace(prepared, test=prepared.test + 7.0)
    moved_valid = dataclasses.replace(prepared, valid=prepared.valid + 1.0)
    first = fit_training_ridge_decoder(method, prepared, n_days=30)
    for changed in (other, moved_valid):
        again = fit_training_ridge_decoder(method, changed, n_days=30)
        for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    decoders = {"ridge": first, "own": method.decoder}
    pd_a = validation_errors(method, decoders, prepared)
    pd_b = validation_errors(method, decoders, other)
    np.testing.assert_array_equal(pd_a.to_numpy(), pd_b.to_numpy())


def test_a_latent_forecaster_decodes_with_the_ridge_decoder(setting):
    """The ridge decoder holds buffers only: LatentForecaster.decode still finds its device."""
    from geofusion.downstream.forecasting import LatentForecaster, LatentSeq2Seq, LatentStandardiser

    prepared, method = setting
    ridge = fit_training_ridge_decoder(method, prepared, n_days=30)
    assert not list(ridge.parameters())
    latents = encode_series(method, prepared.valid)
    scaler = LatentStandardiser.fit(latents)
    forecaster = LatentForecaster(method, ridge, LatentSeq2Seq(8, 8), scaler, context=2)
    with torch.no_grad():
        expected = ridge(latents[:3])
    torch.testing.assert_close(forecaster.decode(scaler.transform(latents[:3])), expected,
                               rtol=1e-5, atol=1e-5)  # standardise and back in float32
