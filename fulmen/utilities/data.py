"""Lightning's `utilities.data`: finding a batch's size, whether a loader has a length, and how many
DataLoader workers a machine can feed.

`extract_batch_size` here has Lightning's public contract (it raises when no tensor is found); the
Trainer's `self.log` uses `fulmen.data.extract_batch_size`, which warns and falls back to 1 instead.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from torch import Tensor
from torch.utils.data import IterableDataset

from fulmen.errors import MisconfigurationException
from fulmen.hparams import AttributeDict
from fulmen.utilities.apply_func import is_dataclass_instance
from fulmen.utilities.rank_zero import WarningCache, rank_zero_warn

warning_cache = WarningCache()


def _batch_sizes(batch: Any) -> Iterator[int]:
    """The first dimension of each tensor in `batch`, depth first (1 for a 0-d tensor)."""
    if isinstance(batch, Tensor):
        yield 1 if batch.ndim == 0 else batch.size(0)
    elif isinstance(batch, (Iterable, Mapping)) and not isinstance(batch, str):
        for item in batch.values() if isinstance(batch, Mapping) else batch:
            yield from _batch_sizes(item)
    elif is_dataclass_instance(batch):
        for field in dataclasses.fields(batch):
            yield from _batch_sizes(getattr(batch, field.name))
    # Other leaves (strings, numbers, ids) have no batch dimension. Lightning yields None for them,
    # which makes {"id": "a", "x": tensor} fail and {"x": tensor, "id": "a"} warn; they are skipped here.


def extract_batch_size(batch: Any) -> int:
    """The size of the first dimension of the first tensor in `batch` (warns when later tensors disagree);
    raises `MisconfigurationException` when there is no tensor.

    Example:
        >>> import torch
        >>> extract_batch_size({"x": torch.zeros(4, 3), "y": torch.zeros(4)})
        4
    """
    fix = "Fix: simplify the batch's structure, or pass self.log(..., batch_size=N)."
    size = None
    try:
        for found in _batch_sizes(batch):
            if size is None:
                size = found
            elif found != size:
                warning_cache.warn(
                    f"The batch size is ambiguous: {size} was found first, then {found}. "
                    "Fix: pass self.log(..., batch_size=N) to be sure of it."
                )
                break
    except RecursionError:
        raise RecursionError(f"Could not infer the batch size: the batch nests too deeply. {fix}") from None
    if size is None:
        raise MisconfigurationException(
            f"Could not infer the batch size: no tensor in the batch. Received: {type(batch).__name__}. {fix}"
        )
    return size


def has_iterable_dataset(dataloader: object) -> bool:
    return isinstance(getattr(dataloader, "dataset", None), IterableDataset)


def sized_len(dataloader: object) -> int | None:
    """`len(dataloader)`, or None when it has no length."""
    try:
        return len(dataloader)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return None


def has_len(dataloader: object) -> bool:
    """Whether `dataloader` has a length; warns when it is 0, or defined on an IterableDataset."""
    length = sized_len(dataloader)
    if length == 0:
        rank_zero_warn(f"`{type(dataloader).__name__}` returned 0 length. Please make sure this was your intention.")
    if length is not None and has_iterable_dataset(dataloader):
        rank_zero_warn(
            "Your `IterableDataset` has `__len__` defined. With num_workers > 1 it may be wrong unless each "
            "worker is configured to read a different part of the data."
        )
    return length is not None


def has_len_all_ranks(dataloader: object, strategy: Any,
                      allow_zero_length_dataloader_with_multiple_devices: bool = False) -> bool:
    """Whether `dataloader` has a length, checking with every process of `strategy` that the lengths
    add up to something.

    All ranks must call it together (it sums the lengths across processes). A total of 0 warns; a
    local length of 0 while other ranks have batches raises RuntimeError (a rank with nothing to do
    would hang the others at their first collective), or only warns with
    `allow_zero_length_dataloader_with_multiple_devices=True`.
    """
    import torch

    local = sized_len(dataloader)
    if local is None:
        return False
    name = type(dataloader).__name__
    # fulmen's strategies sum with all_reduce; a Lightning-style strategy has reduce().
    reduce = getattr(strategy, "all_reduce", None) or strategy.reduce
    total = int(reduce(torch.tensor(local, device=strategy.root_device), reduce_op="sum"))
    if total == 0:
        rank_zero_warn(f"Total length of `{name}` across ranks is zero. Please make sure this was your intention.")
    elif local == 0:
        if not allow_zero_length_dataloader_with_multiple_devices:
            raise RuntimeError(
                f"`{name}` has zero length on this rank while other ranks have {total} batches in all. "
                f"Received: len(dataloader)=0 on rank {getattr(strategy, 'global_rank', 0)}. Fix: make it return at "
                "least 1 batch on every rank, or pass allow_zero_length_dataloader_with_multiple_devices=True."
            )
        rank_zero_warn(f"`{name}` has zero length on this rank, but not across ranks. Be careful with uneven "
                       "batch counts.")
    if has_iterable_dataset(dataloader):
        rank_zero_warn(
            "Your `IterableDataset` has `__len__` defined. With num_workers > 1 it may be wrong unless each "
            "worker is configured to read a different part of the data."
        )
    return True


def _num_cpus_available() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))  # the cores this process may run on, not the machine's
    return os.cpu_count() or 1


def suggested_max_num_workers(local_world_size: int) -> int:
    """An upper bound for `num_workers`: the available cores shared among this machine's processes,
    one left for each main process.

    Example:
        >>> suggested_max_num_workers(1) >= 1
        True
    """
    if local_world_size < 1:
        raise ValueError(
            f"suggested_max_num_workers needs the number of processes on this machine. "
            f"Received: local_world_size={local_world_size}. Fix: pass 1 or more."
        )
    return max(1, _num_cpus_available() // local_world_size - 1)


__all__ = [
    "AttributeDict", "extract_batch_size", "has_iterable_dataset", "has_len", "sized_len",
    "suggested_max_num_workers", "warning_cache",
]
