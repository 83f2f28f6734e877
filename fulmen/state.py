"""The Trainer's state: what it is doing, and where a run stands.

`TrainerState` is one dataclass. Its counters are the explicit *resume point* that a checkpoint
stores under the `"resume"` key: a run restarted from it continues after the last training batch
whose post-processing (callbacks, logging, validation when due) had finished.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# Lightning's case-insensitive str enum (TrainerFn.FITTING == "FIT"), as `trainer.states` uses it.
from fulmen.utilities.enums import LightningEnum


class TrainerFn(LightningEnum):
    """The user-facing entry point that is running."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(LightningEnum):
    """The loop that is running right now (fit switches between several)."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    @property
    def evaluating(self) -> bool:
        return self in (RunningStage.SANITY_CHECKING, RunningStage.VALIDATING, RunningStage.TESTING)

    @property
    def dataloader_prefix(self) -> str:
        """The prefix of the dataloader hook this stage reads (`val_dataloader` also for the sanity check)."""
        return "val" if self in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING) else self.value


class TrainerStatus(LightningEnum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"

    @property
    def stopped(self) -> bool:
        """The run is over, whether it finished or was interrupted."""
        return self in (TrainerStatus.FINISHED, TrainerStatus.INTERRUPTED)


@dataclass
class TrainerState:
    """What the Trainer is doing, plus the counters that define where training resumes.

    Resume point fields (saved in checkpoints):
        epoch: index of the current training epoch.
        global_step: optimizer steps taken so far (with gradient accumulation, one per window).
        batches_done: training batches of `epoch` whose post-processing has finished.
        batches_total: training batches run over all epochs (for validation every N batches
            across epochs, `check_val_every_n_epoch=None`).
        epoch_finished: the end-of-epoch work of `epoch` (hooks, logging, epoch schedulers) is
            done, so a resumed run starts at `epoch + 1`.
        log_step: the step number the loggers write next; continues across a resume so that no
            point is duplicated or missing.
    """

    status: TrainerStatus = TrainerStatus.INITIALIZING  # first three fields in Lightning's order
    fn: TrainerFn | None = None
    stage: RunningStage | None = None
    should_stop: bool = False

    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0
    batches_total: int = 0
    epoch_finished: bool = False
    log_step: int = 0

    _RESUME_FIELDS = ("epoch", "global_step", "batches_done", "batches_total", "epoch_finished", "log_step")

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        """As in Lightning: finished or interrupted (`trainer.interrupted` is the interrupted case)."""
        return self.status.stopped

    def state_dict(self) -> dict[str, Any]:
        """The resume point, as plain data."""
        return {name: getattr(self, name) for name in self._RESUME_FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        for name in self._RESUME_FIELDS:
            if name in state and name in known:
                setattr(self, name, state[name])
