"""Data-parallel training under ``torchrun``: process group, collectives, and the training loop.

Run any method on several processes (NCCL on GPUs, gloo on CPU)::

    torchrun --standalone --nproc_per_node=2 scripts/train_distributed.py --method barlow_twins

:func:`init_from_env` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and is a no-op in a single process, where every helper falls
back to the single-process answer, so the same code runs both ways.

**Global-batch losses.** With DistributedDataParallel each process sees ``B / world_size``
samples. The contrastive losses of :mod:`geofusion.learning.losses` take ``gather_distributed=True``
to make the effective batch the global one: SimCLR/SupCon anchors of a process are contrasted
with the projections of *all* processes (:func:`gather_with_grad`), and Barlow Twins' batch
statistics and cross-correlation are sums over processes (:func:`all_reduce_sum`), as in the
official implementation. Gradients flow back through the collectives, so each process's
samples receive the gradient of every process's loss term; DDP's averaging of parameter
gradients then gives exactly the gradient of the single-process loss on the concatenated batch
(checked by ``tests/test_distributed.py``). Concretely, the gradient a process computes for
its own inputs is ``world_size`` times the single-process one, and DDP divides by
``world_size``. All processes must hold batches of equal size (``drop_last``; checked).

:func:`fit_distributed` is :func:`geofusion.learning.training.fit` for that setting: same
:class:`~geofusion.learning.training.TrainConfig` (``batch_size`` is the *global* batch), same
checkpoint format (written by rank 0 only, resumable by ``fit`` or ``fit_distributed``), a
:class:`~torch.utils.data.DistributedSampler` reseeded every epoch (or, with
``config.batch_sampler``, each rank's contiguous share of every global time-aware batch,
:func:`geofusion.learning.training.time_aware_batch_sampler`), and the global-batch losses
switched on for every module of the method that has a ``gather_distributed`` attribute.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from geofusion.learning.training import (
    TrainConfig,
    _clock,
    _clone_state,
    _early_stopping,
    _history_frame,
    _resume,
    _save,
    _write_config,
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

__all__ = [
    "init_from_env", "is_distributed", "rank", "world_size", "local_rank", "barrier",
    "cleanup", "gather_with_grad", "all_reduce_sum", "all_reduce_mean", "distributed_sampler",
    "set_gather_distributed", "fit_distributed",
]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """Rank on this machine, from torchrun's ``LOCAL_RANK`` (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group torchrun describes in the environment; return is_distributed().

    Without ``WORLD_SIZE`` > 1 (a plain ``python`` run) nothing happens. ``backend`` defaults
    to NCCL when CUDA is available and gloo otherwise; on CUDA the process binds to GPU
    ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return is_distributed()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build; run in a "
                           "single process or install a build with distributed support")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE is set but {missing} are not; launch with torchrun "
                         "(e.g. torchrun --standalone --nproc_per_node=2 script.py)")
    use_cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if use_cuda else "gloo")
    if use_cuda and backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return is_distributed()


def barrier() -> None:
    """Wait for all processes (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _check_equal_sizes(x: Tensor) -> None:
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    values = [int(s) for s in sizes]
    if len(set(values)) > 1:
        raise ValueError(f"processes hold batches of different sizes {values}; gathering needs "
                         "equal sizes: use drop_last=True (fit_distributed does)")


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients over processes and returns
    each process its own slice (reduce-scatter). Gradients are made contiguous first: the
    gathered tensor is often transposed or reshaped downstream, and collectives write raw
    memory (``torch.distributed.nn.functional.all_gather`` gives wrong gradients on gloo for a
    non-contiguous gradient)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        if dist.get_backend() == dist.Backend.NCCL:
            out = grad.new_empty(ctx.rows, *grad.shape[1:])
            dist.reduce_scatter_tensor(out, grad)
            return out
        # gloo has no reduce-scatter: all-reduce the whole gradient, keep this rank's rows.
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum over processes is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (b, ...) of all processes along dim 0 -> (world_size * b, ...).

    Rank r's rows are at ``[r * b, (r + 1) * b)``. The backward pass sums, over processes, the
    gradients with respect to each process's slice and returns them to the process that owns
    it. Identity in a single process. Integer tensors (labels) gather too, without gradient.
    """
    if not is_distributed():
        return x
    _check_equal_sizes(x)
    if not x.requires_grad:
        return _GatherWithGrad.forward(_NoContext(), x)
    return _GatherWithGrad.apply(x)


class _NoContext:
    """Stand-in for an autograd context when no gradient is needed (integer labels)."""


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over processes, differentiable (the backward sums the gradients too)."""
    if not is_distributed():
        return x
    if not x.requires_grad:
        return _AllReduceSum.forward(_NoContext(), x)
    return _AllReduceSum.apply(x)


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over processes (differentiable; for logging, pass a detached tensor)."""
    if not is_distributed():
        return x
    return all_reduce_sum(x) / world_size()


def distributed_sampler(dataset: Dataset, seed: int, epoch: int, shuffle: bool = True,
                        drop_last: bool = True) -> DistributedSampler:
    """This process's share of ``dataset`` for ``epoch``: shuffled by ``(seed, epoch)``, the
    same permutation on every process, equal shares (``drop_last`` drops the remainder)."""
    sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(),
                                 shuffle=shuffle, seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    return sampler


def set_gather_distributed(module: nn.Module, enabled: bool = True) -> list[str]:
    """Set ``gather_distributed`` on every submodule of ``module`` that has the attribute (the
    methods' global-batch switch); return the names of the submodules changed."""
    changed = []
    for name, sub in module.named_modules():
        if hasattr(sub, "gather_distributed"):
            sub.gather_distributed = enabled
            changed.append(name or type(sub).__name__)
    return changed


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
    if _early_stopping(config) and valid_set is None:
        raise ValueError("early stopping (patience) needs a validation set: pass valid_set, or "
                         "set patience=None to train a fixed number of epochs")
    device = _device(config)
    method.to(device)
    set_gather_distributed(method, True)
    optimizer = torch.optim.Adam(method.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    # Every process reads the checkpoint, so all start from the same weights and state.
    run, best = _resume(method, optimizer, config, run_dir, device)
    if run_dir is not None and me == 0:
        _write_config(run_dir, config)

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
        tic = _clock()
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
        first_lr = learning_rate(config, epoch * len(loader), len(loader))
        for batch in loader:
            set_learning_rate(optimizer, learning_rate(config, epoch * len(loader) + steps,
                                                       len(loader)))
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
        row["seconds"] = _clock() - tic
        if valid_set is not None:
            row["valid_loss"] = _evaluate_distributed(method, valid_set, local_batch, config,
                                                      device, use_amp)
        # The slowest process's time, so the budget decision is the same on every process.
        seconds = torch.tensor(_clock() - tic, dtype=torch.float64, device=device)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        if run.record(row, float(seconds), config) and best is not None:
            best = _clone_state(method)
        calls += 1
        reason = run.stop_reason = run.should_stop(config)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                             if k in ("loss", "valid_loss")})
        if run_dir is not None and me == 0:
            _save(run_dir, method, optimizer, config, run, best)
    if bar is not None:
        bar.close()
    if calls == 0 and reason != saved_reason:
        run.stop_reason = reason
        if run_dir is not None and me == 0:
            _save(run_dir, method, optimizer, config, run, best)
    barrier()  # no process returns (and maybe reads the checkpoint) before rank 0 wrote it
    if reason is not None and best is not None and run.best_epoch > 0:
        method.load_state_dict(best)
    method.eval()
    return _history_frame(run, config)


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
    for batch in loader:
        batch = move_to(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _ = method.loss(batch, generator)
        total += loss.double()
        count += 1
    method.train(was_training)
    if count == 0:
        return float("nan")
    return float(all_reduce_mean(total / count))
