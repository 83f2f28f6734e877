"""What EarlyStopping and ModelCheckpoint share: a monitored metric, a mode, and reading the
metric's current value from `trainer.callback_metrics`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException, warn_once


class MonitorCallback(Callback):
    """Base for callbacks that watch one logged metric, minimised or maximised."""

    def __init__(self, monitor: str | None, mode: str, strict: bool = True):
        if mode not in ("min", "max"):
            raise MisconfigurationException(
                f"{type(self).__name__}: `mode` must be 'min' or 'max'. Received: mode={mode!r}. "
                "Fix: mode='min' for losses, mode='max' for accuracies."
            )
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise MisconfigurationException(
                f"{type(self).__name__}: `monitor` must be the name of a logged metric. Received: monitor={monitor!r}. "
                "Fix: e.g. monitor='val_loss' (self.log('val_loss', loss) in validation_step)."
            )
        self.monitor = monitor
        self.mode = mode
        self.strict = strict

    def better(self, current: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Whether `current` is strictly better than `reference` under `mode`."""
        return torch.lt(current, reference) if self.mode == "min" else torch.gt(current, reference)

    @property
    def worst_value(self) -> torch.Tensor:
        return torch.tensor(float("inf") if self.mode == "min" else float("-inf"))

    def monitored_value(self, trainer: Any) -> torch.Tensor | None:
        """The monitored metric now (a float64 CPU scalar), or None when it is missing and not strict."""
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            message = (
                f"{type(self).__name__} monitors {self.monitor!r}, which was not logged. "
                f"Received: monitor={self.monitor!r}; logged metrics: {sorted(metrics)}. "
                "Fix: self.log that name, or monitor one of the logged metrics"
            )
            if self.strict:
                # Only callbacks that take `strict` (EarlyStopping) can be told to skip instead.
                takes_strict = "strict" in inspect.signature(type(self)).parameters
                raise MisconfigurationException(message + (", or pass strict=False to skip when it is missing."
                                                           if takes_strict else "."))
            warn_once(message + ".")
            return None
        value = metrics[self.monitor]
        # One host sync per check (an epoch end), never per step.
        return torch.as_tensor(value).detach().to("cpu", torch.float64).reshape(())
