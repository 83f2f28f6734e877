"""validate, test and predict return what Lightning returns (one dict of epoch metrics per
dataloader, the predictions), test after fit loads the best checkpoint; the trainer state during
and after each entry point, KeyboardInterrupt and other exceptions (on_exception, the final
status), the Trainer's properties, and train/eval modes and grad/inference mode around evaluation.

Every test counts what really ran or compares numbers with a plain PyTorch computation. The
expected values were checked against PyTorch Lightning 2.6 with the same model and data. How long
the fit loop trains and when it validates is in test_fit_loop.py.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.callbacks import EarlyStopping, ModelCheckpoint
from fulmen.checkpoint import load_checkpoint
from fulmen.loggers import CSVLogger
from fulmen.state import RunningStage, TrainerFn, TrainerStatus

from helpers import CountingModel, quiet_trainer, regression_loader

pytestmark = pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")


# No sanity check.
trainer = functools.partial(quiet_trainer, num_sanity_val_steps=0)


# ----------------------------------------------------------------------------------------------
# validate / test / predict
# ----------------------------------------------------------------------------------------------
def _mean_mse(model: torch.nn.Module, dl: DataLoader) -> float:
    with torch.no_grad():
        losses = [torch.nn.functional.mse_loss(model(x), y) for x, y in dl]
    return torch.stack(losses).mean().item()


def test_validate_returns_one_dict_of_epoch_metrics():
    model = CountingModel()
    t = trainer()
    val = regression_loader(16)
    result = t.validate(model, val, verbose=False)
    assert isinstance(result, list) and len(result) == 1
    assert set(result[0]) == {"val_loss"}
    assert result[0]["val_loss"] == pytest.approx(_mean_mse(model, val), rel=1e-6)
    assert t.state.fn == TrainerFn.VALIDATING and t.state.status == TrainerStatus.FINISHED
    assert model.counts["val"] == 4


def test_test_with_two_dataloaders_returns_one_dict_per_dataloader():
    model = CountingModel()
    t = trainer()
    a, b = regression_loader(16, seed=1), regression_loader(8, seed=2)
    result = t.test(model, [a, b], verbose=False)
    assert len(result) == 2
    assert set(result[0]) == {"test_loss/dataloader_idx_0"}
    assert set(result[1]) == {"test_loss/dataloader_idx_1"}
    assert result[0]["test_loss/dataloader_idx_0"] == pytest.approx(_mean_mse(model, a), rel=1e-6)
    assert result[1]["test_loss/dataloader_idx_1"] == pytest.approx(_mean_mse(model, b), rel=1e-6)
    assert t.num_test_batches == [4, 2]
    assert model.counts["test"] == 6


def test_predict_returns_the_predictions():
    model = CountingModel()
    t = trainer()
    data = regression_loader(10, batch_size=4)
    predictions = t.predict(model, data)
    assert len(predictions) == 3
    with torch.no_grad():
        expected = [model(x) for x, _ in data]
    assert all(torch.equal(p, e) for p, e in zip(predictions, expected))
    assert [p.shape[0] for p in predictions] == [4, 4, 2]

    two = t.predict(model, [regression_loader(8), regression_loader(4)])
    assert [len(per_loader) for per_loader in two] == [2, 1]
    assert t.predict(model, data, return_predictions=False) is None


def test_test_after_fit_uses_the_best_checkpoint(tmp_path):
    class Scheduled(CountingModel):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            # a validation loss that is best in epoch 1 of 3
            self.log("val_loss", torch.tensor([3.0, 1.0, 2.0][self.current_epoch]))

    model = Scheduled()
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=1)
    t = trainer(max_epochs=3, callbacks=[ckpt], enable_checkpointing=True)
    t.fit(model, regression_loader(16), regression_loader(8))
    assert os.path.basename(ckpt.best_model_path) == "epoch=1-step=8.ckpt"
    final = {k: v.clone() for k, v in model.state_dict().items()}
    best = load_checkpoint(ckpt.best_model_path)["state_dict"]
    assert not all(torch.equal(final[k], best[k]) for k in final)

    t.test(dataloaders=regression_loader(8), verbose=False)
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

    model = CountingModel()
    t = trainer(max_epochs=1, num_sanity_val_steps=1, callbacks=[Spy()])
    assert t.state.status == TrainerStatus.INITIALIZING
    t.fit(model, regression_loader(16), regression_loader(8))
    assert seen["train"] == (TrainerFn.FITTING, RunningStage.TRAINING, TrainerStatus.RUNNING, True)
    assert seen["val"] == (TrainerFn.FITTING, RunningStage.VALIDATING, TrainerStatus.RUNNING, True)
    assert seen["sanity"][1] == RunningStage.SANITY_CHECKING
    assert t.state.status == TrainerStatus.FINISHED and t.state.finished
    assert t.state.stage is None and t.state.fn == TrainerFn.FITTING
    assert not t.interrupted
    t.test(model, regression_loader(8), verbose=False)
    assert seen["test"] == (TrainerFn.TESTING, RunningStage.TESTING, True)
    t.predict(model, regression_loader(8))
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


class Raises(CountingModel):
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
        t.fit(model, regression_loader(16))  # as in Lightning: after the graceful shut-down, exit status 1
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
        t.fit(model, regression_loader(16))
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

    train, val_a, val_b = regression_loader(16), regression_loader(8), regression_loader(4)
    model = CountingModel()
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
    class Modes(CountingModel):
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
        t.fit(model, regression_loader(16), regression_loader(8))
    kinds = [m[0] for m in model.modes]
    # sanity val, then train, train, val, val, train, train, val, val
    assert kinds == ["val", "train", "train", "val", "val", "train", "train", "val", "val"]
    assert {m for m in model.modes if m[0] == "train"} == {("train", True, True, False, False)}
    assert {m for m in model.modes if m[0] == "val"} == {("val", False, False, False, False)}
    assert model.training and model.layer.training
    assert not model.frozen.training and not model.frozen[0].training


@pytest.mark.parametrize("inference_mode", [True, False])
def test_inference_mode_setting(inference_mode):
    class GradSpy(CountingModel):
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
    t.fit(model, regression_loader(8), regression_loader(8))
    assert model.seen == (False, inference_mode, inference_mode, False)
    assert model.seen_train == (True, False)
    t.test(model, regression_loader(8), verbose=False)
    assert model.seen_test == (False, inference_mode)
    # training after an evaluation still builds graphs
    assert all(p.requires_grad for p in model.parameters())
