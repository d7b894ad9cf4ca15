"""Forecasting in latent space: the report's sequence-to-sequence LSTM on frozen latents.

The report's downstream task (chapter 4, step 2): a sequence-to-sequence LSTM reads the
latents of the previous 30 days and predicts the next one(s).

- :class:`LatentSeq2Seq`: encoder LSTM over the context, decoder LSTM + linear head that
  predicts the *change* of the latent, rolled out autoregressively.
- :func:`make_windows` / :class:`LatentWindowDataset`: (context, target) pairs from one
  contiguous series. Build them separately from the training and the validation series, so
  no window crosses the split (by construction, not by filtering).
- :class:`ForecastMethod`: the objective for :func:`geofusion.learning.training.fit` (MSE on
latents).
- The whole chain for one representation (:class:`LatentForecaster`, trained by
  :func:`fit_latent_forecaster`): fields -> latents (:func:`encode_series`, through
  :func:`geofusion.learning.methods.embed_observed`) -> standardised (:class:`LatentStandardiser`)
  ->
  LSTM -> decoder -> fields, optionally plus the damped decoder residual of the initial day
  (:meth:`LatentForecaster.fit_residual_damping`), so the forecast does not pay the
  decoder's reconstruction error in full at every lead.

A *forecast source* (:data:`ForecastSource`) is a callable
``source(inits, steps) -> (B, steps, C, H, W)`` fields of the model's space (report or anomaly
space, :mod:`geofusion.data.anomalies`): for each initialisation index ``i`` of an evaluation
series (the last day the forecast may use), the forecasts valid at ``i + 1 .. i + steps``, each
a field of its valid day (scored in physical units with that day,
:func:`geofusion.downstream.forecast_scores.score_forecasts`). :meth:`LatentForecaster.source` and
:meth:`LatentForecaster.ceiling_source` build them; :mod:`geofusion.downstream.forecast_scores`
holds the
reference sources (persistence, climatology) and scores them all per variable and lead; the
field-space baselines (persistence, day-of-year climatology, damped anomaly persistence, linear
regression) live in :mod:`geofusion.verification.baselines`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from geofusion.downstream.embeddings import encode_series
from geofusion.learning.model_cache import cached_fit, data_fingerprint
from geofusion.verification.baselines import lag_regression

__all__ = [
    "LatentSeq2Seq", "ForecastMethod", "rollout", "make_windows", "LatentWindowDataset",
    "LatentStandardiser", "LatentForecaster", "fit_latent_forecaster",
    "ForecastSource", "RESIDUAL_TARGETS",
]

#: What ``rho_k r_t`` is fitted to in :meth:`LatentForecaster.fit_residual_damping`.
RESIDUAL_TARGETS = ("residual", "forecast")

#: ``source(inits (B,) int, steps) -> (B, steps, C, H, W)`` standardised forecast fields.
ForecastSource = Callable[[np.ndarray, int], Any]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

class LatentSeq2Seq(nn.Module):
    """Sequence-to-sequence LSTM forecasting latent vectors.

    The encoder LSTM reads the context ``(B, T, D)``; its final ``(h, c)`` initialise the
    decoder LSTM, which is fed the last known latent and emits, through a linear head, the
    increment to the next one: ``z_{t+1} = z_t + head(h_t)``. Predicting the residual makes
    persistence the starting point (the head is initialised to zero, so an untrained model
    *is* persistence) and leaves the network the day-to-day change, which is small compared
    with the latent itself. For ``horizon > 1`` each prediction is fed back as the next
    decoder input, carrying the decoder state along.

    Latents should be roughly standardised (e.g. with training-set mean and std per dimension),
    as for any LSTM.

    Args:
        latent_dim: ``D``, size of a latent vector.
        hidden_dim: LSTM state size.
        num_layers: stacked LSTM layers in encoder and decoder.
        dropout: between stacked layers (only used when ``num_layers > 1``).
    """

    def __init__(self, latent_dim: int, hidden_dim: int = 256, num_layers: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if latent_dim < 1 or hidden_dim < 1 or num_layers < 1:
            raise ValueError(f"latent_dim, hidden_dim and num_layers must be >= 1, got "
                             f"{latent_dim}, {hidden_dim}, {num_layers}")
        self.latent_dim = latent_dim
        inter = dropout if num_layers > 1 else 0.0
        self.encoder_lstm = nn.LSTM(latent_dim, hidden_dim, num_layers, batch_first=True,
                                    dropout=inter)
        self.decoder_lstm = nn.LSTM(latent_dim, hidden_dim, num_layers, batch_first=True,
                                    dropout=inter)
        self.head = nn.Linear(hidden_dim, latent_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, context: Tensor, horizon: int = 1) -> Tensor:
        """Forecast ``horizon`` steps after ``context`` ``(B, T, D)`` -> ``(B, horizon, D)``."""
        if context.ndim != 3 or context.shape[-1] != self.latent_dim:
            raise ValueError(f"context must be (B, T, {self.latent_dim}), got shape "
                             f"{tuple(context.shape)}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        _, state = self.encoder_lstm(context)
        current = context[:, -1:]
        predictions = []
        for _ in range(horizon):
            out, state = self.decoder_lstm(current, state)
            current = current + self.head(out)
            predictions.append(current)
        return torch.cat(predictions, dim=1)


@torch.no_grad()
def rollout(model: LatentSeq2Seq, context: Tensor, steps: int, sliding: bool = False) -> Tensor:
    """Forecast ``steps`` latents after ``context`` ``(B, T, D)`` in eval mode: ``(B, steps, D)``.

    ``sliding=False`` uses the decoder's own autoregressive rollout (:meth:`forward`, as
    trained with ``horizon > 1``). ``sliding=True`` instead re-encodes the last ``T`` latents
    (observed then predicted) before every one-step forecast, the scheme to use for a model
    trained with ``horizon = 1``.
    """
    was_training = model.training
    model.eval()
    try:
        if not sliding:
            return model(context, horizon=steps)
        window = context
        out = []
        for _ in range(steps):
            nxt = model(window, horizon=1)
            out.append(nxt)
            window = torch.cat([window[:, 1:], nxt], dim=1)
        return torch.cat(out, dim=1)
    finally:
        model.train(was_training)


class ForecastMethod(nn.Module):
    """Training objective for :func:`geofusion.learning.training.fit`: MSE of the latent forecast.

    ``batch = (context (B, T, D), target (B, H, D))`` as yielded by
    :class:`LatentWindowDataset`; the model forecasts ``H`` steps. The metrics report the
    persistence MSE of the same batch and the ratio (``skill_ratio`` < 1 beats persistence).
    There is no ``encoder``: the latents come from a frozen, already trained encoder
    (:func:`encode_series`).
    """

    def __init__(self, model: LatentSeq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, context: Tensor, horizon: int = 1) -> Tensor:
        return self.model(context, horizon=horizon)

    def loss(self, batch: Sequence[Tensor], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        context, target = batch[0].float(), batch[1].float()
        prediction = self.model(context, horizon=target.shape[1])
        loss = nn.functional.mse_loss(prediction.float(), target)
        with torch.no_grad():
            persistence = nn.functional.mse_loss(context[:, -1:].expand_as(target), target)
        ratio = loss.detach() / persistence.clamp_min(1e-12)
        return loss, {"persistence_mse": persistence.item(), "skill_ratio": ratio.item()}


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------

def _n_windows(length: int, context: int, horizon: int) -> int:
    if context < 1 or horizon < 1:
        raise ValueError(f"context and horizon must be >= 1, got {context} and {horizon}")
    n = length - context - horizon + 1
    if n < 1:
        raise ValueError(f"a series of {length} steps is too short for context {context} + "
                         f"horizon {horizon}; use a longer series or a shorter context")
    return n


def make_windows(series: np.ndarray | Tensor, context: int = 30, horizon: int = 1
                 ) -> tuple[Any, Any]:
    """All ``(context, target)`` windows of one contiguous series, in time order.

    Args:
        series: ``(T, ...)`` (e.g. latents ``(T, D)`` or fields ``(T, C, H, W)``), one split.
        context, horizon: steps in the input and the target.

    Returns:
        ``inputs (N, context, ...)`` and ``targets (N, horizon, ...)`` with
        ``N = T - context - horizon + 1``, same type as ``series`` (copies);
        ``inputs[n] = series[n : n + context]``,
        ``targets[n] = series[n + context : n + context + horizon]``. Call it once per split
        so no window mixes training and validation days.
    """
    n = _n_windows(len(series), context, horizon)
    idx = np.arange(n)[:, None]
    in_idx = idx + np.arange(context)[None]
    out_idx = idx + context + np.arange(horizon)[None]
    if isinstance(series, Tensor):
        return series[torch.as_tensor(in_idx)], series[torch.as_tensor(out_idx)]
    series = np.asarray(series)
    return series[in_idx], series[out_idx]


class LatentWindowDataset(torch.utils.data.Dataset):
    """``(context (T, ...), target (H, ...))`` float32 windows of contiguous series.

    Args:
        series: one ``(T, ...)`` series, or a list of them (e.g. contiguous segments of a
            split with a gap between them); windows never span two series.
        context, horizon: as in :func:`make_windows`.

    Windows are sliced on access, not copied up front.
    """

    def __init__(self, series: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
                 context: int = 30, horizon: int = 1) -> None:
        if isinstance(series, (np.ndarray, Tensor)):
            series = [series]
        self.series = [torch.as_tensor(np.asarray(s) if not isinstance(s, Tensor) else s,
                                       dtype=torch.float32) for s in series]
        if not self.series:
            raise ValueError("no series given; pass a (T, ...) array or a list of them")
        self.context, self.horizon = context, horizon
        counts = [_n_windows(len(s), context, horizon) for s in self.series]
        self._offsets = np.cumsum([0] + counts)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        start = index - int(self._offsets[k])
        s = self.series[k]
        mid = start + self.context
        return s[start:mid], s[mid:mid + self.horizon]


# --------------------------------------------------------------------------------------------
# One representation's forecast chain: encode, standardise, forecast, decode
# --------------------------------------------------------------------------------------------

@dataclass
class LatentStandardiser:
    """Per-dimension standardisation of latents with statistics of the training days.

    ``transform(z) = (z - mean) / std`` and ``inverse``; ``mean``, ``std`` are ``(D,)``.
    The LSTM (:class:`LatentSeq2Seq`) works on standardised latents, the decoder on raw ones.
    """

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, latents: np.ndarray | Tensor, min_std: float = 1e-6) -> LatentStandardiser:
        """Statistics of ``latents`` ``(T, D)`` (training days only); a dimension whose std is
        below ``min_std`` (constant over the training days) is divided by ``min_std``."""
        z = torch.as_tensor(np.asarray(latents) if not isinstance(latents, Tensor) else latents,
                            dtype=torch.float32)
        if z.ndim != 2 or len(z) < 2:
            raise ValueError(f"latents must be (T >= 2, D), got shape {tuple(z.shape)}")
        z = z.double()
        return cls(z.mean(0).float(), z.std(0).clamp_min(min_std).float())

    def transform(self, latents: Tensor) -> Tensor:
        """``(..., D)`` raw -> standardised."""
        return (latents - self.mean.to(latents.device)) / self.std.to(latents.device)

    def inverse(self, latents: Tensor) -> Tensor:
        """``(..., D)`` standardised -> raw."""
        return latents * self.std.to(latents.device) + self.mean.to(latents.device)


class LatentForecaster:
    """Everything needed to forecast fields with one representation.

    fields ``(T, C, H, W)`` --:func:`encode_series` (``embed_observed``)--> latents ``(T, D)``
    --:class:`LatentStandardiser`--> standardised --:class:`LatentSeq2Seq` (sliding rollout of
    one-day steps, :func:`rollout`)--> forecast latents --inverse, ``decoder``--> fields.

    Two ways to turn the forecast latent ``z_hat_{t+k}`` into a field:

    - **decoded** (:meth:`source` without ``fields``): ``x_hat_{t+k} = d(z_hat_{t+k})``. Its
      error can never fall below the decoder's reconstruction error (the *decoder ceiling*,
      :meth:`ceiling_source`), which the forecast pays on every day.
    - **decoded + damped residual** (:meth:`source` with ``fields``, after
      :meth:`fit_residual_damping`): ``x_hat_{t+k} = d(z_hat_{t+k}) + rho_k r_t`` with
      ``r_t = x_t - d(z_t)`` the part of the initial day that the representation does not
      reproduce, and ``rho_k`` its least-squares damping over training days
      (:func:`geofusion.verification.baselines.lag_regression`, per lead, variable and grid point).
      The
      LSTM forecasts what the latent holds; what it misses is persisted as far as it
      persists. ``rho = 1`` would be ``x_t + d(z_hat_{t+k}) - d(z_t)`` (persistence plus the
      decoded latent change), ``rho = 0`` the decoded forecast.

    Args:
        method: the trained, frozen method that makes the latents (``embed``).
        decoder: ``(B, D) raw latents -> (B, C, H, W)`` standardised fields (the autoencoder's
            own decoder, or a decoder trained on the frozen latents).
        model: the trained LSTM, on standardised latents.
        standardiser: training-day latent statistics.
        context: days of latents the LSTM reads.
        sliding: rollout scheme (True for a model trained one step ahead; see :func:`rollout`).
        batch_size: days encoded / decoded at once.

    Attributes:
        latents: standardised latents encoded by :func:`fit_latent_forecaster` (``"train"``,
            ``"valid"`` -> ``(T, D)``), kept for reuse.
    """

    def __init__(self, method: nn.Module, decoder: nn.Module, model: LatentSeq2Seq,
                 standardiser: LatentStandardiser, context: int, sliding: bool = True,
                 batch_size: int = 128) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1 day, got {context}")
        self.method, self.decoder, self.model = method, decoder, model
        self.standardiser, self.context, self.sliding = standardiser, context, sliding
        self.batch_size = batch_size
        self.latents: dict[str, Tensor] = {}
        self.residual_rho: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, fields: np.ndarray | Tensor, observed: np.ndarray | Tensor | None = None
               ) -> Tensor:
        """Standardised latents ``(T, D)`` (CPU) of ``fields`` ``(T, C, H, W)`` seen where
        ``observed`` (bool ``(T, H, W)``; None = complete)."""
        raw = encode_series(self.method, fields, batch_size=self.batch_size, observed=observed)
        return self.standardiser.transform(raw)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Standardised latents ``(..., D)`` -> standardised fields ``(..., C, H, W)`` (CPU)."""
        lead_shape = latents.shape[:-1]
        flat = latents.reshape(-1, latents.shape[-1])
        # A closed-form decoder (models.ridge_decoder) holds buffers only.
        tensor = next(self.decoder.parameters(), None)
        tensor = next(self.decoder.buffers(), None) if tensor is None else tensor
        device = tensor.device if tensor is not None else torch.device("cpu")
        was_training = self.decoder.training
        self.decoder.eval()
        try:
            out = [self.decoder(self.standardiser.inverse(flat[i:i + self.batch_size]
                                                          .to(device))).float().cpu()
                   for i in range(0, len(flat), self.batch_size)]
        finally:
            self.decoder.train(was_training)
        fields = torch.cat(out)
        return fields.reshape(*lead_shape, *fields.shape[1:])

    def forecast_latents(self, latents: Tensor, inits: Any, steps: int) -> Tensor:
        """Standardised latent forecasts ``(B, steps, D)`` from the ``context`` days ending at
        each init ``i`` (``latents[i - context + 1 : i + 1]``), valid at ``i + 1 .. i + steps``."""
        inits = np.asarray(inits, dtype=np.int64).reshape(-1)
        if inits.size and (inits.min() < self.context - 1 or inits.max() >= len(latents)):
            raise ValueError(f"initialisation indices must lie in [{self.context - 1}, "
                             f"{len(latents) - 1}] with context {self.context}")
        idx = inits[:, None] - self.context + 1 + np.arange(self.context)[None]
        context = latents[torch.as_tensor(idx)].to(self.device)
        return rollout(self.model, context, steps, sliding=self.sliding).float().cpu()

    def forecast(self, latents: Tensor, inits: Any, steps: int) -> Tensor:
        """Decoded forecasts ``(B, steps, C, H, W)`` standardised (see :meth:`forecast_latents`)."""
        return self.decode(self.forecast_latents(latents, inits, steps))

    def fit_residual_damping(self, prepared: Any, max_lead: int, pooling: str = "gridpoint",
                             latents: Tensor | None = None, target: str = "residual",
                             stride: int = 1) -> Tensor:
        """Fit ``rho_k`` of the decoded + damped residual forecast on the **training** days.

        Encodes ``prepared.train`` (:meth:`encode`) and takes the decoder residual
        ``r_t = x_t - d(z_t)`` of every training day. ``target`` says what ``rho_k r_t``
        is fitted to (least squares, per lead, variable and grid point):

        - ``"residual"``: the residual ``k`` days later, ``rho_k = sum r_t r_{t+k} /
          sum r_t^2`` over pairs of training days
          (:func:`geofusion.verification.baselines.lag_regression`
          with ``pooling``); what persists of the residual, whatever the LSTM does.
        - ``"forecast"``: the error of this forecaster's own decoded forecast,
          ``rho_k = sum r_t e_{t+k} / sum r_t^2`` with ``e_{t+k} = x_{t+k} - d(z_hat_{t+k})``
          rolled out from every ``stride``-th training day (with a full context); the
          MSE-optimal ``rho`` for this LSTM, at the cost of forecasting the training period.
          One ``rho`` per grid point (``pooling="gridpoint"``).

        Only ``train`` and ``train_times`` are read, so no validation day reaches ``rho``.
        ``latents``: the standardised latents of ``prepared.train`` when already encoded
        (e.g. ``self.latents["train"]`` after :func:`fit_latent_forecaster`), to skip encoding
        them again.

        Returns:
            ``rho`` ``(max_lead, C, H, W)`` float32, also kept as :attr:`residual_rho`.

        Example (needs trained models, not run as a doctest)::

            forecaster.fit_residual_damping(prepared, max_lead=7)
            source = forecaster.source(latents, prepared.valid)   # d(z_hat) + rho_k r_t
        """
        if target not in RESIDUAL_TARGETS:
            raise ValueError(f"unknown target {target!r}; choose one of {RESIDUAL_TARGETS}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1 day, got {stride}")
        x = torch.as_tensor(np.asarray(prepared.train), dtype=torch.float32)
        if latents is None:
            latents = self.encode(x)
        elif latents.shape[0] != len(x):
            raise ValueError(f"{latents.shape[0]} latents for {len(x)} training days; pass the "
                             "latents of prepared.train (forecaster.latents['train']) or None")
        residual = x - self.decode(latents)
        if target == "residual":
            rho = lag_regression(residual.numpy(), prepared.train_times, max_lead, pooling)
        else:
            rho = self._forecast_error_regression(x, latents, residual, prepared.train_times,
                                                  max_lead, pooling, stride)
        self.residual_rho = torch.from_numpy(rho)
        return self.residual_rho

    def _forecast_error_regression(self, x: Tensor, latents: Tensor, residual: Tensor,
                                   times: Any, max_lead: int, pooling: str, stride: int
                                   ) -> np.ndarray:
        if pooling != "gridpoint":
            raise ValueError(f"target='forecast' fits one rho per grid point; got pooling "
                             f"{pooling!r}, use 'gridpoint' (or target='residual')")
        days = np.asarray(times, dtype="datetime64[D]").astype(np.int64)
        if np.any(np.diff(days) != 1):
            raise ValueError("target='forecast' rolls out over consecutive training days; the "
                             "training days have gaps, use target='residual'")
        inits = np.arange(self.context - 1, len(x) - max_lead, stride)
        if len(inits) < 2:
            raise ValueError(f"{len(x)} training days hold {len(inits)} start days for context "
                             f"{self.context} and {max_lead} leads; need more training days")
        num = torch.zeros(max_lead, *x.shape[1:], dtype=torch.float64)
        den = torch.zeros(x.shape[1:], dtype=torch.float64)
        for start in range(0, len(inits), self.batch_size):
            chunk = inits[start:start + self.batch_size]
            idx = torch.as_tensor(chunk[:, None] + np.arange(1, max_lead + 1))
            error = (x[idx] - self.forecast(latents, chunk, max_lead)).double()
            r0 = residual[torch.as_tensor(chunk)].double()
            num += torch.einsum("blchw,bchw->lchw", error, r0)
            den += (r0 * r0).sum(0)
        # A point with no residual at all has nothing to carry forward: rho 0.
        rho = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros(()))
        return rho.float().numpy()

    def _check_residual(self) -> None:
        if self.residual_rho is None:
            raise ValueError("the decoded + damped residual forecast needs rho: call "
                             "fit_residual_damping on the training days first, or leave "
                             "fields=None for the decoded forecast")

    def _residual(self, latents: Tensor, fields: Any, inits: np.ndarray, steps: int) -> Tensor:
        """``rho_k r_t`` ``(B, steps, C, H, W)`` of the initial days ``inits``."""
        self._check_residual()
        if steps > len(self.residual_rho):
            raise ValueError(f"rho was fitted for leads 1..{len(self.residual_rho)}, asked for "
                             f"{steps}; refit with max_lead >= {steps}")
        x0 = torch.as_tensor(np.asarray(fields[inits]) if not isinstance(fields, Tensor)
                             else fields[torch.as_tensor(inits)], dtype=torch.float32)
        residual = x0 - self.decode(latents[torch.as_tensor(inits)])
        return self.residual_rho[None, :steps] * residual[:, None]

    def source(self, latents: Tensor, fields: np.ndarray | Tensor | None = None
               ) -> ForecastSource:
        """A forecast source (module docstring) of this forecaster on ``latents`` ``(T, D)``.

        ``fields``: None for the decoded forecast ``d(z_hat)``; the series ``(T, C, H, W)``
        the latents were encoded from for the decoded + damped residual forecast
        ``d(z_hat_{t+k}) + rho_k (x_t - d(z_t))`` (class docstring; needs
        :meth:`fit_residual_damping`).
        """
        if fields is not None and len(fields) != len(latents):
            raise ValueError(f"{len(fields)} fields for {len(latents)} latents; pass the "
                             "series the latents were encoded from")

        def forecast(inits: Any, steps: int) -> Tensor:
            inits = np.asarray(inits, dtype=np.int64).reshape(-1)
            out = self.forecast(latents, inits, steps)
            return out if fields is None else out + self._residual(latents, fields, inits,
                                                                   steps)
        if fields is not None:
            self._check_residual()  # fail when the source is built, not when first scored
        return forecast

    def latent_persistence_source(self, latents: Tensor,
                                  fields: np.ndarray | Tensor | None = None) -> ForecastSource:
        """The forecast of an LSTM that predicts no change: ``d(z_t)`` at every lead, with
        ``fields`` plus the damped residual, ``d(z_t) + rho_k r_t`` (:meth:`source`). Scored
        next to :meth:`source` it shows what the trained LSTM adds to the decoder and the
        residual (with ``rho = 1`` it persists the field of the model space: the physical field in
        the report space, the anomaly in the anomaly space)."""
        if fields is not None:
            self._check_residual()

        def source(inits: Any, steps: int) -> Tensor:
            inits = np.asarray(inits, dtype=np.int64).reshape(-1)
            decoded = self.decode(latents[torch.as_tensor(inits)])
            out = decoded[:, None].expand(-1, steps, *decoded.shape[1:])
            return out if fields is None else out + self._residual(latents, fields, inits,
                                                                   steps)
        return source

    def ceiling_source(self, latents: Tensor, fields: np.ndarray | Tensor | None = None
                       ) -> ForecastSource:
        """The *decoder ceiling*: the decoded **true** latents at ``i + 1 .. i + steps``, what
        a perfect latent forecast would score (the decoder's reconstruction error). With
        ``fields``, the same for the decoded + damped residual forecast (:meth:`source`)."""
        def source(inits: Any, steps: int) -> Tensor:
            inits = np.asarray(inits, dtype=np.int64).reshape(-1)
            idx = inits[:, None] + np.arange(1, steps + 1)
            out = self.decode(latents[torch.as_tensor(idx)])
            return out if fields is None else out + self._residual(latents, fields, inits,
                                                                   steps)
        if fields is not None:
            self._check_residual()
        return source


def fit_latent_forecaster(method: nn.Module, decoder: nn.Module, prepared: Any,
                          run_dir: str | os.PathLike, config: Any, representation: str,
                          context: int = 30, hidden_dim: int = 256, num_layers: int = 1,
                          dropout: float = 0.0, horizon: int = 1, seed: int = 0,
                          progress: bool = True
                          ) -> tuple[LatentForecaster, pd.DataFrame, Path]:
    """Train (once, :func:`geofusion.learning.model_cache.cached_fit`) the LSTM on one
    representation's latents.

    Encodes ``prepared.train`` and ``prepared.valid`` with ``method`` (complete fields),
    standardises them with the training statistics, and fits a :class:`LatentSeq2Seq`
    (``context`` days -> the next ``horizon`` days, MSE on standardised latents averaged over
    the ``horizon`` leads, :class:`ForecastMethod`) on all training windows, logging the loss
    on the validation windows (early stopping, when ``config`` asks for it, watches that
    loss). Windows never cross the split. With ``horizon = 1`` the forecaster rolls out by
    sliding one-day steps; with ``horizon > 1`` by the decoder's own rollout, as trained
    (:func:`rollout`).

    Args:
        method: trained, frozen method (``embed``) making the latents.
        decoder: its decoder (raw latents -> standardised fields), kept in the forecaster.
        prepared: :class:`geofusion.data.PreparedData`.
        run_dir: root of this profile's runs (the model goes to ``<run_dir>/models/...``).
        config: :class:`geofusion.learning.config.TrainConfig` of the LSTM.
        representation: identifies the frozen method in the cache key, e.g. the directory
            name :func:`geofusion.learning.model_cache.pretrained` returned
            (``"barlow_twins-1a2b3c4d5e"``).
        context, hidden_dim, num_layers, dropout: the LSTM.
        horizon: leads of the training loss (multi-step rollout loss when > 1).
        seed: initial weights.

    Returns:
        ``(forecaster, history, directory)``; ``forecaster.latents`` holds the standardised
        ``"train"`` and ``"valid"`` latents, and ``"test"`` when ``prepared`` has a test
        block (three-way split): encoded with the frozen method and the training
        standardisation, for scoring only (no fit, early stopping or choice reads them).
    """
    train = encode_series(method, prepared.train)
    valid = encode_series(method, prepared.valid)
    standardiser = LatentStandardiser.fit(train)
    train, valid = standardiser.transform(train), standardiser.transform(valid)
    test = getattr(prepared, "test", None)
    if test is not None:  # encoded for scoring only; nothing below reads it
        test = standardiser.transform(encode_series(method, test))
    description = {
        "name": "latent_seq2seq", "representation": representation, "context": context,
        "horizon": horizon, "hidden_dim": hidden_dim, "num_layers": num_layers, "dropout": dropout,
        "init_seed": seed, "latents": "embed_observed, standardised with training mean and std",
        "data": data_fingerprint(prepared),
    }

    def make_method() -> ForecastMethod:
        torch.manual_seed(seed)
        return ForecastMethod(LatentSeq2Seq(train.shape[1], hidden_dim, num_layers, dropout))

    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 day, got {horizon}")
    valid_set = (LatentWindowDataset(valid, context, horizon)
                 if len(valid) >= context + horizon else None)
    trained, history, directory = cached_fit(
        make_method, description, LatentWindowDataset(train, context, horizon), config,
        run_dir, valid_set=valid_set, progress=progress)
    forecaster = LatentForecaster(method, decoder, trained.model, standardiser, context,
                                  sliding=horizon == 1)
    forecaster.latents = {"train": train, "valid": valid}
    if test is not None:
        forecaster.latents["test"] = test
    return forecaster, history, directory
