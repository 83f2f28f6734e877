"""How the Trainer records profiler actions, at no cost when no profiler is set.

Everything is decided once when a run is set up: with `Trainer(profiler=None)` the Trainer keeps
the plain `HookDispatch` and the loops call their functions directly, so a batch pays nothing
(not even a `with` per hook). With a profiler, `instrument` swaps in:

* `ProfiledHookDispatch`: each callback hook runs as "[Callback]{Class}.{hook}" and each module
  hook as "[LightningModule]{Class}.{hook}";
* wrappers set on the module instance (removed by `uninstrument`) for the step methods:
  "[LightningModule]{Class}.training_step", ".validation_step", ".test_step", ".predict_step",
  ".optimizer_step", ".optimizer_zero_grad", ".backward" (callers reach them as attributes, so
  this needs no check in the loops);
* a profiled run takes the same training step as an unprofiled one. The plain step (nothing
  between training_step and the optimizer step customised, see `HookDispatch.plain_step`) calls
  the torch optimizer's zero_grad and step and the module's backward hook itself, so those are
  what is timed as ".optimizer_zero_grad", ".optimizer_step" (there: the update alone, without
  the training_step that a customised optimizer_step's closure runs inside it) and ".backward";
* `loop.py` asks `timed(trainer, name, fn)` once per epoch for "run_training_epoch",
  "run_training_batch" and "[_TrainingEpochLoop].train_dataloader_next" (Lightning's names).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

from fulmen.hooks import HookDispatch

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.profilers.profiler import Profiler
    from fulmen.trainer import Trainer

_MODULE_METHODS = (
    "training_step", "validation_step", "test_step", "predict_step", "optimizer_step", "optimizer_zero_grad",
    "backward", "configure_gradient_clipping",
)


def _wrap(profiler: Profiler, action: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with profiler.profile(action):
            return fn(*args, **kwargs)

    wrapper.__self__ = getattr(fn, "__self__", None)  # HookDispatch looks at the callback a hook belongs to
    return wrapper


class ProfiledHookDispatch(HookDispatch):
    """`HookDispatch` with every hook call recorded as a profiler action. The same step body runs
    as without a profiler: only the callables it calls are timed ones."""

    def __init__(self, trainer: Trainer, module: LightningModule, callbacks: list[Any], profiler: Profiler):
        super().__init__(trainer, module, callbacks)
        self.profiler = profiler

        def callback_action(hook: Any, name: str) -> Callable[..., Any]:
            return _wrap(profiler, f"[Callback]{type(hook.__self__).__name__}.{name}", hook)

        self._callbacks = {name: tuple(callback_action(h, name) for h in hooks) for name, hooks in self._callbacks.items()}
        self._epoch_end_plain = tuple(callback_action(h, "on_train_epoch_end") for h in self._epoch_end_plain)
        self._epoch_end_monitors = tuple(callback_action(h, "on_train_epoch_end") for h in self._epoch_end_monitors)
        module_name = type(module).__name__
        self._module_hooks = {
            name: _wrap(profiler, f"[LightningModule]{module_name}.{name}", hook) for name, hook in self._module_hooks.items()
        }
        if self.plain_step:  # the plain step calls the module's default backward hook (timed by `instrument`)
            self.backward = module.backward


def instrument(trainer: Trainer, module: LightningModule, callbacks: list[Any], profiler: Profiler) -> HookDispatch:
    """Set up `profiler` for this run and return the dispatch to use (see the module docstring)."""
    name = type(module).__name__
    patched = {}
    for method in _MODULE_METHODS:
        if method in vars(module):  # already wrapped (a run that did not tear down): keep one layer
            continue
        bound = getattr(module, method, None)
        if bound is not None:
            patched[method] = _wrap(profiler, f"[LightningModule]{name}.{method}", bound)
    for method, wrapper in patched.items():
        object.__setattr__(module, method, wrapper)  # an instance attribute shadows the class method
    module.__dict__["_fulmen_profiled"] = tuple(patched)
    dispatch = ProfiledHookDispatch(trainer, module, callbacks, profiler)
    if dispatch.plain_step:
        # The plain step calls the torch optimizer's zero_grad and step itself (all that the default
        # optimizer_zero_grad and optimizer_step do): those calls are timed under the hooks' names.
        optimizer = trainer._optimizers[0].optimizer
        saved = {}
        for method, hook in (("zero_grad", "optimizer_zero_grad"), ("step", "optimizer_step")):
            saved[method] = optimizer.__dict__.get(method, _ABSENT)  # e.g. an LR scheduler's step counter
            optimizer.__dict__[method] = _wrap(profiler, f"[LightningModule]{name}.{hook}", getattr(optimizer, method))
        module.__dict__["_fulmen_profiled_optimizer"] = (optimizer, saved)
    return dispatch


_ABSENT = object()


def uninstrument(module: LightningModule | None) -> None:
    """Remove what `instrument` set on the module (and on the optimizer of a plain step)."""
    if module is None:
        return
    for method in module.__dict__.pop("_fulmen_profiled", ()):
        module.__dict__.pop(method, None)
    optimizer, saved = module.__dict__.pop("_fulmen_profiled_optimizer", (None, {}))
    for method, previous in saved.items():
        if previous is _ABSENT:
            optimizer.__dict__.pop(method, None)
        else:
            optimizer.__dict__[method] = previous


def timed(trainer: Trainer, action: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, recorded as `action` when the run has a profiler; `fn` itself otherwise."""
    profiler = trainer._profiler
    return fn if profiler is None else _wrap(profiler, action, fn)


def timed_batches(trainer: Trainer, batches: Iterator[Any]) -> Iterator[Any]:
    """`batches`, each `next` recorded as "[_TrainingEpochLoop].train_dataloader_next" when profiling."""
    profiler = trainer._profiler
    if profiler is None:
        return batches
    return _TimedIterator(profiler, "[_TrainingEpochLoop].train_dataloader_next", batches)


class _TimedIterator:
    __slots__ = ("profiler", "action", "inner")

    def __init__(self, profiler: Profiler, action: str, inner: Iterator[Any]):
        self.profiler, self.action, self.inner = profiler, action, iter(inner)

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        with self.profiler.profile(self.action):
            return next(self.inner)


def finish_profiling(trainer: Trainer) -> None:
    """After a run (also a failed one): un-wrap the module, then write the profiler's report."""
    uninstrument(trainer.lightning_module)
    trainer._profiler.describe()
