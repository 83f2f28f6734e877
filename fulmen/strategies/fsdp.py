"""Fully sharded data parallel training with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Each process holds a shard of every parameter, gradient and optimizer state; whole parameters
exist only while a sharded module runs. fulmen shards the submodules chosen by
`auto_wrap_policy` (by default every module that owns parameters), then the root, unless
`configure_model` already called `fully_shard` itself.

Checkpoints (`state_dict_type`):
- "full" (default): the whole state gathered to rank 0 and written as one ordinary `.ckpt` file,
  the same format a single-device run writes (optimizer state keyed by parameter index), so it
  loads into any number of processes, or into a plain module.
- "sharded": a directory written by every rank with `torch.distributed.checkpoint` (no gather,
  no rank holds the whole model), plus `meta.pt` with the rest of the checkpoint from rank 0.
  `torch.distributed.checkpoint` reshards on load, so it resumes on another number of processes,
  one included.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fulmen._fs import current_umask
from fulmen.checkpoint import (
    SHARDED_META, atomic_save, optimizer_state_by_index, optimizer_state_by_name, parameter_names,
)
from fulmen.errors import MisconfigurationException
from fulmen.strategies.ddp import DEFAULT_TIMEOUT, ParallelStrategy, call_through

_SHARDED_KEYS = ("state_dict", "optimizer_states")


class FSDPStrategy(ParallelStrategy):
    """FSDP2 (Lightning's `strategy="fsdp"`, on PyTorch's newer per-parameter sharding).

    `auto_wrap_policy`: which submodules become their own shard group: a set of module classes, a
    callable `module -> bool`, or None for every submodule that owns parameters.

    >>> FSDPStrategy(auto_wrap_policy={nn.TransformerEncoderLayer}, state_dict_type="sharded")  # doctest: +SKIP
    """

    name = "fsdp"

    def __init__(
        self, *, auto_wrap_policy: set[type[nn.Module]] | Callable[[nn.Module], bool] | None = None,
        reshard_after_forward: bool = True, state_dict_type: str = "full", process_group_backend: str | None = None,
        timeout: dt.timedelta = DEFAULT_TIMEOUT, cluster_environment: Any = None, checkpoint_io: Any = None,
    ) -> None:
        super().__init__(process_group_backend=process_group_backend, timeout=timeout,
                         cluster_environment=cluster_environment, checkpoint_io=checkpoint_io)
        if state_dict_type not in ("full", "sharded"):
            raise MisconfigurationException(
                f"FSDPStrategy(state_dict_type=...) must be 'full' or 'sharded'. Received: {state_dict_type!r}. "
                "Fix: 'full' (one file, gathered on rank 0) or 'sharded' (a directory, one shard per rank)."
            )
        self.auto_wrap_policy, self.reshard_after_forward = auto_wrap_policy, reshard_after_forward
        self.state_dict_type = state_dict_type

    # --- run lifecycle --------------------------------------------------------------------
    def setup_module(self, module: nn.Module, device: torch.device, training: bool) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, fully_shard

        if not isinstance(module, FSDPModule):  # else configure_model already sharded it
            mesh = init_device_mesh(device.type, (self.world_size,))
            for sub in self._shard_groups(module):
                fully_shard(sub, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
            fully_shard(module, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
        self.model = module

    def _shard_groups(self, module: nn.Module) -> list[nn.Module]:
        """The submodules to shard, innermost first (fully_shard must see children before parents)."""
        policy = self.auto_wrap_policy
        if policy is None:
            chosen = [m for m in module.modules() if m is not module and m._parameters]
        elif isinstance(policy, (set, frozenset, list, tuple)):
            chosen = [m for m in module.modules() if m is not module and isinstance(m, tuple(policy))]
        else:
            chosen = [m for m in module.modules() if m is not module and policy(m)]
        return chosen[::-1]

    def training_step(self, module: Any) -> Any:
        # Through the root's forward hooks: they unshard the root's own parameters and, on the
        # first call, set up FSDP's bookkeeping for the whole tree.
        return lambda *args: call_through(module, module, module.training_step, *args)  # the args training_step takes

    @contextlib.contextmanager
    def no_backward_sync(self, module: nn.Module | None = None) -> Iterator[None]:
        model = self.model if module is None else module
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    # --- checkpoints ----------------------------------------------------------------------
    def _options(self) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        full = self.state_dict_type == "full"
        return StateDictOptions(full_state_dict=full, cpu_offload=full)

    def model_state_dict(self, module: nn.Module) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(module, options=self._options())

    def load_model_state_dict(self, module: nn.Module, state_dict: dict[str, Any], strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state_dict, options=StateDictOptions(full_state_dict=True, strict=strict))

    def optimizer_state_dict(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state = get_optimizer_state_dict(module, optimizer, options=self._options())
        if self.state_dict_type == "sharded" or not state:  # sharded: torch.distributed.checkpoint keys by name
            return state
        return optimizer_state_by_index(state, module, optimizer)

    def load_optimizer_state_dict(self, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        state = optimizer_state_by_name(state, parameter_names(module, optimizer))
        set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, background: bool = False) -> None:
        if self.state_dict_type == "full":
            return super().save_checkpoint(checkpoint, path, background)
        save_sharded(checkpoint, Path(path), self)  # all ranks write: always before returning
        return None

    def remove_checkpoint(self, path: str | Path) -> None:
        if self.is_global_zero and Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            super().remove_checkpoint(path)


# --- sharded checkpoint directories ---------------------------------------------------------------
def save_sharded(checkpoint: dict[str, Any], path: Path, strategy: ParallelStrategy) -> None:
    """Every rank writes its shards into a temporary directory; rank 0 adds meta.pt and moves the
    directory into place, so `path` is either the previous checkpoint or the whole new one."""
    import torch.distributed.checkpoint as dcp

    staging = strategy.broadcast(_staging_dir(path) if strategy.is_global_zero else None)
    tensors = {k: checkpoint[k] for k in _SHARDED_KEYS if k in checkpoint}
    dcp.save(tensors, checkpoint_id=staging)
    if strategy.is_global_zero:
        atomic_save({k: v for k, v in checkpoint.items() if k not in _SHARDED_KEYS}, Path(staging) / SHARDED_META)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    strategy.barrier("save_sharded")


def _staging_dir(path: Path) -> str:
    """A new temporary directory beside `path`, with the mode `mkdir` gives under the umask
    (`mkdtemp`'s 0700 would keep the checkpoint from everyone but its owner)."""
    staging = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=_mkdir(path.parent))
    os.chmod(staging, 0o777 & ~current_umask())
    return staging


def _mkdir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory
