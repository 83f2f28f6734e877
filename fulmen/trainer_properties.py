"""`TrainerProperties`: the Trainer's view of its own state, under Lightning's names.

`Trainer` inherits it. Each property reads what the Trainer, its `TrainerState`, its strategy or
its callbacks already hold (`trainer.current_epoch` is `trainer.state.epoch`, `trainer.world_size`
the strategy's, `trainer.checkpoint_callback` the first ModelCheckpoint); none of them starts
work, except `estimated_stepping_batches`, which loads the training data when fit has not yet.
As in Lightning, a few can be set: `should_stop`, `logger` and the stage flags (`training`,
`validating`, ...). Beside them, the two helpers that only read that state: `print` (on local
rank 0) and `init_module` (tensors made on the Trainer's device and in its dtype).
"""

from __future__ import annotations

import math
import signal
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch

from fulmen import dataloading
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.progress import ProgressBar
from fulmen.errors import MisconfigurationException
from fulmen.logging import to_float_dict
from fulmen.progress_views import EvaluationLoopView, FitLoopView, PredictionLoopView
from fulmen.state import RunningStage, TrainerFn, TrainerState, TrainerStatus
from fulmen.strategies.init import init_context

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.strategies import Strategy


class TrainerProperties:
    """The Trainer's read-only view of its state, with Lightning's attribute names (a mixin of `Trainer`).

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(logger=False, enable_checkpointing=False)
        >>> trainer.current_epoch, trainer.global_step, trainer.training
        (0, 0, False)
    """

    # What the properties read; `Trainer.__init__` sets them all.
    state: TrainerState
    strategy: Strategy
    lightning_module: LightningModule | None
    callbacks: list[Any]
    loggers: list[Any]

    @property
    def current_epoch(self) -> int:
        return self.state.epoch

    @property
    def global_step(self) -> int:
        return self.state.global_step

    @property
    def should_stop(self) -> bool:
        return self.state.should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self.state.should_stop = bool(value)

    @property
    def interrupted(self) -> bool:
        return self.state.status == TrainerStatus.INTERRUPTED

    # The stage flags can be set, as in Lightning: True makes that the stage; False clears the
    # stage only when it is that one (so `trainer.testing = False` while validating changes nothing).
    def _set_stage(self, stage: RunningStage, value: bool) -> None:
        if value:
            self.state.stage = stage
        elif self.state.stage == stage:
            self.state.stage = None

    @property
    def training(self) -> bool:
        return self.state.stage == RunningStage.TRAINING

    @training.setter
    def training(self, value: bool) -> None:
        self._set_stage(RunningStage.TRAINING, value)

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == RunningStage.SANITY_CHECKING

    @sanity_checking.setter
    def sanity_checking(self, value: bool) -> None:
        self._set_stage(RunningStage.SANITY_CHECKING, value)

    @property
    def validating(self) -> bool:
        return self.state.stage == RunningStage.VALIDATING

    @validating.setter
    def validating(self, value: bool) -> None:
        self._set_stage(RunningStage.VALIDATING, value)

    @property
    def testing(self) -> bool:
        return self.state.stage == RunningStage.TESTING

    @testing.setter
    def testing(self, value: bool) -> None:
        self._set_stage(RunningStage.TESTING, value)

    @property
    def predicting(self) -> bool:
        return self.state.stage == RunningStage.PREDICTING

    @predicting.setter
    def predicting(self, value: bool) -> None:
        self._set_stage(RunningStage.PREDICTING, value)

    @property
    def evaluating(self) -> bool:
        """Validating, testing or sanity checking."""
        return self.state.stage is not None and self.state.stage.evaluating

    # --- Lightning's loop objects, as read-only views of the state (fulmen/progress_views.py) ---
    @property
    def fit_loop(self) -> FitLoopView:
        """`fit_loop.epoch_progress`, `.epoch_loop.batch_progress`, `.max_epochs`, ... as Lightning's."""
        return FitLoopView(self)

    @property
    def validate_loop(self) -> EvaluationLoopView:
        return EvaluationLoopView(self, RunningStage.VALIDATING, TrainerFn.VALIDATING)

    @property
    def test_loop(self) -> EvaluationLoopView:
        return EvaluationLoopView(self, RunningStage.TESTING, TrainerFn.TESTING)

    @property
    def predict_loop(self) -> PredictionLoopView:
        return PredictionLoopView(self)

    @property
    def is_last_batch(self) -> bool:
        """Whether the training batch running (or the last one run) is the epoch's last."""
        n = self.num_training_batches
        return n != float("inf") and n > 0 and self.fit_loop.epoch_loop.batch_progress.current.ready == n

    @property
    def estimated_stepping_batches(self) -> int | float:
        """How many optimizer steps fit will take, e.g. for `OneCycleLR(total_steps=...)` in
        configure_optimizers (the training data is loaded for it if it is not yet)."""
        if self.max_epochs == -1:
            return float("inf") if self.max_steps == -1 else self.max_steps
        if self.train_dataloader is None:
            if self.state.fn != TrainerFn.FITTING or self.lightning_module is None:
                raise MisconfigurationException(
                    "estimated_stepping_batches needs the training data, which fit loads. Received: no fit "
                    "running. Fix: read it during fit (e.g. in configure_optimizers)."
                )
            dataloading.load_train_dataloader(self)
        batches = self.num_training_batches
        if batches == float("inf"):  # an iterable without a length
            return self.max_steps
        epochs = 1000 if self.max_epochs is None else max(self.max_epochs, 1)
        steps = math.ceil(batches / self.accumulate_grad_batches) * epochs
        return steps if self.max_steps == -1 else min(steps, self.max_steps)

    @property
    def enable_validation(self) -> bool:
        """Whether fit validates: there is validation data, a validation_step and limit_val_batches > 0."""
        return self.run_state.val_enabled

    @property
    def received_sigterm(self) -> bool:
        """Whether this process received SIGTERM during the running fit (see `preemption_signals`)."""
        return self.run_state.preemption is not None and self.run_state.preemption.received == signal.SIGTERM

    @property
    def model(self) -> torch.nn.Module | None:
        """The module the loop calls: the LightningModule, or its DDP/FSDP wrapper while one runs."""
        wrapped = getattr(self.strategy, "model", None)
        return wrapped if wrapped is not None else self.lightning_module

    @property
    def scaler(self) -> Any:
        """The GradScaler of 16-mixed precision, else None."""
        return self._precision.scaler

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """What a DistributedSampler needs (`num_replicas`, `rank`) with several processes, else None."""
        return self.strategy.distributed_sampler_kwargs
    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` on the first process of each machine only."""
        if self.local_rank == 0:
            print(*args, **kwargs)

    def init_module(self, empty_init: bool | None = None) -> AbstractContextManager:
        """Build the model's tensors on the Trainer's device, in its dtype for `*-true` precision:
        `with trainer.init_module(): model = Model()`. `empty_init=True` (weights about to be loaded
        from a checkpoint) skips the `torch.nn.init` calls; under FSDP2/ModelParallel it builds the
        model on the meta device, and the strategy gives each process only its shards at set-up
        (see `fulmen.strategies.init`)."""
        return init_context(self.strategy, self._device, self._precision.true_dtype, empty_init)

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """Latest value of every logged metric (tensors), as monitoring callbacks see them. As in
        Lightning this is the trainer's own dict: a value written into it is what callbacks then read."""
        metrics = self._callback_metrics
        for results in (self.run_state.train_results, self.run_state.results):
            if results is not None:
                metrics.update(results.view("callback"))
        return metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """Metrics logged with prog_bar=True, as floats. Each read is a host sync: read sparingly."""
        metrics = dict(self._progress_bar_metrics)
        for results in (self.run_state.train_results, self.run_state.results):
            if results is not None:
                metrics.update(results.view("prog_bar"))
        return to_float_dict(metrics)

    @property
    def logged_metrics(self) -> dict[str, float]:
        """What was last sent to the loggers, per key."""
        return dict(self._logged_metrics)

    @property
    def logger(self) -> Any:
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, logger: Any) -> None:
        self.loggers = [] if logger is None else [logger]

    @property
    def log_dir(self) -> str:
        """The first logger's directory (as rank 0 sees it), else `default_root_dir`."""
        log_dir = self.loggers[0].log_dir if self.loggers else None
        if self.strategy.distributed and self.loggers:
            log_dir = self.strategy.broadcast(log_dir)  # other ranks could pick another version number
        return str(log_dir) if log_dir is not None else self.default_root_dir

    @property
    def checkpoint_callback(self) -> Any:
        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    @property
    def checkpoint_callbacks(self) -> list[Any]:
        return [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]

    @property
    def early_stopping_callback(self) -> Any:
        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def early_stopping_callbacks(self) -> list[Any]:
        return [c for c in self.callbacks if isinstance(c, EarlyStopping)]

    @property
    def progress_bar_callback(self) -> Any:
        return next((c for c in self.callbacks if isinstance(c, ProgressBar)), None)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o.optimizer for o in self._optimizers]

    @property
    def lr_schedulers(self) -> list[Any]:
        return [c.scheduler for c in self.lr_scheduler_configs]

    @property
    def val_dataloaders(self) -> Any:
        """The validation dataloader in use (a list when there are several), as it was passed."""
        return dataloading.one_or_list(self._val_loaders)

    @property
    def test_dataloaders(self) -> Any:
        return dataloading.one_or_list(self._test_loaders)

    @property
    def predict_dataloaders(self) -> Any:
        return dataloading.one_or_list(self._predict_loaders)

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint the current run was restored from, if any."""
        return self._ckpt_path

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def accelerator(self) -> Any:
        """The Accelerator object (e.g. `CUDAAccelerator`), as in Lightning; fulmen itself decides on
        the name in `trainer._accelerator` ("cpu", "cuda", "mps")."""
        return self.strategy.accelerator

    @property
    def num_devices(self) -> int:
        return len(self._device_ids)

    @property
    def device_ids(self) -> list[int]:
        return list(self._device_ids)

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def num_nodes(self) -> int:
        return self.strategy.num_nodes

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero
