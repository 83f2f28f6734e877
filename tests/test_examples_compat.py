"""Patterns from Lightning 2.6's own example scripts (examples/pytorch/...) that stopped or behaved
differently on fulmen, each written here in fulmen's own words:

- what `trainer.test()`/`validate()` return and print, and what `callback_metrics` holds after an
  evaluation run, for a value logged with `on_step=True` in `test_step` (basics/autoencoder.py);
- `lightning.pytorch.serve` (`ServableModule`, `ServableModuleValidator`, servable_module/production.py),
  run unmodified through `fulmen run` and through the API.

The numbers pinned here are what pytorch-lightning 2.6.6 gives for the same program.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen import alias
from fulmen.errors import MisconfigurationException
from fulmen.serve import ServableModule, ServableModuleValidator


# --- evaluation results: epoch values only, as Lightning -----------------------------------------
class StepAndEpochLogger(pl.LightningModule):
    """Logs its eval loss with on_step=True (so with on_epoch too: `_step`/`_epoch` names), and one
    value kept away from the loggers."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train_loss", loss, on_step=True)
        return loss

    def _eval(self, batch, stage):
        self.log(f"{stage}_loss", self.layer(batch[0]).pow(2).mean(), on_step=True)
        self.log(f"{stage}_hidden", 1.0, logger=False)
        self.log(f"{stage}_only_step", 2.0, on_step=True, on_epoch=False)

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    torch.manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)


def test_test_returns_the_logged_epoch_values_and_callback_metrics_skip_eval_step_values(capsys):
    trainer = quiet_trainer(max_epochs=1)
    model = StepAndEpochLogger()
    loader = _loader()
    trainer.fit(model, loader, loader)
    # Lightning 2.6.6: training step values stay, validation step values never reach callbacks.
    assert sorted(trainer.callback_metrics) == ["train_loss", "val_hidden", "val_loss", "val_loss_epoch"]

    capsys.readouterr()
    results = trainer.test(model, loader)
    assert [sorted(r) for r in results] == [["test_loss_epoch"]]
    assert results[0]["test_loss_epoch"] == pytest.approx(trainer.callback_metrics["test_loss"].item())
    assert sorted(trainer.callback_metrics) == ["test_hidden", "test_loss", "test_loss_epoch"]
    table = capsys.readouterr().out
    assert "test_loss_epoch" in table and "test_loss_step" not in table and "test_hidden" not in table


def test_validate_results_per_dataloader_hold_epoch_values_only():
    class TwoLoaders(StepAndEpochLogger):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("v", float(dataloader_idx + 1), on_step=True)

    results = quiet_trainer().validate(TwoLoaders(), [_loader(), _loader()], verbose=False)
    assert results == [{"v_epoch/dataloader_idx_0": 1.0}, {"v_epoch/dataloader_idx_1": 2.0}]


# --- lightning.pytorch.serve ----------------------------------------------------------------------
class Doubler(pl.LightningModule, ServableModule):
    """A LightningModule that is also servable: the request field `x` (a list) comes back doubled."""

    def __init__(self, expected=(2.0, 4.0), fail=False):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.expected, self.fail, self.seen_training = list(expected), fail, None

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def configure_payload(self):
        return {"body": {"x": [1.0, 2.0]}}

    def configure_serialization(self):
        return {"x": torch.tensor}, {"y": torch.Tensor.tolist}

    def serve_step(self, x):
        self.seen_training = self.training
        if self.fail:
            raise RuntimeError("serve_step broke")
        return {"y": 2 * x}

    def configure_response(self):
        return {"y": self.expected}


def _fit_with_validator(model, **validator_options):
    validator = ServableModuleValidator(port=0, **validator_options)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, callbacks=[validator])
    trainer.fit(model, DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2))
    return validator


def test_the_validator_serves_the_model_once_and_checks_its_answer():
    model = Doubler()
    validator = _fit_with_validator(model)
    assert validator.successful is True
    assert validator.resp_json == {"y": [2.0, 4.0]}
    assert model.seen_training is False and model.training  # served in eval mode, then back to train
    assert validator.state_dict() == {"successful": True, "optimization": None, "server": "fastapi"}


def test_a_response_other_than_configure_response_raises():
    with pytest.raises(MisconfigurationException, match=r"differs from configure_response\(\)\. Received: \{'y': \[2.0, 4.0\]\}"):
        _fit_with_validator(Doubler(expected=(0.0, 0.0)))


def test_a_failing_serve_step_raises_or_is_recorded():
    with pytest.raises(MisconfigurationException, match=r"answered 500\. Received: 'RuntimeError: serve_step broke'"):
        _fit_with_validator(Doubler(fail=True))
    assert _fit_with_validator(Doubler(fail=True), exit_on_failure=False).successful is False


def test_the_validator_refuses_what_lightnings_refuses():
    with pytest.raises(NotImplementedError, match="optimization='onnx'"):
        ServableModuleValidator(optimization="onnx")
    with pytest.raises(NotImplementedError, match="server='torchserve'"):
        ServableModuleValidator(server="torchserve")

    class NotServable(pl.LightningModule):
        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

    with pytest.raises(TypeError, match="subclasses ServableModule. Received: NotServable"):
        ServableModuleValidator(port=0).on_train_start(quiet_trainer(), NotServable())


def test_a_servable_lightning_program_runs_unmodified_through_fulmen_run(tmp_path):
    program = tmp_path / "servable.py"
    program.write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        from lightning.pytorch import LightningModule, Trainer
        from lightning.pytorch.serve import ServableModule, ServableModuleValidator
        from lightning.pytorch.serve.servable_module_validator import ServableModuleValidator as Same

        class Scorer(LightningModule, ServableModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(2, 1)
                torch.nn.init.ones_(self.layer.weight); torch.nn.init.zeros_(self.layer.bias)
            def training_step(self, batch, batch_idx):
                return self.layer(batch[0]).pow(2).mean() * 0
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.0)
            def configure_payload(self):
                return {"body": {"x": [[1.0, 2.0]]}}
            def configure_serialization(self):
                return {"x": torch.tensor}, {"score": lambda t: round(t.item(), 3)}
            def serve_step(self, x):
                return {"score": self.layer(x)}
            def configure_response(self):
                return {"score": 3.0}

        validator = ServableModuleValidator(port=0)
        assert Same is ServableModuleValidator
        trainer = Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, callbacks=[validator])
        trainer.fit(Scorer(), DataLoader(TensorDataset(torch.ones(2, 2)), batch_size=2))
        print("SERVED", validator.successful, validator.resp_json)
    """))
    env = {k: v for k, v in os.environ.items() if k != alias.ENV_VAR}
    result = subprocess.run([sys.executable, "-m", "fulmen", "run", str(program)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SERVED True {'score': 3.0}" in result.stdout
