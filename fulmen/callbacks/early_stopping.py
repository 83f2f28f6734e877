"""EarlyStopping: stop training when a monitored metric stops improving, and `EarlyStoppingReason`, why it did."""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

import torch

from fulmen.callbacks.monitor import MonitorCallback
from fulmen.errors import MisconfigurationException
from fulmen.utilities.rank_zero import rank_prefixed_message

# `verbose` messages go here (Lightning's module logger name `log`; code patches `...early_stopping.log`).
# Shown at INFO when the program configured no logging of its own, as fulmen's rank_zero_info is.
log = logging.getLogger(__name__)
log.setLevel(logging.INFO)
if not logging.getLogger().hasHandlers():
    log.addHandler(logging.StreamHandler())
    log.propagate = False


class EarlyStoppingReason(Enum):
    """Which rule stopped training (`EarlyStopping.stopping_reason`); the values are Lightning's, as
    stored in its checkpoints."""

    NOT_STOPPED = 0
    STOPPING_THRESHOLD = 1
    DIVERGENCE_THRESHOLD = 2
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping(MonitorCallback):
    """Set `trainer.should_stop` once `monitor` has not improved by `min_delta` for `patience` checks.

    Checks run at the end of each training epoch (after its validation), or after each validation
    run when validation happens more or less often than once per epoch. Once it stops training,
    `stopping_reason` (an `EarlyStoppingReason`) says which rule fired and `stopping_reason_message`
    says it in words; both are saved in checkpoints.

    Example:
        >>> EarlyStopping(monitor="val_loss", patience=3, mode="min")  # doctest: +ELLIPSIS
        <...EarlyStopping object at ...>
    """

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ):
        super().__init__(monitor, mode, strict)
        if monitor is None:
            raise MisconfigurationException(
                "EarlyStopping needs a metric to watch. Received: monitor=None. Fix: EarlyStopping(monitor='val_loss')."
            )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise MisconfigurationException(
                f"EarlyStopping: `patience` must be an int >= 0. Received: patience={patience!r}. Fix: e.g. patience=3."
            )
        if not isinstance(min_delta, (int, float)) or isinstance(min_delta, bool):
            raise MisconfigurationException(
                f"EarlyStopping: `min_delta` must be a number. Received: min_delta={min_delta!r}. Fix: e.g. min_delta=0.001."
            )
        for name, value in (("stopping_threshold", stopping_threshold), ("divergence_threshold", divergence_threshold)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise MisconfigurationException(
                    f"EarlyStopping: `{name}` must be a number or None. Received: {name}={value!r}. "
                    f"Fix: e.g. {name}=0.01."
                )
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.verbose = verbose
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.log_rank_zero_only = log_rank_zero_only
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = self.worst_value
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._check_on_train_epoch_end is None:
            # Validation runs just before the end of every epoch: check there, after it.
            self._check_on_train_epoch_end = trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1

    def _should_skip(self, trainer: Any) -> bool:
        return bool(trainer.fast_dev_run) or trainer.sanity_checking or trainer.state.fn != "fit"

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._check_on_train_epoch_end and not self._should_skip(trainer):
            self._run_early_stopping_check(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._check_on_train_epoch_end and not self._should_skip(trainer):
            self._run_early_stopping_check(trainer)

    # The check and the rules keep Lightning's method names: subclasses and tests override or patch them.
    def _run_early_stopping_check(self, trainer: Any) -> None:
        current = self.monitored_value(trainer)
        if current is None:
            return
        should_stop, reason = self._evaluate_stopping_criteria(current)
        # As in Lightning: with several processes, one rank's decision to stop is everyone's.
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
        if reason and self.verbose:
            self._log_info(trainer, reason, self.log_rank_zero_only)

    def _stop_summary(self) -> str | None:
        """Why this callback stopped training, for the line fit prints at its end (None: it did not)."""
        if self.stopping_reason == EarlyStoppingReason.NOT_STOPPED:
            return None
        where = f"EarlyStopping stopped at epoch {self.stopped_epoch}"
        if self.stopping_reason != EarlyStoppingReason.PATIENCE_EXHAUSTED:
            return f"{where}: {self.stopping_reason_message}"
        # Checked once per epoch (the default), the patience counts epochs; else validation runs.
        unit = "epochs" if self._check_on_train_epoch_end else "validation checks"
        return (f"{where}: {self.monitor} did not improve for {self.wait_count} {unit} "
                f"(best {self.best_score.item():.4g}, patience={self.patience}).")

    @staticmethod
    def _log_info(trainer: Any, message: str, log_rank_zero_only: bool) -> None:
        """Log `message` at INFO, prefixed with the rank when several processes run; with
        `log_rank_zero_only`, only rank 0 logs it."""
        rank = trainer.global_rank if trainer.world_size > 1 else None
        if rank is None or not log_rank_zero_only or rank == 0:
            log.info(rank_prefixed_message(message, rank))

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        name = self.monitor
        if self.check_finite and not torch.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            return True, (
                f"Monitored metric {name} = {current.item()} is not finite. "
                f"Previous best value was {self.best_score.item():.3f}. Signaling Trainer to stop."
            )
        if self.stopping_threshold is not None and self.better(current, torch.tensor(float(self.stopping_threshold))):
            self.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD
            return True, (
                f"Stopping threshold reached: {name} = {current.item()} "
                f"{'<' if self.mode == 'min' else '>'} {self.stopping_threshold}. Signaling Trainer to stop."
            )
        if self.divergence_threshold is not None and self.better(
            torch.tensor(float(self.divergence_threshold)), current
        ):
            self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
            return True, (
                f"Divergence threshold reached: {name} = {current.item()} "
                f"{'>' if self.mode == 'min' else '<'} {self.divergence_threshold}. Signaling Trainer to stop."
            )
        delta = -self.min_delta if self.mode == "min" else self.min_delta
        if self.better(current - delta, self.best_score.to(current)):
            previous = self.best_score
            self.best_score, self.wait_count = current, 0
            if torch.isfinite(previous):
                return False, f"Metric {name} improved by {abs(previous - current).item():.3f} >= min_delta = " \
                              f"{self.min_delta}. New best score: {current.item():.3f}"
            return False, f"Metric {name} improved. New best score: {current.item():.3f}"
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            return True, (
                f"Monitored metric {name} did not improve in the last {self.wait_count} records. "
                f"Best score: {self.best_score.item():.3f}. Signaling Trainer to stop."
            )
        return False, None

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = state_dict["wait_count"]
        self.stopped_epoch = state_dict["stopped_epoch"]
        self.best_score = torch.as_tensor(state_dict["best_score"], dtype=torch.float64)
        self.patience = state_dict["patience"]
        # Checkpoints from before Lightning 2.6 (and fulmen's older ones) have no reason: not stopped.
        self.stopping_reason = EarlyStoppingReason(state_dict.get("stopping_reason", 0))
        self.stopping_reason_message = state_dict.get("stopping_reason_message")
