"""Read-only views of where a run stands, shaped like Lightning's loop objects.

Real callbacks read `trainer.fit_loop.epoch_progress.current.completed`,
`trainer.fit_loop.epoch_loop.batch_idx`, `trainer.fit_loop.total_batch_idx` and the like.
fulmen's loops are plain functions with one `TrainerState` (fulmen/state.py); these views
compute Lightning's numbers from it on each read, so there is no second state to keep in step.

What each counter means (Lightning's progress trackers): `ready` and `started` count the items
begun, `processed` those whose step ran, `completed` those whose end hooks are done. So at
`on_train_batch_end` of batch i, the batch counters read ready=started=processed=i+1,
completed=i; at `on_train_epoch_end` of epoch e the epoch counters read processed=e+1,
completed=e.

Limits: in an epoch resumed mid-way from a checkpoint, during `on_train_batch_start` and
`training_step` the batch counters still show the previous batch; the predict loop has no
batch counters. The limits
(`max_epochs`, `max_steps`, ...) can be set through a view, as real code does
(`trainer.fit_loop.max_epochs += 5`); the counters cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from fulmen.state import RunningStage, TrainerFn

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


class Tracker(NamedTuple):
    """One of Lightning's progress trackers (`_ProcessedTracker`), as numbers."""

    ready: int = 0
    completed: int = 0
    started: int = 0
    processed: int = 0


def _tracker(done: int, in_progress: bool, stepped: bool = True) -> Tracker:
    """`done` items finished; with `in_progress`, one more has begun (and run its step if `stepped`)."""
    if not in_progress:
        return Tracker(done, done, done, done)
    return Tracker(ready=done + 1, completed=done, started=done + 1, processed=done + 1 if stepped else done)


class Progress(NamedTuple):
    """`current` (this run of the loop) and `total` (since the first run) trackers."""

    current: Tracker
    total: Tracker


class _View:
    __slots__ = ("_trainer",)

    def __init__(self, trainer: Trainer) -> None:
        object.__setattr__(self, "_trainer", trainer)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(getattr(type(self), name, None), property) and getattr(type(self), name).fset is not None:
            object.__setattr__(self, name, value)
            return
        raise AttributeError(
            f"{type(self).__name__}.{name} is a read-only view of the Trainer's state. Received: {name}={value!r}. "
            "Fix: let the Trainer count progress (resume with trainer.fit(..., ckpt_path=...)), or set the "
            "Trainer's limits (trainer.fit_loop.max_epochs, trainer.fit_loop.epoch_loop.max_steps)."
        )


def _limit(name: str) -> property:
    """A Trainer limit (e.g. max_epochs) read and set through a view."""
    return property(lambda self: getattr(self._trainer, name), lambda self, value: setattr(self._trainer, name, value))


class EvaluationLoopView(_View):
    """`trainer.validate_loop`, `trainer.test_loop` and fit's `epoch_loop.val_loop`."""

    __slots__ = ("_stage", "_fn")

    def __init__(self, trainer: Trainer, stage: RunningStage, fn: TrainerFn) -> None:
        super().__init__(trainer)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_fn", fn)

    def _running(self) -> bool:
        stage = self._trainer.state.stage
        if self._trainer.state.fn != self._fn:  # validate_loop is not fit's val_loop
            return False
        if self._stage == RunningStage.VALIDATING:
            return stage in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING)
        return stage == self._stage

    @property
    def batch_progress(self) -> Progress:
        """The batches of the evaluation now running (zeros outside it)."""
        trainer = self._trainer
        results = trainer.run_state.results if self._running() else None
        if results is None:
            return Progress(Tracker(), Tracker())
        # batch_counter counts the batches begun; the one in progress has run its step by its end hooks.
        begun, in_batch = results.batch_counter, trainer.run_state.in_batch
        tracker = _tracker(begun - 1, True) if in_batch else _tracker(begun, False)
        return Progress(tracker, tracker)

    @property
    def batch_idx(self) -> int:
        return self.batch_progress.current.ready - 1

    @property
    def max_batches(self) -> list[int | float]:
        trainer = self._trainer
        if self._stage == RunningStage.TESTING:
            return list(trainer.num_test_batches)
        if trainer.sanity_checking:
            return list(trainer.num_sanity_val_batches)
        return list(trainer.num_val_batches)

    @property
    def inference_mode(self) -> bool:
        return self._trainer.inference_mode


class PredictionLoopView(_View):
    """`trainer.predict_loop`: its limits only (fulmen's predict loop keeps no batch counters)."""

    __slots__ = ()

    @property
    def max_batches(self) -> list[int | float]:
        return list(self._trainer.num_predict_batches)

    @property
    def inference_mode(self) -> bool:
        return self._trainer.inference_mode


class TrainingEpochLoopView(_View):
    """`trainer.fit_loop.epoch_loop`: the batches of the current training epoch."""

    __slots__ = ()

    max_steps = _limit("max_steps")
    min_steps = _limit("min_steps")

    def _phase(self) -> str:
        """Where the training batch loop is: "idle" (no batch running), "before_step" (the batch's
        start hooks or its training_step) or "after_step" (its end hooks)."""
        trainer = self._trainer
        if not (trainer.run_state.in_batch and trainer.state.stage == RunningStage.TRAINING):
            return "idle"
        results = trainer.run_state.train_results
        # batch_counter counts this epoch's batches begun, batches_done those whose step has run. In a
        # resumed epoch batches_done starts ahead of the counter and this reads "after_step" throughout.
        if results is not None and trainer.state.batches_done < results.batch_counter:
            return "before_step"
        return "after_step"

    def _epoch_batches(self) -> int:
        """Batches of the current (or, between epochs, the last) epoch whose step has run."""
        trainer, s = self._trainer, self._trainer.state
        if trainer.run_state.train_results is not None or s.batches_done or s.epoch == 0:
            return s.batches_done
        # Between epochs fulmen has moved on to the next epoch; the last one ran its full length
        # unless the total says fewer batches ran at all.
        n = trainer.num_training_batches
        return s.batches_total if n == float("inf") else min(int(n), s.batches_total)

    @property
    def batch_progress(self) -> Progress:
        """`current`: this epoch's batches; `total`: all training batches of the run."""
        phase, current, total = self._phase(), self._epoch_batches(), self._trainer.state.batches_total
        if phase == "before_step":
            return Progress(_tracker(current, True, stepped=False), _tracker(total, True, stepped=False))
        if phase == "after_step":  # counted in batches_done, but its end hooks still run
            return Progress(_tracker(current - 1, True), _tracker(total - 1, True))
        return Progress(_tracker(current, False), _tracker(total, False))

    @property
    def batch_idx(self) -> int:
        """Index of the current (or last) training batch of this epoch; -1 before the first."""
        return self.batch_progress.current.ready - 1

    @property
    def total_batch_idx(self) -> int:
        """Index of the current training batch counted over all epochs; -1 before the first."""
        return self.batch_progress.total.ready - 1

    @property
    def global_step(self) -> int:
        return self._trainer.state.global_step

    @property
    def _batches_that_stepped(self) -> int:
        """The step the loggers write at (Lightning's private name, read by real callbacks to log
        at the Trainer's step): in a training batch, that batch's logging step."""
        from fulmen.loop import _window

        trainer, s = self._trainer, self._trainer.state
        if self._phase() != "after_step":  # the batch's logging step moves on once its step has run
            return s.log_step
        manual = not trainer.lightning_module.automatic_optimization
        stepped = manual or _window(trainer, s.batches_done - 1).step
        return s.log_step - 1 if stepped else s.log_step

    @property
    def val_loop(self) -> EvaluationLoopView:
        return EvaluationLoopView(self._trainer, RunningStage.VALIDATING, TrainerFn.FITTING)


class FitLoopView(_View):
    """`trainer.fit_loop`: the epochs of `trainer.fit`, its limits, and `epoch_loop`."""

    __slots__ = ()

    max_epochs = _limit("max_epochs")
    min_epochs = _limit("min_epochs")
    max_steps = _limit("max_steps")
    min_steps = _limit("min_steps")

    @property
    def epoch_progress(self) -> Progress:
        """At `on_train_epoch_end` of epoch e: ready=started=processed=e+1, completed=e."""
        trainer = self._trainer
        results = trainer.run_state.train_results
        tracker = _tracker(trainer.state.epoch, results is not None, results is not None and results.epoch_end_reached)
        return Progress(tracker, tracker)

    @property
    def epoch_loop(self) -> TrainingEpochLoopView:
        return TrainingEpochLoopView(self._trainer)

    @property
    def batch_idx(self) -> int:
        return self.epoch_loop.batch_idx

    @property
    def total_batch_idx(self) -> int:
        return self.epoch_loop.total_batch_idx

    @property
    def max_batches(self) -> int | float:
        return self._trainer.num_training_batches

    @property
    def done(self) -> bool:
        """Whether fit has reached a limit (max_steps, max_epochs) or a stop it may take."""
        trainer, s = self._trainer, self._trainer.state
        if trainer.max_steps != -1 and s.global_step >= trainer.max_steps:
            return True
        max_epochs = trainer.max_epochs
        if max_epochs not in (None, -1) and self.epoch_progress.current.processed >= max_epochs:
            return True
        if not s.should_stop:
            return False
        min_epochs, min_steps = trainer.min_epochs, trainer.min_steps
        return (not min_epochs or self.epoch_progress.current.processed >= min_epochs) and (
            not min_steps or s.global_step >= min_steps
        )
