"""Every `configure_optimizers` form and how its schedulers step: a single optimizer or a list of
one, the tuple-of-lists and dict forms, "epoch" and "step" intervals with a frequency and a name,
ReduceLROnPlateau on a logged or validation metric (strict and not), None (train without
stepping), and the clear errors for malformed returns, all raised before the first step.

Each test records the learning rate the optimizer really had at every epoch and batch start and
compares it with the schedule a bare PyTorch scheduler produces.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.errors import MisconfigurationException

from helpers import assert_same_weights, assert_weights_changed, linear_regression, quiet_trainer, seeded_loader


# ==========================================================================================
# configure_optimizers forms and schedulers
# ==========================================================================================
class LRProbe(pl.LightningModule):
    """A linear model that records the first optimizer's LR at each epoch and batch start."""

    def __init__(self, configure, script=None):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.configure = configure
        self.script = script  # per-epoch value logged as "score"
        self.epoch_lrs: list[float] = []
        self.batch_lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.script is not None:
            self.log("score", self.script[self.current_epoch], on_step=False, on_epoch=True)
        # Scaled down so that learning rates like 1.0 (easy to read in asserts) stay stable.
        return 1e-3 * F.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return self.configure(self)

    def _lr(self) -> float | None:
        optimizers = self.trainer.optimizers
        return optimizers[0].param_groups[0]["lr"] if optimizers else None

    def on_train_epoch_start(self):
        self.epoch_lrs.append(self._lr())

    def on_train_batch_start(self, batch, batch_idx):
        self.batch_lrs.append(self._lr())


def _small_loader() -> DataLoader:
    return seeded_loader(linear_regression(16), batch_size=4)  # 4 batches per epoch


def test_single_optimizer_and_list_of_one(tmp_path):
    for form in ("single", "list"):
        captured = {}

        def configure(m):
            captured["opt"] = torch.optim.SGD(m.parameters(), lr=0.1)
            return captured["opt"] if form == "single" else [captured["opt"]]

        model = LRProbe(configure)
        initial = copy.deepcopy(model.layer)
        trainer = quiet_trainer(tmp_path, max_epochs=2)
        trainer.fit(model, _small_loader())
        assert trainer.optimizers == [captured["opt"]]
        assert trainer.lr_scheduler_configs == [] and model.lr_schedulers() is None
        assert trainer.global_step == 8
        assert model.epoch_lrs == [0.1, 0.1]
        assert_weights_changed(model.layer, initial)


@pytest.mark.parametrize("form", ["tuple_of_lists", "dict_with_scheduler", "dict_with_config"])
def test_epoch_scheduler_steplr(tmp_path, form):
    # StepLR(step_size=2, gamma=0.1) stepped once per epoch: lr 1, 1, 0.1, 0.1, 0.01.
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
        if form == "tuple_of_lists":
            return [opt], [sched]
        if form == "dict_with_scheduler":
            return {"optimizer": opt, "lr_scheduler": sched}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=5)
    trainer.fit(model, seeded_loader(linear_regression(8), batch_size=4))  # 2 batches per epoch
    assert model.epoch_lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert model.batch_lrs == pytest.approx([1.0] * 4 + [0.1] * 4 + [0.01] * 2)
    assert len(trainer.lr_scheduler_configs) == 1
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "epoch" and config.frequency == 1
    assert model.lr_schedulers() is trainer.lr_scheduler_configs[0].scheduler
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 5


def test_step_scheduler_with_frequency_and_name(tmp_path):
    # interval "step", frequency 2: StepLR(step_size=1, gamma=0.5) halves the LR every second
    # optimizer step. 4 batches per epoch, 2 epochs -> LR seen at batch start: 1,1,.5,.5,.25,.25,.125,.125
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 2, "name": "halver"}}

    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, _small_loader())
    assert model.batch_lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1.0 / 16)
    config = trainer.lr_scheduler_configs[0]
    assert (config.name, config.interval, config.frequency) == ("halver", "step", 2)


def test_epoch_scheduler_with_frequency_two(tmp_path):
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "frequency": 2}}

    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=5)
    trainer.fit(model, seeded_loader(linear_regression(8), batch_size=8))
    assert model.epoch_lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_step_scheduler_counts_optimizer_steps_under_accumulation(tmp_path):
    # interval "step" follows optimizer steps, not batches: 8 batches, accumulate 2 -> 4 steps,
    # so a StepLR(step_size=1, gamma=0.5) halves the LR 4 times.
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2)
    trainer.fit(model, seeded_loader(linear_regression(16), batch_size=2))
    assert trainer.global_step == 4
    assert model.batch_lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1.0 / 16)


PLATEAU_SCRIPT = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("monitor_at", ["scheduler_config", "top_level"])
def test_reduce_on_plateau_steps_on_monitored_metric(tmp_path, monitor_at):
    # mode="min", patience=1: epoch 1 improves, epochs 2-3 do not -> the LR drops after epoch 3,
    # and again after epoch 5.
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=1)
        if monitor_at == "top_level":
            return {"optimizer": opt, "lr_scheduler": sched, "monitor": "score"}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "score"}}

    model = LRProbe(configure, script=PLATEAU_SCRIPT)
    trainer = quiet_trainer(tmp_path, max_epochs=len(PLATEAU_SCRIPT))
    trainer.fit(model, seeded_loader(linear_regression(8), batch_size=4))

    # The same decisions from a bare ReduceLROnPlateau fed the same values.
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="min", factor=0.1, patience=1)
    expected = []
    for value in PLATEAU_SCRIPT:
        expected.append(ref_opt.param_groups[0]["lr"])
        ref.step(value)
    assert expected == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01])
    assert model.epoch_lrs == pytest.approx(expected)
    config = trainer.lr_scheduler_configs[0]
    assert config.reduce_on_plateau and config.monitor == "score"


def test_reduce_on_plateau_on_validation_metric(tmp_path):
    class ValProbe(LRProbe):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.tensor(3.0))  # never improves after the first epoch

    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}

    model = ValProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=4, num_sanity_val_steps=0)
    trainer.fit(model, seeded_loader(linear_regression(8), batch_size=4), seeded_loader(linear_regression(8), batch_size=4))
    assert model.epoch_lrs == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_reduce_on_plateau_missing_monitor_strict_raises(tmp_path):
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_acc"}}

    model = LRProbe(configure, script=PLATEAU_SCRIPT)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with pytest.raises(MisconfigurationException, match=r"monitors 'val_acc', which was not logged") as exc:
        trainer.fit(model, _small_loader())
    assert "available: ['score']" in str(exc.value) and "'strict': False" in str(exc.value)


def test_reduce_on_plateau_missing_monitor_not_strict_warns_and_skips(tmp_path):
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_acc", "strict": False}}

    model = LRProbe(configure, script=PLATEAU_SCRIPT)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    with pytest.warns(UserWarning, match=r"ReduceLROnPlateau skipped: 'val_acc' not in callback_metrics"):
        trainer.fit(model, _small_loader())
    assert trainer.current_epoch == 3
    assert model.epoch_lrs == [1.0, 1.0, 1.0]
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 0  # never stepped


def test_configure_optimizers_none_warns_and_trains_without_stepping(tmp_path):
    model = LRProbe(lambda m: None)
    initial = copy.deepcopy(model.layer)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="configure_optimizers returned None"):
        trainer.fit(model, _small_loader())
    assert trainer.optimizers == [] and trainer.lr_scheduler_configs == []
    assert trainer.current_epoch == 2
    assert_same_weights(model.layer, initial)
    assert model.layer.weight.grad is not None  # training_step and backward did run


def test_configure_optimizers_none_still_ends_at_max_steps(tmp_path):
    # As Lightning (which steps a mock optimizer), each batch counts as a step, so max_steps ends the run.
    model = LRProbe(lambda m: None)
    trainer = quiet_trainer(tmp_path, max_steps=5)
    with pytest.warns(UserWarning, match="configure_optimizers returned None"):
        trainer.fit(model, _small_loader())
    assert trainer.global_step == 5
    assert model.batch_lrs == [None] * 5


def test_two_optimizers_under_automatic_optimization_raise(tmp_path):
    def configure(m):
        return [torch.optim.SGD(m.parameters(), lr=0.1), torch.optim.Adam(m.parameters())], []

    with pytest.raises(MisconfigurationException, match=r"configure_optimizers returned 2") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(LRProbe(configure), _small_loader())
    assert "automatic_optimization = False" in str(exc.value)


# ==========================================================================================
# malformed configure_optimizers returns
# ==========================================================================================
def _opt(m):
    return torch.optim.SGD(m.parameters(), lr=0.1)


def _steplr(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1)


def _with_scheduler_config(**config):
    def configure(m):
        opt = _opt(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _steplr(opt), **config}}

    return configure


def _scheduler_on_foreign_optimizer(m):
    foreign = torch.optim.SGD(m.parameters(), lr=0.1)
    return {"optimizer": _opt(m), "lr_scheduler": _steplr(foreign)}


def _plateau_without_monitor(m):
    opt = _opt(m)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)}


MALFORMED = {
    "string": (lambda m: "adam", r"Received: str \('adam'\)"),
    "two_letter_string": (lambda m: "ab", r"Received: str \('ab'\)"),
    "dict_without_optimizer": (
        lambda m: {"lr_scheduler": _steplr(_opt(m))}, r"dict without an 'optimizer' key. Received: keys \['lr_scheduler'\]"
    ),
    "dict_with_unknown_key": (
        lambda m: {"optimizer": _opt(m), "lr_schedular": None}, r"unknown keys \['lr_schedular'\]"
    ),
    "scheduler_dict_without_scheduler": (
        lambda m: {"optimizer": _opt(m), "lr_scheduler": {"interval": "step"}},
        r"needs a 'scheduler' key .* Received: keys \['interval'\]",
    ),
    "bad_interval": (_with_scheduler_config(interval="batch"), r"Received: interval='batch'"),
    "frequency_zero": (_with_scheduler_config(frequency=0), r"Received: frequency=0"),
    "scheduler_on_optimizer_not_returned": (_scheduler_on_foreign_optimizer, r"did not return"),
    "plateau_without_monitor": (_plateau_without_monitor, r"no 'monitor' was given. Received: monitor=None"),
    "non_optimizer_in_list": (lambda m: [_opt(m), "sgd"], r"Received: str"),
    "scheduler_in_optimizer_list": (lambda m: [_opt(m), _steplr(_opt(m))], r"Received: StepLR"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_configure_optimizers_raise_clear_error(tmp_path, case):
    configure, fragment = MALFORMED[case]
    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    with pytest.raises(MisconfigurationException, match=fragment) as exc:
        trainer.fit(model, _small_loader())
    message = str(exc.value)
    assert "Received" in message and "Fix" in message, message
    assert trainer.global_step == 0 and model.batch_lrs == []  # rejected before the first step
