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
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from geofusion.data import PreparedData
from geofusion.downstream.embeddings import encode_series
from geofusion.downstream.probes import season_probe
from geofusion.learning.smoothness import latent_smoothness_per_day
from geofusion.verification.bootstrap import DEFAULT_BLOCK, DEFAULT_RESAMPLES, bootstrap_mean

__all__ = ["season_probe_scores", "latent_smoothness_scores", "diagnostics_summary"]


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
