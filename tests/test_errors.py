"""The classic mistakes: each must end in a clear error (or warning) that says what happened,
what was received, and how to fix it, raised before the first training step where possible.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import Callback
from fulmen.strategies import DDPStrategy
from fulmen.errors import MisconfigurationException

from helpers import quiet_trainer


def _loader(n: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def _assert_clear(message: str) -> None:
    assert "Received" in message and "Fix" in message, message


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        x, y = batch
        return F.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


# ==========================================================================================
# the module
# ==========================================================================================
def test_no_training_step(tmp_path):
    class NoStep(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 1)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(MisconfigurationException, match=r"NoStep has no training_step, so fit has nothing to run") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(NoStep(), _loader())
    _assert_clear(str(exc.value))
    assert "def training_step(self, batch, batch_idx)" in str(exc.value)


def test_no_configure_optimizers_under_automatic_optimization(tmp_path):
    class NoOptim(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

    with pytest.raises(MisconfigurationException, match=r"NoOptim has no configure_optimizers") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(NoOptim(), _loader())
    _assert_clear(str(exc.value))
    assert "def configure_optimizers(self)" in str(exc.value)


def _returns(make_output):
    """A model whose training_step returns `make_output(model, batch)`."""

    class Returns(Model):
        def training_step(self, batch, batch_idx):
            self.steps += 1
            return make_output(self, batch)

    return Returns()


def _loss(model, batch):
    x, y = batch
    return F.mse_loss(model.layer(x), y)


BAD_LOSSES = {
    "dict_without_loss": (
        lambda m, b: {"acc": torch.tensor(0.5), "out": m.layer(b[0])},
        r"training_step returned a dict without 'loss'\. Received keys: \['acc', 'out'\]",
    ),
    "detached_loss": (lambda m, b: _loss(m, b).detach(), r"not connected to the model's parameters \(no grad_fn\)"),
    "constant_tensor": (lambda m, b: torch.tensor(1.0), r"Received: loss with requires_grad=False"),
    "non_scalar_loss": (
        lambda m, b: F.mse_loss(m.layer(b[0]), b[1], reduction="none"),
        r"must return a scalar loss\. Received: a tensor of shape \(4, 1\)",
    ),
    "python_float": (lambda m, b: _loss(m, b).item(), r"Received: float \("),
    "loss_in_dict_as_float": (lambda m, b: {"loss": 0.5}, r"Received: float \(0\.5\)"),
}


@pytest.mark.parametrize("case", list(BAD_LOSSES))
def test_training_step_bad_loss(tmp_path, case):
    make_output, fragment = BAD_LOSSES[case]
    model = _returns(make_output)
    initial = model.layer.weight.detach().clone()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    with pytest.raises(MisconfigurationException, match=fragment) as exc:
        trainer.fit(model, _loader())
    _assert_clear(str(exc.value))
    assert model.steps == 1 and trainer.global_step == 0  # stopped at the first batch
    assert torch.equal(model.layer.weight, initial)


def test_python_float_loss_fix_names_item(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"not loss\.item\(\)"):
        quiet_trainer(tmp_path, max_epochs=1).fit(_returns(lambda m, b: _loss(m, b).item()), _loader())


def test_layer_assigned_before_super_init_names_the_class():
    class EarlyLayer(pl.LightningModule):
        def __init__(self):
            self.layer = nn.Linear(3, 1)
            super().__init__()

    with pytest.raises(
        MisconfigurationException, match=r"EarlyLayer\.__init__ assigned self\.layer before calling super\(\)\.__init__\(\)"
    ) as exc:
        EarlyLayer()
    _assert_clear(str(exc.value))
    assert "Received: self.layer = Linear(...)" in str(exc.value)


def test_parameter_assigned_before_super_init_names_the_class():
    class EarlyParam(pl.LightningModule):
        def __init__(self):
            self.scale = nn.Parameter(torch.ones(1))
            super().__init__()

    with pytest.raises(MisconfigurationException, match=r"EarlyParam\.__init__ assigned self\.scale before"):
        EarlyParam()


def test_module_that_never_calls_super_init_fails_at_fit(tmp_path):
    class NoSuper(pl.LightningModule):
        def __init__(self):
            self.lr = 0.1  # plain attributes only: Python does not complain here

        def training_step(self, batch, batch_idx):
            return torch.tensor(0.0)

        def configure_optimizers(self):
            return None

    model = NoSuper()
    with pytest.raises(MisconfigurationException, match=r"NoSuper\.__init__ did not call super\(\)\.__init__\(\)") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(model, _loader())
    _assert_clear(str(exc.value))


def test_non_lightning_module_passed_to_fit(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"must be a fulmen\.LightningModule\. Received: Linear") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(nn.Linear(3, 1), _loader())
    _assert_clear(str(exc.value))


# ==========================================================================================
# the Trainer's arguments: rejected in __init__, before any work
# ==========================================================================================
BAD_ARGUMENTS = {
    "precision": ({"precision": "fp8"}, r"Unknown precision\. Received: precision='fp8'"),
    "accelerator": ({"accelerator": "tpux"}, r"Unknown accelerator\. Received: accelerator='tpux'"),
    "accelerator_tpu": ({"accelerator": "tpu"}, r"XLA \(TPU\) is not supported by fulmen\. Received: accelerator='tpu'"),
    "strategy_deepspeed": ({"strategy": "deepspeed"}, r"not supported by fulmen \(DeepSpeed\)\. Received: strategy="),
    "devices_zero": ({"devices": 0}, r"Received: devices=0"),
    "devices_abc": ({"devices": "abc"}, r"Received: devices='abc'"),
    "devices_negative": ({"devices": -2}, r"Received: devices=-2"),
    "two_devices_one_process_strategy": (
        {"devices": 2, "strategy": "single_device"}, r"runs one process on one device.*Received: devices=2"
    ),
    "strategy_timeout_not_timedelta": (
        {"devices": 2, "strategy": "__ddp_timeout_5"}, r"must be a datetime\.timedelta\. Received: timeout=5"
    ),
    "max_epochs_str": ({"max_epochs": "3"}, r"`max_epochs` must be an int >= -1 or None\. Received: max_epochs='3'"),
    "limit_train_batches_fraction": (
        {"limit_train_batches": 1.5}, r"must be in \[0\.0, 1\.0\]\. Received: limit_train_batches=1\.5"
    ),
    "val_check_interval_zero": ({"val_check_interval": 0}, r"Received: val_check_interval=0\b"),
    "gradient_clip_algorithm": (
        {"gradient_clip_algorithm": "foo"}, r"must be 'norm' or 'value'\. Received: gradient_clip_algorithm='foo'"
    ),
    "gradient_clip_val_negative": ({"gradient_clip_val": -1.0}, r"Received: gradient_clip_val=-1\.0"),
    "log_every_n_steps_zero": ({"log_every_n_steps": 0}, r"`log_every_n_steps` must be an int >= 1\. Received: log_every_n_steps=0"),
    "accumulate_grad_batches_zero": (
        {"accumulate_grad_batches": 0}, r"`accumulate_grad_batches` must be an int >= 1\. Received: accumulate_grad_batches=0"
    ),
    "callbacks_object": ({"callbacks": [object()]}, r"Received: callbacks\[0\] of type object"),
    "callbacks_second_item": (
        {"callbacks": [Callback(), "EarlyStopping"]}, r"Received: callbacks\[1\] of type str"
    ),
    "logger_object": ({"logger": object()}, r"Received: logger\[0\] of type object"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_trainer_argument(tmp_path, case):
    kwargs, fragment = BAD_ARGUMENTS[case]
    with pytest.raises(MisconfigurationException, match=fragment) as exc:
        if kwargs.get("strategy") == "__ddp_timeout_5":  # the strategy object itself rejects it
            kwargs = {**kwargs, "strategy": DDPStrategy(timeout=5)}
        quiet_trainer(tmp_path, **{"max_epochs": 1, **kwargs})  # a case may set max_epochs
    _assert_clear(str(exc.value))


def test_unknown_precision_lists_the_valid_values(tmp_path):
    with pytest.raises(MisconfigurationException) as exc:
        quiet_trainer(tmp_path, max_epochs=1, precision="half")
    for valid in ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"):
        assert valid in str(exc.value)


def test_unknown_accelerator_lists_the_valid_values(tmp_path):
    with pytest.raises(MisconfigurationException) as exc:
        quiet_trainer(tmp_path, max_epochs=1, accelerator="npu")
    for valid in ("auto", "cpu", "cuda", "gpu", "mps"):
        assert f"'{valid}'" in str(exc.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("accelerator", ["cuda", "gpu"])
def test_cuda_requested_on_a_machine_without_cuda(tmp_path, accelerator):
    with pytest.raises(MisconfigurationException, match=r"no CUDA device is available on this machine") as exc:
        quiet_trainer(tmp_path, max_epochs=1, accelerator=accelerator)
    _assert_clear(str(exc.value))
    assert f"accelerator={accelerator!r}" in str(exc.value) and "accelerator='auto' or 'cpu'" in str(exc.value)


def test_valid_arguments_still_accepted(tmp_path):
    # The checks above must not reject the forms Lightning allows.
    trainer = quiet_trainer(
        tmp_path, precision=32, devices=1, max_epochs=-1, limit_train_batches=1.0, val_check_interval=2,
        gradient_clip_algorithm="value", log_every_n_steps=1, accumulate_grad_batches=2, callbacks=Callback(),
    )
    assert trainer.max_epochs == -1 and trainer.gradient_clip_algorithm == "value"
    assert quiet_trainer(tmp_path, max_epochs=1, devices="1").device_ids == [0]
    assert quiet_trainer(tmp_path, max_epochs=1, devices=[0], limit_train_batches=0.5).limit_train_batches == 0.5


# ==========================================================================================
# data
# ==========================================================================================
def test_fit_with_no_training_data(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"fit found no training data\. Received: train_dataloaders=None") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(Model())
    _assert_clear(str(exc.value))


def test_validation_step_without_val_data_warns_and_trains(tmp_path):
    class WithValStep(Model):
        def validation_step(self, batch, batch_idx):
            raise AssertionError("must not run without validation data")

    model = WithValStep()
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match=r"validation_step is defined but there is no validation data") as record:
        trainer.fit(model, _loader())
    assert any("Fix: pass val_dataloaders" in str(w.message) for w in record)
    assert trainer.global_step == 4 and model.steps == 4


def test_val_data_without_validation_step_warns_and_trains(tmp_path):
    model = Model()
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match=r"Validation data was given but the model has no validation_step") as record:
        trainer.fit(model, _loader(), _loader())
    assert any("Fix: define validation_step" in str(w.message) for w in record)
    assert trainer.global_step == 4 and model.steps == 4


def test_training_step_returning_none_warns_once(tmp_path):
    # A batch skipped now and then (every second one); None for every batch is an error (test_first_hour_messages.py).
    model = _returns(lambda m, b: None if m.steps % 2 else _loss(m, b))
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.fit(model, _loader())
    messages = [str(w.message) for w in record if "returned None" in str(w.message)]
    assert len(messages) == 1, messages
    assert "training_step returned None, so this batch is skipped (no backward)" in messages[0]
    assert "return the loss" in messages[0]
    assert model.steps == 4
