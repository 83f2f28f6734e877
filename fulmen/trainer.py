"""`Trainer`: checks the configuration, prepares a run, and hands it to the loops.

This file owns the argument checks, the public entry points, the properties users read, and the
set-up of a run (callbacks, optimizers, hooks, batch transfer). What it hands off: the loops
live in `fulmen/loop.py`; which data each stage runs on in `fulmen/dataloading.py`; the
checkpoint dict, resolving `ckpt_path` and restoring from it in `fulmen/checkpoint.py`.

Reading order: `__init__` (every argument checked here, before any work), the public entry
points `fit`/`validate`/`test`/`predict`/`save_checkpoint`, the properties users read, then the
private chain `_run` → `_setup` → `fulmen.loop`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from fulmen import dataloading, loop
from fulmen.accelerators import Accelerator, setup_hardware
from fulmen.arguments import (
    check_callback_items, check_fit_model, check_logger, check_model_and_datamodule, check_trainer_arguments,
    defaults_from_env, model_or_attached,
)
from fulmen.callbacks.callback import Callback
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar
from fulmen.callbacks.timer import Timer
from fulmen.checkpoint import (
    checkpoint_dict, resolve_ckpt_path, restore_modules, restore_training_state, wait_for_checkpoints,
)
from fulmen.data import extract_batch_size, move_to_device
from fulmen.datamodule import LightningDataModule
from fulmen.doctor import check_at_fit
from fulmen.errors import MisconfigurationException
from fulmen.failure import handle_failure, shut_down_after_interrupt
from fulmen.hooks import HookDispatch, is_overridden
from fulmen.hparams import to_plain_hparams
from fulmen.loggers import TensorBoardLogger
from fulmen.loggers.base import Logger
from fulmen.logging import to_float_dict
from fulmen.module import LightningModule
from fulmen.optim import LightningOptimizer, LRSchedulerConfig, parse_optimizers
from fulmen.plugins.resolve import resolve_plugins
from fulmen.preemption import DEFAULT_SIGNALS, PreemptionWatch
from fulmen.profilers import Profiler, resolve_profiler
from fulmen.profilers.wiring import finish_profiling, instrument
from fulmen.run_state import RunState
from fulmen.state import RunningStage, TrainerFn, TrainerState, TrainerStatus
from fulmen.strategies import Strategy
from fulmen.strategies.init import materialize, on_meta
from fulmen.strategies.launcher import spawn
from fulmen.trainer_properties import TrainerProperties
from fulmen.tuner.exit import TunerExit

def _run_spawned(trainer: Trainer, fn: TrainerFn, model: Any, datamodule: Any, ckpt_path: Any, kwargs: dict) -> Any:
    """What each ddp_spawn process runs (a module-level function, so it can be pickled)."""
    return trainer._run(fn, model, datamodule, ckpt_path, **kwargs)


def _unwrap_compiled(model: Any) -> Any:
    """`fit(torch.compile(model))`: train the LightningModule inside, its calls compiled the same way.

    The Trainer needs the module itself (its hooks, its clean state_dict keys without an
    `_orig_mod.` prefix); compiling its `__call__` in place keeps the speed-up of compilation.
    """
    inner, compile_like = getattr(model, "_orig_mod", None), getattr(model, "dynamo_ctx", None)
    if not isinstance(inner, LightningModule) or compile_like is None:
        return model
    inner._compiled_call_impl = compile_like(inner._call_impl)
    return inner


class Trainer(TrainerProperties):
    """Runs fit, validate, test and predict for a `LightningModule`.

    Arguments and defaults follow PyTorch Lightning 2.x, including its environment variables:
    `PL_TRAINER_<ARGUMENT>` (e.g. `PL_TRAINER_MAX_EPOCHS=3`) sets an argument that is not passed.

    Example:
        >>> trainer = Trainer(max_epochs=10, accelerator="auto")  # doctest: +SKIP
        >>> trainer.fit(model, train_loader, val_loader)           # doctest: +SKIP
    """

    @defaults_from_env
    def __init__(
        self,
        *,
        accelerator: str | Accelerator = "auto",
        strategy: str | Strategy = "auto",
        devices: list[int] | str | int = "auto",
        num_nodes: int = 1,
        precision: str | int | None = None,
        logger: Logger | Iterable[Logger] | bool | None = None,
        callbacks: list[Callback] | Callback | None = None,
        fast_dev_run: int | bool = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: str | dt.timedelta | dict[str, int] | None = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        profiler: Profiler | str | None = None,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: Any = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: str | Path | None = None,
        enable_autolog_hparams: bool = True,
        model_registry: str | None = None,
        preemption_signals: tuple[int, ...] | None = DEFAULT_SIGNALS,
    ) -> None:
        # Every argument is checked here, before any work (fulmen/arguments.py), and each checked
        # value becomes the attribute of its name: trainer.max_epochs, trainer.limit_val_batches, ...
        settings = check_trainer_arguments({name: value for name, value in locals().items() if name != "self"})
        for name, value in settings.items():
            setattr(self, name, value)
        self._set_torch_flags()  # before the hardware set-up, which may start CUDA

        # --- hardware and numerics ---
        resolved = resolve_plugins(plugins, precision=precision, sync_batchnorm=sync_batchnorm)
        self._accelerator, self._device_ids, self.strategy, self._device = setup_hardware(
            accelerator, strategy, devices, num_nodes, sync_batchnorm, plugins=resolved
        )
        self.precision, self._precision = resolved.precision, resolved.precision_engine(self._device)
        # trainer.profiler is always usable (`with trainer.profiler.profile(...)`); _profiler is None when
        # nothing is recorded, and then a run pays nothing for profiling (fulmen/profilers/wiring.py).
        self.profiler = resolve_profiler(profiler)
        self._profiler = None if profiler is None else self.profiler

        # --- callbacks and loggers (barebones and fast_dev_run write nothing) ---
        self.callbacks: list[Callback] = self._default_callbacks(
            callbacks, enable_checkpointing, enable_progress_bar, enable_model_summary, barebones
        )
        self.loggers: list[Any] = [] if barebones or self.fast_dev_run else self._make_loggers(logger)

        self.state = TrainerState()
        self.lightning_module: LightningModule | None = None
        self.datamodule: LightningDataModule | None = None
        self._init_run_state()

    def _set_torch_flags(self) -> None:
        """The global switches of torch that `deterministic` and `benchmark` ask for."""
        if self.deterministic:
            # cuBLAS needs a fixed workspace to be deterministic; must be set before CUDA is used.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=self.deterministic == "warn")
            torch.backends.cudnn.deterministic = True
        if self.benchmark is not None:
            torch.backends.cudnn.benchmark = self.benchmark

    def _init_run_state(self) -> None:
        """What a run sets up and fills: the optimizers, the wiring (hooks, training step), the
        dataloaders and metrics, which outlive it, and `run_state`, what the run in progress is
        doing, which the loops read and write and the tuner saves and restores whole."""
        self._optimizers: list[LightningOptimizer] = []
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self._hooks: HookDispatch | None = None
        self._training_step: Any = None  # the module's training_step, through the strategy's wrapper if any
        self.run_state = RunState()  # what the run in progress is doing (fulmen/run_state.py)
        self.train_dataloader: Any = None
        self._combined_loader: Any = None  # several training loaders: the CombinedLoader that reads them
        self._val_loaders: list[Any] = []
        self._test_loaders: list[Any] = []
        self._predict_loaders: list[Any] = []
        self.num_training_batches: int | float = float("inf")  # as in Lightning before fit sets it
        self.num_val_batches: list[int | float] = []
        self.num_sanity_val_batches: list[int | float] = []
        self.num_test_batches: list[int | float] = []
        self.num_predict_batches: list[int | float] = []
        self.val_check_batch: int | float | None = None  # set by fit's data set-up
        self._callback_metrics: dict[str, torch.Tensor] = {}
        self._progress_bar_metrics: dict[str, torch.Tensor] = {}
        self._logged_metrics: dict[str, float] = {}
        self._ckpt_path: str | None = None

    # --- public entry points ----------------------------------------------------------------
    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train `model`; optionally resume from `ckpt_path` (a path, "last" or "best").

        Ctrl-C (KeyboardInterrupt) shuts the run down gracefully (`on_exception` hooks, loggers
        closed, `trainer.interrupted` True), then, as in Lightning, raises `SystemExit(1)`: the
        script ends with status 1, so a chained `python train.py && python deploy.py` stops there.
        Catch SystemExit around fit to go on after an interrupt. The same holds for validate, test
        and predict.

        `weights_only` is accepted for Lightning's signature: fulmen always reads checkpoints with
        `torch.load(weights_only=True)` (see fulmen/checkpoint.py)."""
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        self._run(TrainerFn.FITTING, model, datamodule, ckpt_path,
                  train=train_dataloaders, val=val_dataloaders)

    def validate(
        self, model: LightningModule | None = None, dataloaders: Any = None, ckpt_path: str | Path | None = None,
        verbose: bool = True, datamodule: LightningDataModule | None = None, weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run the validation loop once; returns one dict of epoch metrics per dataloader."""
        return self._evaluate(TrainerFn.VALIDATING, model, dataloaders, ckpt_path, verbose, datamodule)

    def test(
        self, model: LightningModule | None = None, dataloaders: Any = None, ckpt_path: str | Path | None = None,
        verbose: bool = True, datamodule: LightningDataModule | None = None, weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run the test loop once; returns one dict of epoch metrics per dataloader."""
        return self._evaluate(TrainerFn.TESTING, model, dataloaders, ckpt_path, verbose, datamodule)

    def predict(
        self, model: LightningModule | None = None, dataloaders: Any = None,
        datamodule: LightningDataModule | None = None, return_predictions: bool | None = None,
        ckpt_path: str | Path | None = None, weights_only: bool | None = None,
    ) -> list[Any] | None:
        """Run `predict_step` over the data; returns the predictions (a list per dataloader if several)."""
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        model = model_or_attached(model, self.lightning_module, "predict")
        result = self._run(TrainerFn.PREDICTING, model, datamodule, ckpt_path, predict=dataloaders,
                           return_predictions=True if return_predictions is None else return_predictions)
        return result

    def save_checkpoint(
        self, filepath: str | Path, weights_only: bool = False, storage_options: Any = None, *, background: bool = False
    ) -> None:
        """Write the current training state to `filepath` atomically.

        Returns once the file is on disk under `filepath`. With `background=True` (as
        `ModelCheckpoint(background_landing=True)` saves) it returns once the bytes are written to
        a temporary file beside it;
        a background thread makes them durable and renames the file into place, and fulmen waits
        for that before its next save, any checkpoint load and the end of the run
        (`fulmen.checkpoint.wait_for_checkpoints()` waits explicitly).
        """
        if self.lightning_module is None:
            raise MisconfigurationException(
                "save_checkpoint needs a model attached to the Trainer. "
                "Fix: call it after or during trainer.fit(model)."
            )
        loggers = self.loggers if self.is_global_zero else []
        for logger in loggers:
            # Everything logged up to this checkpoint is on disk before it is: a run resumed from
            # it continues the logs with nothing missing and nothing written twice.
            logger.save()
        # Rank 0, or every rank's shard.
        self.strategy.save_checkpoint(checkpoint_dict(self, weights_only), filepath, background)
        for logger in loggers:
            if background and is_overridden("after_save_checkpoint", logger, Logger):
                wait_for_checkpoints()  # e.g. an upload: it reads the file
            logger.after_save_checkpoint(self.checkpoint_callback)

    # --- construction helpers ---------------------------------------------------------------
    def _default_callbacks(
        self, callbacks: Any, enable_checkpointing: bool | None, enable_progress_bar: bool | None,
        enable_model_summary: bool | None, barebones: bool,
    ) -> list[Callback]:
        given = check_callback_items(callbacks)
        if barebones:
            enable_checkpointing = enable_progress_bar = enable_model_summary = False
        if enable_checkpointing is False and any(isinstance(c, ModelCheckpoint) for c in given):
            raise MisconfigurationException(
                "enable_checkpointing=False but a ModelCheckpoint was passed in `callbacks`. "
                "Received: enable_checkpointing=False. Fix: drop one of the two."
            )
        if enable_progress_bar is False and any(isinstance(c, ProgressBar) for c in given):
            raise MisconfigurationException(
                "enable_progress_bar=False but a progress bar was passed in `callbacks`. "
                "Received: enable_progress_bar=False. Fix: drop one of the two."
            )
        result = list(given)
        if enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in result):
            result.append(TQDMProgressBar())
        if enable_model_summary is not False and not any(isinstance(c, ModelSummary) for c in result):
            result.append(ModelSummary())
        if enable_checkpointing is not False and not any(isinstance(c, ModelCheckpoint) for c in result):
            result.append(ModelCheckpoint())
        return result

    def _make_loggers(self, logger: Any) -> list[Any]:
        loggers = check_logger(logger)
        # The default, as in Lightning: TensorBoard under default_root_dir.
        return [TensorBoardLogger(save_dir=self.default_root_dir)] if loggers is None else loggers

    # --- the run ----------------------------------------------------------------------------
    def _evaluate(
        self, fn: TrainerFn, model: LightningModule | None, dataloaders: Any, ckpt_path: Any, verbose: bool,
        datamodule: LightningDataModule | None,
    ) -> list[dict[str, float]]:
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        name = fn.value
        if model is None and ckpt_path is None and self.checkpoint_callback is not None:
            if getattr(self.checkpoint_callback, "best_model_path", ""):
                ckpt_path = "best"
        model = model_or_attached(model, self.lightning_module, name)
        return self._run(fn, model, datamodule, ckpt_path, eval_loaders=dataloaders, verbose=verbose)

    def _run(
        self, fn: TrainerFn, model: LightningModule, datamodule: LightningDataModule | None, ckpt_path: Any,
        **kwargs: Any,
    ) -> Any:
        """Run `fn` on `model`: attach it, set the run up, run the loop, tear down. A failure is
        handled (hooks told, loggers closed) and raised; under ddp_spawn this runs in new processes."""
        model = _unwrap_compiled(model)
        check_model_and_datamodule(model, datamodule)
        self._attach(fn, model, datamodule)
        if self.strategy.spawns and not self.strategy.launched:  # ddp_spawn: run in new processes
            return spawn(self, _run_spawned, fn, model, datamodule, ckpt_path, kwargs)
        try:
            self.strategy.setup_environment()
            self._setup(fn, model, datamodule, ckpt_path, kwargs)
            result = self._run_stage(fn, kwargs)
            self._finish(fn)
            return result
        except TunerExit:  # fulmen.tuner.Tuner: the search it ran in on_fit_start is done; end fit there
            self._finish(fn)
            return None
        except KeyboardInterrupt as exc:
            shut_down_after_interrupt(self, fn, exc)
            # As in Lightning, the script then ends with a failure status, so `python train.py && next`
            # does not go on to `next` after Ctrl-C (a caller that must go on catches SystemExit).
            raise SystemExit(1) from None
        except BaseException as exc:
            clearer = handle_failure(self, exc)
            if clearer is not None:
                raise clearer from exc
            raise
        finally:
            self.run_state.preemption = None
            self._training_step = None  # may hold the strategy's DDP wrapper
            if self._profiler is not None:
                finish_profiling(self)  # the report, written also after a failure
            self.state.stage = None
            self.run_state.results = self.run_state.train_results = None

    def _attach(self, fn: TrainerFn, model: LightningModule, datamodule: LightningDataModule | None) -> None:
        """A new run of `fn` on `model`: the state says so, and the module and datamodule know their Trainer."""
        self.state.fn, self.state.status, self.state.stage = fn, TrainerStatus.RUNNING, None
        if fn == TrainerFn.FITTING:
            self._resolve_fit_limits()
        self.state.should_stop = False
        self.strategy.failing = False  # a run after one that failed talks to the other ranks again
        self.lightning_module, self.datamodule = model, datamodule
        model.trainer = self
        if datamodule is not None:
            datamodule.trainer = self

    def _run_stage(self, fn: TrainerFn, kwargs: dict[str, Any]) -> Any:
        """The loop of `fn` (fulmen/loop.py); what validate/test/predict return."""
        if fn == TrainerFn.FITTING:
            anomaly = torch.autograd.set_detect_anomaly(self.detect_anomaly)
            with anomaly, PreemptionWatch(self.preemption_signals) as self.run_state.preemption:
                loop.run_fit(self)
            return None
        if fn == TrainerFn.PREDICTING:
            return loop.run_predict(self, kwargs["return_predictions"])
        stage = RunningStage.VALIDATING if fn == TrainerFn.VALIDATING else RunningStage.TESTING
        result = loop.run_evaluation(self, stage)
        if kwargs.get("verbose"):
            loop.print_results(stage, result)
        return result

    def _finish(self, fn: TrainerFn) -> None:
        self._teardown(fn, "success")
        self.state.status = TrainerStatus.FINISHED

    def _resolve_fit_limits(self) -> None:
        """Lightning's defaults for the limits left unset, decided when fit starts (so that
        `trainer.max_epochs` reads None until then, as in Lightning): 1000 epochs when neither
        max_epochs nor max_steps is set and no time limit is, else no epoch limit; min_epochs 0,
        or 1 with min_steps."""
        if self.max_epochs is None:
            timed = self.max_time is not None or any(isinstance(cb, Timer) for cb in self.callbacks)
            self.max_epochs = 1000 if self.max_steps == -1 and not timed else -1
        if self.min_epochs is None:
            self.min_epochs = 1 if self.min_steps is not None else 0

    def _setup(self, fn: TrainerFn, model: LightningModule, datamodule: Any, ckpt_path: Any, data: dict) -> None:
        """Everything a run needs before its loop, in Lightning's order: the setup hooks, the module
        on its device (wrapped by the strategy), the checkpoint's weights, the optimizers, the hook
        dispatch, the data, then the checkpoint's training state."""
        if fn == TrainerFn.FITTING:
            # Known from the start: configure_optimizers or a callback's setup may read
            # trainer.estimated_stepping_batches, which loads the training data early.
            self.run_state.fit_data, self.train_dataloader = data, None
        self._merge_model_callbacks(model)
        # Found before the callbacks' setup decides the run's log directory: a run resumed from
        # "last" logs on in the version folder of the checkpoint it found (fulmen/checkpoint.py).
        self._ckpt_path, checkpoint = resolve_ckpt_path(self, fn, ckpt_path)
        self._setup_module(fn, model, datamodule)
        # As in Lightning: weights and callback states are restored before configure_optimizers
        # (which may depend on them), the optimizer and loop state after it.
        if self._ckpt_path is not None:
            checkpoint = restore_modules(self, self._ckpt_path, checkpoint)
        # As in Lightning, each run starts with no metrics: after fit then test, callback_metrics holds test's.
        for metrics in (self._callback_metrics, self._progress_bar_metrics, self._logged_metrics):
            metrics.clear()
        if fn == TrainerFn.FITTING:
            loop.check_training_step(model)  # a 1.x optimizer_idx step: Lightning's error (raised here, before any work)
            optimizers, self.lr_scheduler_configs = parse_optimizers(model.configure_optimizers())
            if model.automatic_optimization and len(optimizers) > 1:
                raise MisconfigurationException(
                    f"Automatic optimization steps one optimizer, but configure_optimizers returned {len(optimizers)}. "
                    "Received: several optimizers with automatic_optimization=True. Fix: set "
                    "`self.automatic_optimization = False` and step them in training_step (manual optimization)."
                )
            self._optimizers = [LightningOptimizer(o, self) for o in optimizers]
        self._setup_hooks(fn.value, model)
        dataloading.setup_dataloaders(self, fn, model, datamodule, data)
        if checkpoint is not None and fn == TrainerFn.FITTING:
            restore_training_state(self, checkpoint, self._ckpt_path)
        self._log_hyperparams(model, datamodule)

    def _setup_module(self, fn: TrainerFn, model: LightningModule, datamodule: Any) -> None:
        """prepare_data and the setup hooks, then the module converted, on its device and wrapped
        by the strategy; fit checks the module here, before any work."""
        stage = fn.value
        if datamodule is not None:
            datamodule.prepare_data()
        model.prepare_data()
        if datamodule is not None:
            datamodule.setup(stage)
        for cb in self.callbacks:
            cb.setup(self, model, stage)
        model.setup(stage)
        model._device_mesh = getattr(self.strategy, "_device_mesh", None)  # ModelParallelStrategy's, for configure_model
        model.configure_model()
        self._precision.convert_module(model)
        meta = on_meta(model)  # built with init_module(empty_init=True) under FSDP: memory once sharded
        if not meta:
            model.to(self._device)
        # Wrapped (DDP) or sharded (FSDP) before the checkpoint is loaded and the optimizers are
        # made: FSDP replaces the parameters with their shards.
        self.strategy.setup_module(model, self._device, training=fn == TrainerFn.FITTING)
        if meta:
            materialize(model, self._device)
            model.to(self._device)  # nothing moves: the LightningModule learns its device
        if fn == TrainerFn.FITTING:
            check_fit_model(model, self.gradient_clip_val, self.accumulate_grad_batches)
            # `fulmen doctor` on the user's classes, as warnings (once per run, not once per rank)
            if os.environ.get("FULMEN_DOCTOR", "1") != "0" and self.is_global_zero:
                check_at_fit(model, datamodule)

    def _setup_hooks(self, stage: str, model: LightningModule) -> None:
        """The hook dispatch, the training step and the batch-transfer hooks, decided once per run."""
        if self._profiler is None:
            self._hooks = HookDispatch(self, model, self.callbacks)
        else:  # decided once here, so a run without a profiler pays nothing per batch
            # As in Lightning: the rank is in the report's file name only when there are several processes.
            self._profiler.setup(stage, self.local_rank if self.world_size > 1 else None, self.log_dir)
            self._hooks = instrument(self, model, self.callbacks, self._profiler)
        # After a profiler wrapped the method; autocast (mixed precision) around the strategy's forward.
        self._training_step = loop.bind_training_step(self, model)
        self.run_state.transfer_hooks = dataloading.batch_transfer_hooks(self)
        self.run_state.transfer_is_noop = (
            self.run_state.transfer_hooks == (None, None, None) and self._device.type == "cpu"
            and self._precision.true_dtype is None
        )

    def _merge_model_callbacks(self, model: LightningModule) -> None:
        """Add `configure_callbacks()`; they replace Trainer callbacks of the same type. Checkpointing goes last."""
        extra = model.configure_callbacks()
        extra = [] if extra is None else [extra] if isinstance(extra, Callback) else list(extra)
        if extra:
            types = {type(c) for c in extra}
            self.callbacks = [c for c in self.callbacks if type(c) not in types] + extra
        # Checkpoints last, so they save what every other callback has already updated.
        self.callbacks = [c for c in self.callbacks if not isinstance(c, ModelCheckpoint)] + [
            c for c in self.callbacks if isinstance(c, ModelCheckpoint)
        ]

    # --- batches ----------------------------------------------------------------------------
    def _to_device(self, batch: Any, dataloader_idx: int) -> Any:
        """on_before_batch_transfer → transfer_batch_to_device → on_after_batch_transfer."""
        before, transfer, after = self.run_state.transfer_hooks
        if before is not None:
            batch = before(batch, dataloader_idx)
        if transfer is not None:
            batch = transfer(batch, self._device, dataloader_idx)
        elif self._device.type != "cpu":  # on CPU the batch is already where it must be
            batch = move_to_device(batch, self._device)
        batch = self._precision.convert_input(batch)
        if after is not None:
            batch = after(batch, dataloader_idx)
        return batch

    def _current_batch_size(self) -> int:
        if self.run_state.batch_size is None:
            self.run_state.batch_size = extract_batch_size(self.run_state.current_batch)
        return self.run_state.batch_size

    # --- steps the loops call back into -----------------------------------------------------
    def _backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        hooks = self._hooks
        hooks.callbacks_then_module("on_before_backward", loss)
        scaler = self._precision.scaler
        self.lightning_module.backward(loss if scaler is None else scaler.scale(loss), *args, **kwargs)
        hooks.callbacks_then_module("on_after_backward")

    def _after_closure(self, optimizer: torch.optim.Optimizer) -> None:
        """After backward, before the optimizer step: hooks, then gradient clipping."""
        hooks = self._hooks
        hooks.callbacks_then_module("on_before_optimizer_step", optimizer)
        if self.gradient_clip_val or hooks.module_overrides("configure_gradient_clipping"):
            self.lightning_module.configure_gradient_clipping(
                optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm=self.gradient_clip_algorithm
            )

    def _log_metrics(self, metrics: dict[str, torch.Tensor], step: int) -> None:
        """Send metrics to every logger (the one place logged tensors become floats)."""
        if not metrics:
            return
        values: dict[str, Any] = to_float_dict(metrics)
        # As in Lightning, logged_metrics holds the values also without a logger (on every rank);
        # loggers write on rank 0 only.
        self._logged_metrics.update(values)
        if not self.loggers or not self.is_global_zero:
            return
        # As in Lightning: loggers also get the epoch (an int, so CSV shows "1", not "1.0"),
        # but logged_metrics holds only what the module logged.
        values.setdefault("epoch", self.state.epoch)
        for logger in self.loggers:
            logger.log_metrics(values, step=step)

    def _log_hyperparams(self, model: LightningModule, datamodule: Any) -> None:
        if not self.enable_autolog_hparams or not self.loggers or not model._log_hyperparams or not self.is_global_zero:
            return
        params = dict(model.hparams)
        if datamodule is not None and datamodule._log_hyperparams:
            params.update(datamodule.hparams)
        for logger in self.loggers:
            if params:
                logger.log_hyperparams(to_plain_hparams(params))
            logger.log_graph(model)
            logger.save()

    def _teardown(self, fn: TrainerFn, status: str) -> None:
        wait_for_checkpoints()  # a checkpoint that failed to land fails the run
        module, stage = self.lightning_module, fn.value
        for cb in self.callbacks:
            cb.teardown(self, module, stage)
        module.teardown(stage)
        if self.datamodule is not None:
            self.datamodule.teardown(stage)
        self.strategy.teardown()
        for logger in self.loggers if self.is_global_zero else []:
            logger.finalize(status)

    # --- checkpoints (fulmen/checkpoint.py) -------------------------------------------------
    def _checkpoint_dict(self, weights_only: bool = False) -> dict[str, Any]:
        """The dict `save_checkpoint` writes (bench/workloads.py builds it through here)."""
        return checkpoint_dict(self, weights_only)
