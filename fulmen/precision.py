"""Numeric precision: 32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true.

"*-mixed" keeps float32 weights and runs the forward under `torch.autocast`; "16-mixed" also
scales the loss with a GradScaler so small float16 gradients do not flush to zero.
"*-true" converts the weights (and floating inputs) to that dtype.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from fulmen.data import apply_to_tensors
from fulmen.errors import MisconfigurationException

_ALIASES = {
    "32": "32-true", "32-true": "32-true", "64": "64-true", "64-true": "64-true",
    "16": "16-mixed", "16-mixed": "16-mixed", "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed",
    "16-true": "16-true", "bf16-true": "bf16-true",
}
_NO_CONTEXT = contextlib.nullcontext()  # reusable: one object instead of one per step
_TRUE_DTYPES = {"64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}
_MIXED_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


@functools.lru_cache(maxsize=None)
def calls_closure_once(cls: type) -> bool:
    """torch's built-in optimizers, except LBFGS, call a closure exactly once, before updating."""
    return cls.__module__.startswith("torch.optim.") and not issubclass(cls, torch.optim.LBFGS)


def parse_precision(value: Any) -> str:
    key = str(value) if value is not None else "32"
    if key not in _ALIASES:
        raise MisconfigurationException(
            f"Unknown precision. Received: precision={value!r}. "
            f"Fix: use one of {sorted(set(_ALIASES.values()))} (or 32, 64, 16, 'bf16')."
        )
    return _ALIASES[key]


class Precision:
    """Runs forward, backward and the optimizer step in the chosen precision."""

    def __init__(self, precision: str, device: torch.device):
        self.precision = precision
        self.device = device
        self.true_dtype = _TRUE_DTYPES.get(precision)
        self.autocast_dtype = _MIXED_DTYPES.get(precision)
        self.scaler: torch.amp.GradScaler | None = None
        if precision == "16-mixed":
            self.scaler = torch.amp.GradScaler(device.type)

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(dtype=self.true_dtype) if self.true_dtype is not None else module

    def convert_input(self, batch: Any) -> Any:
        """Cast floating tensors of the batch to the weights' dtype under "*-true"."""
        if self.true_dtype is None:
            return batch
        dtype = self.true_dtype
        return apply_to_tensors(batch, lambda t: t.to(dtype) if torch.is_floating_point(t) else t)

    def in_forward_context(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """`step` (the training step) run inside `forward_context`; `step` itself when that is a no-op."""
        if self.autocast_dtype is None:
            return step

        def autocast_step(*args: Any) -> Any:
            with self.forward_context():
                return step(*args)

        return autocast_step

    def forward_context(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.autocast_dtype)
        return _NO_CONTEXT

    def optimizer_step(
        self, optimizer: Optimizer, closure: Callable[[], Any] | None,
        after_closure: Callable[[Optimizer], None], **kwargs: Any,
    ) -> Any:
        """Run `closure` (forward + backward), then `after_closure` (hooks, clipping), then step.

        torch's own optimizers (all but LBFGS) call a closure once, before they update, so the
        closure is called here and the optimizer steps without one: the same update, without the
        closure plumbing (nested grad-mode switches) on every step. Other optimizers (LBFGS, those
        of other packages) call the closure themselves, as often as they need, each call followed
        by the hooks; a GradScaler cannot scale such a step.
        """
        scaler = self.scaler
        if scaler is None and closure is not None and not calls_closure_once(type(optimizer)):

            def closure_then_hooks() -> Any:
                result = closure() if closure is not None else None
                after_closure(optimizer)
                return result

            return optimizer.step(closure=closure_then_hooks, **kwargs)
        if scaler is not None and isinstance(optimizer, torch.optim.LBFGS):
            raise MisconfigurationException(
                "LBFGS re-evaluates the closure inside step, which GradScaler cannot scale. "
                "Received: precision='16-mixed' with LBFGS. Fix: use precision='32-true' or 'bf16-mixed'."
            )
        result = closure() if closure is not None else None
        if scaler is None:
            after_closure(optimizer)
            output = optimizer.step(**kwargs)  # without a closure (backward already ran): the raw loop's call
            return output if closure is None else result
        scaler.unscale_(optimizer)  # so that clipping and the hooks see the true gradient values
        after_closure(optimizer)
        output = scaler.step(optimizer, **kwargs)
        scaler.update()
        return output

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
