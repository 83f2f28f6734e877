"""What `Fabric.setup*` hands back: the user's module, optimizer and dataloader, each in a thin
wrapper that routes the calls a hand-written loop makes through fulmen's strategy and precision.

- `_FabricModule`: `model(x)` converts the inputs as the precision says, runs the strategy's
  wrapper (DDP, or the FSDP2-sharded module) under the precision's autocast, and returns
  float outputs in the default dtype (as Lightning). Methods marked with `mark_forward_method`
  (and the `*_step` methods) run *through* that wrapper's forward, so DDP prepares its gradient
  sync and FSDP2 unshards. Every other attribute is the user's module's.
- `_FabricOptimizer`: an instance of the user's optimizer class (for isinstance checks) that
  forwards everything to it; `step()` goes through the precision (the GradScaler of "16-mixed").
- `_FabricDataLoader`: iterates one epoch at a time through a `LoaderProgress` (reshuffling a
  distributed sampler per epoch, counting batches for an exact resume) and moves each batch to
  the device.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator, Mapping
from functools import wraps
from types import MethodType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from fulmen.data import apply_to_tensors, move_to_device
from fulmen.fabric.loader_state import LoaderProgress

if TYPE_CHECKING:
    from fulmen.precision import Precision
    from fulmen.strategies import Strategy

# The methods of a LightningModule that run through the wrapper without being marked (as Lightning).
_STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")

# True while `Fabric.backward` runs: under a GradScaler a bare `loss.backward()` would skip the
# loss scaling, so the outputs' hooks tell the user to call `fabric.backward(loss)` instead.
_in_fabric_backward = False


def _convert(data: Any, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return data
    return apply_to_tensors(data, lambda t: t.to(dtype) if torch.is_floating_point(t) else t)


def _input_dtype(precision: Precision) -> torch.dtype | None:
    """The dtype floating inputs take: the weights' under "*-true", autocast's under "*-mixed" (as Lightning)."""
    return precision.true_dtype or precision.autocast_dtype


def _backward_hook(grad: torch.Tensor) -> None:
    if not _in_fabric_backward:
        raise RuntimeError(
            "loss.backward() was called under precision='16-mixed', which scales the loss before backward. "
            "Received: a bare tensor.backward(). Fix: call fabric.backward(loss) instead."
        )


class _FabricOptimizer:
    """The user's optimizer, stepped through the precision (see the module doc)."""

    def __init__(self, optimizer: Optimizer, strategy: Strategy, precision: Precision,
                 callbacks: list[Any] | None = None) -> None:
        self._optimizer = optimizer
        self._strategy = strategy
        self._precision = precision
        self._callbacks = callbacks if callbacks is not None else []
        # An instance of the optimizer's own class too, so `isinstance(opt, torch.optim.Adam)` holds.
        self.__class__ = type("Fabric" + type(optimizer).__name__, (type(self), type(optimizer)), {})

    @property
    def optimizer(self) -> Optimizer:
        """The user's optimizer."""
        return self._optimizer

    def state_dict(self) -> dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        optimizer, precision = self._optimizer, self._precision
        scaler = precision.scaler
        if scaler is None:
            output = precision.optimizer_step(optimizer, closure, _no_hooks)
        else:
            # Not precision.optimizer_step: `clip_gradients` may already have unscaled the gradients,
            # and GradScaler.step unscales only when that has not happened yet.
            if closure is not None:
                closure()
            output = scaler.step(optimizer)
            scaler.update()
        for callback in self._callbacks:
            hook = getattr(callback, "on_after_optimizer_step", None)
            if callable(hook):
                hook(strategy=self._strategy, optimizer=optimizer)
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._optimizer, name)


def _no_hooks(optimizer: Optimizer) -> None:
    """Fabric runs no hooks between a closure and the step: the user's loop does that itself."""


class _FabricModule(nn.Module):
    """The user's module, called through the strategy's wrapper and the precision (see the module doc).

    `_forward_module` is what the strategy set up (a DistributedDataParallel, or the module itself
    on one device and under FSDP2); `_original_module` / `module` is the user's module.
    """

    def __init__(self, forward_module: nn.Module, strategy: Strategy, precision: Precision,
                 original_module: nn.Module | None = None) -> None:
        super().__init__()
        self._forward_module = forward_module
        self._original_module = forward_module if original_module is None else original_module
        self._strategy = strategy
        self._precision = precision
        self._forward_methods = set(_STEP_METHODS)
        # Decided once: under 32-true nothing wraps the call (no input cast, autocast or loss-scale guard).
        self._plain = _input_dtype(precision) is None and precision.autocast_dtype is None and precision.scaler is None
        self._fabric_module_initialized = True

    @property
    def module(self) -> nn.Module:
        """The user's module."""
        return self._original_module

    @property
    def device(self) -> torch.device:
        """Where the module's parameters are (the process's device once set up; as Lightning's wrapper)."""
        tensor = next(itertools.chain(self._original_module.parameters(), self._original_module.buffers()), None)
        return tensor.device if tensor is not None else self._strategy.root_device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the module's floating-point parameters (float64 under "64-true", ...)."""
        floating = (p for p in self._original_module.parameters() if p.is_floating_point())
        parameter = next(floating, None)
        return parameter.dtype if parameter is not None else torch.get_default_dtype()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._plain:
            return self._forward_module(*args, **kwargs)
        precision = self._precision
        dtype = _input_dtype(precision)
        if dtype is not None:
            args, kwargs = _convert((args, kwargs), dtype)
        with precision.forward_context():
            output = self._forward_module(*args, **kwargs)
        if dtype is not None:
            output = _convert(output, torch.get_default_dtype())
        if precision.scaler is not None:
            apply_to_tensors(output, _guard_backward)
        return output

    def state_dict(self, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        return self._original_module.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, **kwargs: Any) -> Any:
        return self._original_module.load_state_dict(state_dict, strict=strict, **kwargs)

    def mark_forward_method(self, method: MethodType | str) -> None:
        """Run `method` (a name or a bound method of the user's module) through the strategy's
        wrapper, as `forward` is: needed for any method other than forward that the loop calls
        and whose gradients DDP must sync (or whose parameters FSDP2 must unshard)."""
        if not isinstance(method, (MethodType, str)):
            raise TypeError(
                f"mark_forward_method takes a method or its name. Received: {type(method).__name__}. "
                "Fix: e.g. model.mark_forward_method('generate') or model.mark_forward_method(model.generate)."
            )
        name = method if isinstance(method, str) else method.__name__
        if name == "forward":
            raise ValueError(
                "forward already runs through the strategy's wrapper, so it cannot be marked as a forward method. "
                "Received: method='forward'. Fix: mark only other methods (e.g. 'generate')."
            )
        if not isinstance(getattr(self._original_module, name, None), MethodType):
            raise AttributeError(
                f"mark_forward_method was given a name that is not a method of {type(self._original_module).__name__}. "
                f"Received: method={name!r}. Fix: pass the name of a method the module defines."
            )
        self._forward_methods.add(name)

    def _redirects(self) -> bool:
        """Whether methods must go through the wrapper: a separate wrapper (DDP), or an FSDP2-sharded root,
        whose forward hooks unshard its parameters."""
        if self._forward_module is not self._original_module:
            return True
        if not self._strategy.distributed:
            return False
        from torch.distributed.fsdp import FSDPModule

        return isinstance(self._original_module, FSDPModule)

    def _through_forward(self, name: str) -> Callable[..., Any]:
        """`name` of the user's module, called through `self.forward` (precision, the strategy's wrapper)."""
        from fulmen.strategies.ddp import call_through

        module = self._original_module
        return lambda *args, **kwargs: call_through(self, module, getattr(module, name), *args, **kwargs)

    def _watch_outside_call(self, method: Callable[..., Any], name: str) -> Callable[..., Any]:
        """`method`, raising if it ran a submodule's forward outside the wrapper (DDP would not sync it)."""

        @wraps(method)
        def watched(*args: Any, **kwargs: Any) -> Any:
            called = []
            handles = [m.register_forward_hook(lambda *_: called.append(True)) for m in self._original_module.modules()]
            try:
                output = method(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
            if called:
                raise RuntimeError(
                    f"{type(self._original_module).__name__}.{name}() ran the model outside the strategy's wrapper, "
                    f"so its gradients would not be synchronised. Received: model.{name}(...). "
                    f"Fix: call model.mark_forward_method({name!r}) after fabric.setup()."
                )
            return output

        return watched

    def __getattr__(self, name: str) -> Any:
        if name != "_forward_methods" and name in self._forward_methods and self._redirects():
            return self._through_forward(name)
        try:
            return super().__getattr__(name)  # the wrapper's own submodules and parameters
        except AttributeError:
            original = super().__getattr__("_original_module")
            attr = getattr(original, name)
            if inspect.ismethod(attr) and self._forward_module is not original:
                attr = self._watch_outside_call(attr, name)
            return attr

    def __setattr__(self, name: str, value: Any) -> None:
        if not getattr(self, "_fabric_module_initialized", False):
            super().__setattr__(name, value)
            return
        # Attributes the user's module has (or that neither has) are set on it; the wrapper's own on the wrapper.
        original = self._original_module
        on_original, on_wrapper = hasattr(original, name), name in dir(self)
        if on_original or not on_wrapper:
            setattr(original, name, value)
        if on_wrapper:
            super().__setattr__(name, value)


def _guard_backward(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.requires_grad:
        tensor.register_hook(_backward_hook)
    return tensor


class _FabricDataLoader:
    """A DataLoader whose batches arrive on `device`, one epoch per `iter()` (see the module doc)."""

    def __init__(self, dataloader: Any, device: torch.device | None = None) -> None:
        self.dataloader = dataloader
        self._device = device
        self._progress = LoaderProgress(dataloader)

    @property
    def _dataloader(self) -> Any:  # Lightning's name for the wrapped loader
        return self.dataloader

    @property
    def device(self) -> torch.device | None:
        """Where batches are moved (None: left where the loader puts them)."""
        return self._device

    def __len__(self) -> int:
        return len(self.dataloader)

    def __iter__(self) -> Iterator[Any]:
        device = self._device
        if device is None or device.type == "cpu":  # a CPU batch is where it goes (as the Trainer's loop)
            yield from self._progress.iterate()
            return
        for batch in self._progress.iterate():
            yield move_to_device(batch, device)

    def state_dict(self) -> dict[str, Any]:
        """Where the iteration stands (epoch, batches, random state): put it in `fabric.save`'s state."""
        return self._progress.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the iteration where `state_dict()` was taken."""
        self._progress.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataloader", "_progress", "_device"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataloader, name)


_WRAPPERS = (_FabricModule, _FabricOptimizer, _FabricDataLoader)


def _unwrap_compiled(obj: Any) -> Any:
    inner = getattr(obj, "_orig_mod", None)
    return inner if isinstance(obj, nn.Module) and isinstance(inner, nn.Module) else obj


def is_wrapped(obj: object) -> bool:
    """Whether `obj` came from `Fabric.setup*` (also through `torch.compile`).

    >>> is_wrapped(torch.nn.Linear(1, 1))
    False
    """
    return isinstance(_unwrap_compiled(obj), _WRAPPERS)


def _unwrap(obj: Any) -> Any:
    obj = _unwrap_compiled(obj)
    if isinstance(obj, _FabricModule):
        return _unwrap_compiled(obj._forward_module)
    if isinstance(obj, _FabricOptimizer):
        return obj.optimizer
    if isinstance(obj, _FabricDataLoader):
        return obj.dataloader
    return obj


def _unwrap_objects(collection: Any) -> Any:
    """`collection` (an object, or dicts/lists/tuples of them) with each Fabric wrapper replaced by what
    it wraps: a module by what the strategy set up (DDP, the sharded module), an optimizer by the
    user's, a dataloader by the DataLoader."""
    if isinstance(collection, Mapping):
        return {key: _unwrap_objects(value) for key, value in collection.items()}
    if isinstance(collection, (list, tuple)) and not hasattr(collection, "_fields"):
        return type(collection)(_unwrap_objects(value) for value in collection)
    return _unwrap(collection)
