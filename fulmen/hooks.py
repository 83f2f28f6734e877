"""Hook dispatch: which callbacks and module methods run for each event, decided once.

At setup the Trainer builds a `HookDispatch`. It looks up, for every callback event, the
callbacks that override it, so an event that nobody overrides is a loop over an empty tuple.
Module hooks with a no-op default are skipped the same way. An unknown hook name raises
`KeyError` instead of being silently ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fulmen.callbacks.callback import CALLBACK_HOOKS, Callback
from fulmen.callbacks.monitor import MonitorCallback
from fulmen.precision import calls_closure_once

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

# What a customised training step may override; none of them overridden → the plain step.
_STEP_HOOKS = (
    "optimizer_step", "optimizer_zero_grad", "backward", "configure_gradient_clipping", "on_before_zero_grad",
    "on_before_backward", "on_after_backward", "on_before_optimizer_step",
)


def is_overridden(name: str, instance: object, parent: type) -> bool:
    """True when `instance`'s class defines `name` differently from `parent`. A hook set to None on
    the instance (`model.validation_step = None`, Lightning's way to switch a step off) is not."""
    if getattr(instance, "__dict__", {}).get(name, 0) is None:
        return False
    method = getattr(type(instance), name, None)
    return method is not None and method is not getattr(parent, name, None)


class HookDispatch:
    """Calls callback and module hooks in Lightning's order: callbacks first, then the module."""

    def __init__(self, trainer: Trainer, module: LightningModule, callbacks: list[Callback]):
        from fulmen.module import LightningModule

        self.trainer = trainer
        self.module = module
        self._callbacks = {
            name: tuple(getattr(cb, name) for cb in callbacks if is_overridden(name, cb, Callback))
            for name in CALLBACK_HOOKS
        }
        # on_train_epoch_end is split: plain callbacks, then the module, then the monitors
        # (checkpointing, early stopping), which act on the epoch-end metrics the module logged.
        ends = self._callbacks["on_train_epoch_end"]
        self._epoch_end_plain = tuple(f for f in ends if not isinstance(f.__self__, MonitorCallback))
        self._epoch_end_monitors = tuple(f for f in ends if isinstance(f.__self__, MonitorCallback))
        self._module_overrides = {
            # dir(): the hooks' defaults live in LightningModule's bases (fulmen.module_hooks).
            name for name in dir(LightningModule) if is_overridden(name, module, LightningModule)
        }
        # The module's overridden hooks among the callback events, looked up once (a profiled
        # dispatch replaces them with timed ones).
        self._module_hooks = {name: getattr(module, name) for name in CALLBACK_HOOKS if name in self._module_overrides}
        # Whether anyone overrides the per-batch hooks. Training-step outputs are built only when
        # someone may read them in on_train_batch_end.
        self.has_train_batch_start = self.overridden("on_train_batch_start")
        self.has_train_batch_end = self.overridden("on_train_batch_end")
        self.automatic_optimization = module.automatic_optimization
        # Nothing between training_step and the optimizer step customised: the automatic step
        # calls what the default hooks would call, as a hand-written loop does (fulmen.loop.run_train_batch).
        self.plain_step = (
            self.automatic_optimization
            and len(trainer._optimizers) == 1
            and trainer._precision.scaler is None
            and not trainer.gradient_clip_val
            and calls_closure_once(type(trainer._optimizers[0].optimizer))
            and not any(self.overridden(name) for name in _STEP_HOOKS)
        )

        # The automatic step's backward, decided once: with a plain step, torch's own (all that the
        # module's default backward hook does; a profiled dispatch calls that hook, to time it),
        # else the Trainer's, with on_before_backward, the GradScaler and on_after_backward.
        self.backward = torch.Tensor.backward if self.plain_step else trainer._backward

    def overridden(self, name: str) -> bool:
        """Whether any callback or the module overrides hook `name`."""
        return bool(self._callbacks.get(name)) or name in self._module_overrides

    def module_overrides(self, name: str) -> bool:
        return name in self._module_overrides

    def callbacks(self, name: str, *args: Any) -> None:
        for hook in self._callbacks[name]:
            hook(self.trainer, self.module, *args)

    def callbacks_then_module(self, name: str, *args: Any) -> None:
        """Lightning's order for most events: every callback's `name`, then the module's `name`
        (when it is overridden)."""
        for hook in self._callbacks[name]:
            hook(self.trainer, self.module, *args)
        if name in self._module_hooks:
            self._module_hooks[name](*args)

    def train_epoch_end(self) -> None:
        """on_train_epoch_end of the callbacks that are not monitors, then the module's."""
        for hook in self._epoch_end_plain:
            hook(self.trainer, self.module)
        if "on_train_epoch_end" in self._module_hooks:
            self._module_hooks["on_train_epoch_end"]()

    def train_epoch_end_monitors(self) -> None:
        """on_train_epoch_end of ModelCheckpoint, EarlyStopping (any `MonitorCallback`), after the module's."""
        for hook in self._epoch_end_monitors:
            hook(self.trainer, self.module)
