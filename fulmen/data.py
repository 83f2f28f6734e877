"""Batches and dataloaders: moving nested batches to a device (prefetched on CUDA), finding
the batch size, counting and limiting batches, and rebuilding a DataLoader with another sampler.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from fulmen.errors import MisconfigurationException, warn_once


def apply_to_tensors(data: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply `fn` to every tensor nested in tuples, lists, sets, dicts, namedtuples and dataclasses;
    other objects are returned as they are, unless they have their own `.to` (then `fn` gets them)."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, Mapping):
        items = {k: apply_to_tensors(v, fn) for k, v in data.items()}
        if isinstance(data, defaultdict):  # its constructor takes the default factory first
            return type(data)(data.default_factory, items)
        return type(data)(items)  # type: ignore[call-arg]
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_tensors(v, fn) for v in data))
    if isinstance(data, (list, tuple, set, frozenset)):  # sets too, as Lightning's apply_to_collection does
        return type(data)(apply_to_tensors(v, fn) for v in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        fields = dataclasses.fields(data)
        result = dataclasses.replace(data, **{f.name: apply_to_tensors(getattr(data, f.name), fn) for f in fields if f.init})
        for f in fields:  # replace() resets fields that __init__ does not take; carry them over too
            if not f.init and hasattr(data, f.name):
                object.__setattr__(result, f.name, apply_to_tensors(getattr(data, f.name), fn))
        return result
    if hasattr(data, "to") and callable(data.to) and not isinstance(data, torch.nn.Module):
        # objects that know how to move themselves, e.g. a custom batch class
        return fn(data)
    return data


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in `batch` to `device`.

    The copy is asynchronous (`non_blocking`) for CUDA targets: it overlaps with host work
    and is ordered before any kernel that uses the tensor on the same stream.
    """
    non_blocking = device.type == "cuda"

    def move(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            return t.to(device, non_blocking=non_blocking)
        return t.to(device)  # a user type with its own `to`

    return apply_to_tensors(batch, move)


def extract_batch_size(batch: Any) -> int:
    """The length of the first dimension of the first tensor found in `batch`."""
    found: list[int] = []

    def visit(t: Any) -> Any:
        if not found and isinstance(t, torch.Tensor):
            found.append(1 if t.ndim == 0 else t.shape[0])
        return t

    apply_to_tensors(batch, visit)
    if not found:
        warn_once(
            "Could not infer the batch size for self.log (no tensor in the batch); using 1. "
            "Fix: pass self.log(..., batch_size=N)."
        )
        return 1
    return found[0]


def has_len(loader: Any) -> bool:
    if isinstance(loader, DataLoader) and isinstance(loader.dataset, IterableDataset):
        try:
            len(loader)
        except TypeError:
            return False
        return True
    try:
        len(loader)
    except (TypeError, NotImplementedError):
        return False
    return True


def note_one_or_all(name: str, value: int | float | None) -> None:
    """Say which of the two meanings a value of 1 took: the int 1 is one batch, the float 1.0 is all
    of them. As in Lightning, only for a value the user passed (None is the default)."""
    if isinstance(value, bool) or value != 1:
        return
    from fulmen.utilities.rank_zero import rank_zero_info

    if isinstance(value, int):
        meaning = {"limit_train_batches": "1 batch per epoch will be used",
                   "val_check_interval": "validation will run after every batch"}.get(name, "1 batch will be used")
        rank_zero_info(f"`Trainer({name}=1)` was configured so {meaning}.")
    elif isinstance(value, float):
        meaning = {"limit_train_batches": "100% of the batches per epoch will be used",
                   "val_check_interval": "validation will run at the end of the training epoch"}.get(
            name, "100% of the batches will be used")
        rank_zero_info(f"`Trainer({name}=1.0)` was configured so {meaning}.")


def check_limit(name: str, value: int | float | None) -> int | float:
    """Validate a `limit_*_batches`-style argument: an int count or a fraction in [0, 1]."""
    if value is None:
        return 1.0
    note_one_or_all(name, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MisconfigurationException(
            f"`{name}` must be an int (number of batches) or a float in [0.0, 1.0] (fraction). "
            f"Received: {name}={value!r}. Fix: e.g. {name}=10 or {name}=0.25."
        )
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise MisconfigurationException(
            f"`{name}` as a float is a fraction of the batches and must be in [0.0, 1.0]. "
            f"Received: {name}={value!r}. Fix: pass a fraction, or an int number of batches."
        )
    if value < 0:
        raise MisconfigurationException(
            f"`{name}` must not be negative. Received: {name}={value!r}. Fix: pass 0 or more."
        )
    # Lightning treats 1.0 as "all batches" and 1 as "one batch"; so do we.
    return value


def num_batches(loader: Any, limit: int | float) -> int | float:
    """How many batches of `loader` a loop will run under `limit` (inf when unknown)."""
    if isinstance(limit, int):
        return min(limit, len(loader)) if has_len(loader) else limit
    if not has_len(loader):
        return float("inf") if limit > 0 else 0
    total = len(loader)
    if limit == 1.0:
        return total
    n = int(total * limit)
    if limit > 0 and n == 0:
        raise MisconfigurationException(
            f"A fraction of {limit} of {total} batches is less than one batch. "
            f"Received: limit={limit}. Fix: use a larger fraction or an int number of batches."
        )
    return n


def with_sampler(loader: DataLoader, sampler: Sampler | None = None, batch_sampler: Any = None) -> DataLoader:
    """A copy of `loader` that draws indices from `sampler` (or whole batches of indices from
    `batch_sampler`); everything else unchanged."""
    batching = (
        {"batch_sampler": batch_sampler} if batch_sampler is not None
        else {"batch_size": loader.batch_size, "sampler": sampler, "drop_last": loader.drop_last}
    )
    return DataLoader(
        loader.dataset,
        **batching,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
    )


def as_loader_list(loaders: Any, name: str) -> list[Iterable]:
    """Normalise `val_dataloaders`-style arguments to a list of iterables."""
    if loaders is None:
        return []
    if isinstance(loaders, (list, tuple)) and not isinstance(loaders, torch.Tensor):
        result = list(loaders)
    else:
        result = [loaders]
    for i, loader in enumerate(result):
        if not isinstance(loader, Iterable) or isinstance(loader, (str, bytes, torch.Tensor, Mapping)):
            raise MisconfigurationException(
                f"`{name}` must be a DataLoader (or any iterable of batches), or a list of them. "
                f"Received: {name}[{i}] of type {type(loader).__name__}. "
                "Fix: wrap your dataset: DataLoader(dataset, batch_size=...)."
            )
    return result


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Call `set_epoch` on the loader's samplers (e.g. DistributedSampler) so each epoch reshuffles;
    for a CombinedLoader, on those of every loader in it."""
    inner_loaders = getattr(loader, "flattened", None)  # a CombinedLoader (not imported here: data.py stays light)
    if isinstance(inner_loaders, list):
        for inner_loader in inner_loaders:
            set_sampler_epoch(inner_loader, epoch)
        return
    for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if obj is not None and callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    if inner is not None and callable(getattr(inner, "set_epoch", None)):
        inner.set_epoch(epoch)


def prefetch(
    batches: Iterable[tuple[int, Any]], transfer: Callable[[Any], Any], stream: Any = None
) -> Iterator[tuple[int, Any]]:
    """Yield `(index, transfer(batch))`, moving batch i+1 before batch i is handed out.

    With a CUDA `stream`, each transfer is issued on that side stream, so the host→device copy of
    the next batch overlaps the current step's kernels; the compute stream waits for the copy
    before it uses the batch. Without a stream (CPU) the order and contents are the same, only
    nothing overlaps.
    """
    iterator = iter(batches)

    def fetch() -> tuple[int, Any] | None:
        try:
            index, batch = next(iterator)
        except StopIteration:
            return None
        if stream is None:
            return index, transfer(batch)
        with torch.cuda.stream(stream):
            return index, transfer(batch)

    pending = fetch()
    while pending is not None:
        index, batch = pending
        if stream is not None:
            compute = torch.cuda.current_stream(stream.device)
            compute.wait_stream(stream)

            def keep_alive(t: Any) -> Any:
                # The copy was allocated on the side stream; tell the allocator the compute
                # stream uses it too, so its memory is not reused while kernels still read it.
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(compute)
                return t

            apply_to_tensors(batch, keep_alive)
        pending = fetch()
        yield index, batch
