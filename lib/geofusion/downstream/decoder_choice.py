r"""Choosing the decoder of a frozen latent on validation days.

A decoder trained by gradient descent on a small budget may be far from converged (notebook
08's width-16 convolutional decoders of the Barlow Twins latents score about the
climatology), so what a forecast decoded by it scores says more about the decoder than about
the latent. The closed-form ridge decoder (:mod:`geofusion.models.ridge_decoder`) is converged
by construction; :func:`choose_decoder` keeps whichever candidate reconstructs the
**validation** days best:

.. math:: \mathrm{MSE}_c(d) = \frac{1}{N H W} \sum_{n, i, j} w_i\,
          \big(d(e(x_n))_{c,i,j} - x_{n,c,i,j}\big)^2, \qquad
          d^\star = \arg\min_d \frac{1}{C} \sum_c \mathrm{MSE}_c(d),

in the model space (:mod:`geofusion.data.anomalies`: every variable scaled by its training
RMS anomaly, so each weighs alike), ``w_i`` the area weights of mean 1, over evenly spaced
validation days (:func:`geofusion.data.prepared.evenly_spaced_days`). No test day is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from geofusion.data.prepared import evenly_spaced_days
from geofusion.downstream.embeddings import encode_series
from geofusion.downstream.reconstruction import decoder_training_days
from geofusion.models.ridge_decoder import RidgeDecoder, fit_ridge_decoder
from geofusion.verification.metrics import lat_weighted_mse

__all__ = ["fit_training_ridge_decoder", "validation_errors", "choose_decoder"]


def fit_training_ridge_decoder(method: nn.Module, prepared: Any, n_days: int | None = None,
                               seed: int = 0, ridge: float = 1.0, batch_size: int = 256
                               ) -> RidgeDecoder:
    """The ridge decoder of ``method``'s latents (complete fields, ``embed_observed``) on the
    :func:`~geofusion.downstream.reconstruction.decoder_training_days` of ``prepared.train``
    (the same ``n_days`` days, drawn with ``seed``, as the frozen convolutional decoders)."""
    days = decoder_training_days(len(prepared.train), n_days, seed)
    fields = np.asarray(prepared.train[days], dtype=np.float32)
    latents = encode_series(method, fields, batch_size=batch_size)
    return fit_ridge_decoder(latents, fields, ridge=ridge)


@torch.no_grad()
def validation_errors(method: nn.Module, decoders: Mapping[str, nn.Module], prepared: Any,
                      n_days: int | None = None, batch_size: int = 256) -> pd.DataFrame:
    """Latitude-weighted MSE (model space) of each decoder on ``n_days`` evenly spaced
    validation days (module docstring).

    Returns:
        DataFrame indexed by decoder name, a column per channel of ``prepared`` and ``"mean"``
        (over the channels).
    """
    if not decoders:
        raise ValueError("no decoders given; pass a dict name -> decoder")
    days = evenly_spaced_days(len(prepared.valid), n_days)
    fields = torch.as_tensor(np.asarray(prepared.valid[days]), dtype=torch.float32)
    latents = encode_series(method, fields, batch_size=batch_size)
    lat = np.array(prepared.lat, dtype=np.float64)
    rows = {}
    for name, decoder in decoders.items():
        device = next((p.device for p in decoder.parameters()), None)
        if device is None:
            device = next((b.device for b in decoder.buffers()), torch.device("cpu"))
        was_training = decoder.training
        decoder.eval()
        try:
            out = torch.cat([decoder(z.to(device)).float().cpu()
                             for z in latents.split(batch_size)])
        finally:
            decoder.train(was_training)
        mse = lat_weighted_mse(out, fields, lat).double().mean(0).numpy()
        rows[name] = dict(zip(prepared.channels, mse.tolist(), strict=True))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["mean"] = table.mean(axis=1)
    table.index.name = "decoder"
    return table


def choose_decoder(method: nn.Module, decoders: Mapping[str, nn.Module], prepared: Any,
                   n_days: int | None = None) -> tuple[str, pd.DataFrame]:
    """``(name, table)``: the decoder with the lowest mean validation MSE
    (:func:`validation_errors`; ties go to the first) and the table it was chosen on."""
    table = validation_errors(method, decoders, prepared, n_days)
    return str(table["mean"].idxmin()), table
