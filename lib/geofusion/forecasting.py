"""Forecasting in latent space, and the reference baselines in field space.

The report's downstream task (chapter 4, step 2): a sequence-to-sequence LSTM reads the
latents of the previous 30 days and predicts the next one(s).

- :class:`LatentSeq2Seq`: encoder LSTM over the context, decoder LSTM + linear head that
  predicts the *change* of the latent, rolled out autoregressively.
- :func:`make_windows` / :class:`LatentWindowDataset`: (context, target) pairs from one
  contiguous series. Build them separately from the training and the validation series, so
  no window crosses the split (by construction, not by filtering).
- :class:`ForecastMethod`: the objective for :func:`geofusion.training.fit` (MSE on latents).
- Baselines on ``(time, C, lat, lon)`` fields: :func:`persistence_forecast`,
  :func:`climatology` (day-of-year mean of the *training* days, smoothed) and
  :func:`climatology_forecast`; score them with :mod:`geofusion.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

__all__ = [
    "LatentSeq2Seq", "ForecastMethod", "rollout", "make_windows", "LatentWindowDataset",
    "encode_series", "persistence_forecast", "climatology", "climatology_forecast",
    "day_of_year",
]


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
    """Training objective for :func:`geofusion.training.fit`: MSE of the latent forecast.

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


@torch.no_grad()
def encode_series(encoder: nn.Module, fields: np.ndarray | Tensor, batch_size: int = 256,
                  device: torch.device | str | None = None) -> Tensor:
    """Latents of a field series with a frozen encoder, in eval mode.

    ``fields``: ``(T, C, H, W)`` standardised -> ``(T, latent_dim)`` float32 on the CPU.
    """
    if device is None:
        param = next(encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = encoder.training
    encoder.eval()
    try:
        x = torch.as_tensor(np.asarray(fields) if not isinstance(fields, Tensor) else fields,
                            dtype=torch.float32)
        out = [encoder(x[i:i + batch_size].to(device)).float().cpu()
               for i in range(0, len(x), batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------

def persistence_forecast(fields: np.ndarray | Tensor, lead: int = 1) -> Any:
    """Persistence: the forecast valid at ``t + lead`` is the field at ``t``.

    Args:
        fields: ``(T, ...)`` consecutive daily fields.
        lead: lead time in steps (days), >= 1.

    Returns:
        ``(T - lead, ...)`` forecasts, valid at the times of ``fields[lead:]`` (the truth to
        score them against): i.e. ``fields[:-lead]``.
    """
    if lead < 1:
        raise ValueError(f"lead must be >= 1 step, got {lead}")
    if len(fields) <= lead:
        raise ValueError(f"{len(fields)} fields leave nothing to verify at lead {lead}")
    return fields[:-lead]


def day_of_year(times: Any) -> np.ndarray:
    """Day of year 1..366 of datetime64 times (Feb 29 is day 60 in leap years, as in WB2)."""
    return pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]")).day_of_year.to_numpy()


def climatology(train_fields: np.ndarray | Tensor, train_times: Any, window: int = 15
                ) -> np.ndarray:
    """Day-of-year climatology from the training days only.

    The mean for day ``d`` pools every training day whose day of year is within
    ``window // 2`` days of ``d`` (circularly, so late December pools with early January):
    a running mean of per-day sums divided by the running count, so every pooled day counts
    once. A day of year with no training day in its window (training shorter than a year)
    takes the value of the nearest one that has (circularly).

    Args:
        train_fields: ``(T, C, lat, lon)`` (any trailing shape) of the training split.
        train_times: ``(T,)`` datetime64 of those days.
        window: width in days of the smoothing window, odd, >= 1.

    Returns:
        float32 ``(366, C, lat, lon)``; row ``d - 1`` is day of year ``d``.
    """
    x = (train_fields.detach().cpu().numpy() if isinstance(train_fields, Tensor)
         else np.asarray(train_fields))
    doy = day_of_year(train_times)
    if len(doy) != len(x) or len(x) == 0:
        raise ValueError(f"need one time per field and at least one field, got {len(doy)} "
                         f"times for {len(x)} fields")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of days >= 1, got {window}")
    sums = np.zeros((366,) + x.shape[1:], dtype=np.float64)
    np.add.at(sums, doy - 1, x.astype(np.float64))
    counts = np.bincount(doy - 1, minlength=366).astype(np.float64)
    half = window // 2
    offsets = range(-half, half + 1)
    pooled_sums = sum(np.roll(sums, k, axis=0) for k in offsets)
    pooled_counts = sum(np.roll(counts, k) for k in offsets)
    have = np.flatnonzero(pooled_counts > 0)
    days = np.arange(366)
    dist = np.abs(days[:, None] - have[None, :])
    nearest = have[np.argmin(np.minimum(dist, 366 - dist), axis=1)]
    clim = pooled_sums[nearest] / pooled_counts[nearest].reshape((-1,) + (1,) * (x.ndim - 1))
    return clim.astype(np.float32)


def climatology_forecast(climatology: np.ndarray | Tensor, times: Any) -> Any:
    """The climatology at each time: ``(len(times), C, lat, lon)``, same type as the input.

    ``climatology`` is :func:`climatology`'s ``(366, ...)`` array; ``times`` datetime64.
    """
    idx = day_of_year(times) - 1
    if isinstance(climatology, Tensor):
        return climatology[torch.as_tensor(idx, device=climatology.device)]
    return np.asarray(climatology)[idx]
