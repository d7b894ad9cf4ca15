"""The training loop shared by every method: Adam, schedules, early stopping, checkpoints, resume.

A *method* is an ``nn.Module`` with ``loss(batch, generator) -> (loss, metrics)`` (see
``geofusion.learning.methods``). :func:`fit` trains it on a dataset and, when given a ``run_dir``,
writes after every epoch

- ``checkpoint.pt``: tensors only (model, optimiser state, best weights), loaded with
  ``torch.load(weights_only=True)`` so a checkpoint from an untrusted source cannot run code;
- ``checkpoint.json``: everything else (method, config, epoch, history, early-stopping state,
  why the run stopped, :func:`geofusion.reproducibility.describe` of the process), beside it;
- ``metrics.csv``: one row per epoch;
- ``config.json``: the :class:`TrainConfig` of the run.

All are written atomically. Calling :func:`fit` again with the same ``run_dir`` resumes after
the last completed epoch; a finished run just loads its weights, so notebooks call :func:`fit`
to mean "train, or load what an earlier run trained". All randomness of epoch ``k``
(shuffling, augmentations, dropout) is drawn from generators seeded by ``(seed, k)``, the
learning rate is a function of the step, and the early-stopping state is saved with the
weights, so a run interrupted after epoch ``k`` and resumed ends exactly as an uninterrupted
one: same weights, same history, same stopping epoch.

**Training to a plateau** (all off by default, i.e. a fixed number of epochs at a constant
learning rate):

- early stopping (``patience``): after each epoch the validation loss ``v_k`` is compared with
  the best so far ``v*``; it improves when ``v_k < v* - min_delta``. The run stops when
  ``patience`` epochs in a row did not improve, and (``restore_best``) ends with the weights of
  the best epoch;
- learning-rate schedule: a linear warm-up over ``warmup_epochs`` then constant
  (``lr_schedule="constant"``) or cosine decay to ``min_lr`` at the last step of ``epochs``
  (``"cosine"``), updated every optimisation step (:func:`learning_rate`);
- ``time_budget_s``: no epoch starts that would end past the budget at the mean epoch time so
  far (the first epoch always runs). Wall-clock time differs between machines, so a run that
  stops for its budget is not reproducible; use it as a safeguard, not as the stopping rule of
  record.

The returned history says why the run stopped (``history.attrs["stop_reason"]``: "patience",
"budget" or "epochs"; :func:`describe_stop` writes it as a sentence).

Example::

    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> class Mean(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.m = torch.nn.Parameter(torch.zeros(1))
    ...     def loss(self, batch, generator):
    ...         return ((batch[0] - self.m) ** 2).mean(), {}
    >>> data = TensorDataset(torch.arange(8.0))
    >>> history = fit(Mean(), data, TrainConfig(epochs=3, batch_size=4, device="cpu",
    ...                                         patience=2), valid_set=data, progress=False)
    >>> history.attrs["stop_reason"], len(history)
    ('epochs', 3)
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geofusion.data.samplers import TimeAwareBatchSampler
from geofusion.io import atomic_write_bytes, atomic_write_text
from geofusion.reproducibility import describe, seed_worker

CHECKPOINT_FORMAT = "geofusion-checkpoint-v2"
CHECKPOINT_NAME = "checkpoint.pt"
METADATA_NAME = "checkpoint.json"
LR_SCHEDULES = ("constant", "cosine")
STOP_REASONS = ("epochs", "patience", "budget")

# Fields of TrainConfig that change the result of a run. Resuming with different values would
# silently mix two experiments, so it is refused. ``epochs`` may grow (train longer) when the
# schedule does not depend on it; ``time_budget_s`` may change.
_RESULT_FIELDS = ("batch_size", "lr", "weight_decay", "seed", "drop_last", "grad_clip",
                  "patience", "min_delta", "restore_best", "lr_schedule", "warmup_epochs",
                  "min_lr", "batch_sampler")

#: Settings a ``TrainConfig.batch_sampler`` may hold (those of
#: :class:`geofusion.data.samplers.TimeAwareBatchSampler` other than the anchors, which follow from
#: ``batch_size``, and the seed, which is the run's).
BATCH_SAMPLER_KEYS = ("hard", "easy", "hard_range", "easy_min")

# The clock of epoch durations and of the time budget (replaced in tests by a fake one).
_clock = time.perf_counter


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupt, unsafe, old, another method or another config."""


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


def time_aware_batch_sampler(n_days: int, config: TrainConfig, epoch: int, rank: int = 0,
                             world_size: int = 1) -> TimeAwareBatchSampler:
    """The :class:`geofusion.data.samplers.TimeAwareBatchSampler` of ``config.batch_sampler`` for
    ``epoch``: global batches of ``config.batch_size`` days, seeded by ``config.seed``; with
    ``world_size > 1`` rank ``rank`` gets its contiguous share of every global batch (used by
    :func:`geofusion.learning.distributed.fit_distributed`), so the ranks together see exactly the
    batches one process would.

    Example::

        >>> config = TrainConfig(batch_size=8, batch_sampler={"hard": 1, "easy": 0})
        >>> sampler = time_aware_batch_sampler(100, config, epoch=0)
        >>> len(next(iter(sampler)))
        8
    """
    if config.batch_sampler is None:
        raise ValueError("config.batch_sampler is None; set it to the sampler's settings, "
                         "e.g. {'hard': 2, 'easy': 1}")
    settings = dict(config.batch_sampler)
    if "hard_range" in settings:
        settings["hard_range"] = tuple(settings["hard_range"])
    sampler = TimeAwareBatchSampler(
        n_days, anchors=config.batch_size // config.sampler_days_per_anchor(),
        seed=config.seed, rank=rank, world_size=world_size, **settings)
    sampler.set_epoch(epoch)
    return sampler


def set_data_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a dataset that draws per epoch (``set_epoch``, e.g.
    :class:`geofusion.data.samplers.TemporalPairDataset`) which epoch is starting."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimisation step ``step`` (0-based, counted over the whole run).

    With ``W = warmup_epochs * steps_per_epoch`` and ``T = epochs * steps_per_epoch``:
    ``lr * (step + 1) / W`` while ``step < W``; then ``lr`` ("constant") or
    ``min_lr + (lr - min_lr) * (1 + cos(pi * (step - W) / (T - W))) / 2`` ("cosine"), which
    reaches ``min_lr`` after the last step.

    Example::

        >>> config = TrainConfig(epochs=4, lr=1.0, lr_schedule="cosine", warmup_epochs=1)
        >>> [round(learning_rate(config, s, 2), 4) for s in range(8)]
        [0.5, 1.0, 1.0, 0.933, 0.75, 0.5, 0.25, 0.067]
    """
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.lr_schedule == "constant":
        return config.lr
    decay = max(config.epochs * steps_per_epoch - warmup, 1)
    progress = min((step - warmup) / decay, 1.0)
    return config.min_lr + (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress)) / 2


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` in every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return ``torch.device`` for "auto" (CUDA if available, else CPU) or an explicit name."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; "
                         "use device='cpu' or 'auto'")
    return resolved


def progress_bar(iterable, **kwargs):
    """tqdm progress bar: a widget in Jupyter, plain text under papermill/CI.

    The pipeline sets ``GEOFUSION_PLAIN_PROGRESS=1`` because widget bars do not survive into
    executed notebooks and HTML reports.
    """
    if os.environ.get("GEOFUSION_PLAIN_PROGRESS"):
        from tqdm import tqdm
    else:
        from tqdm.auto import tqdm
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, **kwargs)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """CPU generator for ``stream`` of ``epoch``: the only source of randomness in training."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009 + stream)


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) tuple/list/dict batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    return batch


def metadata_path(path: str | os.PathLike) -> Path:
    """``checkpoint.json`` beside ``checkpoint.pt``: the checkpoint's non-tensor metadata."""
    return Path(path).with_name(METADATA_NAME)


def save_checkpoint(path: str | os.PathLike, tensors: Mapping[str, Any],
                    metadata: Mapping[str, Any]) -> None:
    """Write a checkpoint: ``tensors`` to ``path``, ``metadata`` as JSON beside it, atomically.

    Args:
        path: the ``.pt`` file.
        tensors: state dicts (model, optimiser, ...): tensors and plain numbers only, so the
            file loads with ``torch.load(weights_only=True)``.
        metadata: JSON-serialisable; must hold ``epoch`` (an int), which is written into
            both files so that :func:`load_checkpoint` can tell they belong together.
    """
    epoch = int(metadata["epoch"])
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": epoch, **tensors}, buffer)
    text = json.dumps({"format": CHECKPOINT_FORMAT, **metadata}, indent=1)
    # The tensors first: a crash between the two writes leaves a newer .pt than .json, which
    # load_checkpoint detects by the epoch (never silently pairs weights with another history).
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(metadata_path(path), text)


def _delete_hint(path: Path) -> str:
    return f"delete {path.parent} (or point run_dir at a fresh directory) and train again"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`: its metadata and tensors merged.

    The ``.pt`` file is read with ``torch.load(weights_only=True)``: tensors and plain Python
    containers only, so a file that holds any other pickled object is refused without
    running it.

    Raises:
        CheckpointError: the file is corrupt or truncated, holds pickled objects, was written
            by an older geofusion (format v1), or its ``checkpoint.json`` is missing or belongs
            to another epoch; the message names the file and what to do.
    """
    path = Path(path)
    try:
        tensors = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{path} holds pickled Python objects other than tensors and numbers, which "
            f"geofusion refuses to load: unpickling can run arbitrary code "
            f"(torch.load(weights_only=True) stopped at: {first_line}). If the file comes "
            f"from an older geofusion, {_delete_hint(path)}; if its origin is unknown, do "
            f"not load it at all") from error
    except Exception as error:  # torch raises several types for truncated/garbled files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); "
            f"delete it (or the run directory) to train from scratch"
        ) from error
    if not isinstance(tensors, dict) or not str(tensors.get("format", "")).startswith(
            "geofusion-checkpoint"):
        raise CheckpointError(
            f"{path} is not a geofusion checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            "point run_dir at a fresh directory"
        )
    if tensors["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by an older geofusion (format {tensors['format']!r}, now "
            f"{CHECKPOINT_FORMAT!r}: metadata moved to {METADATA_NAME} so checkpoints load "
            f"without unpickling); {_delete_hint(path)}")
    meta_path = metadata_path(path)
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path} has no readable {meta_path.name} beside it ({type(error).__name__}: "
            f"{error}); the run was interrupted while saving or the file was removed: "
            f"{_delete_hint(path)}") from error
    if metadata.get("epoch") != tensors["epoch"]:
        raise CheckpointError(
            f"{path} holds epoch {tensors['epoch']} but {meta_path.name} epoch "
            f"{metadata.get('epoch')}: the run was interrupted between writing the two; "
            f"{_delete_hint(path)}")
    return {**metadata, **tensors}


def _check_compatible(state: dict, method: nn.Module, config: TrainConfig, path: Path) -> None:
    name = type(method).__name__
    if state["method"] != name:
        raise CheckpointError(
            f"{path} was written by method {state['method']!r}, not {name!r}; "
            "use another run_dir for this method"
        )
    saved = state["config"]
    fields = _RESULT_FIELDS + (("epochs",) if config.lr_schedule == "cosine" else ())
    changed = {k: (saved.get(k), getattr(config, k)) for k in fields
               if saved.get(k) != getattr(config, k)}
    if changed:
        detail = ", ".join(f"{k}: saved {a!r} != now {b!r}" for k, (a, b) in changed.items())
        raise CheckpointError(
            f"{path} belongs to a run with other settings ({detail}); "
            "use another run_dir or the same settings to resume"
        )
    model_state = method.state_dict()
    mismatched = [
        key for key, value in state["model"].items()
        if key not in model_state or model_state[key].shape != value.shape
    ] + [key for key in model_state if key not in state["model"]]
    if mismatched:
        raise CheckpointError(
            f"{path} holds a model of another architecture (first differing parameters: "
            f"{mismatched[:3]}); use another run_dir or rebuild the model with the same sizes"
        )


@dataclass
class RunState:
    """Where a run stands after its completed epochs: everything resuming needs besides the
    weights and the optimiser. Saved in ``checkpoint.json``.

    Attributes:
        epoch: completed epochs.
        history: one dict per completed epoch.
        best_valid_loss: the lowest validation loss so far (None before the first epoch).
        best_epoch: the (1-based) epoch that reached it (0 before the first epoch).
        bad_epochs: epochs in a row without an improvement of more than ``min_delta``.
        elapsed_s: wall-clock seconds spent in training and validation so far.
        stop_reason: None while the run may continue, else one of :data:`STOP_REASONS`.
    """

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_valid_loss: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    elapsed_s: float = 0.0
    stop_reason: str | None = None

    def record(self, row: dict[str, float], seconds: float, config: TrainConfig) -> bool:
        """Append a finished epoch; update the early-stopping state; True if it is the best."""
        self.history.append(row)
        self.epoch += 1
        self.elapsed_s += seconds
        valid = row.get("valid_loss")
        if valid is None or not math.isfinite(valid):
            self.bad_epochs += 1
            return False
        if self.best_valid_loss is None or valid < self.best_valid_loss - config.min_delta:
            self.best_valid_loss, self.best_epoch, self.bad_epochs = valid, self.epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def should_stop(self, config: TrainConfig) -> str | None:
        """Why no further epoch should start (one of :data:`STOP_REASONS`), or None."""
        if config.patience is not None and self.bad_epochs >= config.patience:
            return "patience"
        if self.epoch >= config.epochs:
            return "epochs"
        if config.time_budget_s is not None and self.epoch > 0:
            per_epoch = self.elapsed_s / self.epoch
            if self.elapsed_s + per_epoch > config.time_budget_s:
                return "budget"
        return None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _early_stopping(config: TrainConfig) -> bool:
    return config.patience is not None


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _resume(method: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
            run_dir: str | os.PathLike | None, device: torch.device
            ) -> tuple[RunState, dict[str, torch.Tensor] | None]:
    """Load the run's checkpoint into ``method`` and ``optimizer``; return its state and the
    best weights (None without early stopping). A fresh state when there is no checkpoint."""
    best = _clone_state(method) if _early_stopping(config) and config.restore_best else None
    if run_dir is None or not (Path(run_dir) / CHECKPOINT_NAME).exists():
        return RunState(), best
    path = Path(run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path, map_location=device)
    _check_compatible(state, method, config, path)
    method.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if best is not None:
        best = state["best_model"]
    run = RunState(**{f.name: state["run"][f.name] for f in dataclasses.fields(RunState)})
    return run, best


def _save(run_dir: str | os.PathLike, method: nn.Module, optimizer: torch.optim.Optimizer,
          config: TrainConfig, run: RunState, best: dict[str, torch.Tensor] | None) -> None:
    tensors: dict[str, Any] = {"model": method.state_dict(), "optimizer": optimizer.state_dict()}
    if best is not None:
        tensors["best_model"] = best
    device = next(iter(tensors["model"].values())).device if tensors["model"] else None
    save_checkpoint(Path(run_dir) / CHECKPOINT_NAME, tensors, {
        "method": type(method).__name__, "config": dataclasses.asdict(config),
        "epoch": run.epoch, "run": run.to_json(),
        # Provenance: versions and determinism settings in force when the epoch was trained.
        "environment": describe(device)})
    atomic_write_text(Path(run_dir) / "metrics.csv",
                      pd.DataFrame(run.history).to_csv(index=False))


def _write_config(run_dir: str | os.PathLike, config: TrainConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(run_dir) / "config.json",
                      json.dumps(dataclasses.asdict(config), indent=2))


def _history_frame(run: RunState, config: TrainConfig) -> pd.DataFrame:
    frame = pd.DataFrame(run.history)
    frame.attrs.update(stop_reason=run.stop_reason, epochs=config.epochs,
                       patience=config.patience, min_delta=config.min_delta,
                       best_epoch=run.best_epoch, best_valid_loss=run.best_valid_loss,
                       restored_best=bool(_early_stopping(config) and config.restore_best
                                          and run.stop_reason is not None
                                          and run.best_epoch > 0),
                       elapsed_s=run.elapsed_s, time_budget_s=config.time_budget_s)
    return frame


def describe_stop(history: pd.DataFrame) -> str:
    """One sentence on where and why a run of :func:`fit` stopped, for notebook captions.

    Example::

        >>> h = pd.DataFrame({"epoch": [1, 2, 3]})
        >>> h.attrs.update(stop_reason="patience", epochs=10, patience=2, min_delta=0.0,
        ...                best_epoch=1, best_valid_loss=0.5, restored_best=True)
        >>> for part in describe_stop(h).split("; "):
        ...     print(part)
        stopped after epoch 3 of 10: no validation improvement for 2 epochs
        best validation loss 0.5 at epoch 1 (weights restored)
    """
    attrs = history.attrs
    reason = attrs.get("stop_reason")
    done = len(history)
    if reason is None:
        text = f"{done} of {attrs.get('epochs', '?')} epochs done; the run can be resumed"
    elif reason == "patience":
        more = f" by more than {attrs['min_delta']:g}" if attrs.get("min_delta") else ""
        text = (f"stopped after epoch {done} of {attrs['epochs']}: no validation improvement"
                f"{more} for {attrs['patience']} epochs")
    elif reason == "budget":
        text = (f"stopped after epoch {done} of {attrs['epochs']}: the time budget of "
                f"{attrs['time_budget_s']:g} s would be exceeded by another epoch")
    else:
        text = f"trained all {done} epochs"
    if attrs.get("best_valid_loss") is not None and attrs.get("patience") is not None:
        text += (f"; best validation loss {attrs['best_valid_loss']:.4g} at epoch "
                 f"{attrs['best_epoch']}")
        if attrs.get("restored_best"):
            text += " (weights restored)"
    return text


def fit(
    method: nn.Module,
    train_set: Dataset,
    config: TrainConfig,
    run_dir: str | os.PathLike | None = None,
    valid_set: Dataset | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> pd.DataFrame:
    """Train ``method`` on ``train_set`` with Adam; return the per-epoch history.

    Args:
        method: module with ``loss(batch, generator) -> (loss, metrics)``; may define
            ``on_epoch_start(epoch, epochs)`` for schedules that depend on the epoch.
        train_set: dataset whose items collate into the ``batch`` the method expects.
        config: the run's settings (early stopping, schedule and budget included).
        run_dir: directory for checkpoint, log and config; resumes from it when it holds a
            checkpoint. None trains in memory only.
        valid_set: when given, the mean validation loss is logged each epoch (``valid_loss``),
            computed in eval mode with a fixed generator so epochs are comparable; required
            for early stopping.
        progress: show a progress bar over epochs.
        stop_after: stop after this many epochs *of this call* (used to test resumption and
            to split long runs); the run is resumable from where it stopped.

    Returns:
        DataFrame with one row per completed epoch: ``epoch``, ``loss`` (mean training loss),
        ``valid_loss`` when a validation set is given, the method's metrics, ``lr`` (at the
        epoch's first step) and ``seconds`` (training time of the epoch). ``attrs`` hold
        ``stop_reason`` (None when ``stop_after`` interrupted the run), ``best_epoch``,
        ``best_valid_loss``, ``restored_best`` and ``elapsed_s`` (:func:`describe_stop`).
        After the call ``method`` holds the final weights (the best epoch's with early
        stopping and ``restore_best``), in eval mode, on the device.
    """
    if len(train_set) < 2:
        # Batch statistics (batch norm, Barlow Twins' correlation) need two samples.
        raise ValueError(f"the training set has {len(train_set)} samples, too few for one batch; "
                         "select a longer time range")
    if _early_stopping(config) and valid_set is None:
        raise ValueError("early stopping (patience) needs a validation set: pass valid_set, or "
                         "set patience=None to train a fixed number of epochs")
    device = resolve_device(config.device)
    method.to(device)
    optimizer = torch.optim.Adam(method.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    run, best = _resume(method, optimizer, config, run_dir, device)
    if run_dir is not None:
        _write_config(run_dir, config)

    use_amp = config.amp and device.type == "cuda"
    calls = 0
    # Recomputed rather than trusted from the checkpoint: a finished run may continue when
    # asked for more epochs (constant schedule) or given a larger budget.
    saved_reason, reason = run.stop_reason, run.should_stop(config)
    bar = progress_bar(None, desc=type(method).__name__, unit="epoch", initial=run.epoch,
                       total=config.epochs) if progress and reason is None else None
    while reason is None and (stop_after is None or calls < stop_after):
        tic = _clock()
        row = _train_one_epoch(method, train_set, optimizer, config, device, run.epoch, use_amp)
        if valid_set is not None:
            row["valid_loss"] = evaluate_loss(method, valid_set, config, device, use_amp)
        if run.record(row, _clock() - tic, config) and best is not None:
            best = _clone_state(method)
        calls += 1
        reason = run.stop_reason = run.should_stop(config)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                             if k in ("loss", "valid_loss")})
        if run_dir is not None:
            _save(run_dir, method, optimizer, config, run, best)
    if bar is not None:
        bar.close()
    if calls == 0 and reason != saved_reason:
        run.stop_reason = reason
        if run_dir is not None:
            _save(run_dir, method, optimizer, config, run, best)
    if reason is not None and best is not None and run.best_epoch > 0:
        method.load_state_dict(best)
    method.eval()
    return _history_frame(run, config)


def _loader(dataset: Dataset, config: TrainConfig, generator: torch.Generator | None,
            shuffle: bool, drop_last: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle,
                      drop_last=drop_last, generator=generator,
                      num_workers=config.num_workers, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=seed_worker if config.num_workers else None)


def _train_one_epoch(method: nn.Module, dataset: Dataset, optimizer: torch.optim.Optimizer,
                     config: TrainConfig, device: torch.device, epoch: int,
                     use_amp: bool) -> dict[str, float]:
    if hasattr(method, "on_epoch_start"):
        method.on_epoch_start(epoch, config.epochs)
    method.train()
    # Modules that draw from the global RNG (dropout) get a per-epoch seed too.
    torch.manual_seed(config.seed * 1_000_003 + epoch)
    shuffle_generator = epoch_generator(config.seed, epoch, stream=0)
    method_generator = epoch_generator(config.seed, epoch, stream=1)
    set_data_epoch(dataset, epoch)
    if config.batch_sampler is not None:
        loader = DataLoader(dataset, batch_sampler=time_aware_batch_sampler(len(dataset), config,
                                                                            epoch),
                            num_workers=config.num_workers,
                            pin_memory=torch.cuda.is_available(),
                            worker_init_fn=seed_worker if config.num_workers else None)
    else:
        loader = _loader(dataset, config, shuffle_generator, shuffle=True,
                         drop_last=config.drop_last and len(dataset) > config.batch_size)

    tic = _clock()
    totals: dict[str, float] = {}
    steps = 0
    first_lr = learning_rate(config, epoch * len(loader), len(loader))
    for batch in loader:
        set_learning_rate(optimizer, learning_rate(config, epoch * len(loader) + steps,
                                                   len(loader)))
        batch = move_to(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, metrics = method.loss(batch, method_generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at epoch {epoch}, step {steps}; "
                "lower the learning rate or check the input for extreme values")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(method.parameters(), config.grad_clip)
        optimizer.step()
        steps += 1
        totals["loss"] = totals.get("loss", 0.0) + loss.item()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    row = {"epoch": epoch + 1, **{k: v / steps for k, v in totals.items()}}
    row["lr"] = first_lr
    row["seconds"] = _clock() - tic
    return row


@torch.no_grad()
def evaluate_loss(method: nn.Module, dataset: Dataset, config: TrainConfig,
                  device: torch.device | None = None, use_amp: bool = False) -> float:
    """Mean loss of ``method`` over ``dataset`` in eval mode, with a fixed generator."""
    device = device or next(method.parameters()).device
    was_training = method.training
    method.eval()
    generator = epoch_generator(config.seed, epoch=-1, stream=2)
    loader = _loader(dataset, config, None, shuffle=False,
                     drop_last=len(dataset) > config.batch_size)
    total, count = 0.0, 0
    for batch in loader:
        batch = move_to(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _ = method.loss(batch, generator)
        total += loss.item()
        count += 1
    method.train(was_training)
    return total / count if count else math.nan


def load_history(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Per-epoch metrics of a run directory written by :func:`fit`."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}: has fit() run there?")
    return pd.read_csv(path)

