"""`SpikeDetection`: stop training when the loss jumps away from its running mean (Lightning 2.6 semantics).

After each training batch, from batch index `warmup` on, the loss is compared with the mean of the
last `window` accepted losses. It is a spike when it is not an improvement on the previous loss
(higher for mode "min", lower for "max") and differs from the running mean by at least `atol` (when
given) and by at least `rtol * mean` (when given); with `finite_only`, a NaN or infinite loss is
always a spike. On a spike the indices of this batch and the one before are written to a JSON file
(`exclude_batches_path`, default `<default_root_dir>/skip_batches.json`) and `TrainingSpikeException`
is raised; with `warn_only=True` (fulmen's own option) a warning is given instead and training goes on.
Losses that are not spikes enter the running mean.

Each check reads the loss on the host: one device sync per batch while this callback is active.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class TrainingSpikeException(RuntimeError):
    """Raised by SpikeDetection when the loss spikes."""

    def __init__(self, batch_idx: int, *args: Any) -> None:
        super().__init__(f"Training spike detected in batch {batch_idx}", *args)
        self.batch_idx = batch_idx


class SpikeDetection(Callback):
    """Detect loss spikes.

    Args:
        mode: "min" (a loss) or "max" (a score).
        window: how many recent values the running mean covers.
        warmup: the first batch index that is checked.
        atol: absolute tolerance around the running mean (None: not checked).
        rtol: relative tolerance, as a multiple of the running mean (None: not checked).
        exclude_batches_path: the JSON file (or its directory) listing batches to skip on a rerun.
        finite_only: treat NaN/inf losses as spikes.
        warn_only: warn instead of raising (fulmen's addition).

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[SpikeDetection(window=10, rtol=2.0)])
    """

    def __init__(self, mode: str = "min", window: int = 10, warmup: int = 1, atol: float | None = None,
                 rtol: float | None = 2.0, exclude_batches_path: str | os.PathLike | None = None,
                 finite_only: bool = True, warn_only: bool = False) -> None:
        if mode not in ("min", "max"):
            raise MisconfigurationException(f"SpikeDetection mode must be 'min' or 'max'. Received: mode={mode!r}.")
        if window < 1:
            raise MisconfigurationException(f"SpikeDetection needs window >= 1. Received: window={window!r}.")
        self.mode, self.window, self.warmup = mode, window, warmup
        self.atol, self.rtol = atol, rtol
        self.exclude_batches_path = None if exclude_batches_path is None else os.fspath(exclude_batches_path)
        self.finite_only = finite_only
        self.warn_only = warn_only
        self.last_val: float = 0.0
        self.running: deque[float] = deque(maxlen=window)
        self.bad_batches: list[int] = []

    @property
    def running_mean(self) -> float:
        return sum(self.running) / len(self.running) if self.running else float("nan")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if isinstance(outputs, torch.Tensor):
            loss = outputs
        elif isinstance(outputs, Mapping) and "loss" in outputs:
            loss = outputs["loss"]
        else:
            raise TypeError(
                "SpikeDetection reads the loss from training_step's output. Received: "
                f"{type(outputs).__name__}. Fix: return the loss tensor or a dict with 'loss'."
            )
        value = float(loss.detach().float().mean())
        if batch_idx >= self.warmup and self._is_spike(value):
            self._handle_spike(trainer, batch_idx)
        elif self.finite_only or math.isfinite(value):
            self.running.append(value)
            self.last_val = value

    def _is_spike(self, value: float) -> bool:
        if self.finite_only and not math.isfinite(value):
            return True
        diff = value - self.last_val
        if (diff <= 0) if self.mode == "min" else (diff >= 0):
            return False  # an improvement is never a spike
        mean = self.running_mean
        if mean != mean:  # nothing accepted yet
            return False
        atol_ok = self.atol is None or abs(value - mean) >= abs(self.atol)
        rtol_ok = self.rtol is None or abs(value - mean) >= abs(self.rtol * mean)
        return atol_ok and rtol_ok

    def _handle_spike(self, trainer: Trainer, batch_idx: int) -> None:
        self.bad_batches.extend([batch_idx - 1, batch_idx])
        path = self.exclude_batches_path or trainer.default_root_dir
        if not str(path).endswith(".json"):
            path = os.path.join(path, "skip_batches.json")
        self.exclude_batches_path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.bad_batches, f, indent=4)
        if self.warn_only:
            warnings.warn(f"Training spike detected in batch {batch_idx} (written to {path}).", stacklevel=2)
            return
        raise TrainingSpikeException(batch_idx=batch_idx)

    def state_dict(self) -> dict[str, Any]:
        return {"last_val": self.last_val, "mode": self.mode, "warmup": self.warmup, "atol": self.atol,
                "rtol": self.rtol, "bad_batches": list(self.bad_batches), "bad_batches_path": self.exclude_batches_path,
                "running": list(self.running)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_val = state_dict["last_val"]
        self.mode, self.warmup = state_dict["mode"], state_dict["warmup"]
        self.atol, self.rtol = state_dict["atol"], state_dict["rtol"]
        self.bad_batches = list(state_dict["bad_batches"])
        self.exclude_batches_path = state_dict["bad_batches_path"]
        self.running = deque(state_dict["running"], maxlen=self.window)
