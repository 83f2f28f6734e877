"""Pins the order in which fulmen calls callback and module hooks to PyTorch Lightning's.

The `LIGHTNING_*` constants below were recorded from pytorch-lightning 2.6.6 (not imported here)
with a recording `Callback` that overrides every callback hook and a module whose hooks append
their name before calling the original. Setup for fit: max_epochs=1, limit_train_batches=2,
limit_val_batches=1, num_sanity_val_steps=1, logger / checkpointing / progress bar / model
summary off, 4 samples in batches of 2, SGD. `_ACCUMULATE`: the same with
accumulate_grad_batches=2 and no validation. `_TEST`: `trainer.test` with `test_step =
validation_step` (so it is recorded under the name `m.validation_step`). `_PREDICT`:
`trainer.predict` with a `predict_step`. The checkpoint and scheduler sequences were recorded
the same way with the setup each test states.

fulmen calls a module hook only when the module overrides it (override detection, see
`fulmen.hooks`), so the recorder here is a subclass that overrides every hook it records; each
override calls the base implementation, as `super()` would.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import EarlyStopping, ModelCheckpoint
from fulmen.hooks import CALLBACK_HOOKS, HookDispatch

# ----------------------------------------------------------------------------------------------
# Recorded from pytorch-lightning 2.6.6 (see the module docstring for the setup).
# ----------------------------------------------------------------------------------------------
LIGHTNING_CALLBACK_HOOKS = """
    on_after_backward on_before_backward on_before_optimizer_step on_before_zero_grad on_exception
    on_fit_end on_fit_start on_load_checkpoint on_predict_batch_end on_predict_batch_start
    on_predict_end on_predict_epoch_end on_predict_epoch_start on_predict_start on_sanity_check_end
    on_sanity_check_start on_save_checkpoint on_test_batch_end on_test_batch_start on_test_end
    on_test_epoch_end on_test_epoch_start on_test_start on_train_batch_end on_train_batch_start
    on_train_end on_train_epoch_end on_train_epoch_start on_train_start on_validation_batch_end
    on_validation_batch_start on_validation_end on_validation_epoch_end on_validation_epoch_start
    on_validation_start setup teardown
""".split()

# The module hooks Lightning's recorder wrapped (every `on_*` of LightningModule plus the named
# step/config hooks), less `on_gpu` (a property) and train_/val_dataloader (not called when
# dataloaders are passed to fit).
RECORDED_MODULE_HOOKS = """
    backward configure_callbacks configure_gradient_clipping configure_model configure_optimizers
    on_after_backward on_after_batch_transfer on_before_backward on_before_batch_transfer
    on_before_optimizer_step on_before_zero_grad on_fit_end on_fit_start on_load_checkpoint
    on_predict_batch_end on_predict_batch_start on_predict_end on_predict_epoch_end
    on_predict_epoch_start on_predict_model_eval on_predict_start on_save_checkpoint
    on_test_batch_end on_test_batch_start on_test_end on_test_epoch_end on_test_epoch_start
    on_test_model_eval on_test_model_train on_test_start on_train_batch_end on_train_batch_start
    on_train_end on_train_epoch_end on_train_epoch_start on_train_start on_validation_batch_end
    on_validation_batch_start on_validation_end on_validation_epoch_end on_validation_epoch_start
    on_validation_model_eval on_validation_model_train on_validation_model_zero_grad
    on_validation_start optimizer_step optimizer_zero_grad prepare_data setup teardown
    training_step transfer_batch_to_device validation_step predict_step
""".split()

LIGHTNING_FIT = """
    m.configure_callbacks m.prepare_data cb.setup m.setup m.configure_model m.configure_optimizers
    cb.on_fit_start m.on_fit_start
    cb.on_sanity_check_start
        m.on_validation_model_eval cb.on_validation_start m.on_validation_start
        cb.on_validation_epoch_start m.on_validation_epoch_start
        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_validation_batch_start m.on_validation_batch_start m.validation_step
        cb.on_validation_batch_end m.on_validation_batch_end
        cb.on_validation_epoch_end m.on_validation_epoch_end
        cb.on_validation_end m.on_validation_end m.on_validation_model_train
    cb.on_sanity_check_end
    cb.on_train_start m.on_train_start
    cb.on_train_epoch_start m.on_train_epoch_start
        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_train_batch_start m.on_train_batch_start
        m.optimizer_step m.training_step
        cb.on_before_zero_grad m.on_before_zero_grad m.optimizer_zero_grad
        cb.on_before_backward m.on_before_backward m.backward cb.on_after_backward m.on_after_backward
        cb.on_before_optimizer_step m.on_before_optimizer_step m.configure_gradient_clipping
        cb.on_train_batch_end m.on_train_batch_end

        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_train_batch_start m.on_train_batch_start
        m.optimizer_step m.training_step
        cb.on_before_zero_grad m.on_before_zero_grad m.optimizer_zero_grad
        cb.on_before_backward m.on_before_backward m.backward cb.on_after_backward m.on_after_backward
        cb.on_before_optimizer_step m.on_before_optimizer_step m.configure_gradient_clipping
        cb.on_train_batch_end m.on_train_batch_end

        m.on_validation_model_zero_grad m.on_validation_model_eval
        cb.on_validation_start m.on_validation_start
        cb.on_validation_epoch_start m.on_validation_epoch_start
        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_validation_batch_start m.on_validation_batch_start m.validation_step
        cb.on_validation_batch_end m.on_validation_batch_end
        cb.on_validation_epoch_end m.on_validation_epoch_end
        cb.on_validation_end m.on_validation_end m.on_validation_model_train
    cb.on_train_epoch_end m.on_train_epoch_end
    cb.on_train_end m.on_train_end
    cb.on_fit_end m.on_fit_end
    cb.teardown m.teardown
""".split()

# accumulate_grad_batches=2: the first batch only accumulates (no optimizer_step, no
# on_before_optimizer_step); zero_grad runs at the first batch of the window only.
LIGHTNING_FIT_ACCUMULATE = """
    m.configure_callbacks m.prepare_data cb.setup m.setup m.configure_model m.configure_optimizers
    cb.on_fit_start m.on_fit_start cb.on_train_start m.on_train_start
    cb.on_train_epoch_start m.on_train_epoch_start
        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_train_batch_start m.on_train_batch_start
        m.training_step
        cb.on_before_zero_grad m.on_before_zero_grad m.optimizer_zero_grad
        cb.on_before_backward m.on_before_backward m.backward cb.on_after_backward m.on_after_backward
        cb.on_train_batch_end m.on_train_batch_end

        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_train_batch_start m.on_train_batch_start
        m.optimizer_step m.training_step
        cb.on_before_backward m.on_before_backward m.backward cb.on_after_backward m.on_after_backward
        cb.on_before_optimizer_step m.on_before_optimizer_step m.configure_gradient_clipping
        cb.on_train_batch_end m.on_train_batch_end
    cb.on_train_epoch_end m.on_train_epoch_end
    cb.on_train_end m.on_train_end
    cb.on_fit_end m.on_fit_end
    cb.teardown m.teardown
""".split()

LIGHTNING_TEST = """
    m.configure_callbacks m.prepare_data cb.setup m.setup m.configure_model
    m.on_test_model_eval cb.on_test_start m.on_test_start cb.on_test_epoch_start m.on_test_epoch_start
        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_test_batch_start m.on_test_batch_start m.validation_step
        cb.on_test_batch_end m.on_test_batch_end

        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_test_batch_start m.on_test_batch_start m.validation_step
        cb.on_test_batch_end m.on_test_batch_end
    cb.on_test_epoch_end m.on_test_epoch_end cb.on_test_end m.on_test_end m.on_test_model_train
    cb.teardown m.teardown
""".split()

# Lightning has no on_predict_model_train: the Trainer restores the training modes itself.
LIGHTNING_PREDICT = """
    m.configure_callbacks m.prepare_data cb.setup m.setup m.configure_model
    m.on_predict_model_eval cb.on_predict_start m.on_predict_start
    cb.on_predict_epoch_start m.on_predict_epoch_start
        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_predict_batch_start m.on_predict_batch_start m.predict_step
        cb.on_predict_batch_end m.on_predict_batch_end

        m.on_before_batch_transfer m.transfer_batch_to_device m.on_after_batch_transfer
        cb.on_predict_batch_start m.on_predict_batch_start m.predict_step
        cb.on_predict_batch_end m.on_predict_batch_end
    cb.on_predict_epoch_end m.on_predict_epoch_end cb.on_predict_end m.on_predict_end
    cb.teardown m.teardown
""".split()

# Checkpoint hooks. Setup: the fit setup above without sanity check, a ModelCheckpoint subclass
# (`mc.`) recording on_validation_end / on_train_epoch_end / state_dict / load_state_dict listed
# BEFORE the recording callback, which also records state_dict / load_state_dict; the module
# records only the hooks in CHECKPOINT_MODULE_HOOKS. First run: max_epochs=1, saving
# epoch=0-step=2.ckpt; second run: a new Trainer, max_epochs=2, fit(ckpt_path=that file).
CHECKPOINT_MODULE_HOOKS = """
    configure_model configure_optimizers on_load_checkpoint on_save_checkpoint on_fit_start
    on_train_start on_train_epoch_start on_train_epoch_end setup on_train_end load_state_dict state_dict
""".split()

_ONE_EPOCH_WITH_CHECKPOINT = """
    cb.on_fit_start m.on_fit_start cb.on_train_start m.on_train_start
    cb.on_train_epoch_start m.on_train_epoch_start
        cb.on_train_batch_start cb.on_before_zero_grad cb.on_before_backward cb.on_after_backward
        cb.on_before_optimizer_step cb.on_train_batch_end
        cb.on_train_batch_start cb.on_before_zero_grad cb.on_before_backward cb.on_after_backward
        cb.on_before_optimizer_step cb.on_train_batch_end
        cb.on_validation_start cb.on_validation_epoch_start cb.on_validation_batch_start
        cb.on_validation_batch_end cb.on_validation_epoch_end cb.on_validation_end mc.on_validation_end
    cb.on_train_epoch_end m.on_train_epoch_end mc.on_train_epoch_end
        m.state_dict cb.state_dict mc.state_dict cb.on_save_checkpoint m.on_save_checkpoint
    cb.on_train_end m.on_train_end cb.on_fit_end cb.teardown
"""
LIGHTNING_CHECKPOINT_SAVE = (
    "cb.setup m.setup m.configure_model m.configure_optimizers" + _ONE_EPOCH_WITH_CHECKPOINT
).split()
# On resume, the weights and callback states are loaded BEFORE configure_optimizers.
LIGHTNING_CHECKPOINT_RESUME = (
    "cb.setup m.setup m.configure_model "
    "m.on_load_checkpoint m.load_state_dict cb.on_load_checkpoint cb.load_state_dict mc.load_state_dict "
    "m.configure_optimizers" + _ONE_EPOCH_WITH_CHECKPOINT
).split()


# ----------------------------------------------------------------------------------------------
# the recorder
# ----------------------------------------------------------------------------------------------
class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("v", self.layer(batch[0]).sum())

    def predict_step(self, batch, batch_idx):
        return self.layer(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _recording_module_class(log: list[str], names: list[str], base: type = Model) -> type:
    """A subclass of `base` overriding each hook in `names`: append 'm.<name>', then call super()."""

    def wrap(name: str):
        parent = getattr(base, name)

        def hook(self, *args, **kwargs):
            log.append(f"m.{name}")
            return parent(self, *args, **kwargs)

        hook.__name__ = name
        return hook

    return type("RecordingModel", (base,), {name: wrap(name) for name in names})


def _recording_callback(log: list[str], names=tuple(LIGHTNING_CALLBACK_HOOKS), state=False) -> pl.Callback:
    def wrap(name: str):
        def hook(self, *args, **kwargs):
            log.append(f"cb.{name}")

        return hook

    attrs = {name: wrap(name) for name in names}
    if state:
        def state_dict(self):
            log.append("cb.state_dict")
            return {"x": 1}

        def load_state_dict(self, state_dict):
            log.append("cb.load_state_dict")

        attrs.update(state_dict=state_dict, load_state_dict=load_state_dict)
    return type("RecordingCallback", (pl.Callback,), attrs)()


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)


_QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)


def _diff_message(expected: list[str], got: list[str]) -> str:
    for i, (e, g) in enumerate(zip(expected, got)):
        if e != g:
            return f"first difference at call {i}: Lightning {e!r}, fulmen {g!r}; fulmen around it: {got[max(0, i - 3):i + 4]}"
    return f"lengths differ: Lightning {len(expected)}, fulmen {len(got)}"


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------
def test_callback_and_module_hook_names_match_lightning():
    assert sorted(CALLBACK_HOOKS) == LIGHTNING_CALLBACK_HOOKS
    missing = [name for name in RECORDED_MODULE_HOOKS if not callable(getattr(pl.LightningModule, name, None))]
    assert missing == []


def test_fit_hook_order_matches_lightning():
    log: list[str] = []
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=1,
        callbacks=[_recording_callback(log)], enable_checkpointing=False, **_QUIET,
    )
    trainer.fit(_recording_module_class(log, RECORDED_MODULE_HOOKS)(), _loader(), _loader())
    assert log == LIGHTNING_FIT, _diff_message(LIGHTNING_FIT, log)
    assert trainer.global_step == 2


@pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")
def test_fit_with_gradient_accumulation_hook_order_matches_lightning():
    log: list[str] = []
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=0, accumulate_grad_batches=2,
        callbacks=[_recording_callback(log)], enable_checkpointing=False, **_QUIET,
    )
    trainer.fit(_recording_module_class(log, RECORDED_MODULE_HOOKS)(), _loader())
    assert log == LIGHTNING_FIT_ACCUMULATE, _diff_message(LIGHTNING_FIT_ACCUMULATE, log)
    assert trainer.global_step == 1


def test_test_hook_order_matches_lightning():
    log: list[str] = []
    cls = _recording_module_class(log, RECORDED_MODULE_HOOKS)
    cls.test_step = cls.validation_step  # as in the recording: logged as m.validation_step
    trainer = pl.Trainer(callbacks=[_recording_callback(log)], **_QUIET)
    results = trainer.test(cls(), _loader(), verbose=False)
    assert log == LIGHTNING_TEST, _diff_message(LIGHTNING_TEST, log)
    assert list(results[0]) == ["v"]


def test_predict_hook_order_matches_lightning():
    log: list[str] = []
    trainer = pl.Trainer(callbacks=[_recording_callback(log)], **_QUIET)
    predictions = trainer.predict(_recording_module_class(log, RECORDED_MODULE_HOOKS)(), _loader())
    assert log == LIGHTNING_PREDICT, _diff_message(LIGHTNING_PREDICT, log)
    assert [tuple(p.shape) for p in predictions] == [(2, 1), (2, 1)]


def test_checkpoint_save_and_resume_hook_order_matches_lightning(tmp_path):
    log: list[str] = []

    class RecordingCheckpoint(ModelCheckpoint):
        def on_train_epoch_end(self, trainer, pl_module):
            log.append("mc.on_train_epoch_end")
            super().on_train_epoch_end(trainer, pl_module)

        def on_validation_end(self, trainer, pl_module):
            log.append("mc.on_validation_end")
            super().on_validation_end(trainer, pl_module)

        def state_dict(self):
            log.append("mc.state_dict")
            return super().state_dict()

        def load_state_dict(self, state_dict):
            log.append("mc.load_state_dict")
            super().load_state_dict(state_dict)

    cls = _recording_module_class(log, CHECKPOINT_MODULE_HOOKS)
    common = dict(limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, **_QUIET)

    def run(max_epochs, ckpt_path=None):
        log.clear()
        callbacks = [RecordingCheckpoint(dirpath=tmp_path), _recording_callback(log, state=True)]
        trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, **common)
        trainer.fit(cls(), _loader(), _loader(), ckpt_path=ckpt_path)
        return trainer

    run(1)
    assert log == LIGHTNING_CHECKPOINT_SAVE, _diff_message(LIGHTNING_CHECKPOINT_SAVE, log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=2.ckpt"]
    trainer = run(2, ckpt_path=tmp_path / "epoch=0-step=2.ckpt")
    assert log == LIGHTNING_CHECKPOINT_RESUME, _diff_message(LIGHTNING_CHECKPOINT_RESUME, log)
    assert (trainer.current_epoch, trainer.global_step) == (2, 4)


@pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")
def test_configure_optimizers_sees_restored_weights_on_resume(tmp_path):
    """Follows from the order above: weights are loaded before configure_optimizers runs."""
    seen: list[float] = []

    class Frozen(Model):
        def configure_optimizers(self):
            seen.append(self.layer.bias.item())
            return super().configure_optimizers()

    first = Frozen()
    pl.Trainer(max_epochs=1, limit_train_batches=2, default_root_dir=tmp_path, **_QUIET).fit(first, _loader())
    path = tmp_path / "checkpoints" / "epoch=0-step=2.ckpt"
    trained_bias = first.layer.bias.item()
    pl.Trainer(max_epochs=1, **_QUIET, enable_checkpointing=False).fit(Frozen(), _loader(), ckpt_path=path)
    assert seen[1] == trained_bias


# Recorded from pytorch-lightning 2.6.6: fit, max_epochs=1, limit_train_batches=2,
# limit_val_batches=1, no sanity check, SGD(lr=1.0) with StepLR(step_size=1, gamma=0.5) and
# interval="step"; the module records training_step and lr_scheduler_step, a callback records
# on_train_batch_end with the learning rate it sees, on_validation_start and on_train_epoch_end.
LIGHTNING_STEP_SCHEDULER = [
    "m.training_step", "m.lr_scheduler_step", "cb.on_train_batch_end lr=0.5",
    "m.training_step", "m.lr_scheduler_step", "cb.on_train_batch_end lr=0.25",
    "cb.on_validation_start", "cb.on_train_epoch_end",
]


class _SchedulerModel(Model):
    def __init__(self, log, interval):
        super().__init__()
        self.log_ = log
        self.interval = interval

    def training_step(self, batch, batch_idx):
        if self.interval == "step":
            self.log_.append("m.training_step")
        return super().training_step(batch, batch_idx)

    def lr_scheduler_step(self, scheduler, metric):
        self.log_.append("m.lr_scheduler_step")
        super().lr_scheduler_step(scheduler, metric)

    def on_train_epoch_end(self):
        if self.interval == "epoch":
            self.log_.append("m.on_train_epoch_end")

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.interval}}


def _lr(trainer) -> str:
    return f"lr={trainer.optimizers[0].param_groups[0]['lr']:.4g}"


def test_step_interval_scheduler_steps_before_on_train_batch_end_as_in_lightning():
    log: list[str] = []

    class Rec(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            log.append(f"cb.on_train_batch_end {_lr(trainer)}")

        def on_validation_start(self, trainer, pl_module):
            log.append("cb.on_validation_start")

        def on_train_epoch_end(self, trainer, pl_module):
            log.append("cb.on_train_epoch_end")

    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
        callbacks=[Rec()], enable_checkpointing=False, **_QUIET,
    )
    trainer.fit(_SchedulerModel(log, "step"), _loader(), _loader())
    assert log == LIGHTNING_STEP_SCHEDULER


def test_epoch_interval_scheduler_order_is_fulmens_documented_order(tmp_path):
    """fulmen deliberately differs from Lightning here (fulmen/loop.py docstring).

    Lightning 2.6.6 steps a non-plateau "epoch" scheduler at the last training batch, before that
    batch's on_train_batch_end and before the end-of-epoch validation; it recorded, with the
    callbacks [ModelCheckpoint subclass `mc`, EarlyStopping subclass `es`, plain `cb`]:
        m.lr_scheduler_step cb.on_train_epoch_end m.on_train_epoch_end es.on_train_epoch_end
        mc.on_train_epoch_end(lr=0.5)
    fulmen steps epoch schedulers once the epoch's own hooks are done (plain callbacks, then the
    module), and before the monitoring callbacks, so a checkpoint written there holds the
    scheduler state for the next epoch. What both agree on, and what resuming depends on: the
    monitoring callbacks run last, EarlyStopping before ModelCheckpoint (checkpoints go last),
    and the checkpoint sees the stepped learning rate.
    """
    log: list[str] = []

    class Rec(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            log.append("cb.on_train_epoch_end")

    class MC(ModelCheckpoint):
        def on_train_epoch_end(self, trainer, pl_module):
            log.append(f"mc.on_train_epoch_end {_lr(trainer)}")
            super().on_train_epoch_end(trainer, pl_module)

    class ES(EarlyStopping):
        def on_train_epoch_end(self, trainer, pl_module):
            log.append("es.on_train_epoch_end")
            super().on_train_epoch_end(trainer, pl_module)

    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
        callbacks=[MC(dirpath=tmp_path), ES("v"), Rec()], **_QUIET,
    )
    trainer.fit(_SchedulerModel(log, "epoch"), _loader(), _loader())
    assert [type(c).__name__ for c in trainer.callbacks] == ["ES", "Rec", "MC"]
    assert log == [
        "cb.on_train_epoch_end", "m.on_train_epoch_end", "m.lr_scheduler_step",
        "es.on_train_epoch_end", "mc.on_train_epoch_end lr=0.5",
    ]
    saved = torch.load(tmp_path / "epoch=0-step=2.ckpt", weights_only=True)
    assert saved["lr_schedulers"][0]["last_epoch"] == 1


def test_validation_inside_an_accumulation_window_keeps_its_gradients():
    """on_validation_model_zero_grad runs only between windows (Lightning: `not _should_accumulate()`).

    Validation after every batch with accumulate_grad_batches=2: the validation after batch 0
    falls inside the window, so zeroing there would drop batch 0's gradient. Numbers checked
    against pytorch-lightning 2.6.6: weight [1, 1] - lr * mean of the two batch gradients
    ([4, 6] and [40, 60]) = [-21, -32].
    """
    calls: list[str] = []

    class M(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1, bias=False)
            torch.nn.init.ones_(self.layer.weight)

        def training_step(self, batch, batch_idx):
            calls.append("training_step")
            return self.layer(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            self.log("v", self.layer(batch[0]).sum())

        def on_validation_model_zero_grad(self):
            calls.append("on_validation_model_zero_grad")
            super().on_validation_model_zero_grad()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1.0)

    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0], [30.0, 40.0]])
    loader = DataLoader(TensorDataset(x), batch_size=2)
    model = M()
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, val_check_interval=1,
        num_sanity_val_steps=0, accumulate_grad_batches=2, enable_checkpointing=False, **_QUIET,
    )
    trainer.fit(model, loader, loader)
    assert model.layer.weight.tolist() == [[-21.0, -32.0]]
    assert calls == ["training_step", "training_step", "on_validation_model_zero_grad"]


# ----------------------------------------------------------------------------------------------
# hooks nobody overrides are not called
# ----------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")
def test_hook_dispatch_holds_only_overriding_callbacks():
    class OnlyBatchEnd(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            pass

    plain, batch_end = pl.Callback(), OnlyBatchEnd()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, callbacks=[plain, batch_end],
                         enable_checkpointing=False, **_QUIET)
    trainer.fit(Model(), _loader())
    dispatch = trainer._hooks
    assert isinstance(dispatch, HookDispatch)
    assert set(dispatch._callbacks) == set(CALLBACK_HOOKS)
    overridden = {name: hooks for name, hooks in dispatch._callbacks.items() if hooks}
    assert list(overridden) == ["on_train_batch_end"]
    assert [h.__self__ for h in overridden["on_train_batch_end"]] == [batch_end]
    assert all(hooks == () for name, hooks in dispatch._callbacks.items() if name != "on_train_batch_end")
    assert not dispatch.overridden("on_validation_batch_end")
    assert dispatch.overridden("on_train_batch_end")
    # Model overrides training_step/validation_step/predict_step/configure_optimizers only.
    assert dispatch.module_overrides("training_step")
    assert not dispatch.module_overrides("on_train_batch_end")
    assert not dispatch.module_overrides("on_before_batch_transfer")


@pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")
def test_module_and_callback_hooks_that_are_not_overridden_are_never_called(monkeypatch):
    counts = {"module": 0, "callback": 0}

    def module_hook(self, outputs, batch, batch_idx):
        counts["module"] += 1

    def callback_hook(self, trainer, pl_module, outputs, batch, batch_idx):
        counts["callback"] += 1

    # Patched on the base classes before the Trainer exists: the defaults now count their calls,
    # and a subclass that does not override them inherits the counting version.
    monkeypatch.setattr(pl.LightningModule, "on_train_batch_end", module_hook)
    monkeypatch.setattr(pl.Callback, "on_train_batch_end", callback_hook)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, callbacks=[pl.Callback()],
                         enable_checkpointing=False, **_QUIET)
    trainer.fit(Model(), _loader())
    assert trainer.global_step == 2
    assert counts == {"module": 0, "callback": 0}

    # Control: the same patched base, but overridden in subclasses that call super() — now called
    # once per batch each, through the override.
    class Overriding(Model):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            super().on_train_batch_end(outputs, batch, batch_idx)

    class OverridingCallback(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, callbacks=[OverridingCallback()],
                         enable_checkpointing=False, **_QUIET)
    trainer.fit(Overriding(), _loader())
    assert counts == {"module": 2, "callback": 2}
