"""Bad input, one table: every case ends in a clear error or a documented warning, and leaves the run
directory as it was.

Each case runs against a real run directory that already holds an earlier run's checkpoint and
logs (`run`); the Trainers of the fit-level cases write into it (a CSVLogger and a ModelCheckpoint
pointed there). Each case asserts:

- the exception type (or warning), and a message fragment naming the argument or value received;
- when fulmen raises or warns, that the message says how to fix it ("Fix");
- afterwards, every file that was in the run directory has the same bytes, and no temporary
  file is left.

When the error is the user's own (a Dataset raising, configure_optimizers raising) or torch's
(anomaly detection, collating a set), it must come through unchanged, with its message.

Complementary tables, not repeated here: tests/test_errors.py (the module, bad losses, other
Trainer arguments), tests/test_logging.py `BAD_LOGS` (non-scalar tensor, string, None, options
that clash, reduce_fx, logging outside a loop), tests/test_configure_optimizers.py `MALFORMED` (string,
dict keys, scheduler dicts, interval, frequency, foreign optimizer, plateau without monitor).
"""

from __future__ import annotations

import gc
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

import fulmen as pl
from fulmen.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from fulmen.checkpoint import CheckpointError
from fulmen.errors import MisconfigurationException
from fulmen.loggers import CSVLogger, TensorBoardLogger

from helpers import random_regression

Misconf = MisconfigurationException


# --- the model, the data and the run ----------------------------------------------------------
def loss_of(model: pl.LightningModule, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model.layer(x), y)


class Model(pl.LightningModule):
    """Trains a Linear(3, 1), logging train_loss; `step` and `configure` replace the defaults."""

    def __init__(self, step: Callable | None = None, configure: Callable | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.step, self.configure = step, configure

    def training_step(self, batch, batch_idx):
        if self.step is not None:
            return self.step(self, batch)
        loss = loss_of(self, batch)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return self.configure(self) if self.configure is not None else torch.optim.SGD(self.parameters(), lr=0.1)


def loader(dataset: Any = None, **kwargs: Any) -> DataLoader:
    return DataLoader(random_regression(8) if dataset is None else dataset, batch_size=4, **kwargs)


def fit(run: Path, model: Any = None, data: Any = None, callbacks: tuple = (), ckpt_path: Any = None,
        **trainer_kwargs: Any) -> pl.Trainer:
    """Fit in `run`: logs to a new lightning_logs/version_N, checkpoints into run/checkpoints."""
    options = dict(accelerator="cpu", default_root_dir=run, max_epochs=2, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
                   logger=CSVLogger(run, name="lightning_logs"))
    trainer = pl.Trainer(**{**options, **trainer_kwargs},
                         callbacks=[ModelCheckpoint(dirpath=run / "checkpoints"), *callbacks])
    trainer.fit(Model() if model is None else model, loader() if data is None else data, ckpt_path=ckpt_path)
    return trainer


def trainer_with(**kwargs: Any) -> Callable[[Path], Any]:
    return lambda run: pl.Trainer(**{"default_root_dir": run, "accelerator": "cpu", "logger": False, **kwargs})


def logs_with(*calls: Callable) -> Model:
    """A model whose training_step makes the `calls(model, loss)` before returning the loss."""
    def step(model, batch):
        loss = loss_of(model, batch)
        for call in calls:
            call(model, loss)
        return loss

    return Model(step=step)


def optimizers(configure: Callable) -> Callable[[Path], Any]:
    return lambda run: fit(run, Model(configure=configure))


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1)


def step_lr(optimizer: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)


def sgd_with(scheduler: Callable = step_lr, **config: Any) -> Callable:
    """configure_optimizers: SGD, and `scheduler` on it in an lr_scheduler dict with `config`."""
    def configure(model):
        optimizer = sgd(model)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler(optimizer), **config}}

    return configure


def sgd_and_scheduler_tuple(model: nn.Module) -> tuple:
    optimizer = sgd(model)
    return optimizer, step_lr(optimizer)


plateau = torch.optim.lr_scheduler.ReduceLROnPlateau


class RaisingDataset(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        if index == 5:
            raise ValueError(f"corrupt sample {index}")
        return torch.randn(3), torch.randn(1)


def fit_with_a_failing_worker(run: Path) -> None:
    try:
        fit(run, data=loader(RaisingDataset(), num_workers=2))
    finally:
        # The exception's traceback keeps the DataLoader iterator in a reference cycle. When the
        # cycle collector frees it, it may close the iterator's queues before the iterator tells its
        # workers to stop, and torch then waits 2 x 5 s for them. Shut them down now instead.
        # `type(obj) is` rather than isinstance: gc also lists weak proxies whose target is gone,
        # and isinstance on one of those raises ReferenceError.
        for obj in gc.get_objects():
            if type(obj) is torch.utils.data.dataloader._MultiProcessingDataLoaderIter:
                obj._shutdown_workers()


class RaisingStream(IterableDataset):
    def __iter__(self):
        yield torch.randn(3), torch.randn(1)
        raise OSError("shard-0003 is missing")


class Opaque:
    """A batch type fulmen knows nothing about (no tensors, no `.to`)."""


def opaque_batches() -> DataLoader:
    return DataLoader(range(8), batch_size=4, collate_fn=lambda items: Opaque())


def opaque_step(model, batch):
    assert isinstance(batch, Opaque)  # handed over untouched
    loss = model.layer(torch.ones(3)).sum()
    model.log("loss", loss, on_epoch=True)  # the batch size cannot be read from an Opaque
    return loss


def diverging(value: float) -> Model:
    """A model whose loss is `value` (nan/inf) from the second epoch on (with zero gradients)."""
    def step(model, batch):
        loss = loss_of(model, batch)
        if model.current_epoch >= 1:
            loss = loss * 0 + value
        model.log("train_loss", loss)
        return loss

    return Model(step=step)


def nan_gradient(model, batch):
    # sqrt'(0) is inf, and inf * 0 is nan: MulBackward0 returns nan in the backward pass.
    return (model.layer(batch[0]) * 0).sqrt().sum()


class Wider(Model):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)  # the earlier run trained a Linear(3, 1)


def trained_steps(n: int) -> Callable[[pl.Trainer], None]:
    def check(trainer: pl.Trainer) -> None:
        assert trainer.global_step == n

    return check


def stopped_on_non_finite(value: str) -> Callable[[pl.Trainer], None]:
    def check(trainer: pl.Trainer) -> None:
        stopper = trainer.early_stopping_callback
        assert trainer.current_epoch == 2 and trainer.global_step == 4  # epochs 0 and 1 ran, not 2..9
        assert stopper.stopped_epoch == 1
        assert stopper.stopping_reason_message.startswith(f"Monitored metric train_loss = {value} is not finite.")
        assert stopper.stopping_reason_message.endswith("Signaling Trainer to stop.")

    return check


# --- the table --------------------------------------------------------------------------------
@dataclass
class Case:
    run: Callable[[Path], Any]  # does the bad thing in the run directory
    raises: type[BaseException] | None = None  # the exception expected ...
    warns: type[Warning] | None = None  # ... or the warning
    match: str = ""  # a regular expression the message must contain
    fix: bool = True  # fulmen's own message: it must say "Fix"
    absent: str | None = None  # text the message must not contain
    check: Callable[[Any], None] | None = None  # more assertions on what `run` returned


CASES: dict[str, Case] = {
    # ---- Trainer arguments: rejected in __init__ ----
    "max_epochs_below_minus_one": Case(trainer_with(max_epochs=-2), Misconf,
                                       match=r"`max_epochs` must be an int >= -1 or None\. Received: max_epochs=-2"),
    "min_epochs_negative": Case(trainer_with(min_epochs=-1), Misconf, match=r"Received: min_epochs=-1"),
    "max_steps_float": Case(trainer_with(max_steps=1.5), Misconf,
                            match=r"`max_steps` must be an int >= -1\. Received: max_steps=1\.5"),
    "min_steps_string": Case(trainer_with(min_steps="10"), Misconf, match=r"Received: min_steps='10'"),
    "max_time_prose": Case(trainer_with(max_time="1 hour"), Misconf,
                           match=r"`max_time` must be 'DD:HH:MM:SS'.*Received: max_time='1 hour'"),
    "max_time_bad_dict_key": Case(trainer_with(max_time={"hourz": 1}), Misconf,
                                  match=r"Received: max_time=\{'hourz': 1\}"),
    "max_time_float": Case(trainer_with(max_time=3.5), Misconf, match=r"Received: max_time=3\.5"),
    "limit_val_batches_negative": Case(trainer_with(limit_val_batches=-1), Misconf,
                                       match=r"must not be negative\. Received: limit_val_batches=-1"),
    "limit_test_batches_string": Case(trainer_with(limit_test_batches="all"), Misconf,
                                      match=r"`limit_test_batches` must be an int.*Received: limit_test_batches='all'"),
    "overfit_batches_fraction_above_one": Case(trainer_with(overfit_batches=2.0), Misconf,
                                               match=r"Received: overfit_batches=2\.0"),
    "val_check_interval_fraction_above_one": Case(trainer_with(val_check_interval=1.5), Misconf,
                                                  match=r"Received: val_check_interval=1\.5"),
    "check_val_every_n_epoch_zero": Case(trainer_with(check_val_every_n_epoch=0), Misconf,
                                         match=r"Received: check_val_every_n_epoch=0"),
    "num_sanity_val_steps_below_minus_one": Case(trainer_with(num_sanity_val_steps=-2), Misconf,
                                                 match=r"Received: num_sanity_val_steps=-2"),
    "fast_dev_run_negative": Case(trainer_with(fast_dev_run=-1), Misconf, match=r"Received: fast_dev_run=-1"),
    "reload_dataloaders_negative": Case(trainer_with(reload_dataloaders_every_n_epochs=-1), Misconf,
                                        match=r"Received: reload_dataloaders_every_n_epochs=-1"),
    "deterministic_string": Case(trainer_with(deterministic="yes"), Misconf,
                                 match=r"must be True, False, 'warn' or None\. Received: deterministic='yes'"),
    "strategy_unknown": Case(trainer_with(strategy="dpp"), Misconf, match=r"Unknown strategy\. Received: strategy='dpp'"),
    "single_device_two_devices": Case(trainer_with(strategy="single_device", devices=2), Misconf,
                                      match=r"Received: devices=2, num_nodes=1\. Fix: use strategy='ddp'"),
    "num_nodes_two_without_launcher": Case(trainer_with(num_nodes=2), Misconf,
                                           match=r"num_nodes=2 needs .* Fix: launch with `torchrun --nnodes=2"),
    "num_nodes_zero": Case(trainer_with(num_nodes=0), Misconf, match=r"Received: num_nodes=0"),
    "sync_batchnorm_on_cpu": Case(trainer_with(strategy="ddp", devices=2, sync_batchnorm=True), Misconf,
                                  match=r"sync_batchnorm=True needs GPUs.*Received: sync_batchnorm=True"),
    "devices_fraction": Case(trainer_with(devices=1.5), Misconf, match=r"Received: devices=1\.5"),
    "gradient_clip_val_string": Case(trainer_with(gradient_clip_val="1.0"), Misconf,
                                     match=r"Received: gradient_clip_val='1\.0'"),
    "accumulate_grad_batches_float": Case(trainer_with(accumulate_grad_batches=2.5), Misconf,
                                          match=r"Received: accumulate_grad_batches=2\.5"),
    "benchmark_string": Case(trainer_with(benchmark="yes"), Misconf,
                             match=r"`benchmark` must be True or False \(or None.*Received: benchmark='yes'"),
    "detect_anomaly_string": Case(trainer_with(detect_anomaly="yes"), Misconf,
                                  match=r"`detect_anomaly` must be True or False\. Received: detect_anomaly='yes'"),
    "inference_mode_string": Case(trainer_with(inference_mode="no"), Misconf, match=r"Received: inference_mode='no'"),
    "enable_model_summary_string": Case(trainer_with(enable_model_summary="off"), Misconf,
                                        match=r"Received: enable_model_summary='off'"),
    "default_root_dir_number": Case(lambda run: pl.Trainer(default_root_dir=5), Misconf,
                                    match=r"must be a directory path\. Received: default_root_dir=5"),
    "logger_by_name": Case(trainer_with(logger="tensorboard"), Misconf,
                           match=r"`logger` must be.*not a name\. Received: logger='tensorboard'"),
    "checkpointing_off_with_model_checkpoint": Case(
        lambda run: pl.Trainer(enable_checkpointing=False, callbacks=[ModelCheckpoint(dirpath=run / "checkpoints")]),
        Misconf, match=r"enable_checkpointing=False but a ModelCheckpoint was passed"),
    "progress_bar_off_with_a_bar": Case(
        lambda run: pl.Trainer(enable_progress_bar=False, callbacks=[TQDMProgressBar()]), Misconf,
        match=r"enable_progress_bar=False but a progress bar was passed"),

    # ---- callback and logger arguments ----
    "early_stopping_without_monitor": Case(lambda run: EarlyStopping(monitor=None), Misconf,
                                           match=r"EarlyStopping needs a metric to watch\. Received: monitor=None"),
    "early_stopping_empty_monitor": Case(lambda run: EarlyStopping(monitor=""), Misconf,
                                         match=r"EarlyStopping: `monitor` must be the name.*Received: monitor=''"),
    "early_stopping_mode": Case(lambda run: EarlyStopping("val_loss", mode="maximum"), Misconf,
                                match=r"EarlyStopping: `mode` must be 'min' or 'max'\. Received: mode='maximum'"),
    "early_stopping_patience_negative": Case(lambda run: EarlyStopping("val_loss", patience=-1), Misconf,
                                             match=r"`patience` must be an int >= 0\. Received: patience=-1"),
    "early_stopping_patience_float": Case(lambda run: EarlyStopping("val_loss", patience=2.5), Misconf,
                                          match=r"Received: patience=2\.5"),
    "early_stopping_min_delta_string": Case(lambda run: EarlyStopping("val_loss", min_delta="0.1"), Misconf,
                                            match=r"`min_delta` must be a number\. Received: min_delta='0\.1'"),
    "early_stopping_threshold_string": Case(lambda run: EarlyStopping("val_loss", stopping_threshold="low"), Misconf,
                                            match=r"`stopping_threshold` must be a number or None\. "
                                                  r"Received: stopping_threshold='low'"),
    "early_stopping_divergence_list": Case(lambda run: EarlyStopping("val_loss", divergence_threshold=[9]), Misconf,
                                           match=r"Received: divergence_threshold=\[9\]"),
    "checkpoint_save_top_k_below_minus_one": Case(lambda run: ModelCheckpoint(save_top_k=-2), Misconf,
                                                  match=r"`save_top_k` must be an int >= -1\. Received: save_top_k=-2"),
    "checkpoint_top_k_without_monitor": Case(lambda run: ModelCheckpoint(save_top_k=3), Misconf,
                                             match=r"cannot rank checkpoints.*Received: monitor=None"),
    "checkpoint_save_last_string": Case(lambda run: ModelCheckpoint(save_last="always"), Misconf,
                                        match=r"`save_last` must be True, False, 'link' or None\. "
                                              r"Received: save_last='always'"),
    "checkpoint_every_n_train_steps_negative": Case(lambda run: ModelCheckpoint(every_n_train_steps=-1), Misconf,
                                                    match=r"Received: every_n_train_steps=-1"),
    "checkpoint_every_n_epochs_float": Case(lambda run: ModelCheckpoint(every_n_epochs=1.5), Misconf,
                                            match=r"Received: every_n_epochs=1\.5"),
    "checkpoint_train_time_interval_seconds": Case(lambda run: ModelCheckpoint(train_time_interval=60), Misconf,
                                                   match=r"`train_time_interval` must be a datetime\.timedelta\. "
                                                         r"Received: int"),
    "checkpoint_two_triggers": Case(lambda run: ModelCheckpoint(every_n_train_steps=2, every_n_epochs=1), Misconf,
                                    match=r"are exclusive\. Received: every_n_train_steps=2, every_n_epochs=1"),
    "checkpoint_mode": Case(lambda run: ModelCheckpoint(monitor="val_loss", mode="best"), Misconf,
                            match=r"ModelCheckpoint: `mode` must be 'min' or 'max'\. Received: mode='best'"),
    "checkpoint_monitor_number": Case(lambda run: ModelCheckpoint(monitor=5), Misconf,
                                      match=r"Received: monitor=5"),
    "checkpoint_filename_unbalanced_brace": Case(lambda run: ModelCheckpoint(filename="{epoch-{step}"), Misconf,
                                                 match=r"`filename` is not a valid template.*"
                                                       r"Received: filename='\{epoch-\{step\}'"),
    "checkpoint_dirpath_is_a_file": Case(
        lambda run: fit(run, callbacks=[ModelCheckpoint(dirpath=run / "lightning_logs" / "version_0" / "metrics.csv")]),
        Misconf, match=r"`dirpath` must be a directory, but a file has that name\. Received: dirpath='.*metrics\.csv'"),
    "progress_bar_refresh_rate_negative": Case(lambda run: TQDMProgressBar(refresh_rate=-1), ValueError,
                                               match=r"Received: refresh_rate=-1\. Fix"),
    "progress_bar_refresh_rate_float": Case(lambda run: TQDMProgressBar(refresh_rate=0.5), ValueError,
                                            match=r"Received: refresh_rate=0\.5"),
    "progress_bar_process_position_negative": Case(lambda run: TQDMProgressBar(process_position=-1), ValueError,
                                                   match=r"`process_position` to be an int >= 0.*"
                                                         r"Received: process_position=-1"),
    "tensorboard_logger_without_save_dir": Case(lambda run: TensorBoardLogger(save_dir=None), TypeError,
                                                match=r"TensorBoardLogger\(save_dir=\.\.\.\) must be a directory "
                                                      r"path\. Received: save_dir=None"),
    "tensorboard_logger_version_float": Case(lambda run: TensorBoardLogger(run, version=1.5), TypeError,
                                             match=r"Received: version=1\.5"),
    "csv_logger_flush_zero": Case(lambda run: CSVLogger(run, flush_logs_every_n_steps=0), ValueError,
                                  match=r"Received: flush_logs_every_n_steps=0"),
    "csv_logger_prefix_number": Case(lambda run: CSVLogger(run, prefix=3), TypeError, match=r"Received: prefix=3"),

    # ---- self.log (more in tests/test_logging.py BAD_LOGS) ----
    "log_name_clashes_with_a_forked_name": Case(
        lambda run: fit(run, logs_with(lambda m, loss: m.log("acc", loss, on_step=True, on_epoch=True),
                                     lambda m, loss: m.log("acc_step", loss))),
        Misconf, match=r"self\.log\('acc_step'\) clashes with another logged name: 'acc'.*Received: both"),
    "log_forked_name_after_its_parts": Case(
        lambda run: fit(run, logs_with(lambda m, loss: m.log("acc_epoch", loss),
                                     lambda m, loss: m.log("acc", loss, on_step=True, on_epoch=True))),
        Misconf, match=r"self\.log\('acc'\) clashes with another logged name"),
    "log_empty_name": Case(lambda run: fit(run, logs_with(lambda m, loss: m.log("", loss))), Misconf,
                           match=r"self\.log needs a non-empty string name\. Received: name=''"),
    "log_dict_value": Case(lambda run: fit(run, logs_with(lambda m, loss: m.log("metrics", {"acc": loss}))), Misconf,
                           match=r"self\.log\('metrics', value\) needs a number.*Received: value of type dict"),
    "log_numpy_array": Case(lambda run: fit(run, logs_with(lambda m, loss: m.log("acc", np.ones(3)))), Misconf,
                            match=r"Received: value of type ndarray"),

    # ---- configure_optimizers (more in tests/test_configure_optimizers.py MALFORMED) ----
    "optimizers_int": Case(optimizers(lambda m: 3), Misconf, match=r"Received: int \(3\)"),
    "optimizers_parameters_generator": Case(optimizers(lambda m: m.parameters()), Misconf,
                                            match=r"cannot use\. Received: generator"),
    "optimizers_class_not_instance": Case(optimizers(lambda m: torch.optim.Adam), Misconf,
                                          match=r"Received: type \(<class 'torch\.optim\.adam\.Adam'>\)"),
    "optimizers_empty_list": Case(optimizers(lambda m: []), Misconf, match=r"Received: list \(\[\]\)"),
    "optimizers_dict_optimizer_none": Case(optimizers(lambda m: {"optimizer": None}), Misconf,
                                           match=r"must return torch\.optim\.Optimizer objects\. Received: NoneType"),
    "optimizers_scheduler_is_a_string": Case(optimizers(lambda m: ([sgd(m)], ["step"])), Misconf,
                                             match=r"The scheduler must be a torch\.optim\.lr_scheduler object\. "
                                                   r"Received: str"),
    "optimizers_scheduler_dict_unknown_key": Case(optimizers(sgd_with(every=2)), Misconf,
                                                  match=r"Received: keys \['every', 'scheduler'\]"),
    "optimizers_tuple_of_optimizer_and_scheduler": Case(optimizers(sgd_and_scheduler_tuple), Misconf,
                                                        match=r"Received: StepLR"),
    "optimizers_three_lists": Case(optimizers(lambda m: ([sgd(m)], [], [])), Misconf, match=r"Received: list"),
    "optimizers_list_of_dicts_with_a_string": Case(optimizers(lambda m: [{"optimizer": sgd(m)}, "adam"]), Misconf,
                                                   match=r"configure_optimizers returned something fulmen cannot use"),
    "optimizers_raises": Case(optimizers(lambda m: {}["lr"]), KeyError, match=r"'lr'", fix=False),

    # ---- data ----
    "dataset_raises_in_getitem": Case(lambda run: fit(run, data=loader(RaisingDataset())), ValueError,
                                      match=r"^corrupt sample 5$", fix=False),
    "dataset_raises_in_a_worker": Case(fit_with_a_failing_worker, ValueError,
                                       match=r"(?s)Caught ValueError in DataLoader worker process \d.*corrupt sample 5",
                                       fix=False),
    "iterable_dataset_raises": Case(lambda run: fit(run, data=DataLoader(RaisingStream(), batch_size=1)), OSError,
                                    match=r"shard-0003 is missing", fix=False),
    "dataset_instead_of_dataloader": Case(lambda run: fit(run, data=random_regression(8)), Misconf,
                                          match=r"`train_dataloaders` must be a DataLoader.*"
                                                r"Received: train_dataloaders\[0\] of type TensorDataset"),
    "empty_dataset": Case(lambda run: fit(run, data=loader(random_regression(0))), warns=UserWarning,
                          match=r"The training dataloader has no batches.*Received: num_training_batches=0",
                          check=trained_steps(0)),
    "batch_of_sets_with_default_collate": Case(lambda run: fit(run, data=loader([{1, 2}] * 8)), TypeError,
                                               match=r"default_collate: batch must contain.*found <class 'set'>",
                                               fix=False),
    "batch_of_an_unknown_type": Case(
        lambda run: fit(run, Model(step=opaque_step), opaque_batches()), warns=UserWarning,
        match=r"Could not infer the batch size for self\.log.*Fix: pass self\.log\(\.\.\., batch_size=N\)",
        check=trained_steps(4)),

    # ---- monitored keys that are never logged ----
    "early_stopping_key_never_logged": Case(
        lambda run: fit(run, callbacks=[EarlyStopping("val_loss")]), Misconf,
        match=r"EarlyStopping monitors 'val_loss', which was not logged\. Received: monitor='val_loss'; "
              r"logged metrics: \['train_loss'\].*strict=False"),
    "early_stopping_key_never_logged_not_strict": Case(
        lambda run: fit(run, callbacks=[EarlyStopping("val_loss", strict=False)]), warns=UserWarning,
        match=r"EarlyStopping monitors 'val_loss', which was not logged\..*logged metrics: \['train_loss'\]"),
    # No validation ran, so (as in Lightning 2.6) a warning and no file; after a validation it is
    # an error (tests/test_model_checkpoint_rules.py).
    "checkpoint_key_never_logged": Case(
        lambda run: fit(run, callbacks=[ModelCheckpoint(dirpath=run / "best", monitor="val_acc")]), warns=UserWarning,
        match=r"ModelCheckpoint monitors 'val_acc'.*logged metrics: \['epoch', 'step', 'train_loss'\]", absent="strict",
        check=lambda trainer: not any(Path(trainer.default_root_dir, "best").glob("*.ckpt")) or pytest.fail("saved")),
    "plateau_key_never_logged": Case(
        optimizers(sgd_with(plateau, monitor="val_loss")), Misconf,
        match=r"ReduceLROnPlateau monitors 'val_loss', which was not logged.*available: \['train_loss'\]"),
    "plateau_key_never_logged_not_strict": Case(
        optimizers(sgd_with(plateau, monitor="val_loss", strict=False)), warns=UserWarning,
        match=r"ReduceLROnPlateau skipped: 'val_loss'.*Received: monitor='val_loss'"),

    # ---- losses that are not finite ----
    "nan_loss_with_early_stopping": Case(
        lambda run: fit(run, diverging(math.nan), callbacks=[EarlyStopping("train_loss", check_finite=True)],
                        max_epochs=10),
        fix=False, check=stopped_on_non_finite("nan")),
    "inf_loss_with_early_stopping": Case(
        lambda run: fit(run, diverging(math.inf), callbacks=[EarlyStopping("train_loss", check_finite=True)],
                        max_epochs=10),
        fix=False, check=stopped_on_non_finite("inf")),
    "nan_gradient_with_detect_anomaly": Case(
        lambda run: fit(run, Model(step=nan_gradient), detect_anomaly=True), RuntimeError,
        match=r"Function 'MulBackward0' returned nan values in its 0th output", fix=False),

    # ---- checkpoints to resume from ----
    "ckpt_path_missing": Case(lambda run: fit(run, ckpt_path=run / "checkpoints" / "nope.ckpt"), CheckpointError,
                              match=r"Checkpoint file not found\. Received: .*nope\.ckpt"),
    "ckpt_path_best_without_a_best": Case(lambda run: fit(run, ckpt_path="best"), Misconf,
                                          match=r'ckpt_path="best" needs a ModelCheckpoint that has saved a best'),
    "ckpt_path_of_another_architecture": Case(
        lambda run: fit(run, Wider(), ckpt_path=run / "checkpoints" / "epoch=1-step=4.ckpt"),
        RuntimeError, match=r"size mismatch for layer\.weight", fix=False),
}  # fmt: skip


# --- the run directory ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A finished run: lightning_logs/version_0 (CSV logs) and checkpoints/epoch=1-step=4.ckpt."""
    root = tmp_path_factory.mktemp("earlier")
    torch.manual_seed(0)
    fit(root)
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["epoch=1-step=4.ckpt"]
    assert (root / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    return root


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(tmp_path, earlier_run, name):
    case = CASES[name]
    run = tmp_path / "run"
    shutil.copytree(earlier_run, run)
    before = snapshot(run)

    if case.raises is not None:
        with pytest.raises(case.raises, match=case.match) as info:
            case.run(run)
        message, result = str(info.value), None
    elif case.warns is not None:
        with pytest.warns(case.warns, match=case.match) as record:
            result = case.run(run)
        message = next(str(w.message) for w in record if re.search(case.match, str(w.message)))
    else:
        result, message = case.run(run), ""
    if case.fix:
        assert "Fix" in message, message
    if case.absent is not None:
        assert case.absent not in message, message
    if case.check is not None:
        case.check(result)

    after = snapshot(run)
    for path, data in before.items():
        assert after.get(path) == data, f"{path} changed or vanished"
    assert not [p for p in run.rglob("*.tmp")], "a temporary file was left behind"


def test_the_table_has_at_least_forty_cases():
    assert len(CASES) >= 40


# --- accepted inputs, next to the rejected ones -----------------------------------------------
def test_numpy_scalars_are_logged_like_floats(tmp_path):
    trainer = fit(tmp_path, logs_with(lambda m, loss: m.log("np_value", np.float32(0.5), prog_bar=True)))
    assert trainer.callback_metrics["np_value"].item() == 0.5


def test_a_batch_that_is_a_set_is_converted_like_a_list(tmp_path):
    seen = []

    def step(model, batch):
        seen.append(batch)
        return sum(model.layer(x).sum() for x in batch)

    collate = lambda items: frozenset(torch.stack([x for x, _ in items]).unbind())  # noqa: E731
    fit(tmp_path, Model(step=step), DataLoader(random_regression(8), batch_size=4, collate_fn=collate),
        precision="64-true", max_epochs=1)
    assert seen and all(isinstance(b, frozenset) and all(x.dtype == torch.float64 for x in b) for b in seen)
