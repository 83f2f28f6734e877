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
import math
import os
import signal
from collections.abc import Generator
from contextlib import contextmanager
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from fulmen import dataloading, loop
from fulmen.accelerators import Accelerator, setup_hardware
from fulmen.arguments import check_bool, check_int, defaults_from_env, parse_max_time
from fulmen.callbacks.callback import Callback
from fulmen.checkpoint import (
    checkpoint_dict, resolve_ckpt_path, restore_modules, restore_training_state, wait_for_checkpoints,
)
from fulmen.data import check_limit, extract_batch_size, move_to_device, note_one_or_all
from fulmen.dataloading import one_or_list
from fulmen.datamodule import LightningDataModule
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.hooks import HookDispatch, is_overridden
from fulmen.hparams import to_plain_hparams
from fulmen.loggers.base import Logger
from fulmen.logging import Results, to_float_dict
from fulmen.module import LightningModule
from fulmen.optim import LightningOptimizer, LRSchedulerConfig, parse_optimizers
from fulmen.precision import Precision, parse_precision
from fulmen.preemption import DEFAULT_SIGNALS, PreemptionWatch
from fulmen.profilers import Profiler, resolve_profiler
from fulmen.profilers.wiring import finish_profiling, instrument
from fulmen.progress_views import EvaluationLoopView, FitLoopView, PredictionLoopView
from fulmen.state import RunningStage, TrainerFn, TrainerState, TrainerStatus
from fulmen.strategies import Strategy
from fulmen.strategies.launcher import spawn
from fulmen.tuner.exit import TunerExit
from fulmen.utilities.enums import GradClipAlgorithmType


def _run_spawned(trainer: Trainer, fn: TrainerFn, model: Any, datamodule: Any, ckpt_path: Any, kwargs: dict) -> Any:
    """What each ddp_spawn process runs (a module-level function, so it can be pickled)."""
    return trainer._run(fn, model, datamodule, ckpt_path, **kwargs)


def _check_barebones(**given: Any) -> None:
    """`barebones=True` turns off everything that costs speed; an argument asking for one of those
    features is a contradiction, named in the error (Lightning's list, in its order)."""
    wanted = {
        "enable_checkpointing": bool(given["enable_checkpointing"]),
        "logger": given["logger"] is not None and given["logger"] is not False,
        "enable_progress_bar": bool(given["enable_progress_bar"]),
        "log_every_n_steps": given["log_every_n_steps"] not in (None, 0),
        "enable_model_summary": bool(given["enable_model_summary"]),
        "num_sanity_val_steps": given["num_sanity_val_steps"] not in (None, 0),
        "fast_dev_run": given["fast_dev_run"] is not False and given["fast_dev_run"] != 0,
        "detect_anomaly": bool(given["detect_anomaly"]),
        "profiler": given["profiler"] is not None,
    }
    for name, asked in wanted.items():
        if asked:
            raise MisconfigurationException(
                f"Trainer(barebones=True) turns off everything that may cost speed, which {name} would turn on. "
                f"Received: barebones=True, {name}={given[name]!r}. Fix: drop {name}, or drop barebones=True."
            )


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


class Trainer:
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
        # --- barebones: the features that cost speed are off, and asking for one is an error ---
        check_bool("barebones", barebones)
        self.barebones = barebones
        if barebones:
            _check_barebones(
                enable_checkpointing=enable_checkpointing, logger=logger, enable_progress_bar=enable_progress_bar,
                log_every_n_steps=log_every_n_steps, enable_model_summary=enable_model_summary,
                num_sanity_val_steps=num_sanity_val_steps, fast_dev_run=fast_dev_run, detect_anomaly=detect_anomaly,
                profiler=profiler,
            )
            # log_every_n_steps stays at its default internally: with no logger nothing is written.
            logger, num_sanity_val_steps, log_every_n_steps = False, 0, None
        if model_registry is not None:
            raise MisconfigurationException(
                "Uploading to Lightning's model registry is not supported by fulmen. "
                f"Received: model_registry={model_registry!r}. Fix: drop model_registry and upload the checkpoint "
                "files yourself."
            )

        # --- hardware and numerics ---
        self._accelerator, self._device_ids, self.strategy, self._device = setup_hardware(
            accelerator, strategy, devices, num_nodes, sync_batchnorm
        )
        self.sync_batchnorm = sync_batchnorm
        self.precision = parse_precision(precision)
        self._precision = Precision(self.precision, self._device)

        # --- how long to train ---
        fast_dev_batches = int(fast_dev_run) if isinstance(fast_dev_run, bool) else fast_dev_run
        check_int("fast_dev_run", fast_dev_batches, 0, fix="use True, False or a number of batches")
        # As in Lightning, the attribute shows what was passed, with 1 shown as True.
        self.fast_dev_run: int | bool = True if fast_dev_batches == 1 else fast_dev_run
        check_int("max_epochs", max_epochs, -1, allow_none=True, fix="use -1 for no limit")
        check_int("min_epochs", min_epochs, 0, allow_none=True)
        check_int("max_steps", max_steps, -1, fix="use -1 for no limit")
        check_int("min_steps", min_steps, 0, allow_none=True)
        # None until fit resolves them (`_resolve_fit_limits`), as Lightning shows them.
        self.max_epochs, self.min_epochs = max_epochs, min_epochs
        self.max_steps, self.min_steps = max_steps, min_steps
        self.max_time = parse_max_time(max_time)

        # --- how much data, how often to validate ---
        self.limit_train_batches = check_limit("limit_train_batches", limit_train_batches)
        self.limit_val_batches = check_limit("limit_val_batches", limit_val_batches)
        self.limit_test_batches = check_limit("limit_test_batches", limit_test_batches)
        self.limit_predict_batches = check_limit("limit_predict_batches", limit_predict_batches)
        self.overfit_batches = check_limit("overfit_batches", overfit_batches)
        if self.overfit_batches:
            self.limit_train_batches = self.limit_val_batches = self.overfit_batches
        note_one_or_all("val_check_interval", val_check_interval)
        if val_check_interval is None:
            val_check_interval = 1.0
        if isinstance(val_check_interval, bool) or not isinstance(val_check_interval, (int, float)) or (
            isinstance(val_check_interval, float) and not 0.0 < val_check_interval <= 1.0
        ) or val_check_interval <= 0:
            raise MisconfigurationException(
                "`val_check_interval` must be a float in (0, 1] (fraction of an epoch) or an int number of "
                f"batches. Received: val_check_interval={val_check_interval!r}. Fix: e.g. 0.25 or 100."
            )
        self.val_check_interval = val_check_interval
        check_int("check_val_every_n_epoch", check_val_every_n_epoch, 1, allow_none=True)
        self.check_val_every_n_epoch = check_val_every_n_epoch
        num_sanity_val_steps = 2 if num_sanity_val_steps is None else num_sanity_val_steps
        check_int("num_sanity_val_steps", num_sanity_val_steps, -1, fix="use -1 for all batches, 0 to skip")
        self.num_sanity_val_steps = float("inf") if num_sanity_val_steps == -1 else num_sanity_val_steps
        log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        check_int("log_every_n_steps", log_every_n_steps, 1)
        self.log_every_n_steps = log_every_n_steps
        check_int("reload_dataloaders_every_n_epochs", reload_dataloaders_every_n_epochs, 0)
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs

        # --- optimization ---
        check_int("accumulate_grad_batches", accumulate_grad_batches, 1)
        self.accumulate_grad_batches = accumulate_grad_batches
        if gradient_clip_val is not None and (
            isinstance(gradient_clip_val, bool) or not isinstance(gradient_clip_val, (int, float)) or gradient_clip_val < 0
        ):
            raise MisconfigurationException(
                f"`gradient_clip_val` must be a number >= 0. Received: gradient_clip_val={gradient_clip_val!r}. "
                "Fix: e.g. gradient_clip_val=1.0."
            )
        if gradient_clip_algorithm is not None and (
            not isinstance(gradient_clip_algorithm, str) or gradient_clip_algorithm.lower() not in ("norm", "value")
        ):
            raise MisconfigurationException(
                f"`gradient_clip_algorithm` must be 'norm' or 'value'. "
                f"Received: gradient_clip_algorithm={gradient_clip_algorithm!r}. Fix: use 'norm' (default) or 'value'."
            )
        self.gradient_clip_val = gradient_clip_val
        # None when not given, as in Lightning; clip_gradients then clips by norm.
        self.gradient_clip_algorithm = (
            None if gradient_clip_algorithm is None else GradClipAlgorithmType(gradient_clip_algorithm.lower())
        )

        # --- reproducibility and debugging ---
        if deterministic not in (None, True, False, "warn"):
            raise MisconfigurationException(
                f"`deterministic` must be True, False, 'warn' or None. Received: deterministic={deterministic!r}. "
                "Fix: deterministic=True."
            )
        self.deterministic = deterministic
        if deterministic:
            # cuBLAS needs a fixed workspace to be deterministic; must be set before CUDA is used.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
            torch.backends.cudnn.deterministic = True
        for name, value, allow_none in (
            ("benchmark", benchmark, True), ("inference_mode", inference_mode, False),
            ("detect_anomaly", detect_anomaly, False), ("use_distributed_sampler", use_distributed_sampler, False),
            ("enable_checkpointing", enable_checkpointing, True), ("enable_progress_bar", enable_progress_bar, True),
            ("enable_model_summary", enable_model_summary, True),
            ("enable_autolog_hparams", enable_autolog_hparams, False),
        ):
            check_bool(name, value, allow_none)
        self.benchmark = benchmark
        if benchmark is not None:
            torch.backends.cudnn.benchmark = benchmark
        self.inference_mode = inference_mode
        self.detect_anomaly = detect_anomaly
        # trainer.profiler is always usable (`with trainer.profiler.profile(...)`); _profiler is None when
        # nothing is recorded, and then a run pays nothing for profiling (fulmen/profilers/wiring.py).
        self.profiler = resolve_profiler(profiler)
        self._profiler = None if profiler is None else self.profiler
        self.use_distributed_sampler = use_distributed_sampler
        self.enable_autolog_hparams = enable_autolog_hparams
        if default_root_dir is not None and not isinstance(default_root_dir, (str, os.PathLike)):
            raise MisconfigurationException(
                f"`default_root_dir` must be a directory path. Received: default_root_dir={default_root_dir!r}. "
                "Fix: e.g. default_root_dir='runs/' (None: the current directory)."
            )
        self.default_root_dir = os.fspath(default_root_dir) if default_root_dir is not None else os.getcwd()
        # fulmen's own argument (not in Lightning): the signals that mean "save and stop" during fit.
        signals = tuple(preemption_signals or ())
        if not all(isinstance(sig, int) and not isinstance(sig, bool) for sig in signals):
            raise MisconfigurationException(
                "`preemption_signals` must be signal numbers, e.g. (signal.SIGTERM, signal.SIGUSR1). "
                f"Received: preemption_signals={preemption_signals!r}. "
                "Fix: pass signal.Signals values, or None to turn it off."
            )
        self.preemption_signals = signals

        # --- fast_dev_run: a few batches of everything, nothing written ---
        if fast_dev_batches:
            n = fast_dev_batches
            self.max_steps, self.max_epochs = n, 1
            self.limit_train_batches = self.limit_val_batches = n
            self.limit_test_batches = self.limit_predict_batches = n
            self.num_sanity_val_steps, self.val_check_interval, self.check_val_every_n_epoch = 0, 1.0, 1
            logger = False

        # --- callbacks and loggers ---
        self.callbacks: list[Callback] = self._default_callbacks(
            callbacks, enable_checkpointing, enable_progress_bar, enable_model_summary, barebones
        )
        self.loggers: list[Any] = self._make_loggers(logger)

        # --- run state ---
        self.state = TrainerState()
        self.lightning_module: LightningModule | None = None
        self.datamodule: LightningDataModule | None = None
        self._optimizers: list[LightningOptimizer] = []
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self._hooks: HookDispatch | None = None
        self._training_step: Any = None  # the module's training_step, through the strategy's wrapper if any
        self._transfer_hooks: tuple[Any, Any, Any] = (None, None, None)
        self._transfer_is_noop = False
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
        self._results: Results | None = None
        self._train_results: Results | None = None
        self._callback_metrics: dict[str, torch.Tensor] = {}
        self._progress_bar_metrics: dict[str, torch.Tensor] = {}
        self._logged_metrics: dict[str, float] = {}
        self._in_batch = False
        self._current_batch: Any = None
        self._batch_size: int | None = None
        self._dataloader_idx = 0
        self._num_eval_loaders = 0
        self._deadline: float | None = None
        self._last_train_reload_epoch: int | None = None
        self._fit_data: dict[str, Any] = {}
        self._resume: dict[str, Any] | None = None  # a checkpoint's resume point, until its epoch starts
        self._epoch_start: dict[str, Any] | None = None  # what decided the current epoch's data order
        self._after_batch: list[Any] = []  # see fulmen.loop._run_after_batch
        self._log_due = False  # the training batch now running is a logging point (see fulmen.loop.run_train_batch)
        self._none_steps: int | None = None  # training steps that returned None, counted in fit's first epoch
        self._preemption: PreemptionWatch | None = None  # set during fit
        self._val_enabled = False
        self._ckpt_path: str | None = None

    # ======================================================================================
    # public entry points
    # ======================================================================================
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
        model = self._model_or_attached(model, "predict")
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

    # ======================================================================================
    # properties
    # ======================================================================================
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
        return self._val_enabled

    @property
    def received_sigterm(self) -> bool:
        """Whether this process received SIGTERM during the running fit (see `preemption_signals`)."""
        return self._preemption is not None and self._preemption.received == signal.SIGTERM

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

    @contextmanager
    def init_module(self, empty_init: bool | None = None) -> Generator[None, None, None]:
        """Build the model's tensors on the Trainer's device, in its dtype for `*-true` precision:
        `with trainer.init_module(): model = Model()`. (`empty_init` is accepted for Lightning's
        signature; the weights are always initialized.)"""
        dtype = self._precision.true_dtype
        previous = torch.get_default_dtype()
        with torch.device(self._device):
            if dtype is not None:
                torch.set_default_dtype(dtype)
            try:
                yield
            finally:
                torch.set_default_dtype(previous)

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """Latest value of every logged metric (tensors), as monitoring callbacks see them. As in
        Lightning this is the trainer's own dict: a value written into it is what callbacks then read."""
        metrics = self._callback_metrics
        for results in (self._train_results, self._results):
            if results is not None:
                metrics.update(results.view("callback"))
        return metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """Metrics logged with prog_bar=True, as floats. Each read is a host sync: read sparingly."""
        metrics = dict(self._progress_bar_metrics)
        for results in (self._train_results, self._results):
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
        from fulmen.callbacks.model_checkpoint import ModelCheckpoint

        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    @property
    def checkpoint_callbacks(self) -> list[Any]:
        from fulmen.callbacks.model_checkpoint import ModelCheckpoint

        return [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]

    @property
    def early_stopping_callback(self) -> Any:
        from fulmen.callbacks.early_stopping import EarlyStopping

        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def early_stopping_callbacks(self) -> list[Any]:
        from fulmen.callbacks.early_stopping import EarlyStopping

        return [c for c in self.callbacks if isinstance(c, EarlyStopping)]

    @property
    def progress_bar_callback(self) -> Any:
        from fulmen.callbacks.progress import ProgressBar

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
        return one_or_list(self._val_loaders)

    @property
    def test_dataloaders(self) -> Any:
        return one_or_list(self._test_loaders)

    @property
    def predict_dataloaders(self) -> Any:
        return one_or_list(self._predict_loaders)

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

    # ======================================================================================
    # construction helpers
    # ======================================================================================
    def _default_callbacks(
        self, callbacks: Any, enable_checkpointing: bool | None, enable_progress_bar: bool | None,
        enable_model_summary: bool | None, barebones: bool,
    ) -> list[Callback]:
        from fulmen.callbacks.model_checkpoint import ModelCheckpoint
        from fulmen.callbacks.model_summary import ModelSummary
        from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar

        given = [] if callbacks is None else [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
        for i, cb in enumerate(given):
            if not isinstance(cb, Callback):
                raise MisconfigurationException(
                    f"Every item of `callbacks` must be a fulmen Callback. Received: callbacks[{i}] of type "
                    f"{type(cb).__name__}. Fix: subclass fulmen.Callback."
                )
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
        if logger is False:
            return []
        if logger is None or logger is True:
            from fulmen.loggers import TensorBoardLogger

            return [TensorBoardLogger(save_dir=self.default_root_dir)]
        if isinstance(logger, (str, bytes)):
            raise MisconfigurationException(
                "`logger` must be True, False, a Logger or a list of Loggers, not a name. "
                f"Received: logger={logger!r}. Fix: e.g. logger=TensorBoardLogger('logs/') or CSVLogger('logs/')."
            )
        loggers = list(logger) if isinstance(logger, Iterable) else [logger]
        for i, lg in enumerate(loggers):
            if not callable(getattr(lg, "log_metrics", None)):
                raise MisconfigurationException(
                    f"`logger` must be True, False, a Logger or a list of Loggers. Received: logger[{i}] of type "
                    f"{type(lg).__name__}. Fix: e.g. logger=TensorBoardLogger('logs/')."
                )
        return loggers

    # ======================================================================================
    # the run
    # ======================================================================================
    def _model_or_attached(self, model: LightningModule | None, fn: str) -> LightningModule:
        if model is None:
            if self.lightning_module is None:
                raise MisconfigurationException(
                    f"trainer.{fn}() was called without a model and no model was fitted before. "
                    f"Received: model=None. Fix: trainer.{fn}(model, dataloaders)."
                )
            return self.lightning_module
        return model

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
        model = self._model_or_attached(model, name)
        return self._run(fn, model, datamodule, ckpt_path, eval_loaders=dataloaders, verbose=verbose)

    def _check_model(self, model: Any) -> None:
        if not isinstance(model, LightningModule):
            raise MisconfigurationException(
                f"The model must be a fulmen.LightningModule. Received: {type(model).__name__}. "
                "Fix: subclass fulmen.LightningModule (import fulmen as pl; class Model(pl.LightningModule))."
            )
        if "_trainer" not in model.__dict__:
            raise MisconfigurationException(
                f"{type(model).__name__}.__init__ did not call super().__init__(). "
                "Received: a module without LightningModule state. Fix: make `super().__init__()` the first "
                "line of __init__. (fulmen doctor code FM401)"
            )

    def _run(
        self, fn: TrainerFn, model: LightningModule, datamodule: LightningDataModule | None, ckpt_path: Any,
        **kwargs: Any,
    ) -> Any:
        model = _unwrap_compiled(model)
        self._check_model(model)
        if datamodule is not None and not isinstance(datamodule, LightningDataModule):
            raise MisconfigurationException(
                f"`datamodule` must be a fulmen.LightningDataModule. Received: {type(datamodule).__name__}. "
                "Fix: subclass fulmen.LightningDataModule, or pass dataloaders directly."
            )
        self.state.fn, self.state.status, self.state.stage = fn, TrainerStatus.RUNNING, None
        if fn == TrainerFn.FITTING:
            self._resolve_fit_limits()
        self.state.should_stop = False
        self.strategy.failing = False  # a run after one that failed talks to the other ranks again
        self.lightning_module, self.datamodule = model, datamodule
        model.trainer = self
        if datamodule is not None:
            datamodule.trainer = self
        if self.strategy.spawns and not self.strategy.launched:  # ddp_spawn: run in new processes
            return spawn(self, _run_spawned, fn, model, datamodule, ckpt_path, kwargs)
        try:
            self.strategy.setup_environment()
            self._setup(fn, model, datamodule, ckpt_path, kwargs)
            if fn == TrainerFn.FITTING:
                anomaly = torch.autograd.set_detect_anomaly(self.detect_anomaly)
                with anomaly, PreemptionWatch(self.preemption_signals) as self._preemption:
                    loop.run_fit(self)
                result = None
            elif fn == TrainerFn.PREDICTING:
                result = loop.run_predict(self, kwargs["return_predictions"])
            else:
                stage = RunningStage.VALIDATING if fn == TrainerFn.VALIDATING else RunningStage.TESTING
                result = loop.run_evaluation(self, stage)
                if kwargs.get("verbose"):
                    loop.print_results(stage, result)
            self._teardown(fn, "success")
            self.state.status = TrainerStatus.FINISHED
            return result
        except TunerExit:  # fulmen.tuner.Tuner: the search it ran in on_fit_start is done; end fit there
            self._teardown(fn, "success")
            self.state.status = TrainerStatus.FINISHED
            return None
        except KeyboardInterrupt as exc:
            warn_once(f"Detected KeyboardInterrupt: shut down gracefully; trainer.interrupted is True. `Trainer.{fn.value}` "
                      f"stopped at epoch {self.state.epoch}, step {self.state.global_step}; exiting with status 1.")
            self._shut_down_after_interrupt(exc)
            # As in Lightning, the script then ends with a failure status, so `python train.py && next`
            # does not go on to `next` after Ctrl-C (a caller that must go on catches SystemExit).
            raise SystemExit(1) from None
        except BaseException as exc:
            preempted = self._preemption is not None and self._preemption.due(self.strategy.distributed) is not None
            if preempted and isinstance(exc, SystemExit):  # stop_for_preemption's exit, not an error after the signal
                self.state.status = TrainerStatus.INTERRUPTED  # preempted: already saved and logged, not a failure
                raise
            self._on_exception(exc)
            if isinstance(exc, Exception) and self.lightning_module is not None:
                self._explain(exc)
            clearer = self.strategy.explain_failure(exc)  # e.g. "rank 1 failed" instead of a broken connection
            if clearer is not None:
                raise clearer from exc
            raise
        finally:
            self._preemption = None
            self._training_step = None  # may hold the strategy's DDP wrapper
            if self._profiler is not None:
                finish_profiling(self)  # the report, written also after a failure
            self.state.stage = None
            self._results = self._train_results = None

    def _resolve_fit_limits(self) -> None:
        """Lightning's defaults for the limits left unset, decided when fit starts (so that
        `trainer.max_epochs` reads None until then, as in Lightning): 1000 epochs when neither
        max_epochs nor max_steps is set and no time limit is, else no epoch limit; min_epochs 0,
        or 1 with min_steps."""
        from fulmen.callbacks.timer import Timer

        if self.max_epochs is None:
            timed = self.max_time is not None or any(isinstance(cb, Timer) for cb in self.callbacks)
            self.max_epochs = 1000 if self.max_steps == -1 and not timed else -1
        if self.min_epochs is None:
            self.min_epochs = 1 if self.min_steps is not None else 0

    def _shut_down_after_interrupt(self, exc: KeyboardInterrupt) -> None:
        """`_on_exception`, with a second Ctrl-C ignored meanwhile (the user presses it again while
        the loggers close), then the previous handler back."""
        import threading

        if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
            self._on_exception(exc)
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._on_exception(exc)
        finally:
            if previous is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signal.SIGINT, previous)

    def _explain(self, exc: Exception) -> None:
        """Attach fulmen doctor's diagnosis to an error it explains (see `fulmen.doctor.explain_runtime_error`)."""
        from fulmen.doctor import explain_runtime_error

        try:
            explain_runtime_error(exc, self.lightning_module)
        except Exception as err:  # the user's error is what matters; a failing diagnosis must not replace it
            warn_once(f"fulmen doctor could not explain {type(exc).__name__}: {type(err).__name__}: {err}")

    def _on_exception(self, exc: BaseException) -> None:
        """Tell the callbacks and the module, then close the loggers. A handler that fails itself
        becomes a warning, so that the others still run and `exc`, the user's error, propagates."""
        self.state.status = TrainerStatus.INTERRUPTED
        self.strategy.failing = True  # the handlers below must not wait for ranks that may be gone
        module = self.lightning_module
        handlers = [("landing background checkpoints", wait_for_checkpoints)]
        handlers += [(f"{type(cb).__name__}.on_exception", lambda cb=cb: cb.on_exception(self, module, exc))
                     for cb in self.callbacks]
        if module is not None:
            handlers.append((f"{type(module).__name__}.on_exception", lambda: module.on_exception(exc)))
        handlers += [(f"{type(lg).__name__}.finalize", lambda lg=lg: lg.finalize("failed")) for lg in self.loggers]
        for name, handler in handlers:
            try:
                handler()
            except Exception as err:
                warn_once(f"{name} raised {type(err).__name__}: {err} while handling {type(exc).__name__}; "
                          f"the {type(exc).__name__} is what propagates.")

    def _setup(self, fn: TrainerFn, model: LightningModule, datamodule: Any, ckpt_path: Any, data: dict) -> None:
        stage = fn.value
        if fn == TrainerFn.FITTING:
            # Known from the start: configure_optimizers or a callback's setup may read
            # trainer.estimated_stepping_batches, which loads the training data early.
            self._fit_data, self.train_dataloader = data, None
        self._merge_model_callbacks(model)
        # Found before the callbacks' setup decides the run's log directory: a run resumed from
        # "last" logs on in the version folder of the checkpoint it found (fulmen/checkpoint.py).
        self._ckpt_path, checkpoint = resolve_ckpt_path(self, fn, ckpt_path)
        if datamodule is not None:
            datamodule.prepare_data()
        model.prepare_data()
        if datamodule is not None:
            datamodule.setup(stage)
        for cb in self.callbacks:
            cb.setup(self, model, stage)
        model.setup(stage)
        model.configure_model()
        self._precision.convert_module(model)
        model.to(self._device)
        if self.sync_batchnorm:
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # Wrapped (DDP) or sharded (FSDP) before the checkpoint is loaded and the optimizers are
        # made: FSDP replaces the parameters with their shards.
        self.strategy.setup_module(model, self._device, training=fn == TrainerFn.FITTING)
        if fn == TrainerFn.FITTING:
            self._check_fit_model(model)
            # `fulmen doctor` on the user's classes, as warnings (once per run, not once per rank)
            if os.environ.get("FULMEN_DOCTOR", "1") != "0" and self.is_global_zero:
                from fulmen.doctor import check_at_fit

                check_at_fit(model, datamodule)
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
        if self._profiler is None:
            self._hooks = HookDispatch(self, model, self.callbacks)
        else:  # decided once here, so a run without a profiler pays nothing per batch
            # As in Lightning: the rank is in the report's file name only when there are several processes.
            self._profiler.setup(stage, self.local_rank if self.world_size > 1 else None, self.log_dir)
            self._hooks = instrument(self, model, self.callbacks, self._profiler)
        # After a profiler wrapped the method; autocast (mixed precision) around the strategy's forward.
        self._training_step = loop.bind_training_step(self, model)
        self._transfer_hooks = tuple(
            self._batch_hook(name)
            for name in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
        )
        self._transfer_is_noop = (
            self._transfer_hooks == (None, None, None) and self._device.type == "cpu"
            and self._precision.true_dtype is None
        )
        dataloading.setup_dataloaders(self, fn, model, datamodule, data)
        if checkpoint is not None and fn == TrainerFn.FITTING:
            restore_training_state(self, checkpoint, self._ckpt_path)
        self._log_hyperparams(model, datamodule)

    def _check_fit_model(self, model: LightningModule) -> None:
        if not is_overridden("training_step", model, LightningModule):
            raise MisconfigurationException(
                f"{type(model).__name__} has no training_step, so fit has nothing to run. "
                "Received: no training_step override. Fix: define `def training_step(self, batch, batch_idx)` "
                "returning the loss."
            )
        if model.automatic_optimization and not is_overridden("configure_optimizers", model, LightningModule):
            raise MisconfigurationException(
                f"{type(model).__name__} has no configure_optimizers, which automatic optimization needs. "
                "Received: no configure_optimizers override. Fix: define `def configure_optimizers(self): "
                "return torch.optim.Adam(self.parameters(), lr=1e-3)`."
            )
        if not model.automatic_optimization and self.gradient_clip_val:
            raise MisconfigurationException(
                "gradient_clip_val is applied by automatic optimization; under manual optimization clip yourself. "
                f"Received: gradient_clip_val={self.gradient_clip_val!r} with automatic_optimization=False. "
                "Fix: call self.clip_gradients(opt, gradient_clip_val=...) before opt.step() in training_step."
            )
        if not model.automatic_optimization and self.accumulate_grad_batches != 1:
            raise MisconfigurationException(
                "accumulate_grad_batches is applied by automatic optimization; under manual optimization "
                f"accumulate yourself. Received: accumulate_grad_batches={self.accumulate_grad_batches}. "
                "Fix: step the optimizer every N batches in training_step."
            )

    def _merge_model_callbacks(self, model: LightningModule) -> None:
        """Add `configure_callbacks()`; they replace Trainer callbacks of the same type. Checkpointing goes last."""
        from fulmen.callbacks.model_checkpoint import ModelCheckpoint

        extra = model.configure_callbacks()
        extra = [] if extra is None else [extra] if isinstance(extra, Callback) else list(extra)
        if extra:
            types = {type(c) for c in extra}
            self.callbacks = [c for c in self.callbacks if type(c) not in types] + extra
        # Checkpoints last, so they save what every other callback has already updated.
        self.callbacks = [c for c in self.callbacks if not isinstance(c, ModelCheckpoint)] + [
            c for c in self.callbacks if isinstance(c, ModelCheckpoint)
        ]

    # --- data: fulmen/dataloading.py does the work; loop.py and tests call these ----------
    def _prepare_loader(self, loader: Any, train: bool) -> Any:
        return dataloading.prepare_loader(self, loader, train)

    def _load_train_dataloader(self) -> None:
        dataloading.load_train_dataloader(self)

    def _load_val_dataloaders(self) -> None:
        dataloading.load_val_dataloaders(self)

    def _compute_val_check_batch(self) -> None:
        dataloading.compute_val_check_batch(self)

    # --- batches ----------------------------------------------------------------------------
    def _to_device(self, batch: Any, dataloader_idx: int) -> Any:
        """on_before_batch_transfer → transfer_batch_to_device → on_after_batch_transfer."""
        before, transfer, after = self._transfer_hooks
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

    def _batch_hook(self, name: str) -> Any:
        """The batch-transfer hook `name` to call, decided once per run: as in Lightning, the
        datamodule's when it overrides it (even if the module does too), else the module's when
        it does, else None."""
        dm, module_has = self.datamodule, self._hooks.module_overrides(name)
        if dm is not None and is_overridden(name, dm, LightningDataModule):
            if module_has:
                warn_once(f"{name} is overridden in both the LightningModule and the LightningDataModule; "
                          "the LightningDataModule's is used. Fix: keep only one of them.")
            return getattr(dm, name)
        return getattr(self.lightning_module, name) if module_has else None

    def _current_batch_size(self) -> int:
        if self._batch_size is None:
            self._batch_size = extract_batch_size(self._current_batch)
        return self._batch_size

    # --- steps the loops call back into ------------------------------------------------------
    def _backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        hooks = self._hooks
        hooks.both("on_before_backward", loss)
        scaler = self._precision.scaler
        self.lightning_module.backward(loss if scaler is None else scaler.scale(loss), *args, **kwargs)
        hooks.both("on_after_backward")

    def _after_closure(self, optimizer: torch.optim.Optimizer) -> None:
        """After backward, before the optimizer step: hooks, then gradient clipping."""
        hooks = self._hooks
        hooks.both("on_before_optimizer_step", optimizer)
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

    # ======================================================================================
    # checkpoints (fulmen/checkpoint.py)
    # ======================================================================================
    def _checkpoint_dict(self, weights_only: bool = False) -> dict[str, Any]:
        """The dict `save_checkpoint` writes (bench/workloads.py builds it through here)."""
        return checkpoint_dict(self, weights_only)
