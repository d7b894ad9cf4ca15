"""Process group and collectives for data-parallel training under ``torchrun``.

:func:`init_from_env` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and is a no-op in a single process, where every helper falls
back to the single-process answer, so the same code runs both ways.

**Global-batch losses.** With DistributedDataParallel each process sees ``B / world_size``
samples. The contrastive losses of :mod:`geofusion.learning.losses` take
``gather_distributed=True`` to make the effective batch the global one: SimCLR/SupCon anchors of
a process are contrasted with the projections of *all* processes (:func:`gather_with_grad`),
and Barlow Twins' batch statistics and cross-correlation are sums over processes
(:func:`all_reduce_sum`), as in the official implementation. Gradients flow back through the
collectives, so each process's samples receive the gradient of every process's loss term; DDP's
averaging of parameter gradients then gives exactly the gradient of the single-process loss on
the concatenated batch (checked by ``tests/learning/test_distributed.py``). Concretely, the
gradient a process computes for its own inputs is ``world_size`` times the single-process one,
and DDP divides by ``world_size``. All processes must hold batches of equal size
(``drop_last``; checked).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "is_distributed", "rank", "world_size", "local_rank", "init_from_env", "barrier", "cleanup",
    "gather_with_grad", "all_reduce_sum", "all_reduce_mean", "distributed_sampler",
    "set_gather_distributed",
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
