"""Diagnostics of a trained encoder beyond Table 3.1: season probe and latent smoothness.

Both take a trained *method* (anything with ``embed``, :mod:`geofusion.learning.methods`) and score
its representation of complete days, ``method.embed`` of the inference view
(:func:`geofusion.downstream.embeddings.encode_series`), so every encoder of the project is
compared
on the same footing:

- :func:`season_probe_scores`: an MLP probe (:func:`geofusion.downstream.probes.season_probe`)
fitted
  on the frozen embeddings of the training days, scored on the validation (or test) days:
  accuracy and cross-entropy ``-mean log p(true season)`` (nats); the report's t-SNE/UMAP
  question made measurable;
- :func:`latent_smoothness_scores`: mean step ``||u_{t+1} - u_t||`` and mean second
  difference ``||u_{t+1} - 2 u_t + u_{t-1}||`` of the L2-normalised embeddings ``u`` of
  consecutive validation days (:func:`geofusion.learning.smoothness.latent_smoothness`), comparable
  across encoders of any scale and dimension.

With ``intervals=True`` each mean gets its 95 % block-bootstrap interval over the days
(blocks of 7 days, :func:`geofusion.verification.bootstrap.bootstrap_mean`) as ``[low, high]`` under
``intervals``, the scorecard's convention. The probe itself is fitted once (its training
variability is not part of the interval).

Reconstruction skill of a latent against the two references it must beat (issue 23):

- :func:`eof_reconstruction`: the equal-size linear code, the anomaly EOF code of
  :func:`geofusion.data.eof.fit_eof` fitted on the TRAINING days only, applied to another
  block;
- :func:`ridge_reconstruction`: a frozen encoder's latents decoded by the closed-form ridge
  decoder (:mod:`geofusion.models.ridge_decoder`) fitted on the training days only;
- :func:`reconstruction_skill`: per model and variable, the latitude-weighted RMSE in physical
  units with its 95 % block-bootstrap interval, its ratio to the climatology, the anomaly
  correlation and the fraction of the anomaly variance explained;
- :func:`weighted_loss`: a method's own reconstruction loss of any reconstruction (e.g. the
  EOF code's), the bar of the autoencoder's convergence figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from geofusion.data import PreparedData
from geofusion.downstream.embeddings import encode_series
from geofusion.downstream.probes import season_probe
from geofusion.learning.smoothness import latent_smoothness_per_day
from geofusion.verification.bootstrap import DEFAULT_BLOCK, DEFAULT_RESAMPLES, bootstrap_mean

__all__ = ["season_probe_scores", "latent_smoothness_scores", "diagnostics_summary",
           "eof_reconstruction", "ridge_reconstruction", "reconstruction_skill",
           "weighted_loss", "skill_scorecard"]


def season_probe_scores(method: nn.Module, prepared: PreparedData, split: str = "valid",
                        hidden: tuple[int, ...] = (128,), seed: int = 0, max_iter: int = 300,
                        intervals: bool = False, block: int = DEFAULT_BLOCK,
                        n_resamples: int = DEFAULT_RESAMPLES, batch_size: int = 256
                        ) -> dict[str, Any]:
    """Season probe of ``method``'s embeddings: fitted on ``prepared.train``, scored on
    ``split`` ("valid", or "test" for a three-way split).

    Returns ``accuracy``, ``cross_entropy`` (nats), ``chance_accuracy`` (always the most
    frequent training season), ``n_classes``; with ``intervals`` also
    ``intervals = {"accuracy": [low, high], "cross_entropy": [low, high]}``.

    Example (``method`` from :func:`geofusion.learning.model_cache.pretrained`, ``prepared`` from
    :func:`geofusion.data.load`)::

        >>> scores = season_probe_scores(method, prepared, intervals=True)  # doctest: +SKIP
        >>> scores["accuracy"], scores["intervals"]["accuracy"]  # doctest: +SKIP
        (0.93, [0.9, 0.96])
    """
    train = encode_series(method, prepared.train, batch_size=batch_size).numpy()
    evaluated = encode_series(method, prepared.fields(split), batch_size=batch_size).numpy()
    scores = season_probe(train, prepared.season_labels("train"), evaluated,
                          prepared.season_labels(split), hidden=hidden, seed=seed,
                          max_iter=max_iter, per_day=True)
    correct, log_loss = scores.pop("correct"), scores.pop("log_loss")
    if intervals:
        scores["intervals"] = {
            "accuracy": bootstrap_mean(correct.astype(np.float64), block=block,
                                       n_resamples=n_resamples, seed=seed).pairs(),
            "cross_entropy": bootstrap_mean(log_loss, block=block, n_resamples=n_resamples,
                                            seed=seed).pairs()}
    return scores


def latent_smoothness_scores(method: nn.Module, fields: np.ndarray, intervals: bool = False,
                             block: int = DEFAULT_BLOCK, n_resamples: int = DEFAULT_RESAMPLES,
                             seed: int = 0, batch_size: int = 256) -> dict[str, Any]:
    """Latent smoothness of ``method``'s embeddings of consecutive days ``fields``
    ``(T >= 3, C, H, W)`` (standardised), e.g. ``prepared.valid``.

    Returns ``mean_step``, ``mean_second_difference`` and ``curvature`` (their ratio); with
    ``intervals`` also ``intervals = {"mean_step": [low, high], "mean_second_difference":
    [low, high]}``.
    """
    steps, seconds = latent_smoothness_per_day(
        encode_series(method, fields, batch_size=batch_size).numpy())
    step, second = float(steps.mean()), float(seconds.mean())
    scores: dict[str, Any] = {"mean_step": step, "mean_second_difference": second,
                              "curvature": second / step if step > 0 else float("nan")}
    if intervals:
        scores["intervals"] = {
            "mean_step": bootstrap_mean(steps, block=block, n_resamples=n_resamples,
                                        seed=seed).pairs(),
            "mean_second_difference": bootstrap_mean(seconds, block=block,
                                                     n_resamples=n_resamples,
                                                     seed=seed).pairs()}
    return scores


def diagnostics_summary(method: nn.Module, prepared: PreparedData, seed: int = 0,
                        split: str = "valid") -> dict[str, float]:
    """Both diagnostics of ``method`` as one flat row, the form notebooks 02-05 save and
    compare: ``season_accuracy``, ``season_cross_entropy`` (nats), ``season_chance_accuracy``,
    ``latent_step``, ``latent_second_difference``, each mean with its 95 % block-bootstrap
    interval as ``<name>_low`` / ``<name>_high`` (the chance accuracy has none).

    The probe is fitted on ``prepared.train``; both are scored on ``split``.
    """
    probe = season_probe_scores(method, prepared, split=split, seed=seed, intervals=True)
    smooth = latent_smoothness_scores(method, prepared.fields(split), intervals=True, seed=seed)
    row = {"season_accuracy": probe["accuracy"], "season_cross_entropy": probe["cross_entropy"],
           "season_chance_accuracy": probe["chance_accuracy"],
           "latent_step": smooth["mean_step"],
           "latent_second_difference": smooth["mean_second_difference"]}
    for name, source, key in (("season_accuracy", probe, "accuracy"),
                              ("season_cross_entropy", probe, "cross_entropy"),
                              ("latent_step", smooth, "mean_step"),
                              ("latent_second_difference", smooth, "mean_second_difference")):
        row[f"{name}_low"], row[f"{name}_high"] = source["intervals"][key]
    return {k: float(v) for k, v in row.items()}


def eof_reconstruction(prepared: PreparedData, k: int, split: str = "test") -> np.ndarray:
    """The equal-size linear code's reconstruction of ``prepared.fields(split)``: the anomaly
    EOF code with ``k`` components (one code for all variables, area-weighted,
    :func:`geofusion.data.eof.fit_eof`) fitted on ``prepared.train`` alone. Fields of the
    model space ``(T, C, H, W)`` float32; pass them to ``prepared.destandardise(x, times)``.
    """
    from geofusion.data.eof import fit_eof

    code = fit_eof(np.asarray(prepared.train), np.asarray(prepared.lat), k)
    fields = np.asarray(prepared.fields(split))
    return np.asarray(code.decode(code.encode(fields)), dtype=np.float32)


def ridge_reconstruction(method: nn.Module, prepared: PreparedData, split: str = "test",
                         ridge: float = 1.0, batch_size: int = 256) -> np.ndarray:
    """``method``'s frozen latents of ``prepared.fields(split)`` decoded by the closed-form
    ridge decoder (:func:`geofusion.models.ridge_decoder.fit_ridge_decoder`) fitted on the
    latents and fields of ``prepared.train`` alone: what the latent holds, linearly, with a
    decoder converged by construction. Model-space fields ``(T, C, H, W)`` float32.
    """
    from geofusion.models.ridge_decoder import fit_ridge_decoder

    train_latents = encode_series(method, prepared.train, batch_size=batch_size)
    decoder = fit_ridge_decoder(train_latents, np.asarray(prepared.train), ridge=ridge)
    latents = encode_series(method, prepared.fields(split), batch_size=batch_size)
    with torch.no_grad():
        out = torch.cat([decoder(chunk.cpu()) for chunk in latents.split(batch_size)])
    return out.numpy().astype(np.float32)


def weighted_loss(method: nn.Module, reconstruction: np.ndarray | torch.Tensor,
                  fields: np.ndarray | torch.Tensor, batch_size: int = 256) -> float:
    """``method.reconstruction_loss`` (the autoencoder's own, e.g. the latitude-weighted
    ``(1/C) sum_c mean_{b,i,j} w_i (x_hat - x)^2``) of ``reconstruction`` against ``fields``
    over all days, averaged over batches by their size (equal to one batch of all days for
    a loss that is a mean over days)."""
    recon = torch.as_tensor(np.asarray(reconstruction), dtype=torch.float32)
    truth = torch.as_tensor(np.asarray(fields), dtype=torch.float32)
    if recon.shape != truth.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} and fields "
                         f"{tuple(truth.shape)} differ")
    device = next((p.device for p in method.parameters()), torch.device("cpu"))
    total = 0.0
    with torch.no_grad():
        for r, t in zip(recon.split(batch_size), truth.split(batch_size), strict=True):
            total += float(method.reconstruction_loss(r.to(device), t.to(device))) * len(r)
    return total / len(recon)


def reconstruction_skill(truth: np.ndarray, predictions: Mapping[str, np.ndarray],
                         climatology: np.ndarray, lat: np.ndarray, channels: Sequence[str],
                         block: int = DEFAULT_BLOCK, n_resamples: int = DEFAULT_RESAMPLES,
                         seed: int = 0) -> pd.DataFrame:
    """Reconstruction scores of each prediction against ``truth`` and the climatology, in
    physical units, all ``(T, C, H, W)`` of the same consecutive days.

    One row per (name, variable), the climatology first (``name="climatology"``): ``rmse``
    (latitude-weighted, WeatherBench 2) with ``rmse_low`` / ``rmse_high`` (95 % block
    bootstrap over days), ``ratio_to_climatology``, ``acc`` (anomaly correlation against
    ``climatology``, mean of the per-day values, with ``acc_low`` / ``acc_high``) and
    ``anomaly_variance_explained`` ``= 1 - MSE / MSE_climatology`` (the fraction of the
    weighted anomaly variance about the climatology that the reconstruction explains; 0 for
    the climatology itself).

    Example:
        >>> lat = np.linspace(-60.0, 60.0, 4); rng = np.random.default_rng(0)
        >>> clim = np.zeros((30, 1, 4, 8)); truth = rng.normal(size=clim.shape)
        >>> table = reconstruction_skill(truth, {"half": truth / 2}, clim, lat, ["x"],
        ...                              n_resamples=20)
        >>> table.set_index("name")["anomaly_variance_explained"].round(2).to_dict()
        {'climatology': 0.0, 'half': 0.75}
    """
    from geofusion.verification.bootstrap import acc_interval, rmse_interval

    truth = np.asarray(truth, dtype=np.float64)
    climatology = np.broadcast_to(np.asarray(climatology, dtype=np.float64), truth.shape)
    settings = dict(block=block, n_resamples=n_resamples, seed=seed)
    reference = rmse_interval(climatology, truth, lat, **settings)
    rows = []
    for name, prediction in {"climatology": climatology, **predictions}.items():
        prediction = np.asarray(prediction, dtype=np.float64)
        if prediction.shape != truth.shape:
            raise ValueError(f"{name}: prediction {prediction.shape} and truth {truth.shape} "
                             "differ")
        rmse = rmse_interval(prediction, truth, lat, **settings)
        acc = (None if name == "climatology"
               else acc_interval(prediction, truth, climatology, lat, **settings))
        for c, variable in enumerate(channels):
            ratio = float(rmse.estimate[c] / reference.estimate[c])
            rows.append({"name": name, "variable": variable,
                         "rmse": float(rmse.estimate[c]), "rmse_low": float(rmse.low[c]),
                         "rmse_high": float(rmse.high[c]), "ratio_to_climatology": ratio,
                         "acc": np.nan if acc is None else float(acc.estimate[c]),
                         "acc_low": np.nan if acc is None else float(acc.low[c]),
                         "acc_high": np.nan if acc is None else float(acc.high[c]),
                         "anomaly_variance_explained": 1.0 - ratio ** 2})
    return pd.DataFrame(rows)


def skill_scorecard(table: pd.DataFrame, names: Mapping[str, str], fraction: str = "0",
                    block: str = "test") -> dict[str, Any]:
    """Scorecard sections of a :func:`reconstruction_skill` table: ``reconstruction_rmse``,
    ``reconstruction_acc`` and ``reconstruction_anomaly_variance_explained`` as
    ``{scorecard name: {fraction: {variable: value}}}`` for the rows whose ``name`` is a key
    of ``names`` (table name -> scorecard name), the RMSE and ACC intervals under
    ``intervals``, and ``scored_block``.

    Example:
        >>> table = pd.DataFrame([{"name": "ae", "variable": "geopotential", "rmse": 2.0,
        ...     "rmse_low": 1.0, "rmse_high": 3.0, "acc": 0.5, "acc_low": 0.4,
        ...     "acc_high": 0.6, "anomaly_variance_explained": 0.2}])
        >>> skill_scorecard(table, {"ae": "autoencoder"})["reconstruction_rmse"]
        {'autoencoder': {'0': {'geopotential': 2.0}}}
    """
    sections = {"reconstruction_rmse": "rmse", "reconstruction_acc": "acc",
                "reconstruction_anomaly_variance_explained": "anomaly_variance_explained"}
    card: dict[str, Any] = {section: {} for section in sections}
    card["intervals"] = {"reconstruction_rmse": {}, "reconstruction_acc": {}}
    for row in table[table["name"].isin(list(names))].itertuples(index=False):
        key = names[row.name]
        for section, column in sections.items():
            value = getattr(row, column)
            card[section].setdefault(key, {}).setdefault(fraction, {})[row.variable] = (
                None if pd.isna(value) else float(value))
        for section, column in (("reconstruction_rmse", "rmse"), ("reconstruction_acc", "acc")):
            low, high = getattr(row, f"{column}_low"), getattr(row, f"{column}_high")
            card["intervals"][section].setdefault(key, {}).setdefault(fraction, {})[
                row.variable] = None if pd.isna(low) else [float(low), float(high)]
    card["scored_block"] = block
    return card
