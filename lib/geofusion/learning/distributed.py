"""Data-parallel training under ``torchrun``: :func:`fit_distributed`, the training loop of
:func:`geofusion.learning.training.fit` for several processes.

Run any method on several processes (NCCL on GPUs, gloo on CPU)::

    torchrun --standalone --nproc_per_node=2 scripts/train_distributed.py --method barlow_twins

The process group and the collectives (global-batch losses, samplers) are in
:mod:`geofusion.learning.collectives`. :func:`fit_distributed` takes the same
:class:`~geofusion.learning.config.TrainConfig` (``batch_size`` is the *global* batch), writes
the same checkpoints (rank 0 only, :mod:`geofusion.learning.run_state`; resumable by ``fit`` or
``fit_distributed``), uses a :class:`~torch.utils.data.DistributedSampler` reseeded every epoch
(or, with ``config.batch_sampler``, each rank's contiguous share of every global time-aware
batch, :func:`geofusion.learning.training.time_aware_batch_sampler`), and switches the
global-batch losses on for every module of the method that has a ``gather_distributed``
attribute.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from geofusion.learning.collectives import (
    all_reduce_mean,
    barrier,
    distributed_sampler,
    is_distributed,
    local_rank,
    rank,
    set_gather_distributed,
    world_size,
)
from geofusion.learning.config import TrainConfig
from geofusion.learning.run_state import (
    clone_state,
    history_frame,
    resume_run,
    save_run,
    uses_early_stopping,
    write_config,
)
from geofusion.learning.training import (
    batches_per_epoch,
    epoch_clock,
    epoch_generator,
    fit,
    learning_rate,
    move_to,
    progress_bar,
    set_data_epoch,
    set_learning_rate,
    time_aware_batch_sampler,
)
from geofusion.reproducibility import seed_worker

__all__ = ["fit_distributed"]


class _LossModule(nn.Module):
    """DDP synchronises gradients of what runs through ``forward``; methods expose ``loss``."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Any, generator: torch.Generator | None
                ) -> tuple[Tensor, dict[str, float]]:
        return self.method.loss(batch, generator)


def _device(config: TrainConfig) -> torch.device:
    wants_cuda = config.device == "auto" or config.device.startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    if config.device.startswith("cuda"):
        raise ValueError(f"device={config.device!r} was requested but CUDA is not available; "
                         "use device='cpu' or 'auto'")
    return torch.device("cpu")


def _method_stream(process: int) -> int:
    # Rank 0 draws exactly what geofusion.learning.training.fit draws; other ranks get their own
    # streams so their augmentations are independent.
    return 1 if process == 0 else 1 + 100 * process


def fit_distributed(
    method: nn.Module,
    train_set: Dataset,
    config: TrainConfig,
    run_dir: str | os.PathLike | None = None,
    valid_set: Dataset | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    find_unused_parameters: bool = False,
    sync_batchnorm: bool = False,
) -> pd.DataFrame:
    """:func:`geofusion.learning.training.fit` across the processes of a torchrun job.

    In a single process this *is* ``geofusion.learning.training.fit``. Otherwise every process
    calls it
    with the same arguments; ``config.batch_size`` is the global batch (divisible by the world
    size), each process takes its share through a :func:`distributed_sampler`, the method is
    wrapped in DistributedDataParallel and its ``gather_distributed`` switches are turned on,
    and rank 0 writes the checkpoint, ``metrics.csv`` and ``config.json`` every epoch (same
    format as ``fit``, so either can resume). Logged losses are means over processes.

    Args:
        find_unused_parameters: passed to DDP; needed when some parameters may get no
            gradient in a step (late fusion with a mode absent from a whole local batch).
        sync_batchnorm: convert batch norms to SyncBatchNorm (global batch statistics; CUDA).

    Returns:
        the per-epoch history (identical on every process).
    """
    if not is_distributed():
        return fit(method, train_set, config, run_dir=run_dir, valid_set=valid_set,
                            progress=progress, stop_after=stop_after)
    n_proc, me = world_size(), rank()
    if config.batch_size % n_proc:
        raise ValueError(f"batch_size={config.batch_size} (the global batch) is not divisible "
                         f"by the {n_proc} processes; pick a multiple of {n_proc}")
    local_batch = config.batch_size // n_proc
    if len(train_set) < config.batch_size:
        raise ValueError(f"the training set has {len(train_set)} samples, fewer than one global "
                         f"batch of {config.batch_size}; lower batch_size or use more days")
    if uses_early_stopping(config) and valid_set is None:
        raise ValueError("early stopping (patience) needs a validation set: pass valid_set, or "
                         "set patience=None to train a fixed number of epochs")
    device = _device(config)
    method.to(device)
    set_gather_distributed(method, True)
    optimizer = torch.optim.Adam(method.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    # Every process reads the checkpoint, so all start from the same weights and state.
    run, best = resume_run(method, optimizer, config, run_dir, device)
    if run_dir is not None and me == 0:
        write_config(run_dir, config)

    module: nn.Module = _LossModule(method)
    if sync_batchnorm:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ddp = DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters)
    use_amp = config.amp and device.type == "cuda"
    show = progress and me == 0
    calls = 0
    saved_reason, reason = run.stop_reason, run.should_stop(config)
    bar = progress_bar(None, desc=f"{type(method).__name__} x{n_proc}", unit="epoch",
                       initial=run.epoch, total=config.epochs) if show and reason is None else None

    while reason is None and (stop_after is None or calls < stop_after):
        epoch = run.epoch
        tic = epoch_clock()
        if hasattr(method, "on_epoch_start"):
            method.on_epoch_start(epoch, config.epochs)
        ddp.train()
        torch.manual_seed(config.seed * 1_000_003 + epoch + 7919 * me)
        generator = epoch_generator(config.seed, epoch, stream=_method_stream(me))
        set_data_epoch(train_set, epoch)
        if config.batch_sampler is not None:
            # Each rank takes its contiguous share of every global time-aware batch; the
            # gathered losses then see the designed batch (anchors with their negatives).
            loader = DataLoader(train_set, batch_sampler=time_aware_batch_sampler(
                len(train_set), config, epoch, rank=me, world_size=n_proc),
                num_workers=config.num_workers,
                worker_init_fn=seed_worker if config.num_workers else None,
                pin_memory=device.type == "cuda")
        else:
            loader = DataLoader(train_set, batch_size=local_batch, drop_last=True,
                                sampler=distributed_sampler(train_set, config.seed, epoch),
                                num_workers=config.num_workers,
                                worker_init_fn=seed_worker if config.num_workers else None,
                                pin_memory=device.type == "cuda")
        totals: dict[str, Tensor] = {}
        steps = 0
        per_epoch = batches_per_epoch(len(loader), config)
        first_lr = learning_rate(config, epoch * per_epoch, per_epoch)
        for batch in itertools.islice(loader, per_epoch):
            set_learning_rate(optimizer, learning_rate(config, epoch * per_epoch + steps,
                                                       per_epoch))
            batch = move_to(batch, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, metrics = ddp(batch, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch}, step {steps} on rank {me}; "
                    "lower the learning rate or check the input for extreme values")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(method.parameters(), config.grad_clip)
            optimizer.step()
            steps += 1
            for key, value in {"loss": loss.detach(), **metrics}.items():
                totals[key] = totals.get(key, 0.0) + torch.as_tensor(value, dtype=torch.float64,
                                                                     device=device)
        row: dict[str, float] = {"epoch": epoch + 1}
        for key, value in totals.items():
            row[key] = float(all_reduce_mean(value / steps))
        row["lr"] = first_lr
        row["seconds"] = epoch_clock() - tic
        if valid_set is not None:
            row["valid_loss"] = _evaluate_distributed(method, valid_set, local_batch, config,
                                                      device, use_amp)
        # The slowest process's time, so the budget decision is the same on every process.
        seconds = torch.tensor(epoch_clock() - tic, dtype=torch.float64, device=device)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        if run.record(row, float(seconds), config) and best is not None:
            best = clone_state(method)
        calls += 1
        reason = run.stop_reason = run.should_stop(config)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                             if k in ("loss", "valid_loss")})
        if run_dir is not None and me == 0:
            save_run(run_dir, method, optimizer, config, run, best)
    if bar is not None:
        bar.close()
    if calls == 0 and reason != saved_reason:
        run.stop_reason = reason
        if run_dir is not None and me == 0:
            save_run(run_dir, method, optimizer, config, run, best)
    barrier()  # no process returns (and maybe reads the checkpoint) before rank 0 wrote it
    if reason is not None and best is not None and run.best_epoch > 0:
        method.load_state_dict(best)
    method.eval()
    return history_frame(run, config)


@torch.no_grad()
def _evaluate_distributed(method: nn.Module, dataset: Dataset, local_batch: int,
                          config: TrainConfig, device: torch.device, use_amp: bool) -> float:
    """Mean validation loss over global batches (every process runs the same number)."""
    was_training = method.training
    method.eval()
    generator = epoch_generator(config.seed, epoch=-1, stream=2 + 100 * rank())
    loader = DataLoader(dataset, batch_size=local_batch, drop_last=True,
                        sampler=distributed_sampler(dataset, config.seed, 0, shuffle=False))
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for batch in itertools.islice(loader, batches_per_epoch(len(loader), config)):
        batch = move_to(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _ = method.loss(batch, generator)
        total += loss.double()
        count += 1
    method.train(was_training)
    if count == 0:
        return float("nan")
    return float(all_reduce_mean(total / count))
