"""The fit loop decides how long to train, on how much data and when to validate: max_epochs,
max_steps (also under accumulation), min_epochs/min_steps against should_stop, should_stop from a
callback or the module, max_time; limit_*_batches as counts and fractions, fast_dev_run,
overfit_batches; val_check_interval, check_val_every_n_epoch, the sanity check (its count, its
discarded metrics, its untouched random stream) and reload_dataloaders_every_n_epochs.

Every test counts what really ran (batches per stage, validation runs and the global step they
ran at, dataloader calls) or compares weights with `torch.equal`. The expected numbers were
checked against PyTorch Lightning 2.6 with the same model and data, except where a comment
says fulmen deliberately differs. validate/test/predict, the trainer state and properties are
in test_evaluation_and_state.py.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as pl
import fulmen.errors
from fulmen.state import TrainerStatus

from helpers import CountingModel, quiet_trainer, random_regression, regression_loader

pytestmark = pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")


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
    model = CountingModel()
    t = trainer(max_epochs=3)
    t.fit(model, regression_loader(16), regression_loader(8))
    assert model.counts["train"] == 12
    assert t.global_step == 12
    assert t.current_epoch == 3
    assert model.val_run_epochs == [0, 1, 2]
    assert model.counts["val"] == 3 * 2
    assert t.state.status == TrainerStatus.FINISHED


def test_max_steps_stops_mid_epoch_with_exact_global_step():
    model = CountingModel()
    t = trainer(max_steps=6)  # 4 batches per epoch: stops after batch 1 of epoch 1
    t.fit(model, regression_loader(16), regression_loader(8))
    assert t.global_step == 6
    assert model.counts["train"] == 6
    assert model.train_batches == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    # the epoch that was cut short still counts as ended (as in Lightning)
    assert t.current_epoch == 2
    assert model.val_run_epochs == [0]  # no validation in the unfinished epoch


def test_max_steps_counts_optimizer_steps_not_batches_under_accumulation():
    model = CountingModel()
    t = trainer(max_steps=3, accumulate_grad_batches=2)
    t.fit(model, regression_loader(32))  # 8 batches = 4 optimizer steps per epoch
    assert t.global_step == 3
    assert model.counts["train"] == 6


def test_min_epochs_keeps_training_although_should_stop_is_set():
    model = CountingModel()
    stopper = StopAt(None)  # asks to stop after every batch
    t = trainer(max_epochs=10, min_epochs=3, callbacks=[stopper])
    with pytest.warns(UserWarning, match="min_epochs=3"):
        t.fit(model, regression_loader(16))
    assert model.counts["train"] == 12
    assert t.global_step == 12
    assert t.current_epoch == 3


def test_min_steps_keeps_training_until_reached_then_stops_at_once():
    model = CountingModel()
    t = trainer(max_epochs=10, min_steps=5, callbacks=[StopAt(None)])
    with pytest.warns(UserWarning, match="min_steps=5"):
        t.fit(model, regression_loader(16), regression_loader(8))
    assert t.global_step == 5
    assert model.counts["train"] == 5
    assert model.train_batches[-1] == (1, 0)
    # validation at the end of epoch 0, and once more at the batch that finally stops (as in Lightning)
    assert model.val_run_steps == [4, 5]


def test_should_stop_from_a_callback_stops_at_the_end_of_that_batch():
    model = CountingModel()
    stopper = StopAt(global_step=2)
    t = trainer(max_epochs=5, callbacks=[stopper])
    t.fit(model, regression_loader(16), regression_loader(8))
    assert model.train_batches == [(0, 0), (0, 1)]
    assert t.global_step == 2
    assert stopper.batch_end_steps == [1, 2]  # the batch that asked to stop finished its hooks
    # as in Lightning, stopping early through should_stop validates once more at that batch
    assert model.val_run_steps == [2]
    assert t.current_epoch == 1
    assert t.state.status == TrainerStatus.FINISHED and not t.interrupted


def test_should_stop_on_a_validation_batch_validates_once():
    model = CountingModel()
    t = trainer(max_epochs=5, callbacks=[StopAt(global_step=4)])  # the last batch of epoch 0
    t.fit(model, regression_loader(16), regression_loader(8))
    assert model.counts["train"] == 4
    assert model.val_run_steps == [4]


def test_should_stop_does_not_validate_in_an_epoch_without_validation():
    model = CountingModel()
    t = trainer(max_epochs=5, check_val_every_n_epoch=2, callbacks=[StopAt(global_step=2)])
    t.fit(model, regression_loader(16), regression_loader(8))
    assert model.counts["train"] == 2
    assert model.val_run_steps == []


def test_should_stop_from_the_module_stops_at_the_end_of_that_batch():
    class StopsItself(CountingModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            if self.global_step == 2:  # the third batch: global_step counts finished steps
                self.trainer.should_stop = True
            return loss

    model = StopsItself()
    t = trainer(max_epochs=5)
    t.fit(model, regression_loader(16))
    assert model.counts["train"] == 3
    assert t.global_step == 3  # the batch that asked to stop still took its optimizer step


def test_should_stop_is_reset_by_the_next_fit():
    model = CountingModel()
    t = trainer(max_epochs=1, callbacks=[StopAt(global_step=1)])
    t.fit(model, regression_loader(16))
    assert t.should_stop
    model2 = CountingModel()
    t2 = trainer(max_epochs=1)
    t2.should_stop = True
    t2.fit(model2, regression_loader(16))
    assert model2.counts["train"] == 4


@pytest.mark.parametrize("max_time", [{"seconds": 0}, dt.timedelta(0), "00:00:00:00"])
def test_max_time_zero_stops_after_the_first_batch(max_time):
    model = CountingModel()
    t = trainer(max_epochs=10, max_time=max_time)
    t.fit(model, regression_loader(16))
    assert model.counts["train"] == 1
    assert t.global_step == 1
    assert t.state.status == TrainerStatus.FINISHED


def test_large_max_time_does_not_interfere():
    model = CountingModel()
    t = trainer(max_epochs=2, max_time={"days": 1})
    t.fit(model, regression_loader(16))
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
    model = CountingModel()
    t = trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2, limit_test_batches=1,
                limit_predict_batches=2)
    t.fit(model, regression_loader(16), regression_loader(16))
    assert t.num_training_batches == 3 and t.num_val_batches == [2]
    t.test(model, regression_loader(16), verbose=False)
    predictions = t.predict(model, regression_loader(16))
    assert model.counts == Counter(train=6, val=4, val_runs=2, test=1, predict=2)
    assert len(predictions) == 2
    assert t.global_step == 6


def test_limit_batches_as_fraction():
    model = CountingModel()
    t = trainer(max_epochs=2, limit_train_batches=0.5, limit_val_batches=0.25, limit_test_batches=0.5,
                limit_predict_batches=0.75)
    t.fit(model, regression_loader(32), regression_loader(16))  # 8 train and 4 val/test/predict batches
    assert t.num_training_batches == 4 and t.num_val_batches == [1]
    t.test(model, regression_loader(16), verbose=False)
    t.predict(model, regression_loader(16))
    assert model.counts == Counter(train=8, val=2, val_runs=2, test=2, predict=3)


def test_limit_val_batches_zero_disables_validation():
    model = CountingModel()
    t = trainer(max_epochs=2, limit_val_batches=0)
    t.fit(model, regression_loader(16), regression_loader(16))
    assert model.counts["val"] == 0 and model.counts["val_runs"] == 0
    assert model.counts["train"] == 8


@pytest.mark.parametrize("fast_dev_run, n", [(True, 1), (3, 3)])
def test_fast_dev_run_runs_n_batches_of_everything_and_writes_nothing(tmp_path, fast_dev_run, n):
    model = CountingModel()
    # checkpointing and the default logger are left on: fast_dev_run must switch them off itself
    t = pl.Trainer(fast_dev_run=fast_dev_run, default_root_dir=tmp_path, enable_progress_bar=False,
                   enable_model_summary=False)
    assert t.logger is None and t.loggers == []
    t.fit(model, regression_loader(40), regression_loader(40))  # 10 batches each: far more than n
    assert model.counts["train"] == n
    assert model.counts["val"] == n and model.counts["val_runs"] == 1
    assert model.counts["sanity"] == 0
    assert t.global_step == n
    t.validate(model, regression_loader(40), verbose=False)
    t.test(model, regression_loader(40), verbose=False)
    predictions = t.predict(model, regression_loader(40))
    assert model.counts["val"] == 2 * n
    assert model.counts["test"] == n
    assert model.counts["predict"] == n and len(predictions) == n
    assert list(tmp_path.iterdir()) == []
    assert t.checkpoint_callback.best_model_path == ""


def test_overfit_batches_uses_the_same_unshuffled_batches_every_epoch():
    seen: list[list[torch.Tensor]] = []

    class Recorder(CountingModel):
        def on_train_epoch_start(self):
            seen.append([])

        def training_step(self, batch, batch_idx):
            seen[-1].append(batch[0].clone())
            return super().training_step(batch, batch_idx)

    data = random_regression(32)
    model = Recorder()
    t = trainer(max_epochs=3, overfit_batches=2)
    with pytest.warns(UserWarning, match="overfit_batches"):
        t.fit(model, DataLoader(data, batch_size=4, shuffle=True), regression_loader(16))
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
    model = CountingModel()
    t = trainer(max_epochs=2, val_check_interval=0.25)
    t.fit(model, regression_loader(32), regression_loader(16))  # 8 batches per epoch → every 2 batches
    assert t.val_check_batch == 2
    assert model.val_run_steps == [2, 4, 6, 8, 10, 12, 14, 16]
    assert model.counts["val"] == 8 * 4


def test_val_check_interval_int_counts_batches_within_each_epoch():
    model = CountingModel()
    t = trainer(max_epochs=2, val_check_interval=3)
    t.fit(model, regression_loader(32), regression_loader(16))  # 8 batches per epoch: after batches 3 and 6 of each
    assert model.val_run_steps == [3, 6, 11, 14]
    assert model.val_run_epochs == [0, 0, 1, 1]


def test_val_check_interval_larger_than_the_epoch_is_rejected():
    t = trainer(max_epochs=1, val_check_interval=20)
    with pytest.raises(ValueError, match="val_check_interval"):  # Lightning's type for this error
        t.fit(CountingModel(), regression_loader(16), regression_loader(16))


def test_check_val_every_n_epoch_two():
    model = CountingModel()
    t = trainer(max_epochs=4, check_val_every_n_epoch=2)
    t.fit(model, regression_loader(16), regression_loader(8))
    assert model.val_run_epochs == [1, 3]
    assert model.val_run_steps == [8, 16]


def test_check_val_every_n_epoch_none_counts_batches_across_epochs():
    model = CountingModel()
    t = trainer(max_epochs=3, check_val_every_n_epoch=None, val_check_interval=3)
    t.fit(model, regression_loader(16), regression_loader(8))  # 4 batches per epoch, 12 in all
    assert model.val_run_steps == [3, 6, 9, 12]
    assert model.val_run_epochs == [0, 1, 2, 2]


@pytest.mark.parametrize("steps, expected", [(0, 0), (2, 2), (-1, 4)])
def test_num_sanity_val_steps(steps, expected):
    model = CountingModel()
    t = trainer(max_epochs=1, num_sanity_val_steps=steps)
    t.fit(model, regression_loader(16), regression_loader(16))
    assert model.counts["sanity"] == expected
    assert model.counts["val"] == 4  # the real validation is unaffected
    assert model.counts["train"] == 4


def test_num_sanity_val_steps_defaults_to_two():
    model = CountingModel()
    t = quiet_trainer(accelerator="auto", max_epochs=1)
    t.fit(model, regression_loader(16), regression_loader(16))
    assert model.counts["sanity"] == 2


def test_sanity_check_metrics_are_discarded():
    class Spy(pl.Callback):
        def on_sanity_check_end(self, trainer, pl_module):
            self.during_sanity = trainer.sanity_checking

        def on_train_start(self, trainer, pl_module):
            self.metrics_at_start = dict(trainer.callback_metrics)
            self.logged_at_start = dict(trainer.logged_metrics)

    model, spy = CountingModel(), Spy()
    t = trainer(max_epochs=1, num_sanity_val_steps=2, callbacks=[spy])
    t.fit(model, regression_loader(16), regression_loader(16))
    assert model.counts["sanity"] == 2
    assert spy.during_sanity is True
    assert "val_loss" not in spy.metrics_at_start
    assert spy.logged_at_start == {}
    assert "val_loss" in t.callback_metrics  # the real validation does record it


def test_sanity_check_does_not_change_the_random_stream(monkeypatch):
    """A fit with a sanity check gives bit-identical weights to one without."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them; restore after
        monkeypatch.delenv(name, raising=False)

    class Noisy(CountingModel):
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
        t.fit(model, regression_loader(32, shuffle=True), regression_loader(16, shuffle=True))
        return model.state_dict()

    without, with_check = run(0), run(2)
    assert all(torch.equal(without[k], with_check[k]) for k in without)
    # the comparison is sensitive: one extra random draw before training changes the weights
    disturbed = run(0, [DrawsOnce()])
    assert not all(torch.equal(without[k], disturbed[k]) for k in without)


def test_reload_dataloaders_every_epoch_calls_the_dataloader_hooks_each_epoch():
    class Reloading(CountingModel):
        def train_dataloader(self):
            self.counts["train_dataloader"] += 1
            return regression_loader(16, seed=self.counts["train_dataloader"])

        def val_dataloader(self):
            self.counts["val_dataloader"] += 1
            return regression_loader(8)

    model = Reloading()
    trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1).fit(model)
    assert model.counts["train_dataloader"] == 3
    assert model.counts["val_dataloader"] == 3
    assert model.counts["train"] == 12

    model = Reloading()
    trainer(max_epochs=3).fit(model)
    assert model.counts["train_dataloader"] == 1
    assert model.counts["val_dataloader"] == 1
