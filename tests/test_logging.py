"""`self.log` through real `Trainer` runs: what reaches the loggers, at which step, with which value.

Expected step numbers follow PyTorch Lightning 2.x. The tables in
`test_logger_steps_match_lightning` were recorded by running the same module under
pytorch_lightning 2.6.6 (in a scratch script outside this repository):

* train step metrics go to the loggers when `(step + 1) % log_every_n_steps == 0`, at `step`
  (the 0-based count of optimizer steps before this batch), i.e. at k-1, 2k-1, ...; the counter
  runs on across epochs, and a batch that only accumulates gradients logs nothing;
* validation during fit logs at the step of the training batch it follows (the same step as
  that batch's own metrics), and the train epoch-end metrics at the last step of the epoch;
* `trainer.validate` after fit logs at the number of steps taken;
* every dict the loggers receive has an int "epoch" key; `trainer.logged_metrics` does not.
"""

from __future__ import annotations

import collections
import csv
import functools
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.errors import MisconfigurationException
from fulmen.loggers import CSVLogger, Logger

from helpers import quiet_trainer


class RecordingLogger(Logger):
    """Keeps every call the Trainer makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[int | None, dict]] = []
        self.hparams_calls: list[dict] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        self.hparams_calls.append(dict(params))

    def steps_of(self, key: str) -> list[tuple[int, float]]:
        return [(step, metrics[key]) for step, metrics in self.calls if key in metrics]


def _data(n: int) -> TensorDataset:
    x = torch.arange(float(n)).reshape(-1, 1)  # x = 0, 1, ..., n-1: batch means are known exactly
    return TensorDataset(x, x.clone())


def _loader(n: int, batch_size: int) -> DataLoader:
    return DataLoader(_data(n), batch_size=batch_size)


# Called as _trainer(tmp_path, logger=...): one epoch, no sanity check, on the default accelerator.
_trainer = functools.partial(quiet_trainer, accelerator="auto", max_epochs=1, num_sanity_val_steps=0)


class Base(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def configure_optimizers(self):
        # lr=0: the weights never change, so anything logged from them is reproducible.
        return torch.optim.SGD(self.parameters(), lr=0.0)


# --- defaults and names ---------------------------------------------------------------------


class DefaultsModule(Base):
    def training_step(self, batch, batch_idx):
        self.log("a", batch[0].sum())  # training_step: on_step only
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self):
        self.log("c", 7.0)  # epoch-level hook: on_epoch only

    def validation_step(self, batch, batch_idx):
        self.log("b", batch[0].mean())  # validation_step: on_epoch only

    def on_validation_epoch_end(self):
        self.log("d", 3.0)

    def test_step(self, batch, batch_idx):
        self.log("e", batch[0].mean())


def test_default_on_step_on_epoch_per_hook(tmp_path):
    logger = RecordingLogger()
    trainer = _trainer(tmp_path, logger=logger, log_every_n_steps=1)
    model = DefaultsModule()
    trainer.fit(model, _loader(4, 1), _loader(4, 2))
    assert logger.calls == [
        (0, {"a": 0.0, "epoch": 0}),
        (1, {"a": 1.0, "epoch": 0}),
        (2, {"a": 2.0, "epoch": 0}),
        (3, {"a": 3.0, "epoch": 0}),
        (3, {"b": 1.5, "d": 3.0, "epoch": 0}),  # validation: once, the epoch mean, at the current step
        (3, {"c": 7.0, "epoch": 0}),  # train epoch end: at the last step of the epoch
    ]
    assert all(type(metrics["epoch"]) is int for _, metrics in logger.calls)
    # No step/epoch variants were made up for values logged with one of the two.
    assert set(trainer.callback_metrics) == {"a", "b", "c", "d"}
    assert trainer.logged_metrics == {"a": 3.0, "b": 1.5, "c": 7.0, "d": 3.0}  # no "epoch" here

    assert trainer.test(model, _loader(6, 4), verbose=False) == [{"e": 2.5}]  # (4 * 1.5 + 2 * 4.5) / 6
    assert logger.calls[-1] == (4, {"e": 2.5, "epoch": 1})  # after fit: 4 steps taken, epoch 1


class ForkedModule(Base):
    def __init__(self) -> None:
        super().__init__()
        self.seen_in_batch_end: list[dict[str, float]] = []

    def training_step(self, batch, batch_idx):
        self.log("m", batch[0].sum(), on_step=True, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.seen_in_batch_end.append({k: float(v) for k, v in self.trainer.callback_metrics.items()})


def test_on_step_and_on_epoch_give_step_and_epoch_names(tmp_path):
    logger = RecordingLogger()
    trainer = _trainer(tmp_path, logger=logger, log_every_n_steps=2, max_epochs=2)
    model = ForkedModule()
    trainer.fit(model, _loader(6, 1))
    assert logger.calls == [
        (1, {"m_step": 1.0, "epoch": 0}),
        (3, {"m_step": 3.0, "epoch": 0}),
        (5, {"m_step": 5.0, "epoch": 0}),
        (5, {"m_epoch": 2.5, "epoch": 0}),
        (7, {"m_step": 1.0, "epoch": 1}),
        (9, {"m_step": 3.0, "epoch": 1}),
        (11, {"m_step": 5.0, "epoch": 1}),
        (11, {"m_epoch": 2.5, "epoch": 1}),
    ]
    # During the epoch, callbacks see the plain name as the latest step value...
    assert model.seen_in_batch_end[2] == {"m": 2.0, "m_step": 2.0}
    # ...and after it, the epoch value (the step value stays under its own name), as in Lightning.
    assert {k: float(v) for k, v in trainer.callback_metrics.items()} == {"m": 2.5, "m_step": 5.0, "m_epoch": 2.5}


# --- exact steps, checked against Lightning --------------------------------------------------


class StepsModule(Base):
    def training_step(self, batch, batch_idx):
        self.log("t", float(self.current_epoch * 100 + batch_idx))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.log("v", batch[0].mean())


# Recorded with pytorch_lightning 2.6.6: 10 training batches of 1, validation data 0..9 (mean 4.5),
# max_epochs=2. Each entry is (step, metrics) as the logger received it.
LIGHTNING_STEPS = {
    "every_3_val_every_5": (
        dict(log_every_n_steps=3, val_check_interval=5),
        20,
        [
            (2, {"t": 2.0, "epoch": 0}), (4, {"v": 4.5, "epoch": 0}), (5, {"t": 5.0, "epoch": 0}),
            (8, {"t": 8.0, "epoch": 0}), (9, {"v": 4.5, "epoch": 0}), (11, {"t": 101.0, "epoch": 1}),
            (14, {"t": 104.0, "epoch": 1}), (14, {"v": 4.5, "epoch": 1}), (17, {"t": 107.0, "epoch": 1}),
            (19, {"v": 4.5, "epoch": 1}),
        ],
    ),
    "every_2_accumulate_2_val_every_3": (
        dict(log_every_n_steps=2, accumulate_grad_batches=2, val_check_interval=3),
        10,
        [
            (1, {"v": 4.5, "epoch": 0}), (1, {"t": 3.0, "epoch": 0}), (2, {"v": 4.5, "epoch": 0}),
            (3, {"t": 7.0, "epoch": 0}), (4, {"v": 4.5, "epoch": 0}), (5, {"t": 101.0, "epoch": 1}),
            (6, {"v": 4.5, "epoch": 1}), (7, {"t": 105.0, "epoch": 1}), (7, {"v": 4.5, "epoch": 1}),
            (9, {"v": 4.5, "epoch": 1}), (9, {"t": 109.0, "epoch": 1}),
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LIGHTNING_STEPS))
def test_logger_steps_match_lightning(tmp_path, case):
    options, global_step, expected = LIGHTNING_STEPS[case]
    logger = RecordingLogger()
    trainer = _trainer(tmp_path, logger=logger, max_epochs=2, **options)
    model = StepsModule()
    trainer.fit(model, _loader(10, 1), _loader(10, 5))
    assert trainer.global_step == global_step
    assert logger.calls == expected
    # A standalone validate after fit logs at the number of steps taken (Lightning: same).
    assert trainer.validate(model, _loader(10, 5), verbose=False) == [{"v": 4.5}]
    assert logger.calls[-1] == (global_step, {"v": 4.5, "epoch": 2})


def test_csv_logger_rows_have_step_and_int_epoch(tmp_path):
    logger = CSVLogger(tmp_path)
    trainer = _trainer(tmp_path, logger=logger, log_every_n_steps=2, max_epochs=2)
    trainer.fit(ForkedModule(), _loader(4, 1))
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv", newline="") as file:
        rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]
    assert rows == [
        {"epoch": "0", "m_step": "1.0", "step": "1"},
        {"epoch": "0", "m_step": "3.0", "step": "3"},
        {"epoch": "0", "m_epoch": "1.5", "step": "3"},
        {"epoch": "1", "m_step": "1.0", "step": "5"},
        {"epoch": "1", "m_step": "3.0", "step": "7"},
        {"epoch": "1", "m_epoch": "1.5", "step": "7"},
    ]


# --- epoch reductions ---------------------------------------------------------------------------


class ReduceModule(Base):
    def training_step(self, batch, batch_idx):
        x = batch[0]
        epoch_only = dict(on_step=False, on_epoch=True)
        self.log("mean", x.mean(), **epoch_only)  # weighted by the inferred batch size: 4, 4, 2
        self.log("mean_bs1", x.mean(), batch_size=1, **epoch_only)  # explicit batch_size wins
        self.log("sum", x.sum(), reduce_fx="sum", **epoch_only)
        self.log("max", x.max(), reduce_fx="max", **epoch_only)
        self.log("torch_max", x.max(), reduce_fx=torch.max, **epoch_only)
        self.log("min", x.min(), reduce_fx="min", **epoch_only)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.log("val_mean", batch[0].mean())


def test_epoch_reductions_with_unequal_batches(tmp_path):
    logger = RecordingLogger()
    trainer = _trainer(tmp_path, logger=logger)
    trainer.fit(ReduceModule(), _loader(10, 4), _loader(10, 3))  # train batches 4,4,2; val 3,3,3,1
    assert logger.calls[0] == (2, {"val_mean": 4.5, "epoch": 0})  # the exact dataset mean of 0..9
    step, metrics = logger.calls[1]
    assert step == 2
    assert metrics == {
        "mean": 4.5,  # = (4 * 1.5 + 4 * 5.5 + 2 * 8.5) / 10, the dataset mean
        "mean_bs1": pytest.approx((1.5 + 5.5 + 8.5) / 3),  # the mean of the batch means
        "sum": 45.0,
        "max": 9.0,
        "torch_max": 9.0,
        "min": 0.0,
        "epoch": 0,
    }
    assert len(logger.calls) == 2


# --- several validation dataloaders -------------------------------------------------------------


class TwoLoadersModule(Base):
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.log("v", batch[0].mean())
        self.log("n", float(batch[0].shape[0]), reduce_fx="sum")


def test_several_val_dataloaders_get_index_suffixes(tmp_path):
    logger = RecordingLogger()
    trainer = _trainer(tmp_path, logger=logger)
    model = TwoLoadersModule()
    trainer.fit(model, _loader(2, 1), [_loader(10, 5), _loader(4, 2)])
    expected = {"v/dataloader_idx_0": 4.5, "n/dataloader_idx_0": 10.0, "v/dataloader_idx_1": 1.5, "n/dataloader_idx_1": 4.0}
    assert logger.calls == [(1, {**expected, "epoch": 0})]
    assert {k: float(v) for k, v in trainer.callback_metrics.items()} == expected

    results = trainer.validate(model, [_loader(10, 5), _loader(4, 2)], verbose=False)
    assert results == [
        {"v/dataloader_idx_0": 4.5, "n/dataloader_idx_0": 10.0},
        {"v/dataloader_idx_1": 1.5, "n/dataloader_idx_1": 4.0},
    ]
    # One dataloader: no suffix.
    assert trainer.validate(model, _loader(4, 2), verbose=False) == [{"v": 1.5, "n": 4.0}]


# --- what callbacks, the progress bar and the loggers see ------------------------------------


class VisibilityModule(Base):
    def training_step(self, batch, batch_idx):
        x = batch[0]
        self.log("shown", x.sum(), prog_bar=True)
        self.log("quiet", x.sum() * 2)
        self.log("unlogged", x.sum() * 3, logger=False)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.log("val_shown", batch[0].mean(), prog_bar=True)


def test_progress_bar_callback_and_logged_metrics(tmp_path):
    logger = RecordingLogger()
    trainer = _trainer(tmp_path, logger=logger, log_every_n_steps=1)
    trainer.fit(VisibilityModule(), _loader(3, 1), _loader(4, 4))

    progress = trainer.progress_bar_metrics
    assert progress == {"shown": 2.0, "val_shown": 1.5}
    assert all(type(v) is float for v in progress.values())

    callback = trainer.callback_metrics
    assert {k: float(v) for k, v in callback.items()} == {"shown": 2.0, "quiet": 4.0, "unlogged": 6.0, "val_shown": 1.5}
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in callback.values())

    assert trainer.logged_metrics == {"shown": 2.0, "quiet": 4.0, "val_shown": 1.5}
    assert all("unlogged" not in metrics for _, metrics in logger.calls)
    assert logger.steps_of("quiet") == [(0, 0.0), (1, 2.0), (2, 4.0)]


def test_without_a_logger_logged_metrics_still_hold_what_would_be_logged(tmp_path):
    trainer = _trainer(tmp_path, logger=False, log_every_n_steps=1)
    trainer.fit(VisibilityModule(), _loader(3, 1), _loader(4, 4))
    # As in Lightning 2.6 (checked against it): the values a logger would get, without one attached.
    assert trainer.logged_metrics == {"shown": 2.0, "quiet": 4.0, "val_shown": 1.5}
    assert float(trainer.callback_metrics["quiet"]) == 4.0


# --- errors ---------------------------------------------------------------------------------------


class BadLogModule(Base):
    def __init__(self, where: str, log) -> None:
        super().__init__()
        self.where, self.bad_log = where, log

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.where == "training_step":
            self.bad_log(self, loss)
        return loss

    def on_train_epoch_end(self):
        if self.where == "on_train_epoch_end":
            self.bad_log(self, torch.tensor(1.0))

    def configure_optimizers(self):
        if self.where == "configure_optimizers":
            self.bad_log(self, torch.tensor(1.0))
        return super().configure_optimizers()


def _log_twice(module, loss):
    module.log("x", loss)
    module.log("x", loss, on_epoch=True)


BAD_LOGS = {
    "non_scalar_tensor": ("training_step", lambda m, loss: m.log("x", torch.ones(3)), r"shape \(3,\).*Fix: .*mean\(\)"),
    "string": ("training_step", lambda m, loss: m.log("x", "high"), r"Received: value of type str.*Fix:"),
    "none": ("training_step", lambda m, loss: m.log("x", None), r"Received: value of type NoneType.*Fix:"),
    "reduce_fx": ("training_step", lambda m, loss: m.log("x", loss, reduce_fx="median"),
                  r"reduce_fx='median'.*Fix: use 'mean', 'sum', 'max' or 'min'"),
    "on_step_in_epoch_end": ("on_train_epoch_end", lambda m, loss: m.log("x", loss, on_step=True),
                             r"self\.log\('x', on_step=True\).*outside a batch.*Fix: drop on_step"),
    "conflicting_options": ("training_step", _log_twice,
                            r"twice in the same loop with different options.*first on_step=True, on_epoch=False.*"
                            r"then on_step=True, on_epoch=True.*Fix:"),
    "outside_loop": ("configure_optimizers", lambda m, loss: m.log("x", loss),
                     r"outside a training, validation, test or predict loop.*configure_optimizers.*Fix:"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_LOGS))
def test_bad_log_calls_raise_clear_errors(tmp_path, case):
    where, log, message = BAD_LOGS[case]
    trainer = _trainer(tmp_path, logger=RecordingLogger())
    with pytest.raises(MisconfigurationException, match=message):
        trainer.fit(BadLogModule(where, log), _loader(2, 1))


def test_log_on_a_module_without_trainer_warns_and_is_ignored():
    model = Base()
    with pytest.warns(UserWarning, match="not attached to a Trainer; the value is ignored"):
        model.log("x", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.log("x", torch.ones(3))  # not even checked: nothing happens, and no second warning


# --- no host sync per step ------------------------------------------------------------------------


class EveryStepModule(Base):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss


HOST_SYNCS = ("item", "__float__", "__int__", "__bool__", "tolist", "cpu")


def _count_host_syncs(tmp_path, monkeypatch, log_every_n_steps: int) -> tuple[int, int]:
    """(tensor-to-host conversions during a 100-step fit, number of logger writes)."""
    counts: collections.Counter[str] = collections.Counter()

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    logger = RecordingLogger()
    trainer = _trainer(tmp_path, logger=logger, log_every_n_steps=log_every_n_steps)
    model, loader = EveryStepModule(), _loader(100, 1)
    with monkeypatch.context() as patch:
        for name in HOST_SYNCS:
            patch.setattr(torch.Tensor, name, counting(name))
        trainer.fit(model, loader)
    assert trainer.global_step == 100
    return sum(counts.values()), len(logger.calls)


def test_logging_every_step_does_not_sync_every_step(tmp_path, monkeypatch):
    syncs_50, writes_50 = _count_host_syncs(tmp_path, monkeypatch, 50)
    syncs_10, writes_10 = _count_host_syncs(tmp_path, monkeypatch, 10)
    assert (writes_50, writes_10) == (2, 10)  # steps 49, 99 / 9, 19, ..., 99; train_loss has no epoch value
    constant = 4  # per fit, independent of logging (the DataLoader draws its seed with .item())
    # At most one conversion per logged key per write (one key here), plus the constant.
    assert syncs_50 <= writes_50 + constant
    assert syncs_10 <= writes_10 + constant
    # It grows with the logger writes, not with the 100 steps.
    assert syncs_10 - syncs_50 == writes_10 - writes_50


# --- hyperparameters --------------------------------------------------------------------------------


class HParamsModule(Base):
    def __init__(self, lr: float = 0.1, hidden: int = 8, name: str = "net") -> None:
        super().__init__()
        self.save_hyperparameters()


class HParamsData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        return _loader(4, self.hparams.batch_size)


def test_hyperparameters_reach_the_logger_once_per_run(tmp_path):
    logger = RecordingLogger()
    trainer = _trainer(tmp_path, logger=logger, max_epochs=2)
    trainer.fit(HParamsModule(lr=0.5), datamodule=HParamsData(batch_size=2))
    assert logger.hparams_calls == [{"lr": 0.5, "hidden": 8, "name": "net", "batch_size": 2}]


def test_hyperparameters_not_logged_when_asked(tmp_path):
    class Quiet(Base):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters(logger=False)

    logger = RecordingLogger()
    _trainer(tmp_path, logger=logger).fit(Quiet(), _loader(2, 1))
    assert logger.hparams_calls == []
