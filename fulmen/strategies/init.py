"""Building a model for a strategy: `Trainer.init_module()` and `Fabric.init_module()`, and the
set-up of a model built on the meta device. One implementation for both.

`init_context(strategy, device, dtype, empty_init)` is where modules created in the block live:
on the process's device, in the precision's dtype ("*-true"). With `empty_init=True` (the weights
are about to be loaded) the `torch.nn.init` calls are skipped; under a sharding strategy (FSDP2,
ModelParallel) the model is built on the meta device instead, so that no process ever holds all of
it. `materialize(module, device)` runs after the strategy has sharded such a module: each process
allocates its shards (`to_empty` on the root, as FSDP2 expects) and every layer that held meta
tensors runs its own `reset_parameters()`; the checkpoint then overwrites those values.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Generator
from typing import Any

import torch
from torch import nn


def on_meta(module: nn.Module) -> bool:
    """Whether any parameter or buffer of `module` lies on the meta device (holds no memory)."""
    return any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers()))


@contextlib.contextmanager
def init_context(strategy: Any, device: torch.device, dtype: torch.dtype | None,
                 empty_init: bool | None) -> Generator[None, None, None]:
    """Modules created in the block: on `device` in `dtype`; see the module doc for `empty_init`."""
    from fulmen.strategies.fsdp import FSDPStrategy  # ModelParallelStrategy is one too

    if empty_init and isinstance(strategy, FSDPStrategy):
        where, skip = torch.device("meta"), contextlib.nullcontext()
    else:
        where, skip = device, (_SkipInit() if empty_init else contextlib.nullcontext())
    with where, _default_dtype(dtype), skip:
        yield


def materialize(module: nn.Module, device: torch.device) -> None:
    """Give a module built on the meta device real memory on `device` and initial values (see the module doc)."""
    held = [sub for sub in module.modules()
            if any(t.is_meta for t in itertools.chain(sub.parameters(recurse=False), sub.buffers(recurse=False)))]
    for sub in held:
        if not callable(getattr(sub, "reset_parameters", None)):
            raise TypeError(
                f"A module built on the meta device needs reset_parameters() to get initial values, and "
                f"{type(sub).__name__} has none. Received: a model built under init_module(empty_init=True) or "
                f"torch.device('meta'). Fix: define {type(sub).__name__}.reset_parameters(), or build the model "
                "without empty_init=True."
            )
    module.to_empty(device=device)
    with torch.no_grad():
        for sub in held:
            sub.reset_parameters()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None) -> Generator[None, None, None]:
    if dtype is None:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Turns the `torch.nn.init` functions into no-ops: the weights stay as allocated (to be loaded)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)
