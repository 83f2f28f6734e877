"""Tests for the training/evaluation loops driven by `fulmen.Trainer`.

Every test counts what really ran (batches per stage, validation runs and the global step they
ran at, dataloader calls) or compares weights with `torch.equal`. The expected numbers were
checked against PyTorch Lightning 2.6 with the same model and data, except where a comment
says fulmen deliberately differs.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as pl
import fulmen.errors
from fulmen.callbacks import EarlyStopping, ModelCheckpoint
from fulmen.checkpoint import load_checkpoint
from fulmen.loggers import CSVLogger
from fulmen.state import RunningStage, TrainerFn, TrainerStatus

from helpers import quiet_trainer, random_regression

pytestmark = pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def loader(n: int = 16, batch_size: int = 4, shuffle: bool = False, seed: int = 0) -> DataLoader:
    return DataLoader(random_regression(n, seed), batch_size=batch_size, shuffle=shuffle)


class Model(pl.LightningModule):
    """Counts every step per stage and remembers when each validation run started."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.counts: Counter[str] = Counter()
        self.val_run_steps: list[int] = []  # global_step at each (non-sanity) validation run
        self.val_run_epochs: list[int] = []
        self.train_batches: list[tuple[int, int]] = []  # (epoch, batch_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        self.counts["train"] += 1
        self.train_batches.append((self.current_epoch, batch_idx))
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def on_validation_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.counts["val_runs"] += 1
            self.val_run_steps.append(self.global_step)
            self.val_run_epochs.append(self.current_epoch)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["sanity" if self.trainer.sanity_checking else "val"] += 1
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["test"] += 1
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["predict"] += 1
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


# No sanity check.
trainer = functools.partial(quiet_trainer, num_sanity_val_steps=0)


class StopAt(pl.Callback):
    """Sets trainer.should_stop at the end of one batch (or of every batch)."""

    def __init__(self, global_step: int | None = None) -> None:
        self.global_step = global_step
        self.batch_end_steps: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batch_end_steps.append(trainer.global_step)
        if self.global_step is None or trainer.global_step == self.global_step:
            trainer.should_stop = True


# ----------------------------------------------------------------------------------------------
# how long to train
# ----------------------------------------------------------------------------------------------
def test_max_epochs_runs_every_batch_of_every_epoch():
    model = Model()
    t = trainer(max_epochs=3)
    t.fit(model, loader(16), loader(8))
    assert model.counts["train"] == 12
    assert t.global_step == 12
    assert t.current_epoch == 3
    assert model.val_run_epochs == [0, 1, 2]
    assert model.counts["val"] == 3 * 2
    assert t.state.status == TrainerStatus.FINISHED


def test_max_steps_stops_mid_epoch_with_exact_global_step():
    model = Model()
    t = trainer(max_steps=6)  # 4 batches per epoch: stops after batch 1 of epoch 1
    t.fit(model, loader(16), loader(8))
    assert t.global_step == 6
    assert model.counts["train"] == 6
    assert model.train_batches == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    # the epoch that was cut short still counts as ended (as in Lightning)
    assert t.current_epoch == 2
    assert model.val_run_epochs == [0]  # no validation in the unfinished epoch


def test_max_steps_counts_optimizer_steps_not_batches_under_accumulation():
    model = Model()
    t = trainer(max_steps=3, accumulate_grad_batches=2)
    t.fit(model, loader(32))  # 8 batches = 4 optimizer steps per epoch
    assert t.global_step == 3
    assert model.counts["train"] == 6


def test_min_epochs_keeps_training_although_should_stop_is_set():
    model = Model()
    stopper = StopAt(None)  # asks to stop after every batch
    t = trainer(max_epochs=10, min_epochs=3, callbacks=[stopper])
    with pytest.warns(UserWarning, match="min_epochs=3"):
        t.fit(model, loader(16))
    assert model.counts["train"] == 12
    assert t.global_step == 12
    assert t.current_epoch == 3


def test_min_steps_keeps_training_until_reached_then_stops_at_once():
    model = Model()
    t = trainer(max_epochs=10, min_steps=5, callbacks=[StopAt(None)])
    with pytest.warns(UserWarning, match="min_steps=5"):
        t.fit(model, loader(16), loader(8))
    assert t.global_step == 5
    assert model.counts["train"] == 5
    assert model.train_batches[-1] == (1, 0)
    # validation at the end of epoch 0, and once more at the batch that finally stops (as in Lightning)
    assert model.val_run_steps == [4, 5]


def test_should_stop_from_a_callback_stops_at_the_end_of_that_batch():
    model = Model()
    stopper = StopAt(global_step=2)
    t = trainer(max_epochs=5, callbacks=[stopper])
    t.fit(model, loader(16), loader(8))
    assert model.train_batches == [(0, 0), (0, 1)]
    assert t.global_step == 2
    assert stopper.batch_end_steps == [1, 2]  # the batch that asked to stop finished its hooks
    # as in Lightning, stopping early through should_stop validates once more at that batch
    assert model.val_run_steps == [2]
    assert t.current_epoch == 1
    assert t.state.status == TrainerStatus.FINISHED and not t.interrupted


def test_should_stop_on_a_validation_batch_validates_once():
    model = Model()
    t = trainer(max_epochs=5, callbacks=[StopAt(global_step=4)])  # the last batch of epoch 0
    t.fit(model, loader(16), loader(8))
    assert model.counts["train"] == 4
    assert model.val_run_steps == [4]


def test_should_stop_does_not_validate_in_an_epoch_without_validation():
    model = Model()
    t = trainer(max_epochs=5, check_val_every_n_epoch=2, callbacks=[StopAt(global_step=2)])
    t.fit(model, loader(16), loader(8))
    assert model.counts["train"] == 2
    assert model.val_run_steps == []


def test_should_stop_from_the_module_stops_at_the_end_of_that_batch():
    class StopsItself(Model):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            if self.global_step == 2:  # the third batch: global_step counts finished steps
                self.trainer.should_stop = True
            return loss

    model = StopsItself()
    t = trainer(max_epochs=5)
    t.fit(model, loader(16))
    assert model.counts["train"] == 3
    assert t.global_step == 3  # the batch that asked to stop still took its optimizer step


def test_should_stop_is_reset_by_the_next_fit():
    model = Model()
    t = trainer(max_epochs=1, callbacks=[StopAt(global_step=1)])
    t.fit(model, loader(16))
    assert t.should_stop
    model2 = Model()
    t2 = trainer(max_epochs=1)
    t2.should_stop = True
    t2.fit(model2, loader(16))
    assert model2.counts["train"] == 4


@pytest.mark.parametrize("max_time", [{"seconds": 0}, dt.timedelta(0), "00:00:00:00"])
def test_max_time_zero_stops_after_the_first_batch(max_time):
    model = Model()
    t = trainer(max_epochs=10, max_time=max_time)
    t.fit(model, loader(16))
    assert model.counts["train"] == 1
    assert t.global_step == 1
    assert t.state.status == TrainerStatus.FINISHED


def test_large_max_time_does_not_interfere():
    model = Model()
    t = trainer(max_epochs=2, max_time={"days": 1})
    t.fit(model, loader(16))
    assert model.counts["train"] == 8
    assert t.global_step == 8


def test_max_time_is_parsed_to_seconds():
    assert trainer(max_time="01:02:03:04").max_time == 93784.0
    assert trainer(max_time={"minutes": 2}).max_time == 120.0
    with pytest.raises(fulmen.errors.MisconfigurationException, match="Received: max_time='12:00'"):
        trainer(max_time="12:00")


# ----------------------------------------------------------------------------------------------
# how much data
# ----------------------------------------------------------------------------------------------
def test_limit_batches_as_int():
    model = Model()
    t = trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2, limit_test_batches=1,
                limit_predict_batches=2)
    t.fit(model, loader(16), loader(16))
    assert t.num_training_batches == 3 and t.num_val_batches == [2]
    t.test(model, loader(16), verbose=False)
    predictions = t.predict(model, loader(16))
    assert model.counts == Counter(train=6, val=4, val_runs=2, test=1, predict=2)
    assert len(predictions) == 2
    assert t.global_step == 6


def test_limit_batches_as_fraction():
    model = Model()
    t = trainer(max_epochs=2, limit_train_batches=0.5, limit_val_batches=0.25, limit_test_batches=0.5,
                limit_predict_batches=0.75)
    t.fit(model, loader(32), loader(16))  # 8 train and 4 val/test/predict batches
    assert t.num_training_batches == 4 and t.num_val_batches == [1]
    t.test(model, loader(16), verbose=False)
    t.predict(model, loader(16))
    assert model.counts == Counter(train=8, val=2, val_runs=2, test=2, predict=3)


def test_limit_val_batches_zero_disables_validation():
    model = Model()
    t = trainer(max_epochs=2, limit_val_batches=0)
    t.fit(model, loader(16), loader(16))
    assert model.counts["val"] == 0 and model.counts["val_runs"] == 0
    assert model.counts["train"] == 8


@pytest.mark.parametrize("fast_dev_run, n", [(True, 1), (3, 3)])
def test_fast_dev_run_runs_n_batches_of_everything_and_writes_nothing(tmp_path, fast_dev_run, n):
    model = Model()
    # checkpointing and the default logger are left on: fast_dev_run must switch them off itself
    t = pl.Trainer(fast_dev_run=fast_dev_run, default_root_dir=tmp_path, enable_progress_bar=False,
                   enable_model_summary=False)
    assert t.logger is None and t.loggers == []
    t.fit(model, loader(40), loader(40))  # 10 batches each: far more than n
    assert model.counts["train"] == n
    assert model.counts["val"] == n and model.counts["val_runs"] == 1
    assert model.counts["sanity"] == 0
    assert t.global_step == n
    t.validate(model, loader(40), verbose=False)
    t.test(model, loader(40), verbose=False)
    predictions = t.predict(model, loader(40))
    assert model.counts["val"] == 2 * n
    assert model.counts["test"] == n
    assert model.counts["predict"] == n and len(predictions) == n
    assert list(tmp_path.iterdir()) == []
    assert t.checkpoint_callback.best_model_path == ""


def test_overfit_batches_uses_the_same_unshuffled_batches_every_epoch():
    seen: list[list[torch.Tensor]] = []

    class Recorder(Model):
        def on_train_epoch_start(self):
            seen.append([])

        def training_step(self, batch, batch_idx):
            seen[-1].append(batch[0].clone())
            return super().training_step(batch, batch_idx)

    data = random_regression(32)
    model = Recorder()
    t = trainer(max_epochs=3, overfit_batches=2)
    with pytest.warns(UserWarning, match="overfit_batches"):
        t.fit(model, DataLoader(data, batch_size=4, shuffle=True), loader(16))
    assert t.num_training_batches == 2 and t.num_val_batches == [2]
    assert model.counts["train"] == 6 and model.counts["val"] == 6
    expected = [data.tensors[0][0:4], data.tensors[0][4:8]]  # dataset order, not shuffled
    assert len(seen) == 3
    for epoch in seen:
        assert len(epoch) == 2
        assert all(torch.equal(a, b) for a, b in zip(epoch, expected))


# ----------------------------------------------------------------------------------------------
# when to validate
# ----------------------------------------------------------------------------------------------
def test_val_check_interval_fraction_validates_four_times_per_epoch():
    model = Model()
    t = trainer(max_epochs=2, val_check_interval=0.25)
    t.fit(model, loader(32), loader(16))  # 8 batches per epoch → every 2 batches
    assert t.val_check_batch == 2
    assert model.val_run_steps == [2, 4, 6, 8, 10, 12, 14, 16]
    assert model.counts["val"] == 8 * 4


def test_val_check_interval_int_counts_batches_within_each_epoch():
    model = Model()
    t = trainer(max_epochs=2, val_check_interval=3)
    t.fit(model, loader(32), loader(16))  # 8 batches per epoch: after batches 3 and 6 of each
    assert model.val_run_steps == [3, 6, 11, 14]
    assert model.val_run_epochs == [0, 0, 1, 1]


def test_val_check_interval_larger_than_the_epoch_is_rejected():
    t = trainer(max_epochs=1, val_check_interval=20)
    with pytest.raises(ValueError, match="val_check_interval"):  # Lightning's type for this error
        t.fit(Model(), loader(16), loader(16))


def test_check_val_every_n_epoch_two():
    model = Model()
    t = trainer(max_epochs=4, check_val_every_n_epoch=2)
    t.fit(model, loader(16), loader(8))
    assert model.val_run_epochs == [1, 3]
    assert model.val_run_steps == [8, 16]


def test_check_val_every_n_epoch_none_counts_batches_across_epochs():
    model = Model()
    t = trainer(max_epochs=3, check_val_every_n_epoch=None, val_check_interval=3)
    t.fit(model, loader(16), loader(8))  # 4 batches per epoch, 12 in all
    assert model.val_run_steps == [3, 6, 9, 12]
    assert model.val_run_epochs == [0, 1, 2, 2]


@pytest.mark.parametrize("steps, expected", [(0, 0), (2, 2), (-1, 4)])
def test_num_sanity_val_steps(steps, expected):
    model = Model()
    t = trainer(max_epochs=1, num_sanity_val_steps=steps)
    t.fit(model, loader(16), loader(16))
    assert model.counts["sanity"] == expected
    assert model.counts["val"] == 4  # the real validation is unaffected
    assert model.counts["train"] == 4


def test_num_sanity_val_steps_defaults_to_two():
    model = Model()
    t = quiet_trainer(accelerator="auto", max_epochs=1)
    t.fit(model, loader(16), loader(16))
    assert model.counts["sanity"] == 2


def test_sanity_check_metrics_are_discarded():
    class Spy(pl.Callback):
        def on_sanity_check_end(self, trainer, pl_module):
            self.during_sanity = trainer.sanity_checking

        def on_train_start(self, trainer, pl_module):
            self.metrics_at_start = dict(trainer.callback_metrics)
            self.logged_at_start = dict(trainer.logged_metrics)

    model, spy = Model(), Spy()
    t = trainer(max_epochs=1, num_sanity_val_steps=2, callbacks=[spy])
    t.fit(model, loader(16), loader(16))
    assert model.counts["sanity"] == 2
    assert spy.during_sanity is True
    assert "val_loss" not in spy.metrics_at_start
    assert spy.logged_at_start == {}
    assert "val_loss" in t.callback_metrics  # the real validation does record it


def test_sanity_check_does_not_change_the_random_stream(monkeypatch):
    """A fit with a sanity check gives bit-identical weights to one without."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them; restore after
        monkeypatch.delenv(name, raising=False)

    class Noisy(Model):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(self.drop(x)), y)

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            torch.rand(5)  # draws from the global generator
            return super().validation_step(batch, batch_idx)

    class DrawsOnce(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            torch.rand(1)

    def run(sanity_steps: int, callbacks=()) -> dict[str, torch.Tensor]:
        pl.seed_everything(123)
        model = Noisy()
        t = trainer(max_epochs=2, num_sanity_val_steps=sanity_steps, callbacks=list(callbacks))
        t.fit(model, loader(32, shuffle=True), loader(16, shuffle=True))
        return model.state_dict()

    without, with_check = run(0), run(2)
    assert all(torch.equal(without[k], with_check[k]) for k in without)
    # the comparison is sensitive: one extra random draw before training changes the weights
    disturbed = run(0, [DrawsOnce()])
    assert not all(torch.equal(without[k], disturbed[k]) for k in without)


def test_reload_dataloaders_every_epoch_calls_the_dataloader_hooks_each_epoch():
    class Reloading(Model):
        def train_dataloader(self):
            self.counts["train_dataloader"] += 1
            return loader(16, seed=self.counts["train_dataloader"])

        def val_dataloader(self):
            self.counts["val_dataloader"] += 1
            return loader(8)

    model = Reloading()
    trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1).fit(model)
    assert model.counts["train_dataloader"] == 3
    assert model.counts["val_dataloader"] == 3
    assert model.counts["train"] == 12

    model = Reloading()
    trainer(max_epochs=3).fit(model)
    assert model.counts["train_dataloader"] == 1
    assert model.counts["val_dataloader"] == 1


# ----------------------------------------------------------------------------------------------
# validate / test / predict
# ----------------------------------------------------------------------------------------------
def _mean_mse(model: torch.nn.Module, dl: DataLoader) -> float:
    with torch.no_grad():
        losses = [torch.nn.functional.mse_loss(model(x), y) for x, y in dl]
    return torch.stack(losses).mean().item()


def test_validate_returns_one_dict_of_epoch_metrics():
    model = Model()
    t = trainer()
    val = loader(16)
    result = t.validate(model, val, verbose=False)
    assert isinstance(result, list) and len(result) == 1
    assert set(result[0]) == {"val_loss"}
    assert result[0]["val_loss"] == pytest.approx(_mean_mse(model, val), rel=1e-6)
    assert t.state.fn == TrainerFn.VALIDATING and t.state.status == TrainerStatus.FINISHED
    assert model.counts["val"] == 4


def test_test_with_two_dataloaders_returns_one_dict_per_dataloader():
    model = Model()
    t = trainer()
    a, b = loader(16, seed=1), loader(8, seed=2)
    result = t.test(model, [a, b], verbose=False)
    assert len(result) == 2
    assert set(result[0]) == {"test_loss/dataloader_idx_0"}
    assert set(result[1]) == {"test_loss/dataloader_idx_1"}
    assert result[0]["test_loss/dataloader_idx_0"] == pytest.approx(_mean_mse(model, a), rel=1e-6)
    assert result[1]["test_loss/dataloader_idx_1"] == pytest.approx(_mean_mse(model, b), rel=1e-6)
    assert t.num_test_batches == [4, 2]
    assert model.counts["test"] == 6


def test_predict_returns_the_predictions():
    model = Model()
    t = trainer()
    data = loader(10, batch_size=4)
    predictions = t.predict(model, data)
    assert len(predictions) == 3
    with torch.no_grad():
        expected = [model(x) for x, _ in data]
    assert all(torch.equal(p, e) for p, e in zip(predictions, expected))
    assert [p.shape[0] for p in predictions] == [4, 4, 2]

    two = t.predict(model, [loader(8), loader(4)])
    assert [len(per_loader) for per_loader in two] == [2, 1]
    assert t.predict(model, data, return_predictions=False) is None


def test_test_after_fit_uses_the_best_checkpoint(tmp_path):
    class Scheduled(Model):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            # a validation loss that is best in epoch 1 of 3
            self.log("val_loss", torch.tensor([3.0, 1.0, 2.0][self.current_epoch]))

    model = Scheduled()
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=1)
    t = trainer(max_epochs=3, callbacks=[ckpt], enable_checkpointing=True)
    t.fit(model, loader(16), loader(8))
    assert os.path.basename(ckpt.best_model_path) == "epoch=1-step=8.ckpt"
    final = {k: v.clone() for k, v in model.state_dict().items()}
    best = load_checkpoint(ckpt.best_model_path)["state_dict"]
    assert not all(torch.equal(final[k], best[k]) for k in final)

    t.test(dataloaders=loader(8), verbose=False)
    assert t.ckpt_path == ckpt.best_model_path
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
    assert model.counts["test"] == 2


# ----------------------------------------------------------------------------------------------
# state, interruption, exceptions
# ----------------------------------------------------------------------------------------------
def test_trainer_state_during_and_after_fit():
    seen = {}

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["train"] = (trainer.state.fn, trainer.state.stage, trainer.state.status, trainer.training)

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            key = "sanity" if trainer.sanity_checking else "val"
            seen[key] = (trainer.state.fn, trainer.state.stage, trainer.state.status, trainer.validating)

        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen["test"] = (trainer.state.fn, trainer.state.stage, trainer.testing)

        def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen["predict"] = (trainer.state.fn, trainer.state.stage, trainer.predicting)

    model = Model()
    t = trainer(max_epochs=1, num_sanity_val_steps=1, callbacks=[Spy()])
    assert t.state.status == TrainerStatus.INITIALIZING
    t.fit(model, loader(16), loader(8))
    assert seen["train"] == (TrainerFn.FITTING, RunningStage.TRAINING, TrainerStatus.RUNNING, True)
    assert seen["val"] == (TrainerFn.FITTING, RunningStage.VALIDATING, TrainerStatus.RUNNING, True)
    assert seen["sanity"][1] == RunningStage.SANITY_CHECKING
    assert t.state.status == TrainerStatus.FINISHED and t.state.finished
    assert t.state.stage is None and t.state.fn == TrainerFn.FITTING
    assert not t.interrupted
    t.test(model, loader(8), verbose=False)
    assert seen["test"] == (TrainerFn.TESTING, RunningStage.TESTING, True)
    t.predict(model, loader(8))
    assert seen["predict"] == (TrainerFn.PREDICTING, RunningStage.PREDICTING, True)
    assert t.state.fn == TrainerFn.PREDICTING and t.state.stage is None


class ExceptionSpy(pl.Callback):
    def __init__(self):
        self.exceptions: list[BaseException] = []
        self.train_end_called = False

    def on_exception(self, trainer, pl_module, exception):
        self.exceptions.append(exception)

    def on_train_end(self, trainer, pl_module):
        self.train_end_called = True


class Raises(Model):
    def __init__(self, exc: BaseException):
        super().__init__()
        self.exc = exc
        self.module_exceptions: list[BaseException] = []

    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            raise self.exc
        return super().training_step(batch, batch_idx)

    def on_exception(self, exception):
        self.module_exceptions.append(exception)


def test_keyboard_interrupt_is_handled_gracefully():
    exc = KeyboardInterrupt()
    model, spy = Raises(exc), ExceptionSpy()
    t = trainer(max_epochs=3, callbacks=[spy])
    with pytest.warns(UserWarning, match="KeyboardInterrupt"), pytest.raises(SystemExit, match="1"):
        t.fit(model, loader(16))  # as in Lightning: after the graceful shut-down, exit status 1
    assert t.interrupted
    assert t.state.status == TrainerStatus.INTERRUPTED and t.state.stage is None
    assert spy.exceptions == [exc]
    assert model.module_exceptions == [exc]
    assert not spy.train_end_called
    assert t.global_step == 2


def test_other_exceptions_call_on_exception_and_propagate():
    exc = RuntimeError("boom in training_step")
    model, spy = Raises(exc), ExceptionSpy()
    t = trainer(max_epochs=3, callbacks=[spy])
    with pytest.raises(RuntimeError, match="boom in training_step") as info:
        t.fit(model, loader(16))
    assert info.value is exc
    assert spy.exceptions == [exc]
    assert model.module_exceptions == [exc]
    assert t.state.status == TrainerStatus.INTERRUPTED
    assert not spy.train_end_called


# ----------------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------------
def test_trainer_properties(tmp_path):
    seen = {}

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.setdefault("steps", []).append((trainer.current_epoch, trainer.global_step))

    logger = CSVLogger(save_dir=tmp_path, name="run")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts")
    early = EarlyStopping(monitor="val_loss/dataloader_idx_0", patience=100)
    spy = Spy()
    t = pl.Trainer(max_epochs=2, logger=logger, callbacks=[spy, ckpt, early], enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    assert t.logger is logger and t.loggers == [logger]
    assert t.checkpoint_callback is ckpt and t.checkpoint_callbacks == [ckpt]
    assert t.early_stopping_callback is early
    assert spy in t.callbacks and ckpt in t.callbacks and early in t.callbacks
    assert t.current_epoch == 0 and t.global_step == 0

    train, val_a, val_b = loader(16), loader(8), loader(4)
    model = Model()
    t.fit(model, train, [val_a, val_b])
    assert seen["steps"] == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (1, 6), (1, 7), (1, 8)]
    assert t.current_epoch == 2 and t.global_step == 8
    assert t.log_dir == str(tmp_path / "run" / "version_0") == logger.log_dir
    assert t.train_dataloader is train
    assert t.val_dataloaders == [val_a, val_b]
    assert t.num_training_batches == 4
    assert t.num_val_batches == [2, 1]
    assert t.callbacks[-1] is ckpt  # checkpointing runs after every other callback
    assert os.path.isfile(ckpt.best_model_path)

    no_logger = trainer(default_root_dir=tmp_path)
    assert no_logger.logger is None and no_logger.loggers == []
    assert no_logger.log_dir == str(tmp_path)
    assert no_logger.checkpoint_callback is None and no_logger.early_stopping_callback is None


def test_default_trainer_has_a_checkpoint_callback_and_a_logger(tmp_path):
    t = pl.Trainer(default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False)
    assert isinstance(t.checkpoint_callback, ModelCheckpoint)
    assert t.logger is not None and len(t.loggers) == 1


# ----------------------------------------------------------------------------------------------
# modes and grad during evaluation
# ----------------------------------------------------------------------------------------------
def test_train_and_eval_modes_are_restored_after_validation():
    class Modes(Model):
        def __init__(self):
            super().__init__()
            self.frozen = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(3, 3))
            self.frozen.eval()
            self.modes: list[tuple] = []

        def training_step(self, batch, batch_idx):
            self.modes.append(("train", self.training, self.layer.training, self.frozen.training,
                               self.frozen[0].training))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.modes.append(("val", self.training, self.layer.training, self.frozen.training,
                               self.frozen[0].training))
            return super().validation_step(batch, batch_idx)

    model = Modes()
    t = trainer(max_epochs=1, val_check_interval=2, num_sanity_val_steps=1)
    with pytest.warns(UserWarning, match=r"3 module\(s\) are in eval mode at the start of training"):
        t.fit(model, loader(16), loader(8))
    kinds = [m[0] for m in model.modes]
    # sanity val, then train, train, val, val, train, train, val, val
    assert kinds == ["val", "train", "train", "val", "val", "train", "train", "val", "val"]
    assert {m for m in model.modes if m[0] == "train"} == {("train", True, True, False, False)}
    assert {m for m in model.modes if m[0] == "val"} == {("val", False, False, False, False)}
    assert model.training and model.layer.training
    assert not model.frozen.training and not model.frozen[0].training


@pytest.mark.parametrize("inference_mode", [True, False])
def test_inference_mode_setting(inference_mode):
    class GradSpy(Model):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            out = self(batch[0])
            self.seen = (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), out.is_inference(),
                         out.requires_grad)
            return super().validation_step(batch, batch_idx)

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.seen_test = (torch.is_grad_enabled(), self(batch[0]).is_inference())

        def training_step(self, batch, batch_idx):
            self.seen_train = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
            return super().training_step(batch, batch_idx)

    model = GradSpy()
    t = trainer(max_epochs=1, inference_mode=inference_mode)
    t.fit(model, loader(8), loader(8))
    assert model.seen == (False, inference_mode, inference_mode, False)
    assert model.seen_train == (True, False)
    t.test(model, loader(8), verbose=False)
    assert model.seen_test == (False, inference_mode)
    # training after an evaluation still builds graphs
    assert all(p.requires_grad for p in model.parameters())
