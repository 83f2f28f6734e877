"""`Timer`: track the time spent in training, validation and testing, and stop training at a duration.

The time limit is checked after each training batch (`interval="step"`) or epoch ("epoch"); when it
is reached, `trainer.should_stop` is set and the loop ends after the batch, as for EarlyStopping.
Elapsed training time is stored in checkpoints, so a resumed run counts the time already spent.
The clock is `time.monotonic` (through `_now`, which tests replace with a fake clock).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from fulmen.arguments import parse_max_time
from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException
from fulmen.state import RunningStage
from fulmen.utilities.enums import LightningEnum

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class Interval(LightningEnum):
    """How often Timer checks its limit: after each training batch, or each epoch. Members equal
    their strings, so `Timer(interval=Interval.epoch)` and `Timer(interval="epoch")` are one."""

    step = "step"
    epoch = "epoch"


def _now() -> float:
    return time.monotonic()


class Timer(Callback):
    """Time the stages and stop training once `duration` is reached.

    Args:
        duration: "DD:HH:MM:SS", a `datetime.timedelta`, or a dict of timedelta keywords; None only times.
        interval: check the limit after every "step" (training batch) or every "epoch".
        verbose: print a line when the limit stops training.

    Example:
        >>> import fulmen as pl
        >>> timer = Timer(duration="00:12:00:00")           # 12 hours
        >>> trainer = pl.Trainer(callbacks=[timer])
        >>> # after fit: timer.time_elapsed("train"), timer.time_elapsed("validate")
    """

    def __init__(self, duration: str | dt.timedelta | dict[str, int] | None = None, interval: str = Interval.step,
                 verbose: bool = True) -> None:
        if interval not in list(Interval):
            raise MisconfigurationException(
                f"Timer got an unknown interval. Received: interval={interval!r}. Fix: use 'step' or 'epoch'."
            )
        self._duration = parse_max_time(duration, "duration")
        self._interval = next(i for i in Interval if i == interval)  # "STEP" is Interval.step too
        self._verbose = verbose
        self._start_time: dict[RunningStage, float | None] = dict.fromkeys(RunningStage)
        self._end_time: dict[RunningStage, float | None] = dict.fromkeys(RunningStage)
        self._offset = 0.0  # training time from a checkpoint's earlier run

    def start_time(self, stage: str = RunningStage.TRAINING) -> float | None:
        """When `stage` ("train", "validate", "test", ...) last started, in `time.monotonic` seconds."""
        return self._start_time[RunningStage(stage)]

    def end_time(self, stage: str = RunningStage.TRAINING) -> float | None:
        return self._end_time[RunningStage(stage)]

    def time_elapsed(self, stage: str = RunningStage.TRAINING) -> float:
        """Seconds spent in `stage` (its latest run; training includes a resumed run's earlier time)."""
        stage = RunningStage(stage)
        start, end = self._start_time[stage], self._end_time[stage]
        offset = self._offset if stage == RunningStage.TRAINING else 0.0
        if start is None:
            return offset
        return (_now() if end is None else end) - start + offset

    def time_remaining(self, stage: str = RunningStage.TRAINING) -> float | None:
        """Seconds left of `duration` (None without a duration)."""
        return None if self._duration is None else self._duration - self.time_elapsed(stage)

    # --- stage boundaries --------------------------------------------------------------------
    def _start(self, stage: RunningStage) -> None:
        self._start_time[stage], self._end_time[stage] = _now(), None

    def _end(self, stage: RunningStage) -> None:
        self._end_time[stage] = _now()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(RunningStage.TRAINING)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(RunningStage.TRAINING)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(RunningStage.VALIDATING)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(RunningStage.VALIDATING)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(RunningStage.TESTING)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(RunningStage.TESTING)

    # --- the limit -----------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._duration is not None:
            self._check_time_remaining(trainer)  # a resumed run may already be out of time

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._interval is Interval.step and self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._interval is Interval.epoch and self._duration is not None:
            self._check_time_remaining(trainer)

    def _check_time_remaining(self, trainer: Trainer) -> None:
        assert self._duration is not None
        if self.time_elapsed() >= self._duration:
            trainer.should_stop = True
            if self._verbose:
                elapsed = dt.timedelta(seconds=int(self.time_elapsed()))
                print(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage.value: self.time_elapsed(stage) for stage in RunningStage}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = state_dict.get("time_elapsed", {}).get(RunningStage.TRAINING.value, 0.0)
