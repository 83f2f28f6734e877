"""`Fabric.save`, `Fabric.load` and `Fabric.load_raw`: a hand-written loop's state to one file and back.

The state is a dict the user names (`{"model": model, "optimizer": optimizer, "loader": loader,
"step": 10}`). `save` turns each entry into plain data: a module into its state dict and an
optimizer into its state, both as the strategy gathers them (`strategy.model_state_dict`,
`strategy.optimizer_state_dict`: FSDP2 collects the shards), any object with
`state_dict`/`load_state_dict` (a dataloader from `setup_dataloaders`, an LR scheduler) into its
`state_dict()`, anything else as it is. The file is written by `strategy.save_checkpoint`, the
Trainer's crash-safe write (temporary file, fsync, rename; rank 0 writes, the others wait), so a
run killed while saving keeps its previous checkpoint whole.

`load` reads with `torch.load(weights_only=True)` (`strategy.load_checkpoint`) and restores
every entry of the state in place: modules, optimizers and stateful objects load their state,
plain values are replaced in the user's dict. It returns what the checkpoint holds beyond the
state, as Lightning does. A dataloader's entry holds every rank's random state when several
processes saved it, and each rank resumes its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from fulmen.checkpoint import SHARDED_META
from fulmen.errors import MisconfigurationException
from fulmen.fabric.wrappers import _FabricDataLoader, _FabricModule, _FabricOptimizer, _unwrap_compiled
from fulmen.strategies import Strategy

Filter = Callable[[str, Any], bool]


def save(
    strategy: Strategy, path: str | Path, state: Mapping[str, Any],
    filter: Mapping[str, Filter] | None = None,  # noqa: A002 (Lightning's name)
) -> None:
    """Write `state` (see the module doc) to `path`; every process must call it.

    `filter` maps a key of `state` to `fn(name, value) -> bool`, which picks the items of that
    entry's state dict to keep (e.g. `{"model": lambda name, _: "bias" not in name}`).
    """
    _check_filter(state, filter)
    if getattr(strategy, "state_dict_type", "full") != "full":
        raise MisconfigurationException(
            "fabric.save writes one file, gathered on rank 0, but the strategy shards its checkpoints. "
            f"Received: state_dict_type={strategy.state_dict_type!r}. Fix: FSDPStrategy(state_dict_type='full')."
        )
    modules = [_module(obj) for obj in state.values() if isinstance(_module(obj), nn.Module)]
    checkpoint: dict[str, Any] = {}
    for key, obj in state.items():
        converted = _state_of(strategy, obj, modules)
        keep = (filter or {}).get(key)
        if keep is not None and isinstance(converted, dict):
            kept = {name: value for name, value in converted.items() if keep(name, value)}
            if kept:  # as Lightning: an entry the filter empties is left out
                checkpoint[key] = kept
        else:
            checkpoint[key] = converted
    strategy.save_checkpoint(checkpoint, path)
    strategy.barrier("fabric.save")


def load(
    strategy: Strategy, path: str | Path, state: dict[str, Any] | None = None, strict: bool = True,
    weights_only: bool | None = None,
) -> dict[str, Any]:
    """Restore `state` in place from the checkpoint at `path`; returns the checkpoint's other entries
    (the whole checkpoint when `state` is None or empty). Every process must call it.

    With `strict`, a key of `state` that the checkpoint lacks is an error, and module state dicts
    must match exactly.
    """
    checkpoint = _read(strategy, path, weights_only)
    if not state:
        return checkpoint
    missing = [key for key in state if key not in checkpoint]
    if strict and missing:
        raise KeyError(
            f"The state to load has a key the checkpoint {str(path)!r} does not hold. Received: key={missing[0]!r}; "
            f"the checkpoint holds {sorted(map(str, checkpoint))}. Fix: load with a state of those keys, "
            "or pass strict=False to restore only the keys present."
        )
    modules = [_module(obj) for obj in state.values() if isinstance(_module(obj), nn.Module)]
    for key, obj in list(state.items()):
        if key not in checkpoint:
            continue
        saved = checkpoint.pop(key)
        module = _module(obj)
        if isinstance(module, nn.Module):
            strategy.load_model_state_dict(module, saved, strict=strict)
        elif isinstance(obj, Optimizer):
            optimizer = _optimizer(obj)
            strategy.load_optimizer_state_dict(_owner(optimizer, modules, strategy), optimizer, saved)
        elif isinstance(obj, _FabricDataLoader):
            obj.load_state_dict(_this_rank(strategy, saved))
        elif _is_stateful(obj):
            obj.load_state_dict(saved)
        else:
            state[key] = saved  # a plain value: replaced in the user's dict
    strategy.barrier("fabric.load")
    return checkpoint


def load_raw(strategy: Strategy, path: str | Path, obj: Any, strict: bool = True,
             weights_only: bool | None = None) -> None:
    """Load a bare state dict file (e.g. `torch.save(model.state_dict(), path)`) into a module or an
    optimizer. `strict` applies to modules (as `nn.Module.load_state_dict`)."""
    module = _module(obj)
    if not isinstance(module, nn.Module) and not isinstance(obj, Optimizer):
        raise TypeError(
            "load_raw loads a state dict into a module or an optimizer. "
            f"Received: obj={type(obj).__name__}. Fix: pass the model or optimizer (wrapped by fabric.setup or not)."
        )
    saved = _read(strategy, path, weights_only)
    if isinstance(module, nn.Module):
        strategy.load_model_state_dict(module, saved, strict=strict)
    else:
        optimizer = _optimizer(obj)
        strategy.load_optimizer_state_dict(_owner(optimizer, [], strategy), optimizer, saved)


# --- from the user's objects to plain data, and back ------------------------------------------
def _check_filter(state: Mapping[str, Any], filter: Any) -> None:  # noqa: A002
    if filter is None:
        return
    if not isinstance(filter, Mapping):
        raise TypeError(
            "fabric.save(filter=...) maps keys of the state to functions. "
            f"Received: filter={filter!r}. Fix: e.g. filter={{'model': lambda name, value: 'bias' not in name}}."
        )
    unknown = [key for key in filter if key not in state]
    if unknown:
        raise ValueError(
            f"fabric.save(filter=...) names keys the state does not have. Received: {sorted(map(str, unknown))}; "
            f"the state has {sorted(map(str, state))}. Fix: use keys of the state."
        )
    for key, fn in filter.items():
        if not callable(fn):
            raise TypeError(
                f"fabric.save(filter=...) must map each key to a function (name, value) -> bool. "
                f"Received: filter[{key!r}]={fn!r}. Fix: pass a callable, e.g. lambda name, value: True."
            )


def _module(obj: Any) -> Any:
    """The module whose state dict is saved for `obj` (what the strategy set up, without the DDP or
    torch.compile wrapper, whose keys would carry a prefix), or `obj` itself when it is no module."""
    obj = _unwrap_compiled(obj)
    if isinstance(obj, _FabricModule):
        obj = _unwrap_compiled(obj._forward_module)
    if isinstance(obj, DistributedDataParallel):
        obj = obj.module
    return obj


def _optimizer(obj: Optimizer) -> Optimizer:
    return obj.optimizer if isinstance(obj, _FabricOptimizer) else obj


def _owner(optimizer: Optimizer, modules: list[nn.Module], strategy: Strategy) -> Any:
    """The module whose parameters `optimizer` updates: a sharded strategy needs it to name the
    optimizer's state by parameter (the others ignore it)."""
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for module in [*modules, _module(strategy.model)]:
        if isinstance(module, nn.Module) and any(id(p) in params for p in module.parameters()):
            return module
    return None


def _is_stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def _state_of(strategy: Strategy, obj: Any, modules: list[nn.Module]) -> Any:
    """What the checkpoint holds for one entry of the state."""
    module = _module(obj)
    if isinstance(module, nn.Module):
        return strategy.model_state_dict(module)
    if isinstance(obj, Optimizer):
        optimizer = _optimizer(obj)
        return strategy.optimizer_state_dict(_owner(optimizer, modules, strategy), optimizer)
    if isinstance(obj, _FabricDataLoader):
        own = obj.state_dict()
        if strategy.distributed and not strategy.failing:  # each rank's random state, for a per-rank resume
            return {**own, "ranks": strategy.all_gather_object(own)}
        return own
    if _is_stateful(obj):
        return obj.state_dict()
    return obj


def _this_rank(strategy: Strategy, saved: dict[str, Any]) -> dict[str, Any]:
    """A dataloader's saved state for this process: its own rank's when every rank's was saved by as
    many processes as now run, else rank 0's."""
    saved = dict(saved)
    ranks = saved.pop("ranks", None)
    if isinstance(ranks, list) and len(ranks) == strategy.world_size:
        return ranks[strategy.global_rank]
    return saved


def _read(strategy: Strategy, path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
    """The checkpoint at `path`, read with weights_only by the strategy (its CheckpointIO); with
    `weights_only=False` (the caller trusts the file), by a plain `torch.load`."""
    where = Path(path)
    if not where.exists():
        raise FileNotFoundError(
            f"No checkpoint file at the path given to load. Received: path={str(path)!r}. "
            "Fix: check the path (fabric.save writes it; load it on every process, after the save)."
        )
    if where.is_dir() and not (where / SHARDED_META).is_file():
        raise IsADirectoryError(
            f"The path given to load is a directory, not a checkpoint file. Received: path={str(path)!r}. "
            "Fix: pass the file fabric.save wrote, e.g. path / 'checkpoint.pt'."
        )
    if weights_only is False and where.is_file():
        import torch

        checkpoint = torch.load(where, map_location="cpu", weights_only=False)
    else:
        checkpoint = strategy.load_checkpoint(path)
    # A file read by another CheckpointIO may hold anything: only a dict is a state to restore.
    if not isinstance(checkpoint, dict):
        raise TypeError(
            f"{str(path)!r} does not hold a checkpoint dict. Received: {type(checkpoint).__name__}. "
            "Fix: load a file written by fabric.save, or a state dict saved with torch.save(obj.state_dict())."
        )
    return checkpoint

