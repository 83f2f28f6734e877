"""`Fabric`: a hand-written training loop on fulmen's devices, strategies, precision and checkpoints.

Lightning Fabric 2.6's API. The loop stays the user's; Fabric supplies the engineering through the
same objects the Trainer uses, never a second implementation of them:

- hardware and numerics: `fulmen.plugins.resolve.resolve_plugins` and
  `fulmen.accelerators.setup_hardware` (every strategy, precision, cluster environment and plugin
  the Trainer takes), and the precision engine `fulmen.precision.Precision`;
- processes: `launch()` calls the strategy's `setup_environment()`: under a plain
  `python script.py` with `devices=N` it starts the N-1 copies of the script
  (`fulmen.strategies.launcher.ScriptCopies`; every copy runs the script from the top, as in
  Lightning); under torchrun, SLURM and the other cluster environments it joins their ranks;
- modules: the strategy's `setup_module` wraps each module (DDP, FSDP2); Fabric keeps each
  module's wrapper in its `_FabricModule`, so several modules (a GAN's two) each have their own;
- data: `fulmen.dataloading.distributed_loader`, the Trainer's sampler logic;
- checkpoints: `fulmen.fabric.checkpoint` (crash-safe writes through `Strategy.save_checkpoint`).

Reading order: `__init__`, the properties, `launch`, the set-up methods, the verbs of a training
step (`backward`, `clip_gradients`, `autocast`, `no_backward_sync`), collectives, checkpoints,
callbacks and logging, then the private checks.

`strategy="ddp_spawn"` is refused with an error naming the fix: fulmen's spawn launcher sends a
Trainer to its processes and brings its results back, which a Fabric loop (whose state is the
user's own variables) has no equivalent of. `strategy="ddp"` (copies of the script) runs the same
programs without pickling them.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Generator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from fulmen.accelerators import Accelerator, setup_hardware
from fulmen.data import apply_to_tensors, move_to_device
from fulmen.errors import MisconfigurationException
from fulmen.fabric import wrappers
from fulmen.fabric.wrappers import _FabricDataLoader, _FabricModule, _FabricOptimizer, _unwrap_objects
from fulmen.plugins.resolve import resolve_plugins
from fulmen.utilities.seed import seed_everything as _seed_everything
from fulmen.strategies import SingleDeviceStrategy, Strategy
from fulmen.strategies.init import init_context, materialize, on_meta

_REDUCE_OPS = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}


def _do_nothing(*_: Any) -> None:
    pass


class Fabric:
    """Devices, strategies, precision, checkpoints and loggers for your own training loop.

    Example:
        >>> fabric = Fabric(accelerator="cpu", devices=1)
        >>> fabric.launch()
        >>> model, optimizer = fabric.setup(nn.Linear(2, 1), torch.optim.SGD(nn.Linear(2, 1).parameters()))
        >>> fabric.world_size
        1
    """

    def __init__(
        self,
        *,
        accelerator: str | Accelerator = "auto",
        strategy: str | Strategy = "auto",
        devices: list[int] | str | int = "auto",
        num_nodes: int = 1,
        precision: str | int | None = None,
        plugins: Any = None,
        callbacks: list[Any] | Any = None,
        loggers: Any = None,
    ) -> None:
        # One implementation with the Trainer: the same resolution of plugins, hardware and precision.
        resolved = resolve_plugins(plugins, precision=precision)
        self._accelerator_name, self._device_ids, self._strategy, self._device = setup_hardware(
            accelerator, strategy, devices, num_nodes, False, plugins=resolved
        )
        if self._strategy.spawns:
            raise MisconfigurationException(
                "Fabric does not run strategy='ddp_spawn' in fulmen: its spawn launcher hands a Trainer to the new "
                f"processes, and a Fabric loop has none. Received: strategy={strategy!r}. Fix: use strategy='ddp' "
                "(fulmen starts copies of your script for devices=N, or run it under torchrun)."
            )
        self._precision_name = resolved.precision
        self._precision = resolved.precision_engine(self._device)
        self._callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else (
            [] if callbacks is None else [callbacks])
        self._loggers = list(loggers) if isinstance(loggers, (list, tuple)) else ([] if loggers is None else [loggers])
        self._models_setup = 0
        self._launched = False
        # A subclass may override `run`; calling it launches first, as in Lightning.
        self.run = partial(self._launch_and_call, self.run)  # type: ignore[method-assign]

    # --- properties -------------------------------------------------------------------------
    @property
    def accelerator(self) -> Accelerator:
        return self._strategy.accelerator

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def device(self) -> torch.device:
        """The device this process runs on: create tensors there with `device=fabric.device`."""
        return self._strategy.root_device

    @property
    def global_rank(self) -> int:
        return self._strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self._strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self._strategy.node_rank

    @property
    def world_size(self) -> int:
        return self._strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        return self._strategy.is_global_zero

    @property
    def loggers(self) -> list[Any]:
        return self._loggers

    @property
    def logger(self) -> Any:
        """The first logger (the main one)."""
        return self._loggers[0]

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Override in a subclass to put the loop here; `fabric.run(...)` then launches and calls it."""

    # --- processes --------------------------------------------------------------------------
    def launch(self, function: Callable[..., Any] = _do_nothing, *args: Any, **kwargs: Any) -> Any:
        """Start or join the processes of the run; with `function`, return `function(fabric, *args, **kwargs)`.

        `devices=N` from a plain `python script.py`: the script's copies are started here, and each
        runs the script from the top (as in Lightning), so code before `launch()` runs on every rank.
        """
        if self._launched:
            raise RuntimeError(
                "Fabric.launch() was called a second time; the processes of this run have already joined. "
                "Received: a second launch(). Fix: call launch() once, right after Fabric(...)."
            )
        if function is not _do_nothing:
            if not callable(function):
                raise TypeError(
                    f"Fabric.launch() takes the function to run, not its result. Received: function={function!r}. "
                    "Fix: launch(train) instead of launch(train())."
                )
            if not inspect.signature(function).parameters:
                raise TypeError(
                    f"The function given to Fabric.launch() receives the Fabric object as its first argument, but "
                    f"takes no arguments. Received: function={function!r}. Fix: def {getattr(function, '__name__', 'fn')}"
                    "(fabric): ..."
                )
            return self._launch_and_call(function, self, *args, **kwargs)
        return self._launch_and_call(function, *args, **kwargs)

    def _launch_and_call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._launched = True
        self._strategy.setup_environment()
        return function(*args, **kwargs)

    # --- set-up -----------------------------------------------------------------------------
    def setup(self, module: nn.Module, *optimizers: Optimizer, move_to_device: bool = True,
              _reapply_compile: bool = True) -> Any:
        """The module (and optimizers) ready to train: precision applied, on the device, wrapped by the
        strategy. Returns the `_FabricModule`, or a tuple `(module, *optimizers)` when optimizers are given."""
        self._check_launched()
        if isinstance(module, _FabricModule):
            raise ValueError(
                "This module was already set up by Fabric. Received: a _FabricModule. "
                "Fix: pass each module to setup()/setup_module() once."
            )
        self._check_optimizers(optimizers, "setup")
        fabric_module = self._setup_module(module, move_to_device, list(optimizers), _reapply_compile)
        fabric_optimizers = [self._wrap_optimizer(optimizer) for optimizer in optimizers]
        self._adopt(fabric_module, fabric_optimizers)
        self.call("on_after_setup", fabric=self, module=fabric_module)
        return (fabric_module, *fabric_optimizers) if fabric_optimizers else fabric_module

    def setup_module(self, module: nn.Module, move_to_device: bool = True, _reapply_compile: bool = True) -> Any:
        """`setup(module)` without optimizers: for inference, or under FSDP, where the optimizer is best
        created from the sharded module's parameters (then `setup_optimizers`)."""
        self._check_launched()
        if isinstance(module, _FabricModule):
            raise ValueError(
                "This module was already set up by Fabric. Received: a _FabricModule. "
                "Fix: pass each module to setup()/setup_module() once."
            )
        fabric_module = self._setup_module(module, move_to_device, [], _reapply_compile)
        self._adopt(fabric_module, None)
        return fabric_module

    def setup_optimizers(self, *optimizers: Optimizer) -> Any:
        """The optimizers wrapped to step through the precision: one `_FabricOptimizer`, or a tuple."""
        self._check_launched()
        if not optimizers:
            raise ValueError(
                "setup_optimizers() needs at least one optimizer. Received: no arguments. "
                "Fix: fabric.setup_optimizers(optimizer)."
            )
        self._check_optimizers(optimizers, "setup_optimizers")
        wrapped = [self._wrap_optimizer(optimizer) for optimizer in optimizers]
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def setup_dataloaders(self, *dataloaders: DataLoader, use_distributed_sampler: bool = True,
                          move_to_device: bool = True) -> Any:
        """Each DataLoader with this rank's share of the data (a DistributedSampler, reshuffled every
        epoch, seeded from PL_GLOBAL_SEED, the loader's shuffle kept) and its batches moved to the device.
        One `_FabricDataLoader`, or a list of them."""
        from fulmen.dataloading import distributed_loader

        self._check_launched()
        if not dataloaders:
            raise ValueError(
                "setup_dataloaders() needs at least one DataLoader. Received: no arguments. "
                "Fix: fabric.setup_dataloaders(train_loader)."
            )
        for loader in dataloaders:
            if isinstance(loader, _FabricDataLoader):
                raise ValueError(
                    "This DataLoader was already set up by Fabric. Received: a _FabricDataLoader. "
                    "Fix: pass each DataLoader to setup_dataloaders() once."
                )
            if not isinstance(loader, DataLoader):
                raise TypeError(
                    f"setup_dataloaders() takes torch DataLoaders only. Received: {type(loader).__name__}. "
                    "Fix: wrap the data in torch.utils.data.DataLoader(dataset, batch_size=...)."
                )
        sampler_kwargs = self._strategy.distributed_sampler_kwargs
        wrapped = []
        for loader in dataloaders:
            if use_distributed_sampler and sampler_kwargs is not None:
                loader = distributed_loader(loader, sampler_kwargs)
            wrapped.append(_FabricDataLoader(loader, device=self.device if move_to_device else None))
        return wrapped[0] if len(wrapped) == 1 else wrapped

    def _setup_module(self, module: nn.Module, move_to_device: bool, optimizers: list[Optimizer],
                      reapply_compile: bool) -> _FabricModule:
        # A torch.compile'd module: the strategy wraps the module inside, then the wrapper is compiled
        # with the same settings (`_reapply_compile`, as Lightning), so DDP/FSDP see plain modules.
        compiled = getattr(module, "_orig_mod", None) if reapply_compile and hasattr(module, "dynamo_ctx") else None
        if not isinstance(compiled, nn.Module):
            compiled = None
        original = module if compiled is None else compiled
        converted = self._precision.convert_module(original)
        meta = on_meta(converted)
        if move_to_device and not meta:  # a meta module gets its memory once sharded (materialize)
            converted = converted.to(self.device)
        before = dict(converted.named_parameters())
        strategy = self._strategy
        kept = strategy.model  # the strategy holds one module; Fabric keeps each module's wrapper itself
        strategy.setup_module(converted, self.device, True)
        forward_module = strategy.model
        strategy.model = kept if kept is not None else forward_module
        _repoint_optimizers(optimizers, before, dict(converted.named_parameters()))
        if meta:
            materialize(converted, self.device)
        if compiled is not None:
            forward_module = torch._dynamo.OptimizedModule(forward_module, module.dynamo_ctx)
        self._models_setup += 1
        return _FabricModule(forward_module, strategy, self._precision, original_module=original)

    def _wrap_optimizer(self, optimizer: Optimizer) -> _FabricOptimizer:
        return _FabricOptimizer(optimizer, self._strategy, self._precision, self._callbacks)

    def _adopt(self, fabric_module: _FabricModule, optimizers: list[_FabricOptimizer] | None) -> None:
        """A LightningModule set up by Fabric knows it (`module.fabric`), and receives Fabric's hook calls."""
        original = fabric_module.module
        if hasattr(original, "_fabric"):
            original._fabric = self
            if optimizers is not None:
                original._fabric_optimizers = optimizers
            if original not in self._callbacks:
                self._callbacks.append(original)

    # --- the verbs of a training step -------------------------------------------------------
    def backward(self, tensor: torch.Tensor, *args: Any, model: _FabricModule | None = None, **kwargs: Any) -> None:
        """`tensor.backward(*args, **kwargs)` through the precision: scaled under "16-mixed"."""
        scaler = self._precision.scaler
        wrappers._in_fabric_backward = True
        try:
            (scaler.scale(tensor) if scaler is not None else tensor).backward(*args, **kwargs)
        finally:
            wrappers._in_fabric_backward = False

    def clip_gradients(self, module: nn.Module | _FabricModule, optimizer: Optimizer | _FabricOptimizer,
                       clip_val: float | int | None = None, max_norm: float | int | None = None,
                       norm_type: float | int = 2.0, error_if_nonfinite: bool = True) -> torch.Tensor | None:
        """Clip the gradients of `optimizer`'s parameters by value (`clip_val`) or by their total norm
        (`max_norm`; returns that norm, taken before clipping). Under "16-mixed" the gradients are
        unscaled first, once per step."""
        if clip_val is not None and max_norm is not None:
            raise ValueError(
                "clip_gradients() clips by value or by norm, not both. Received: clip_val="
                f"{clip_val!r}, max_norm={max_norm!r}. Fix: pass only one of them."
            )
        if clip_val is None and max_norm is None:
            raise ValueError(
                "clip_gradients() needs clip_val (clip each gradient value) or max_norm (clip the total norm). "
                "Received: neither. Fix: e.g. fabric.clip_gradients(model, optimizer, max_norm=1.0)."
            )
        optimizer = _unwrap_objects(optimizer)
        self._unscale(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if clip_val is not None:
            torch.nn.utils.clip_grad_value_(params, clip_val)
            return None
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type,
                                              error_if_nonfinite=error_if_nonfinite)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # a DTensor under FSDP2

    def _unscale(self, optimizer: Optimizer) -> None:
        scaler = self._precision.scaler
        if scaler is None:
            return
        from torch.amp.grad_scaler import OptState

        if scaler._per_optimizer_states[id(optimizer)]["stage"] is not OptState.UNSCALED:
            scaler.unscale_(optimizer)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision's forward context (torch.autocast under "*-mixed"), for work outside `model(...)`."""
        return self._precision.forward_context()

    def no_backward_sync(self, module: _FabricModule, enabled: bool = True) -> contextlib.AbstractContextManager:
        """Skip the gradient synchronisation of `module` inside the block (gradient accumulation); the
        first backward after it syncs the accumulated gradients. Does nothing on one device or when
        `enabled=False`."""
        if not isinstance(module, _FabricModule):
            raise TypeError(
                "no_backward_sync() needs a module set up by Fabric. Received: "
                f"{type(module).__name__}. Fix: model = fabric.setup(model, ...) first, then pass that model."
            )
        if not enabled or isinstance(self._strategy, SingleDeviceStrategy) or not self._strategy.distributed:
            return contextlib.nullcontext()
        forward_module = module._forward_module
        return self._strategy.no_backward_sync(getattr(forward_module, "_orig_mod", forward_module))

    def to_device(self, obj: Any) -> Any:
        """A module, a tensor or a collection of tensors on this process's device."""
        if isinstance(obj, nn.Module):
            return obj.to(self.device)
        return move_to_device(obj, self.device)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` on the first process of each machine only."""
        if self.local_rank == 0:
            print(*args, **kwargs)

    # --- collectives ------------------------------------------------------------------------
    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point."""
        self._check_launched()
        self._strategy.barrier(name)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """`obj` as process `src` has it (any picklable object)."""
        self._check_launched()
        return self._strategy.broadcast(obj, src=src)

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Each tensor of `data` (numbers become tensors) from every process, stacked: shape
        (world_size, *shape) with several processes; unchanged with one. `sync_grads=True` lets
        gradients flow back through the gather."""
        self._check_launched()
        data = self._as_tensors(data)
        if not self._grouped():
            return data
        return apply_to_tensors(data, partial(_gather, group=group, sync_grads=sync_grads))

    def all_reduce(self, data: Any, group: Any = None, reduce_op: Any = "mean") -> Any:
        """Each tensor of `data` (numbers become tensors) reduced over all processes: "mean" (default),
        "sum", "max", "min", or a torch.distributed.ReduceOp."""
        self._check_launched()
        data = self._as_tensors(data)
        if not self._grouped():
            return data
        return apply_to_tensors(data, partial(_reduce, group=group, reduce_op=reduce_op))

    def _grouped(self) -> bool:
        return self._strategy.distributed and torch.distributed.is_available() and torch.distributed.is_initialized()

    def _as_tensors(self, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return torch.tensor(data, device=self.device)
        if isinstance(data, (list, tuple, Mapping)) and not hasattr(data, "_fields"):
            items = data.items() if isinstance(data, Mapping) else enumerate(data)
            converted = {k: self._as_tensors(v) for k, v in items}
            return type(data)(converted) if isinstance(data, Mapping) else type(data)(converted.values())
        return move_to_device(data, self.device)

    @contextlib.contextmanager
    def rank_zero_first(self, local: bool = False) -> Generator[None, None, None]:
        """Run the block on rank 0 first (the first of each machine with `local=True`), then on the
        others: e.g. one process downloads a data set, the rest read it afterwards."""
        rank = self.local_rank if local else self.global_rank
        if rank > 0:
            self._strategy.barrier("rank_zero_first")
        yield
        if rank == 0:
            self._strategy.barrier("rank_zero_first")

    # --- creating modules and tensors -------------------------------------------------------
    def init_tensor(self) -> contextlib.AbstractContextManager:
        """Tensors created in the block are on the device, in the precision's dtype ("*-true")."""
        return init_context(self._strategy, self.device, self._precision.true_dtype, empty_init=False)

    def init_module(self, empty_init: bool | None = None) -> contextlib.AbstractContextManager:
        """Modules created in the block are on the device, in the precision's dtype ("*-true").
        `empty_init=True` skips the `torch.nn.init` calls (for weights about to be loaded); under a
        sharding strategy (FSDP2, ModelParallel) it builds the module on the meta device instead, so
        no process ever holds the whole model: `setup_module` then allocates each process's shards
        and runs every submodule's `reset_parameters()` (load the real weights after that); see
        `fulmen.strategies.init`, the Trainer's too."""
        self._check_launched()
        return init_context(self._strategy, self.device, self._precision.true_dtype, empty_init)

    # --- checkpoints ------------------------------------------------------------------------
    def save(self, path: str | Path, state: dict[str, Any], filter: dict[str, Callable[[str, Any], bool]] | None = None,
             ) -> None:
        """Write `state` (modules, optimizers, dataloaders from setup, and plain values) to `path`,
        crash-safely; `filter` picks the items of an entry's state dict to keep (see
        `fulmen.fabric.checkpoint.save`). Every process must call it."""
        from fulmen.fabric import checkpoint

        checkpoint.save(self._strategy, path, state, filter=filter)

    def load(self, path: str | Path, state: dict[str, Any] | None = None, strict: bool = True, *,
             weights_only: bool | None = None) -> dict[str, Any]:
        """Restore the objects of `state` in place from the checkpoint at `path`; return the checkpoint's
        entries that `state` did not ask for (the whole checkpoint when `state` is None). The file is
        read with `torch.load(weights_only=True)` unless you pass `weights_only=False` for a file you
        trust that holds other Python objects."""
        from fulmen.fabric import checkpoint

        return checkpoint.load(self._strategy, path, state, strict=strict, weights_only=weights_only)

    def load_raw(self, path: str | Path, obj: nn.Module | Optimizer, strict: bool = True, *,
                 weights_only: bool | None = None) -> None:
        """Load a plain `torch.save`d state dict (not one written by `save`) into a module or optimizer."""
        from fulmen.fabric import checkpoint

        checkpoint.load_raw(self._strategy, path, obj, strict=strict, weights_only=weights_only)

    # --- callbacks, logging, seeding --------------------------------------------------------
    def call(self, hook_name: str, *args: Any, **kwargs: Any) -> None:
        """Call `hook_name(*args, **kwargs)` on every callback that defines it; each receives only the
        keyword arguments its signature names (all of them if it takes **kwargs)."""
        for callback in self._callbacks:
            method = getattr(callback, hook_name, None)
            if method is None:
                continue
            if not callable(method):
                from fulmen.utilities.rank_zero import rank_zero_warn

                rank_zero_warn(f"Skipping {type(callback).__name__}.{hook_name}: it is not callable.")
                continue
            method(*args, **_accepted(method, kwargs))

    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Send one metric to every logger (rank 0 only); a tensor becomes a Python number."""
        self.log_dict({name: value}, step=step)

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Send metrics to every logger (rank 0 only); tensors become Python numbers."""
        if not self.is_global_zero:
            return
        scalars = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        for logger in self._loggers:
            logger.log_metrics(metrics=scalars, step=step)

    @staticmethod
    def seed_everything(seed: int | None = None, workers: bool | None = None, verbose: bool = True) -> int:
        """fulmen's `seed_everything`, seeding DataLoader workers too unless `workers=False` (as Fabric)."""
        return _seed_everything(seed, workers=True if workers is None else workers, verbose=verbose)

    # --- checks -----------------------------------------------------------------------------
    def _check_launched(self) -> None:
        if not self._launched and self._strategy.distributed:
            raise RuntimeError(
                f"Fabric with strategy {self._strategy.name!r} runs several processes, which must be started or "
                "joined before use. Received: no fabric.launch() yet. Fix: call fabric.launch() right after "
                "Fabric(...)."
            )

    def _check_optimizers(self, optimizers: Sequence[Any], method: str) -> None:
        if any(isinstance(opt, _FabricOptimizer) for opt in optimizers):
            raise ValueError(
                f"An optimizer passed to {method}() was already set up by Fabric. Received: a _FabricOptimizer. "
                "Fix: pass each optimizer to Fabric once."
            )


# --- helpers --------------------------------------------------------------------------------
def _repoint_optimizers(optimizers: list[Optimizer], before: dict[str, nn.Parameter],
                        after: dict[str, nn.Parameter]) -> None:
    """FSDP2 replaces each parameter with a sharded one: an optimizer made before `setup` is pointed at
    the new parameters (by name), as long as it holds no state yet for the old ones."""
    moved = {id(old): after[name] for name, old in before.items() if name in after and after[name] is not old}
    if not moved:
        return
    for optimizer in optimizers:
        if any(id(p) in moved for p in optimizer.state):
            raise RuntimeError(
                "The optimizer already holds state for the module's parameters, which the strategy replaced with "
                "sharded ones. Received: fabric.setup(module, optimizer) after optimizer steps. Fix: set up the "
                "module first (model = fabric.setup_module(model)), then create the optimizer from model.parameters() "
                "and call fabric.setup_optimizers(optimizer)."
            )
        for group in optimizer.param_groups:
            group["params"] = [moved.get(id(p), p) for p in group["params"]]


def _accepted(method: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `method` takes."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _gather(tensor: torch.Tensor, group: Any, sync_grads: bool) -> torch.Tensor:
    import torch.distributed as dist

    group = group if group is not None else dist.group.WORLD
    tensor = tensor.contiguous()  # all_gather needs contiguous memory
    if sync_grads:  # the autograd-aware gather: gradients flow back to each rank's input
        import warnings

        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in name, still torch's autograd gather
            return torch.stack(all_gather(tensor, group=group))
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, tensor, group=group)
    return torch.stack(gathered)


def _reduce(tensor: torch.Tensor, group: Any, reduce_op: Any) -> torch.Tensor:
    """`tensor` reduced over the group (in place, as Lightning; gloo has no AVG, so mean = sum / size)."""
    import torch.distributed as dist

    group = group if group is not None else dist.group.WORLD
    mean = False
    if isinstance(reduce_op, str):
        name = _REDUCE_OPS.get(reduce_op.lower())
        if name is None:
            raise ValueError(
                f"Unknown reduce_op. Received: reduce_op={reduce_op!r}. Fix: use 'mean', 'sum', 'max', 'min' "
                "or a torch.distributed.ReduceOp."
            )
        mean = name == "mean"
        op = dist.ReduceOp.SUM if mean else getattr(dist.ReduceOp, name.upper())
    else:
        op = reduce_op
    dist.all_reduce(tensor, op=op, group=group)
    if not mean:
        return tensor
    size = dist.get_world_size(group)
    return tensor.copy_(tensor / size) if not torch.is_floating_point(tensor) else tensor.div_(size)
