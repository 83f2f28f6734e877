"""`RunState`: the state of the run in progress, in one object the loop owns.

A `Trainer` keeps what outlives a run (its settings, `TrainerState` with the counters and the
resume point, the dataloaders, the metrics) and, in `trainer.run_state`, what one fit, validate,
test or predict is doing right now: the batch being processed, the results being logged, the work
queued until the batch is done, the time limit, the preemption watch. The loop (fulmen/loop.py)
reads and writes it; the tuner saves and restores it whole (fulmen/tuner/snapshot.py); callbacks
and the module read it through the Trainer's public properties (`trainer.callback_metrics`,
`trainer.fit_loop`, ...), not directly.

The hooks dispatch (`trainer._hooks`) and the bound training step (`trainer._training_step`)
stay on the Trainer: they are the wiring a run sets up, not state it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fulmen.logging import Results
    from fulmen.preemption import PreemptionWatch


@dataclass(eq=False)
class RunState:
    # --- decided when the run sets up ---------------------------------------------------------
    val_enabled: bool = False  # fit runs validation (a validation_step and validation data exist)
    transfer_hooks: tuple[Any, Any, Any] = (None, None, None)  # the batch-transfer hooks overridden, or None
    transfer_is_noop: bool = False  # a CPU batch with no transfer hook: handed to the step untouched
    fit_data: dict[str, Any] = field(default_factory=dict)  # the dataloaders fit was given
    resume: dict[str, Any] | None = None  # a checkpoint's resume point, until its epoch starts
    deadline: float | None = None  # time.monotonic() at which max_time is up
    preemption: PreemptionWatch | None = None  # the SIGTERM/SIGUSR1 watch, during fit
    # --- the epoch in progress -------------------------------------------------------------------
    epoch_start: dict[str, Any] | None = None  # what decided the current epoch's data order
    last_train_reload_epoch: int | None = None  # the epoch the training data was last loaded at
    none_steps: int | None = None  # training steps that returned None, counted in fit's first epoch
    train_results: Results | None = None  # what training logged this epoch
    # --- the batch in progress -------------------------------------------------------------------
    results: Results | None = None  # where self.log writes now (training's, or an evaluation's)
    in_batch: bool = False  # between on_*_batch_start and on_*_batch_end
    current_batch: Any = None
    batch_size: int | None = None  # of current_batch, found when self.log first needs it
    dataloader_idx: int = 0
    num_eval_loaders: int = 0
    log_due: bool = False  # the training batch now running is a logging point (fulmen.loop.run_train_batch)
    # Work that waits until the batch is completely done (a ModelCheckpoint due, a tuner's stop):
    # see fulmen.loop._run_after_batch. The list object stays the same for the whole run.
    after_batch: list[Any] = field(default_factory=list)
