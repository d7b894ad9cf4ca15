"""The training loop shared by every method: Adam, progress, logs, atomic checkpoints, resume.

A *method* is an ``nn.Module`` with ``loss(batch, generator) -> (loss, metrics)`` (see
``geofusion.methods``). :func:`fit` trains it on a dataset and, when given a ``run_dir``,
writes after every epoch

- ``checkpoint.pt``: model, optimiser and history, written atomically;
- ``metrics.csv``: one row per epoch;
- ``config.json``: the :class:`TrainConfig` of the run.

Calling :func:`fit` again with the same ``run_dir`` resumes after the last completed epoch; a
run whose epochs are all done just loads its weights, so notebooks call :func:`fit` to mean
"train, or load what an earlier run trained". All randomness of epoch ``k`` (shuffling,
augmentations, dropout) is drawn from generators seeded by ``(seed, k)``, so a run interrupted
after epoch ``k`` and resumed ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geofusion.io import atomic_write_bytes, atomic_write_text
from geofusion.reproducibility import seed_worker

CHECKPOINT_FORMAT = "geofusion-checkpoint-v1"
CHECKPOINT_NAME = "checkpoint.pt"

# Fields of TrainConfig that change the result of a run. Resuming with different values would
# silently mix two experiments, so it is refused. ``epochs`` may grow (train longer).
_RESULT_FIELDS = ("batch_size", "lr", "weight_decay", "seed", "drop_last", "grad_clip")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupt, written by another method, or another config."""


@dataclass
class TrainConfig:
    """Settings of one training run (defaults are the report's: Adam, batch 128, 100 epochs).

    Attributes:
        epochs: total number of epochs (resuming continues up to this number).
        batch_size: samples per optimisation step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay (the report uses none).
        seed: seeds shuffling, augmentations and initialisation-independent randomness.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        amp: bfloat16 autocast on CUDA (ignored on CPU, where runs stay deterministic).
        drop_last: drop the last incomplete batch (batch-norm and Barlow Twins need >= 2).
        grad_clip: clip the gradient norm to this value, or None.
        num_workers: DataLoader worker processes.
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

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


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


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a crash never leaves a truncated checkpoint)."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; raise CheckpointError if unusable."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises several types for truncated/garbled files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); "
            f"delete it (or the run directory) to train from scratch"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a geofusion checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            "point run_dir at a fresh directory"
        )
    return state


def _check_compatible(state: dict, method: nn.Module, config: TrainConfig, path: Path) -> None:
    name = type(method).__name__
    if state["method"] != name:
        raise CheckpointError(
            f"{path} was written by method {state['method']!r}, not {name!r}; "
            "use another run_dir for this method"
        )
    saved = state["config"]
    changed = {k: (saved.get(k), getattr(config, k)) for k in _RESULT_FIELDS
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
        config: the run's settings.
        run_dir: directory for checkpoint, log and config; resumes from it when it holds a
            checkpoint. None trains in memory only.
        valid_set: when given, the mean validation loss is logged each epoch (``valid_loss``),
            computed in eval mode with a fixed generator so epochs are comparable.
        progress: show a progress bar over epochs.
        stop_after: stop after this many epochs *of this call* (used to test resumption and
            to split long runs); the run is resumable from where it stopped.

    Returns:
        DataFrame with one row per completed epoch: ``epoch``, ``loss`` (mean training loss),
        ``valid_loss`` when a validation set is given, the method's metrics, ``seconds``.
        After the call ``method`` holds the final weights, in eval mode, on the device.
    """
    if len(train_set) < 2:
        # Batch statistics (batch norm, Barlow Twins' correlation) need two samples.
        raise ValueError(f"the training set has {len(train_set)} samples, too few for one batch; "
                         "select a longer time range")
    device = resolve_device(config.device)
    method.to(device)
    optimizer = torch.optim.Adam(method.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    start_epoch = 0
    checkpoint_path = Path(run_dir) / CHECKPOINT_NAME if run_dir is not None else None

    if checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, map_location=device)
        _check_compatible(state, method, config, checkpoint_path)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start_epoch = state["epoch"]
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(run_dir) / "config.json",
                          json.dumps(dataclasses.asdict(config), indent=2))

    use_amp = config.amp and device.type == "cuda"
    end_epoch = config.epochs if stop_after is None else min(config.epochs,
                                                             start_epoch + stop_after)
    epochs = range(start_epoch, end_epoch)
    bar = progress_bar(epochs, desc=type(method).__name__, unit="epoch",
                       initial=start_epoch, total=config.epochs) if progress else epochs

    for epoch in bar:
        row = _train_one_epoch(method, train_set, optimizer, config, device, epoch, use_amp)
        if valid_set is not None:
            row["valid_loss"] = evaluate_loss(method, valid_set, config, device, use_amp)
        history.append(row)
        if progress:
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                             if k in ("loss", "valid_loss")})
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "method": type(method).__name__,
                "config": dataclasses.asdict(config),
                "epoch": epoch + 1,
                "model": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": history,
            })
            atomic_write_text(Path(run_dir) / "metrics.csv",
                              pd.DataFrame(history).to_csv(index=False))
    method.eval()
    return pd.DataFrame(history)


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
    loader = _loader(dataset, config, shuffle_generator, shuffle=True,
                     drop_last=config.drop_last and len(dataset) > config.batch_size)

    tic = time.perf_counter()
    totals: dict[str, float] = {}
    steps = 0
    for batch in loader:
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
    row["seconds"] = time.perf_counter() - tic
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

