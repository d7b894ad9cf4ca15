"""Probes on frozen embeddings: how much of a label a representation makes easy to read.

The report asks whether seasons separate in t-SNE / UMAP plots of the latent space; a probe
makes the question measurable. :func:`season_probe` fits a small MLP classifier
(:class:`sklearn.neural_network.MLPClassifier` on standardised embeddings) on the embeddings
of the training days and reports on the validation days its **accuracy**, its
**cross-entropy** ``-mean log p(true class)`` (nats, :func:`sklearn.metrics.log_loss`) and the
chance accuracy of always answering the most frequent training class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import log_loss
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["season_probe"]


def season_probe(train_embeddings: np.ndarray, train_labels: Sequence[int],
                 valid_embeddings: np.ndarray, valid_labels: Sequence[int],
                 hidden: tuple[int, ...] = (128,), seed: int = 0, max_iter: int = 300,
                 per_day: bool = False) -> dict[str, Any]:
    """Fit an MLP probe on training embeddings ``(N, D)`` and labels; score on validation.

    Returns ``accuracy``, ``cross_entropy`` (nats), ``chance_accuracy`` and ``n_classes``;
    with ``per_day`` also ``correct`` (bool ``(N_valid,)``) and ``log_loss`` (``(N_valid,)``
    nats, ``-log p(true class)``), whose means are the two scores (for block-bootstrap
    intervals, :func:`geofusion.verification.bootstrap.bootstrap_mean`).

    Example::

        >>> rng = np.random.default_rng(0)
        >>> labels = rng.integers(0, 4, 400)
        >>> x = rng.normal(size=(400, 8)) + 3 * np.eye(8)[labels]
        >>> scores = season_probe(x[:300], labels[:300], x[300:], labels[300:])
        >>> scores["accuracy"] > 0.9
        True
    """
    x_train, x_valid = np.asarray(train_embeddings), np.asarray(valid_embeddings)
    y_train, y_valid = np.asarray(train_labels), np.asarray(valid_labels)
    if x_train.ndim != 2 or x_valid.ndim != 2 or x_train.shape[1] != x_valid.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with the same D, got {x_train.shape} and "
                         f"{x_valid.shape}")
    if len(x_train) != len(y_train) or len(x_valid) != len(y_valid):
        raise ValueError("need one label per embedding")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ValueError("the probe needs at least two classes among the training labels")
    probe = make_pipeline(StandardScaler(), MLPClassifier(hidden, max_iter=max_iter,
                                                          early_stopping=False,
                                                          random_state=seed))
    probe.fit(x_train, y_train)
    probabilities = probe.predict_proba(x_valid)
    counts = np.array([(y_train == c).sum() for c in classes])
    correct = probe.predict(x_valid) == y_valid
    scores: dict[str, Any] = {
        "accuracy": float(correct.mean()),
        "cross_entropy": float(log_loss(y_valid, probabilities, labels=classes)),
        "chance_accuracy": float((y_valid == classes[counts.argmax()]).mean()),
        "n_classes": int(len(classes))}
    if per_day:
        # log_loss clips probabilities to [eps, 1 - eps]; the same clip keeps the mean equal.
        eps = np.finfo(probabilities.dtype).eps
        column = np.searchsorted(classes, y_valid)
        unseen = (column >= len(classes)) | (classes[np.minimum(column, len(classes) - 1)]
                                              != y_valid)
        if unseen.any():
            raise ValueError("validation labels absent from the training labels; the probe "
                             "cannot score them (use training days covering every class)")
        p_true = np.clip(probabilities[np.arange(len(y_valid)), column], eps, 1 - eps)
        scores["correct"] = correct
        scores["log_loss"] = -np.log(p_true)
    return scores
