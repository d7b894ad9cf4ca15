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

import itertools
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geofusion.data.samplers import TimeAwareBatchSampler
from geofusion.learning.config import TrainConfig
from geofusion.learning.run_state import (
    clone_state,
    history_frame,
    resume_run,
    save_run,
    uses_early_stopping,
    write_config,
)
from geofusion.reproducibility import seed_worker

# The clock of epoch durations and of the time budget (replaced in tests by a fake one).
epoch_clock = time.perf_counter


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


def batches_per_epoch(n_batches: int, config: TrainConfig) -> int:
    """The batches an epoch (or validation pass) of ``n_batches`` runs: all of them, or
    ``config.limit_batches`` when that is smaller.

    Example:
        >>> batches_per_epoch(9, TrainConfig(limit_batches=2)), batches_per_epoch(9, TrainConfig())
        (2, 9)
    """
    return n_batches if config.limit_batches is None else min(n_batches, config.limit_batches)


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
    if uses_early_stopping(config) and valid_set is None:
        raise ValueError("early stopping (patience) needs a validation set: pass valid_set, or "
                         "set patience=None to train a fixed number of epochs")
    device = resolve_device(config.device)
    method.to(device)
    optimizer = torch.optim.Adam(method.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    run, best = resume_run(method, optimizer, config, run_dir, device)
    if run_dir is not None:
        write_config(run_dir, config)

    use_amp = config.amp and device.type == "cuda"
    calls = 0
    # Recomputed rather than trusted from the checkpoint: a finished run may continue when
    # asked for more epochs (constant schedule) or given a larger budget.
    saved_reason, reason = run.stop_reason, run.should_stop(config)
    bar = progress_bar(None, desc=type(method).__name__, unit="epoch", initial=run.epoch,
                       total=config.epochs) if progress and reason is None else None
    while reason is None and (stop_after is None or calls < stop_after):
        tic = epoch_clock()
        row = _train_one_epoch(method, train_set, optimizer, config, device, run.epoch, use_amp)
        if valid_set is not None:
            row["valid_loss"] = evaluate_loss(method, valid_set, config, device, use_amp)
        if run.record(row, epoch_clock() - tic, config) and best is not None:
            best = clone_state(method)
        calls += 1
        reason = run.stop_reason = run.should_stop(config)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                             if k in ("loss", "valid_loss")})
        if run_dir is not None:
            save_run(run_dir, method, optimizer, config, run, best)
    if bar is not None:
        bar.close()
    if calls == 0 and reason != saved_reason:
        run.stop_reason = reason
        if run_dir is not None:
            save_run(run_dir, method, optimizer, config, run, best)
    if reason is not None and best is not None and run.best_epoch > 0:
        method.load_state_dict(best)
    method.eval()
    return history_frame(run, config)


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

    tic = epoch_clock()
    totals: dict[str, float] = {}
    steps = 0
    per_epoch = batches_per_epoch(len(loader), config)
    first_lr = learning_rate(config, epoch * per_epoch, per_epoch)
    for batch in itertools.islice(loader, per_epoch):
        set_learning_rate(optimizer, learning_rate(config, epoch * per_epoch + steps, per_epoch))
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
    row["seconds"] = epoch_clock() - tic
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
    for batch in itertools.islice(loader, batches_per_epoch(len(loader), config)):
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

