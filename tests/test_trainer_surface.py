"""The Trainer's Lightning surface: defaults and attributes as a real `pytorch_lightning.Trainer`
shows them, `PL_TRAINER_*` environment variables, the settable stage flags and the state enums,
per-run metrics, the `fit_loop` progress views, barebones conflicts and the tuner's guards.

Where a number below comes from Lightning 2.6.6 rather than from a Lightning object built in the
test, it was read from a run of the same tiny script on the installed pytorch_lightning.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.errors import MisconfigurationException
from fulmen.state import RunningStage, TrainerFn, TrainerStatus
from tests.helpers import quiet_trainer


@pytest.fixture(scope="module")
def lightning():
    pytest.importorskip("pytorch_lightning")
    import pytorch_lightning

    return pytorch_lightning


def _data(n: int = 6, batch_size: int = 2) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=batch_size)


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.step_batch_idx: list[tuple[int, int]] = []

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        # In the step Lightning's fit_loop.epoch_loop.batch_idx is this batch's index.
        self.step_batch_idx.append((batch_idx, self.trainer.fit_loop.epoch_loop.batch_idx))
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train_loss", loss, prog_bar=True)
        self.log("tr_ep", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean(), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.layer(batch[0]).pow(2).mean())

    def predict_step(self, batch, batch_idx):
        return self.layer(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


# ==========================================================================================
# 1. defaults and attributes, against a real Lightning Trainer
# ==========================================================================================
_ATTRIBUTES = (
    "max_epochs", "min_epochs", "max_steps", "min_steps", "val_check_interval", "num_sanity_val_steps",
    "log_every_n_steps", "check_val_every_n_epoch", "limit_train_batches", "limit_val_batches",
    "limit_test_batches", "limit_predict_batches", "overfit_batches", "precision", "gradient_clip_val",
    "gradient_clip_algorithm", "accumulate_grad_batches", "fast_dev_run", "reload_dataloaders_every_n_epochs",
    "barebones", "num_nodes", "num_devices", "current_epoch", "global_step", "should_stop", "training",
    "validating", "testing", "predicting", "sanity_checking", "evaluating", "callback_metrics", "logged_metrics",
    "progress_bar_metrics", "num_training_batches", "num_val_batches", "num_sanity_val_batches",
    "num_test_batches", "num_predict_batches", "val_check_batch", "lightning_module", "model", "datamodule",
    "interrupted", "is_last_batch", "enable_validation", "received_sigterm", "ckpt_path", "is_global_zero",
    "world_size", "global_rank", "local_rank", "node_rank", "enable_autolog_hparams", "scaler",
    "distributed_sampler_kwargs", "early_stopping_callbacks",
)


def test_default_attributes_match_lightning(lightning, tmp_path):
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   accelerator="cpu", default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = lightning.Trainer(**options)
    ours = pl.Trainer(**options)
    differ = {name: (getattr(theirs, name), getattr(ours, name)) for name in _ATTRIBUTES
              if getattr(theirs, name) != getattr(ours, name)}
    assert differ == {}
    assert ours.max_epochs is None and ours.gradient_clip_algorithm is None and ours.fast_dev_run is False
    assert ours.val_check_batch is None and ours.num_training_batches == float("inf")


def test_every_lightning_argument_exists_with_its_default(lightning):
    theirs = inspect.signature(lightning.Trainer.__init__).parameters
    ours = inspect.signature(pl.Trainer.__init__).parameters
    assert {n: p.default for n, p in theirs.items() if n != "self"} == {
        n: ours[n].default for n in theirs if n != "self" and n in ours
    }
    assert set(theirs) <= set(ours)
    for method in ("fit", "validate", "test", "predict"):
        assert set(inspect.signature(getattr(lightning.Trainer, method)).parameters) <= set(
            inspect.signature(getattr(pl.Trainer, method)).parameters
        ), method


def test_given_values_read_back_as_lightning_shows_them(lightning, tmp_path):
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   accelerator="cpu", default_root_dir=tmp_path, gradient_clip_algorithm="VALUE",
                   gradient_clip_val=0.5, num_sanity_val_steps=-1, max_steps=7)
    for fast_dev_run in (1, True, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = lightning.Trainer(**options, fast_dev_run=fast_dev_run)
        ours = pl.Trainer(**options, fast_dev_run=fast_dev_run)
        for name in ("fast_dev_run", "max_steps", "max_epochs", "gradient_clip_algorithm", "num_sanity_val_steps",
                     "limit_train_batches", "limit_val_batches", "val_check_interval"):
            assert getattr(ours, name) == getattr(theirs, name), (fast_dev_run, name)
    assert pl.Trainer(**options).num_sanity_val_steps == float("inf")


class _Record(pl.Callback):
    def __init__(self, stop: bool = False) -> None:
        self.stop, self.limits = stop, None

    def on_train_start(self, trainer, pl_module):
        self.limits = (trainer.max_epochs, trainer.min_epochs, trainer.fit_loop.max_epochs)
        if self.stop:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = self.stop  # min_epochs may keep training going once


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, (1000, 0)),  # Lightning's rule when neither max_epochs nor max_steps is set
        ({"max_steps": 2}, (-1, 0)),
        ({"max_time": {"minutes": 5}}, (-1, 0)),  # a time limit: no epoch limit (Lightning's Timer)
        ({"min_steps": 1}, (1000, 1)),
        ({"max_epochs": 2, "min_epochs": 1}, (2, 1)),
    ],
)
def test_fit_resolves_the_limits_left_unset(tmp_path, given, expected):
    record = _Record(stop=True)
    trainer = quiet_trainer(tmp_path, callbacks=[record], limit_train_batches=1, **given)
    assert (trainer.max_epochs, trainer.min_epochs) == (given.get("max_epochs"), given.get("min_epochs"))
    trainer.fit(Model(), _data())
    assert record.limits == (*expected, expected[0])
    assert (trainer.max_epochs, trainer.min_epochs) == expected


# ==========================================================================================
# 2. PL_TRAINER_* environment variables
# ==========================================================================================
def test_environment_variables_give_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("PL_TRAINER_MAX_EPOCHS", "3")
    monkeypatch.setenv("PL_TRAINER_ACCELERATOR", "cpu")  # not a Python literal: the string itself
    monkeypatch.setenv("PL_TRAINER_LIMIT_VAL_BATCHES", "0.5")
    monkeypatch.setenv("PL_TRAINER_ENABLE_PROGRESS_BAR", "False")
    monkeypatch.setenv("PL_TRAINER_LOG_EVERY_N_STEPS", "")  # empty: unset
    monkeypatch.setenv("PL_TRAINER_NOT_AN_ARGUMENT", "1")
    trainer = pl.Trainer(logger=False, default_root_dir=tmp_path)
    assert trainer.max_epochs == 3 and trainer.device.type == "cpu" and trainer.limit_val_batches == 0.5
    assert trainer.progress_bar_callback is None and trainer.log_every_n_steps == 50
    # An argument passed explicitly wins over the environment, as in Lightning.
    assert pl.Trainer(max_epochs=5, logger=False, default_root_dir=tmp_path).max_epochs == 5


def test_environment_variables_follow_the_class_name_and_are_checked(monkeypatch, tmp_path):
    class MyTrainer(pl.Trainer):
        pass

    monkeypatch.setenv("PL_MYTRAINER_MAX_STEPS", "4")
    monkeypatch.setenv("PL_TRAINER_MAX_STEPS", "9")
    assert MyTrainer(logger=False, default_root_dir=tmp_path).max_steps == 4
    monkeypatch.setenv("PL_TRAINER_MAX_EPOCHS", "three")
    with pytest.raises(MisconfigurationException, match=r"Received: max_epochs='three'"):
        pl.Trainer(logger=False, default_root_dir=tmp_path)


def test_environment_defaults_match_lightning(lightning, monkeypatch):
    from pytorch_lightning.utilities.argparse import _parse_env_variables

    from fulmen.arguments import env_defaults

    for name, value in (("MAX_EPOCHS", "3"), ("DEVICES", "[0, 1]"), ("ACCELERATOR", "cpu"), ("BENCHMARK", "True"),
                        ("PRECISION", "16-mixed"), ("LIMIT_TRAIN_BATCHES", "0.25"), ("MAX_STEPS", "")):
        monkeypatch.setenv(f"PL_TRAINER_{name}", value)
    assert env_defaults(pl.Trainer) == vars(_parse_env_variables(lightning.Trainer))


# ==========================================================================================
# 3. stage flags and the state enums
# ==========================================================================================
def _stage_sequence(trainer) -> list:
    seen = []
    for flag, value in (("validating", True), ("testing", False), ("sanity_checking", True), ("evaluating", None),
                        ("sanity_checking", False), ("training", True), ("predicting", True), ("training", False),
                        ("predicting", False)):
        if value is not None:
            setattr(trainer, flag, value)
        seen.append((str(trainer.state.stage.value) if trainer.state.stage else None, trainer.evaluating))
    return seen


def test_stage_flags_can_be_set_as_in_lightning(lightning, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = lightning.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                   accelerator="cpu", default_root_dir=tmp_path)
    ours = quiet_trainer(tmp_path)
    assert _stage_sequence(ours) == _stage_sequence(theirs)
    ours.validating = True
    ours.testing = False  # not the current stage: nothing changes
    assert ours.validating and ours.state.stage == RunningStage.VALIDATING


def test_state_enums_match_lightning(lightning):
    from pytorch_lightning.trainer import states

    for ours, theirs in ((TrainerFn, states.TrainerFn), (RunningStage, states.RunningStage),
                         (TrainerStatus, states.TrainerStatus)):
        assert {m.name: m.value for m in ours} == {m.name: m.value for m in theirs}
    for stage in RunningStage:
        theirs = states.RunningStage(stage.value)
        assert (stage.evaluating, stage.dataloader_prefix) == (theirs.evaluating, theirs.dataloader_prefix)
    for status in TrainerStatus:
        assert status.stopped == states.TrainerStatus(status.value).stopped
    assert TrainerFn.FITTING == "FIT" and RunningStage.from_str("sanity_checking") is RunningStage.SANITY_CHECKING
    assert [f.name for f in __import__("dataclasses").fields(pl.Trainer().state)][:3] == ["status", "fn", "stage"]


# ==========================================================================================
# 4. metrics belong to the run that logged them
# ==========================================================================================
def test_each_run_starts_with_no_metrics(tmp_path):
    from fulmen.loggers import CSVLogger

    trainer = pl.Trainer(max_epochs=2, logger=CSVLogger(tmp_path), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                         accelerator="cpu", default_root_dir=tmp_path)
    model = Model()

    def keys():
        return [sorted(trainer.callback_metrics), sorted(trainer.logged_metrics), sorted(trainer.progress_bar_metrics)]

    trainer.fit(model, _data(), _data())
    # What Lightning 2.6.6 holds after each step of the same script.
    assert keys() == [["tr_ep", "train_loss", "val_loss"], ["tr_ep", "train_loss", "val_loss"],
                      ["train_loss", "val_loss"]]
    trainer.validate(model, _data(), verbose=False)
    assert keys() == [["val_loss"], ["val_loss"], ["val_loss"]]
    trainer.test(model, _data(), verbose=False)
    assert keys() == [["test_loss"], ["test_loss"], []]
    trainer.predict(model, _data())
    assert keys() == [[], [], []]


# ==========================================================================================
# 5. fit_loop and the other Lightning attributes
# ==========================================================================================
class _Progress(pl.Callback):
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rows.append(("start", batch_idx, trainer.fit_loop.epoch_loop.batch_idx, trainer.fit_loop.total_batch_idx))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        fl, el = trainer.fit_loop, trainer.fit_loop.epoch_loop
        self.rows.append(("batch", tuple(el.batch_progress.current), tuple(fl.epoch_progress.current), el.batch_idx,
                          fl.total_batch_idx, trainer.is_last_batch, el._batches_that_stepped, trainer.global_step))

    def on_train_epoch_end(self, trainer, pl_module):
        fl = trainer.fit_loop
        self.rows.append(("epoch", tuple(fl.epoch_progress.current), tuple(fl.epoch_loop.batch_progress.total)))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        loop = trainer.fit_loop.epoch_loop.val_loop if trainer.state.fn == "fit" else trainer.validate_loop
        other = trainer.validate_loop if trainer.state.fn == "fit" else trainer.fit_loop.epoch_loop.val_loop
        self.rows.append(("val", str(trainer.state.stage.value), tuple(loop.batch_progress.current),
                          tuple(other.batch_progress.current)))


def test_fit_loop_progress_matches_lightning(tmp_path):
    progress = _Progress()
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[progress], num_sanity_val_steps=1,
                            limit_val_batches=2)
    assert tuple(trainer.fit_loop.epoch_progress.current) == (0, 0, 0, 0) and not trainer.fit_loop.done
    model = Model()
    trainer.fit(model, _data(), _data())
    # Trackers read (ready, completed, started, processed); numbers from Lightning 2.6.6.
    epoch_rows = []
    for epoch in range(2):
        in_epoch = (epoch + 1, epoch, epoch + 1, epoch)
        for i in range(3):
            total = 3 * epoch + i
            epoch_rows.append(("start", i, i, total))
            epoch_rows.append(("batch", (i + 1, i, i + 1, i + 1), in_epoch, i, total, i == 2, total, total + 1))
        epoch_rows += [("val", "validate", (1, 0, 1, 1), (0, 0, 0, 0)), ("val", "validate", (2, 1, 2, 2), (0, 0, 0, 0))]
        epoch_rows.append(("epoch", (epoch + 1, epoch, epoch + 1, epoch + 1), (3 * epoch + 3,) * 4))
    assert progress.rows == [("val", "sanity_check", (1, 0, 1, 1), (0, 0, 0, 0)), *epoch_rows]
    assert model.step_batch_idx == [(i, i) for i in range(3)] * 2
    fl = trainer.fit_loop
    assert tuple(fl.epoch_progress.current) == (2, 2, 2, 2) and tuple(fl.epoch_progress.total) == (2, 2, 2, 2)
    assert tuple(fl.epoch_loop.batch_progress.current) == (3, 3, 3, 3)
    assert tuple(fl.epoch_loop.batch_progress.total) == (6, 6, 6, 6)
    assert (fl.total_batch_idx, fl.epoch_loop.batch_idx, fl.max_batches, fl.done, trainer.is_last_batch) == (5, 2, 3, True, True)
    assert (fl.max_epochs, fl.min_epochs, fl.max_steps, fl.min_steps) == (2, 0, -1, None)
    progress.rows.clear()
    trainer.validate(model, _data(), verbose=False)
    assert progress.rows == [("val", "validate", (i + 1, i, i + 1, i + 1), (0, 0, 0, 0)) for i in range(2)]


def test_fit_loop_limits_can_be_set_and_counters_cannot(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    model = Model()
    trainer.fit(model, _data())
    trainer.fit_loop.max_epochs += 1  # real code extends training this way
    trainer.fit_loop.epoch_loop.max_steps = 3
    assert (trainer.max_epochs, trainer.max_steps) == (2, 3)
    trainer.fit(model, _data())
    assert (trainer.current_epoch, trainer.global_step) == (2, 3)  # the stopped epoch counts, as in Lightning
    with pytest.raises(AttributeError, match=r"read-only view of the Trainer's state\. Received: epoch_progress="):
        trainer.fit_loop.epoch_progress = None
    with pytest.raises(AttributeError):
        trainer.fit_loop.epoch_progress.current.completed = 5


class _StepsModel(Model):
    def configure_optimizers(self):
        self.estimated = self.trainer.estimated_stepping_batches  # as OneCycleLR(total_steps=...) reads it
        return super().configure_optimizers()


@pytest.mark.parametrize(("given", "expected"), [
    ({"max_epochs": 2, "accumulate_grad_batches": 2}, 4),  # ceil(3 / 2) * 2 epochs
    ({"max_epochs": 3, "max_steps": 5}, 5),
    ({"max_epochs": -1, "max_steps": 2}, 2),
    ({"max_epochs": -1, "max_steps": -1, "max_time": {"seconds": 0}}, float("inf")),
])
def test_estimated_stepping_batches_in_configure_optimizers(tmp_path, given, expected):
    model = _StepsModel()
    quiet_trainer(tmp_path, **given).fit(model, _data())
    assert model.estimated == expected


def test_other_lightning_attributes(tmp_path, capsys):
    from fulmen.callbacks import EarlyStopping

    stopper = EarlyStopping("val_loss")
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[stopper])
    assert trainer.model is None and not trainer.enable_validation and not trainer.received_sigterm
    assert trainer.early_stopping_callbacks == [stopper] and trainer.scaler is None
    assert trainer.distributed_sampler_kwargs is None and trainer.barebones is False
    model = Model()
    trainer.fit(model, _data(), _data())
    assert trainer.model is model and trainer.enable_validation
    trainer.print("rank zero says", 1)
    assert capsys.readouterr().out == "rank zero says 1\n"
    with quiet_trainer(tmp_path, precision="64-true").init_module():
        inside = torch.nn.Linear(2, 2)
    assert inside.weight.dtype == torch.float64 and torch.get_default_dtype() == torch.float32
    assert inside.weight.device == trainer.device
    # empty_init=True (weights about to be loaded): torch.nn.init is skipped, as in Lightning, so it
    # draws nothing from the random generator
    first_draw = torch.rand(1, generator=torch.Generator().manual_seed(5))
    for empty_init, draws_nothing in ((True, True), (None, False)):
        torch.manual_seed(5)
        with trainer.init_module(empty_init=empty_init):
            torch.nn.Linear(2, 2)
        assert torch.equal(torch.rand(1), first_draw) is draws_nothing


def test_autolog_hparams_can_be_turned_off(tmp_path):
    from fulmen.loggers import CSVLogger

    class WithHparams(Model):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()

    for autolog in (True, False):
        logger = CSVLogger(tmp_path / str(autolog))
        quiet_trainer(tmp_path, logger=logger, max_epochs=1, enable_autolog_hparams=autolog).fit(WithHparams(), _data())
        hparams = tmp_path / str(autolog) / "lightning_logs" / "version_0" / "hparams.yaml"
        assert ("lr: 0.1" in hparams.read_text() if hparams.exists() else False) is autolog


def test_model_registry_is_refused_clearly(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"not supported by fulmen\. Received: model_registry='m'"):
        quiet_trainer(tmp_path, model_registry="m")


# ==========================================================================================
# 6. barebones conflicts and the tuner's guards
# ==========================================================================================
@pytest.mark.parametrize(("name", "value"), [
    ("enable_checkpointing", True), ("logger", True), ("enable_progress_bar", True), ("log_every_n_steps", 1),
    ("enable_model_summary", True), ("num_sanity_val_steps", 2), ("fast_dev_run", True), ("detect_anomaly", True),
    ("profiler", "simple"),
])
def test_barebones_refuses_what_it_turns_off(lightning, tmp_path, name, value):
    with pytest.raises(ValueError, match=rf"barebones=True, {name}="):  # Lightning's own check, for reference
        lightning.Trainer(barebones=True, **{name: value})
    with pytest.raises(MisconfigurationException, match=rf"Received: barebones=True, {name}={value!r}\. Fix: drop {name}"):
        pl.Trainer(barebones=True, default_root_dir=tmp_path, **{name: value})


def test_barebones_runs_with_everything_off(tmp_path):
    trainer = pl.Trainer(barebones=True, max_epochs=1, accelerator="cpu", default_root_dir=tmp_path,
                         logger=False, enable_checkpointing=False, log_every_n_steps=0, num_sanity_val_steps=0)
    assert trainer.barebones and trainer.loggers == [] and trainer.callbacks == [] and trainer.num_sanity_val_steps == 0
    model = Model()
    trainer.fit(model, _data())
    assert trainer.global_step == 3 and not list(tmp_path.iterdir())


class _BatchModel(Model):
    def __init__(self) -> None:
        super().__init__()
        self.batch_size = 2

    def train_dataloader(self):
        return _data(8, self.batch_size)


def test_tuner_refuses_a_finder_already_on_the_trainer(tmp_path):
    from fulmen.callbacks import BatchSizeFinder, LearningRateFinder
    from fulmen.tuner import Tuner

    for finder, method in ((LearningRateFinder(), "lr_find"), (BatchSizeFinder(), "scale_batch_size")):
        tuner = Tuner(quiet_trainer(tmp_path, max_epochs=1, callbacks=[finder]))
        with pytest.raises(MisconfigurationException, match=rf"Tuner\.{method} adds its own {type(finder).__name__}"):
            getattr(tuner, method)(_BatchModel())


def test_batch_size_search_guards(tmp_path):
    from fulmen.tuner import Tuner

    with pytest.warns(UserWarning, match="scale_batch_size is skipped under fast_dev_run"):
        assert Tuner(quiet_trainer(tmp_path, fast_dev_run=True)).scale_batch_size(_BatchModel()) is None
    with pytest.raises(MisconfigurationException, match=r"No field 'bs' on the model.*Received: batch_arg_name='bs'"):
        Tuner(quiet_trainer(tmp_path, max_epochs=1)).scale_batch_size(_BatchModel(), batch_arg_name="bs")
    ddp = quiet_trainer(tmp_path, strategy="ddp", devices=2, max_epochs=1)
    with pytest.raises(MisconfigurationException, match=r"batch size search runs in one process.*world_size=2"):
        Tuner(ddp).scale_batch_size(_BatchModel())


def test_logged_metrics_are_filled_without_a_logger_as_in_lightning():
    """Lightning keeps `logged_metrics` also when no logger is attached (step and epoch values)."""
    class Logged(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss)
            self.log("both", loss, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.layer(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1, accelerator="cpu")
    trainer.fit(Logged(), data, data)
    assert sorted(trainer.logged_metrics) == ["both_epoch", "both_step", "train_loss", "val_loss"]
    trainer.validate(trainer.lightning_module, data, verbose=False)
    assert sorted(trainer.logged_metrics) == ["val_loss"]
