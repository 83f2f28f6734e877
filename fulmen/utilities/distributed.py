"""Distributed helpers at their Lightning paths: the 2.x `lightning.fabric.utilities.distributed`
functions real code calls (`_distributed_is_initialized`, `_sync_ddp_if_available`,
`_gather_all_tensors`, `_all_gather_ddp_if_available`) and the 1.x `pytorch_lightning.utilities.distributed`
names (`rank_zero_only`, `sync_ddp_if_available`, `gather_all_tensors`, `distributed_available`, ...).

Each one is a no-op (returns its input) when no process group is initialized. `DistributedSamplerWrapper`
shards any sampler's order across the processes, as a `DistributedSampler`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Sampler

from fulmen.utilities.rank_zero import rank_zero_debug, rank_zero_info, rank_zero_only, rank_zero_warn


def is_shared_filesystem(strategy: Any, path: Any = None, timeout: int = 3) -> bool:
    """Whether `path` (default: the working directory) is on a filesystem every process sees.

    Rank 0 writes a marker file there and the others look for it for up to `timeout` seconds; a
    non-local URL (s3://...) counts as shared. Every process of the strategy must call this together.
    """
    import time
    from contextlib import suppress
    from pathlib import Path

    from fulmen.utilities.cloud_io import _is_local_file_protocol

    if path is not None and not _is_local_file_protocol(path):
        return True
    path = Path(Path.cwd() if path is None else path).resolve()
    if getattr(strategy, "world_size", 1) == 1:
        return True
    if not strategy.reduce_boolean_decision(strategy.broadcast(path) == path, all=True):
        return False  # the processes do not even name the same directory
    if not strategy.reduce_boolean_decision(path.exists(), all=True):
        raise FileNotFoundError(
            f"is_shared_filesystem needs an existing path on every process. Received: path={str(path)!r}. "
            "Fix: create it first, or pass another path."
        )
    marker = (path.parent if path.is_file() else path) / ".lightning_shared_fs_check"
    marker.unlink(missing_ok=True)
    strategy.barrier()
    if strategy.is_global_zero:
        marker.touch()
        found = True
    else:
        deadline = time.perf_counter() + timeout
        found = marker.exists()
        while not found and time.perf_counter() < deadline:
            time.sleep(0.01)
            found = marker.exists()
    strategy.barrier()
    shared = strategy.reduce_boolean_decision(found, all=True)
    with suppress(OSError):  # another process may have removed it already
        marker.unlink()
    return shared


def _distributed_is_initialized() -> bool:
    # `is_initialized` exists only in torch builds with distributed support.
    return torch.distributed.is_available() and torch.distributed.is_initialized()


distributed_available = _distributed_is_initialized


def _gather_all_tensors(result: Tensor, group: Any = None) -> list[Tensor]:
    """Every process's `result`, in rank order, on every process. The tensors must have the same number
    of dimensions but may differ in size: they are padded for the gather and trimmed back after it."""
    dist = torch.distributed
    group = dist.group.WORLD if group is None else group
    result = result.contiguous()
    world_size = dist.get_world_size(group)
    dist.barrier(group=group)
    if result.ndim > 0:
        local_size = torch.tensor(result.shape, device=result.device)
        sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
        dist.all_gather(sizes, local_size, group=group)
        max_size = torch.stack(sizes).max(dim=0).values
        if not all(bool((size == max_size).all()) for size in sizes):
            pad: list[int] = []
            for missing in reversed((max_size - local_size).tolist()):  # F.pad lists the last dimension first
                pad += [0, missing]
            padded = torch.nn.functional.pad(result, pad)
            gathered = [torch.zeros_like(padded) for _ in range(world_size)]
            dist.all_gather(gathered, padded, group)
            return [t[tuple(slice(n) for n in size.tolist())] for t, size in zip(gathered, sizes)]
    gathered = [torch.zeros_like(result) for _ in range(world_size)]
    dist.all_gather(gathered, result, group)
    return gathered


gather_all_tensors = _gather_all_tensors


def _sync_ddp(result: Tensor, group: Any = None, reduce_op: Any = None) -> Tensor:
    """All-reduce `result` in place across processes: "sum" (the default), "mean"/"avg", "max", "min",
    or a `torch.distributed.ReduceOp`."""
    dist = torch.distributed
    group = dist.group.WORLD if group is None else group
    divide = False
    op = reduce_op
    if isinstance(reduce_op, str):
        name = "avg" if reduce_op.lower() == "mean" else reduce_op.lower()
        if name == "avg" and dist.get_backend(group) == "gloo":
            op, divide = dist.ReduceOp.SUM, True  # gloo has no AVG
        else:
            op = getattr(dist.ReduceOp, name.upper())
    elif reduce_op is None:
        op = dist.ReduceOp.SUM
    dist.barrier(group=group)
    dist.all_reduce(result, op=op, group=group, async_op=False)
    if not divide:
        return result
    world_size = dist.get_world_size(group)
    return result.div_(world_size) if torch.is_floating_point(result) else result.copy_(result / world_size)


def _sync_ddp_if_available(result: Tensor, group: Any = None, reduce_op: Any = None) -> Tensor:
    """`_sync_ddp` when a process group is running, else `result` unchanged."""
    return _sync_ddp(result, group=group, reduce_op=reduce_op) if _distributed_is_initialized() else result


sync_ddp_if_available = _sync_ddp_if_available
sync_ddp = _sync_ddp


def _all_gather_ddp_if_available(tensor: Tensor, group: Any = None, sync_grads: bool = False) -> Tensor:
    """The processes' `tensor`s stacked on a new first dimension (world_size, ...); gradients flow
    back through the gather with `sync_grads=True`."""
    if not _distributed_is_initialized():
        return tensor
    from torch.distributed.nn.functional import all_gather

    tensor = tensor.contiguous()  # all_gather of a non-contiguous tensor is wrong (pytorch#73515)
    with nullcontext() if sync_grads else torch.no_grad():
        gathered = all_gather(tensor, group) if group is not None else all_gather(tensor)
    return torch.stack(gathered)


all_gather_ddp_if_available = _all_gather_ddp_if_available


class _SamplerOrder(Dataset):
    """A sampler's order as a dataset: item i is the i-th index the sampler gave in its latest pass."""

    def __init__(self, sampler: Sampler | Iterable) -> None:
        length = len(sampler) if isinstance(sampler, Sized) else None
        if length is None or length == float("inf"):
            # TypeError, as Lightning raises here.
            raise TypeError(
                "DistributedSamplerWrapper needs a sampler with a finite length, to split it among the processes. "
                f"Received: sampler={type(sampler).__name__} with len={length}. Fix: give the sampler a __len__, "
                "or pass use_distributed_sampler=False to the Trainer and shard the data yourself."
            )
        self.sampler = sampler
        self.order: list[Any] | None = None  # drawn on first use: a sampler may be costly or random

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if self.order is None:
            self.order = list(self.sampler)
        return self.order[index]

    def redraw(self) -> None:
        self.order = list(self.sampler)


class DistributedSamplerWrapper(DistributedSampler):
    """Any sampler, shared among the processes of a run: each rank gets its part of the sampler's order.

    Each epoch the wrapped sampler is drawn once more and its order split as `DistributedSampler`
    splits a dataset (the same arguments: `num_replicas`, `rank`, `shuffle`, `seed`, `drop_last`; with
    `shuffle=True` the positions are permuted by seed and epoch, identically on every rank; the last
    part is padded with repeats unless `drop_last`). Randomness inside the wrapped sampler is its
    own: keep it seeded alike on every rank. `set_epoch` is passed on to the wrapped sampler.

    >>> from torch.utils.data import WeightedRandomSampler
    >>> weighted = WeightedRandomSampler([0.1, 0.9, 0.5, 0.5], num_samples=4)
    >>> len(DistributedSamplerWrapper(weighted, num_replicas=2, rank=0))
    2
    """

    def __init__(self, sampler: Sampler | Iterable, *args: Any, **kwargs: Any) -> None:
        super().__init__(_SamplerOrder(sampler), *args, **kwargs)

    def __iter__(self) -> Iterator:
        order = self.dataset
        order.redraw()
        return (order[position] for position in super().__iter__())

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        inner = self.dataset.sampler
        if callable(getattr(inner, "set_epoch", None)):
            inner.set_epoch(epoch)


__all__ = [
    "DistributedSamplerWrapper", "all_gather_ddp_if_available", "distributed_available", "gather_all_tensors", "is_shared_filesystem", "rank_zero_debug",
    "rank_zero_info", "rank_zero_only", "rank_zero_warn", "sync_ddp", "sync_ddp_if_available",
]
