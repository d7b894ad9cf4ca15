"""The EOF code behind the LatentForecaster interface: the same numbers as EOFCode, the same
training path as a learned latent, and a decoder ceiling that is the EOF reconstruction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from geofusion.data.eof import fit_eof
from geofusion.downstream.embeddings import encode_series
from geofusion.downstream.eof_twin import eof_twin
from geofusion.downstream.forecasting import fit_latent_forecaster
from geofusion.downstream.reconstruction import fit_eof_code
from geofusion.learning.config import TrainConfig
from tests.downstream.test_forecasting import tiny_prepared


def random_code(k: int = 6):
    a = np.random.default_rng(1).normal(size=(50, 2, 4, 6)).astype("float32") + 0.3
    return a, fit_eof(a, np.linspace(-60, 60, 4), k)


def test_embedding_and_decoder_are_the_eof_code_in_float32():
    a, code = random_code()
    method, decoder = eof_twin(code)
    z = method.embed(torch.from_numpy(a))
    # float32 products against EOFCode's float64: a few ulps of O(1) values.
    np.testing.assert_allclose(z.numpy(), code.encode(a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(decoder(z).numpy(), code.decode(code.encode(a)), rtol=1e-5,
                               atol=1e-5)
    assert not any(p.requires_grad for p in [*method.parameters(), *decoder.parameters()])
    # Through the project's encoding path (embed_observed), complete and masked.
    # Other batch shapes than one embed call: a tolerance, not bit for bit.
    torch.testing.assert_close(encode_series(method, a), z, rtol=1e-6, atol=1e-6)
    observed = np.random.default_rng(2).random((len(a), 4, 6)) > 0.5
    zero_filled = a * observed[:, None]
    np.testing.assert_allclose(encode_series(method, a, observed=observed).numpy(),
                               code.encode(zero_filled), rtol=1e-5, atol=1e-5)


def test_bad_shapes_say_what_is_expected():
    a, code = random_code()
    method, decoder = eof_twin(code)
    with pytest.raises(ValueError, match="EOFs' grid"):
        method.embed(torch.zeros(2, 2, 5, 6))
    with pytest.raises(ValueError, match="k=6"):
        decoder(torch.zeros(2, 5))


def test_the_lstm_trains_on_the_eof_code_and_its_ceiling_is_the_eof_reconstruction(tmp_path):
    prepared = tiny_prepared(60)
    code = fit_eof_code(prepared, 8)
    method, decoder = eof_twin(code)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, device="cpu")
    forecaster, history, directory = fit_latent_forecaster(
        method, decoder, prepared, tmp_path, config, representation="eof_code-8", context=6,
        hidden_dim=16, seed=0, progress=False)
    assert len(history) == 2 and directory.name.startswith("latent_seq2seq-")
    assert forecaster.model.head.weight.abs().sum() > 0  # trained, no longer persistence
    valid = forecaster.latents["valid"]
    torch.testing.assert_close(valid, forecaster.standardiser.transform(
        torch.from_numpy(code.encode(prepared.valid))), rtol=1e-5, atol=1e-5)
    inits = np.array([5, 8])
    ceiling = forecaster.ceiling_source(valid)(inits, 2)
    truth_days = prepared.valid[inits[:, None] + np.arange(1, 3)].reshape(-1, 5, 32, 64)
    expected = code.decode(code.encode(truth_days)).reshape(2, 2, 5, 32, 64)
    # Standardise and back in float32 on O(1) fields.
    np.testing.assert_allclose(ceiling.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert forecaster.forecast(valid, inits, 3).shape == (2, 3, 5, 32, 64)


def test_the_eof_code_reads_training_days_only():
    base = tiny_prepared(80)
    three = dataclasses.replace(base, valid=base.valid[:10], valid_times=base.valid_times[:10],
                                test=base.valid[10:], test_times=base.valid_times[10:])
    other = dataclasses.replace(three, valid=three.valid * 3.0, test=three.test + 5.0)
    first, second = fit_eof_code(three, 8), fit_eof_code(other, 8)
    np.testing.assert_array_equal(first.components, second.components)
    np.testing.assert_array_equal(first.mean, second.mean)
