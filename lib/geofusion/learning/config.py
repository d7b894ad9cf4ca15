"""The settings of one training run (:class:`TrainConfig`) and their allowed values.

Every training loop (:func:`geofusion.learning.training.fit`, the data-parallel
:func:`geofusion.learning.distributed.fit_distributed`) and the model cache
(:mod:`geofusion.learning.model_cache`, whose keys hash these settings) read the same
:class:`TrainConfig`; an unknown value raises when the config is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["TrainConfig", "LR_SCHEDULES", "STOP_REASONS", "BATCH_SAMPLER_KEYS"]


LR_SCHEDULES = ("constant", "cosine")


STOP_REASONS = ("epochs", "patience", "budget")


# Fields of TrainConfig that change the result of a run. Resuming with different values would
# silently mix two experiments, so it is refused. ``epochs`` may grow (train longer) when the
# schedule does not depend on it; ``time_budget_s`` may change.
RESULT_FIELDS = ("batch_size", "lr", "weight_decay", "seed", "drop_last", "grad_clip",
                  "patience", "min_delta", "restore_best", "lr_schedule", "warmup_epochs",
                  "min_lr", "batch_sampler")


#: Settings a ``TrainConfig.batch_sampler`` may hold (those of
#: :class:`geofusion.data.samplers.TimeAwareBatchSampler` other than the anchors, which follow from
#: ``batch_size``, and the seed, which is the run's).
BATCH_SAMPLER_KEYS = ("hard", "easy", "hard_range", "easy_min")


@dataclass
class TrainConfig:
    """Settings of one training run (defaults are the report's: Adam, batch 128, 100 epochs).

    Attributes:
        epochs: total (maximum, with early stopping) number of epochs; resuming continues up
            to this number.
        batch_size: samples per optimisation step.
        lr: Adam learning rate (the peak of a schedule).
        weight_decay: Adam weight decay (the report uses none).
        seed: seeds shuffling, augmentations and initialisation-independent randomness.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        amp: bfloat16 autocast on CUDA (ignored on CPU, where training is float32); see
            :data:`geofusion.reproducibility.AUTOCAST_POLICY`.
        drop_last: drop the last incomplete batch (batch-norm and Barlow Twins need >= 2).
        grad_clip: clip the gradient norm to this value, or None.
        num_workers: DataLoader worker processes (seeded by
            :func:`geofusion.reproducibility.seed_worker`).
        patience: early stopping: stop after this many epochs in a row without a validation
            improvement; None (default) trains all ``epochs``. Needs a validation set.
        min_delta: an epoch improves when its validation loss is below the best so far by
            more than this (loss units, >= 0).
        restore_best: with ``patience``, end with the weights of the best validation epoch.
        lr_schedule: "constant" (default) or "cosine" (decay to ``min_lr`` over ``epochs``).
        warmup_epochs: linear warm-up from ``lr / warmup_steps`` to ``lr`` over this many
            epochs (0: none).
        min_lr: the cosine schedule's final learning rate (0 <= min_lr <= lr).
        time_budget_s: wall-clock seconds for this model's training and validation, summed
            over resumed calls, or None (no budget).
        batch_sampler: None (default: a uniform shuffle) or the settings of a
            :class:`geofusion.data.samplers.TimeAwareBatchSampler` (keys of
            :data:`BATCH_SAMPLER_KEYS`: ``hard``, ``easy``, ``hard_range``, ``easy_min``):
            batches of ``batch_size / (1 + hard + easy)`` anchor days with their hard (nearby)
            and easy (far) negatives, seeded by ``(seed, epoch)`` so a resumed run draws the
            same batches. The dataset's items must be consecutive days.
        limit_batches: at most this many batches per epoch, in training and in the validation
            pass alike (PyTorch Lightning's ``limit_train_batches`` / ``limit_val_batches``);
            the learning-rate schedule counts the limited epoch. None (default): every batch.
            The smoke profile sets 1, so the full profile's models run every code path in
            seconds (``make smoke-full``); a model so trained means nothing.
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    drop_last: bool = True
    grad_clip: float | None = None
    num_workers: int = 0
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    min_lr: float = 0.0
    time_budget_s: float | None = None
    batch_sampler: dict[str, Any] | None = None
    limit_batches: int | None = None

    def __post_init__(self) -> None:
        if self.batch_sampler is not None:
            unknown = set(self.batch_sampler) - set(BATCH_SAMPLER_KEYS)
            if unknown:
                raise ValueError(f"unknown batch_sampler settings {sorted(unknown)}; allowed: "
                                 f"{BATCH_SAMPLER_KEYS} (the anchors follow from batch_size)")
            self.batch_sampler = {k: (list(v) if k == "hard_range" else v)
                                  for k, v in self.batch_sampler.items()}
            per_anchor = self.sampler_days_per_anchor()
            if self.batch_size % per_anchor:
                raise ValueError(f"batch_size={self.batch_size} is not a multiple of the "
                                 f"{per_anchor} days per anchor (1 + hard + easy) of the "
                                 "time-aware batch sampler; change batch_size or hard/easy")
        if self.limit_batches is not None and (isinstance(self.limit_batches, bool)
                                               or not isinstance(self.limit_batches, int)
                                               or self.limit_batches < 1):
            raise ValueError(f"limit_batches must be a positive number of batches per epoch or "
                             f"None (every batch), got {self.limit_batches!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.patience is not None and (isinstance(self.patience, bool)
                                          or not isinstance(self.patience, int)
                                          or self.patience < 1):
            raise ValueError(f"patience must be a positive number of epochs or None (no early "
                             f"stopping), got {self.patience!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0 (loss units), got {self.min_delta}")
        if not isinstance(self.restore_best, bool):
            raise ValueError(f"restore_best must be True or False, got {self.restore_best!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of "
                             f"{LR_SCHEDULES}")
        if not 0 <= self.warmup_epochs <= max(self.epochs, 0):
            raise ValueError(f"warmup_epochs must be between 0 and epochs={self.epochs}, got "
                             f"{self.warmup_epochs}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be between 0 and lr={self.lr}, got {self.min_lr}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be positive seconds or None (no budget), "
                             f"got {self.time_budget_s}")


    def sampler_days_per_anchor(self) -> int:
        """``1 + hard + easy`` of the time-aware batch sampler (defaults 2 and 1)."""
        settings = self.batch_sampler or {}
        return 1 + int(settings.get("hard", 2)) + int(settings.get("easy", 1))
