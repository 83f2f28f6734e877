"""EarlyStopping and ModelCheckpoint in real `fit` runs, with files on disk.

The monitored metric follows a scripted sequence (`Scripted`: `val_loss = values[i]`, with `i`
the epoch, or the validation run), so which epoch stops and which checkpoints are kept is exact.
The expected numbers and file names were checked against pytorch-lightning 2.6.6 running the
same model and settings, except where a comment says fulmen deliberately differs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import EarlyStopping, ModelCheckpoint
from fulmen.errors import MisconfigurationException

_QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)


class Scripted(pl.LightningModule):
    """Logs `key` = values[i] in validation_step: i = current epoch, or the validation run index
    (`per_run=True`, for several validations per epoch). With `train_metric=True` it logs
    `train_m` = values[epoch] from training_step instead (epoch mean of a constant)."""

    def __init__(self, values=(0.5, 0.3, 0.4, 0.2, 0.6, 0.7), key="val_loss", per_run=False, train_metric=False, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(2, 1)
        self.values = [float(v) for v in values]
        self.val_runs = 0
        self.train_steps = 0

    def _value(self, index: int) -> float:
        return self.values[min(index, len(self.values) - 1)]

    def training_step(self, batch, batch_idx):
        self.train_steps += 1
        if self.hparams.train_metric:
            self.log("train_m", self._value(self.current_epoch), on_step=False, on_epoch=True)
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking:
            return
        index = self.val_runs if self.hparams.per_run else self.current_epoch
        self.log(self.hparams.key, self._value(index))

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.val_runs += 1

    def test_step(self, batch, batch_idx):
        self.log("weight_sum", self.layer.weight.sum() + self.layer.bias.sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


_DATA = TensorDataset(torch.linspace(-1, 1, 16).reshape(8, 2))


def _loader() -> DataLoader:
    return DataLoader(_DATA, batch_size=2)


def _fit(callbacks, model=None, val=True, ckpt_path=None, **kwargs):
    """A run of `max_epochs` (default 20) epochs of 2 training batches and 1 validation batch."""
    settings = dict(max_epochs=20, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, **_QUIET)
    settings.update(kwargs)
    if "enable_checkpointing" not in settings and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        settings["enable_checkpointing"] = False
    trainer = pl.Trainer(callbacks=callbacks, **settings)
    model = model if model is not None else Scripted()
    trainer.fit(model, _loader(), _loader() if val else None, ckpt_path=ckpt_path)
    return trainer, model


def _files(directory) -> list[str]:
    directory = Path(directory)
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


# ==============================================================================================
# EarlyStopping
# ==============================================================================================
def test_early_stopping_stops_after_patience_checks_without_improvement():
    es = EarlyStopping("val_loss", patience=2)
    trainer, model = _fit([es], Scripted([1.0, 0.9, 0.95, 0.96, 0.97, 0.5]))
    # epoch 1 sets the best (0.9); epochs 2 and 3 do not improve -> stop at the end of epoch 3.
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count) == (3, 4, 2)
    assert es.best_score.item() == pytest.approx(0.9)
    assert (trainer.global_step, model.val_runs) == (8, 4)
    assert trainer.should_stop
    assert es.stopping_reason_message == (
        "Monitored metric val_loss did not improve in the last 2 records. Best score: 0.900. Signaling Trainer to stop."
    )


def test_early_stopping_min_delta_ignores_small_improvements():
    es = EarlyStopping("val_loss", patience=2, min_delta=0.1)
    trainer, _ = _fit([es], Scripted([1.0, 0.95, 0.92, 0.5, 0.4]))
    # 0.95 and 0.92 improve on 1.0 by less than 0.1: they count as no improvement.
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count) == (2, 3, 2)
    assert es.best_score.item() == 1.0


def test_early_stopping_mode_max():
    es = EarlyStopping("val_loss", patience=2, mode="max")
    trainer, _ = _fit([es], Scripted([0.1, 0.5, 0.4, 0.45, 0.6, 0.7]))
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count) == (3, 4, 2)
    assert es.best_score.item() == pytest.approx(0.5)


def test_early_stopping_stopping_threshold():
    es = EarlyStopping("val_loss", patience=5, stopping_threshold=0.5)
    trainer, _ = _fit([es], Scripted([1.0, 0.8, 0.6, 0.4, 0.2, 0.1]))
    # 0.4 < 0.5 at epoch 3: stop at once, although it improved.
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count) == (3, 4, 0)
    assert es.best_score.item() == pytest.approx(0.6)
    assert es.stopping_reason_message.startswith("Stopping threshold reached: val_loss = 0.4")


def test_early_stopping_divergence_threshold():
    es = EarlyStopping("val_loss", patience=5, divergence_threshold=2.0)
    trainer, _ = _fit([es], Scripted([1.0, 0.8, 3.0, 0.4, 0.2]))
    assert (es.stopped_epoch, trainer.current_epoch, trainer.global_step) == (2, 3, 6)
    assert es.best_score.item() == pytest.approx(0.8)
    # Lightning 2.6.6 prints "3.0 < 2.0" here (a typo in its message); fulmen prints the true relation.
    assert es.stopping_reason_message == "Divergence threshold reached: val_loss = 3.0 > 2.0. Signaling Trainer to stop."


def test_early_stopping_check_finite_stops_on_nan_and_can_be_disabled():
    values = [1.0, 0.8, float("nan"), 0.4, 0.2, 0.1]
    es = EarlyStopping("val_loss", patience=5)
    trainer, _ = _fit([es], Scripted(values))
    assert (es.stopped_epoch, trainer.current_epoch) == (2, 3)
    assert es.best_score.item() == pytest.approx(0.8)
    assert "is not finite" in es.stopping_reason_message

    es = EarlyStopping("val_loss", patience=5, check_finite=False)
    trainer, _ = _fit([es], Scripted(values), max_epochs=6)
    # NaN is then only "no improvement"; training runs on and the later values are taken.
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count) == (0, 6, 0)
    assert es.best_score.item() == pytest.approx(0.1)


def test_early_stopping_strict_missing_metric_names_monitor_and_logged_metrics():
    es = EarlyStopping("val_acc", patience=2)
    with pytest.raises(MisconfigurationException) as info:
        _fit([es])
    message = str(info.value)
    assert "EarlyStopping monitors 'val_acc', which was not logged" in message
    assert "logged metrics: ['val_loss']" in message
    assert "strict=False" in message


def test_early_stopping_not_strict_warns_and_training_continues():
    es = EarlyStopping("val_missing_nonstrict", patience=1, strict=False)
    with pytest.warns(UserWarning, match="val_missing_nonstrict.*logged metrics: \\['val_loss'\\]"):
        trainer, model = _fit([es], max_epochs=3)
    assert (trainer.current_epoch, trainer.global_step, model.val_runs) == (3, 6, 3)
    assert (es.stopped_epoch, es.wait_count) == (0, 0)
    assert math.isinf(es.best_score.item())


@pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")
def test_early_stopping_on_train_epoch_end_with_a_training_metric():
    es = EarlyStopping("train_m", patience=2, check_on_train_epoch_end=True)
    trainer, model = _fit([es], Scripted([1.0, 0.9, 0.95, 0.96, 0.97, 0.5], train_metric=True), val=False)
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count, model.val_runs) == (3, 4, 2, 0)


_TWICE_PER_EPOCH = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01]


def test_early_stopping_checks_after_each_validation_when_validating_twice_per_epoch():
    # check_on_train_epoch_end=None resolves to False with val_check_interval=0.5: every
    # validation run is a check, so patience counts validation runs, not epochs.
    es = EarlyStopping("val_loss", patience=2)
    trainer, model = _fit([es], Scripted(_TWICE_PER_EPOCH, per_run=True), val_check_interval=0.5, limit_train_batches=4)
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count, model.val_runs) == (1, 2, 2, 4)
    assert trainer.global_step == 8
    assert es.best_score.item() == pytest.approx(0.9)


def test_early_stopping_check_on_train_epoch_end_true_checks_once_per_epoch():
    # Same run, but only the last validation of each epoch is checked (values 0.9, 0.96, 0.5,
    # 0.3, 0.1, 0.01, 0.01, 0.01): it runs until the values stall at the end.
    es = EarlyStopping("val_loss", patience=2, check_on_train_epoch_end=True)
    trainer, model = _fit(
        [es], Scripted(_TWICE_PER_EPOCH, per_run=True), val_check_interval=0.5, limit_train_batches=4
    )
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count, model.val_runs) == (7, 8, 2, 16)
    assert es.best_score.item() == pytest.approx(0.01)


def test_early_stopping_check_on_train_epoch_end_false_with_validation_every_second_epoch():
    es = EarlyStopping("val_loss", patience=2, check_on_train_epoch_end=False)
    trainer, model = _fit([es], Scripted(_TWICE_PER_EPOCH, per_run=True), check_val_every_n_epoch=2)
    # Validation (and so a check) after epochs 1, 3, 5, 7: 1.0, 0.9, 0.95, 0.96 -> stop after epoch 7.
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count, model.val_runs) == (7, 8, 2, 4)


@pytest.mark.filterwarnings("ignore:should_stop was set, but min_epochs")
def test_min_epochs_overrides_an_early_stop():
    es = EarlyStopping("val_loss", patience=1)
    trainer, _ = _fit([es], Scripted([1.0, 2.0]), min_epochs=5)
    # EarlyStopping asks to stop after epoch 1; training continues to min_epochs=5 and stops
    # at the first check once it is reached.
    assert (es.stopped_epoch, trainer.current_epoch, es.wait_count, trainer.global_step) == (4, 5, 4, 10)


def test_early_stopping_state_survives_a_checkpoint_round_trip(tmp_path):
    values = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    es = EarlyStopping("val_loss", patience=3)
    _fit([es, ModelCheckpoint(dirpath=tmp_path, save_last=True)], Scripted(values), max_epochs=3)
    assert (es.wait_count, es.best_score.item()) == (2, 1.0)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]
    state = saved["EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"]
    assert state["wait_count"] == 2 and state["stopped_epoch"] == 0 and state["patience"] == 3
    assert state["best_score"].item() == 1.0

    # A fresh EarlyStopping resumed from the checkpoint continues counting: its third
    # non-improving check is epoch 3 (a fresh one would take 2.0 as best and stop at epoch 6).
    resumed = EarlyStopping("val_loss", patience=3)
    trainer, model = _fit(
        [resumed, ModelCheckpoint(dirpath=tmp_path, save_last=True)], Scripted(values),
        ckpt_path=tmp_path / "last.ckpt", max_epochs=10,
    )
    assert (resumed.stopped_epoch, trainer.current_epoch, resumed.wait_count) == (3, 4, 3)
    assert resumed.best_score.item() == 1.0
    assert model.train_steps == 2  # only epoch 3 ran


# ==============================================================================================
# ModelCheckpoint: where and under which names
# ==============================================================================================
def test_default_checkpoint_callback_writes_under_the_logger_version_dir(tmp_path):
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Scripted(), _loader(), _loader())
    ckpt_dir = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    # Default: save_top_k=1 without a monitor keeps only the latest.
    assert _files(ckpt_dir) == ["epoch=1-step=4.ckpt"]
    callback = trainer.checkpoint_callback
    assert isinstance(callback, ModelCheckpoint)
    assert callback.dirpath == str(ckpt_dir)
    assert callback.best_model_path == str(ckpt_dir / "epoch=1-step=4.ckpt")
    assert callback.best_model_score is None and callback.best_k_models == {}


def test_default_checkpoint_dir_without_a_logger_is_root_checkpoints(tmp_path):
    trainer, _ = _fit([], default_root_dir=tmp_path, max_epochs=2, enable_checkpointing=True)
    assert _files(tmp_path) == ["checkpoints"]
    assert _files(tmp_path / "checkpoints") == ["epoch=1-step=4.ckpt"]


def test_filename_template_inserts_metric_names(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}-{val_loss:.2f}", monitor="val_loss")
    _fit([mc], Scripted([0.5, 0.3, 0.12, 0.4]), max_epochs=4)
    assert _files(tmp_path) == ["epoch=2-val_loss=0.12.ckpt"]
    assert mc.best_model_path == str(tmp_path / "epoch=2-val_loss=0.12.ckpt")
    assert mc.best_model_score.item() == pytest.approx(0.12)


def test_filename_template_without_auto_inserted_metric_names(tmp_path):
    mc = ModelCheckpoint(
        dirpath=tmp_path, filename="e{epoch:02d}_l{val_loss:.2f}", monitor="val_loss", auto_insert_metric_name=False
    )
    _fit([mc], Scripted([0.5, 0.3, 0.12, 0.4]), max_epochs=4)
    assert _files(tmp_path) == ["e02_l0.12.ckpt"]


def test_save_top_k_keeps_exactly_the_k_best_files(tmp_path):
    class ListDir(pl.Callback):
        """At each epoch start: what the previous epoch end left on disk."""

        def __init__(self):
            self.seen = []

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch:
                self.seen.append(_files(tmp_path))

        def on_train_end(self, trainer, pl_module):
            self.seen.append(_files(tmp_path))

    mc, listing = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2), ListDir()
    _fit([mc, listing], Scripted([0.5, 0.3, 0.4, 0.2, 0.6]), max_epochs=5)
    e0, e1, e2, e3 = "epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt", "epoch=3-step=8.ckpt"
    assert listing.seen == [[e0], [e0, e1], [e1, e2], [e1, e3], [e1, e3]]
    assert mc.best_model_path == str(tmp_path / e3)
    assert mc.best_model_score.item() == pytest.approx(0.2)
    assert mc.kth_best_model_path == str(tmp_path / e1)
    assert mc.kth_value.item() == pytest.approx(0.3)
    assert {Path(p).name: round(v.item(), 4) for p, v in mc.best_k_models.items()} == {e1: 0.3, e3: 0.2}
    assert mc.current_score.item() == pytest.approx(0.6)


def test_save_top_k_mode_max(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, mode="max")
    _fit([mc], Scripted([0.5, 0.3, 0.4, 0.2, 0.6]), max_epochs=5)
    assert _files(tmp_path) == ["epoch=0-step=2.ckpt", "epoch=4-step=10.ckpt"]
    assert Path(mc.best_model_path).name == "epoch=4-step=10.ckpt"
    assert (mc.best_model_score.item(), mc.kth_value.item()) == (pytest.approx(0.6), pytest.approx(0.5))


def test_save_top_k_minus_one_keeps_every_checkpoint(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1)
    _fit([mc], max_epochs=3)
    assert _files(tmp_path) == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"]
    assert Path(mc.best_model_path).name == "epoch=2-step=6.ckpt"


def test_save_top_k_zero_saves_nothing(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=0)
    _fit([mc], max_epochs=3)
    assert _files(tmp_path / "ck") == []
    assert (mc.best_model_path, mc.last_model_path, mc.best_k_models) == ("", "", {})


def test_save_last_follows_the_last_saved_checkpoint(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_last=True)
    trainer, model = _fit([mc], Scripted([0.5, 0.3, 0.4]), max_epochs=3)
    assert _files(tmp_path) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    assert mc.last_model_path == str(tmp_path / "last.ckpt")
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    # Lightning 2.6's rule: last.ckpt is written when a checkpoint file is. Epoch 2 (0.4) did not
    # make the top 1, so last.ckpt is the state of step 4, beside the best, not of step 6.
    assert (last["global_step"], last["epoch"]) == (4, 1) != (trainer.global_step, trainer.current_epoch - 1)
    best = torch.load(tmp_path / "epoch=1-step=4.ckpt", weights_only=True)
    assert torch.equal(last["state_dict"]["layer.weight"], best["state_dict"]["layer.weight"])


def test_every_n_train_steps(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path / "a", every_n_train_steps=2, save_top_k=-1)
    _fit([mc], max_epochs=1, limit_train_batches=4)
    assert _files(tmp_path / "a") == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]
    # The count runs on across epochs: steps 3 and 6 with 4 steps per epoch; no epoch-end saves.
    mc = ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=3, save_top_k=-1)
    _fit([mc], max_epochs=2, limit_train_batches=4)
    assert _files(tmp_path / "b") == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]


def test_every_n_epochs(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=2, save_top_k=-1)
    _fit([mc], max_epochs=5)
    assert _files(tmp_path) == ["epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"]


def test_save_weights_only_has_no_training_state_and_cannot_resume_fit(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    _, model = _fit([mc], max_epochs=1)
    path = tmp_path / "epoch=0-step=2.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    assert sorted(checkpoint) == [
        "epoch", "fulmen_version", "global_step", "hparams_name", "hyper_parameters", "resume", "state_dict",
    ]
    restored = Scripted.load_from_checkpoint(path)
    assert torch.equal(restored.layer.weight, model.layer.weight.detach())
    with pytest.raises(MisconfigurationException, match="holds weights only .*save_weights_only=True.*no optimizer_states"):
        _fit([], max_epochs=2, ckpt_path=path)


def test_a_second_run_into_the_same_dir_gets_versioned_names(tmp_path):
    first = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1)
    _fit([first], max_epochs=2)
    second = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1)
    _fit([second], max_epochs=2)
    assert _files(tmp_path) == [
        "epoch=0-step=2-v1.ckpt", "epoch=0-step=2.ckpt", "epoch=1-step=4-v1.ckpt", "epoch=1-step=4.ckpt",
    ]
    assert Path(first.best_model_path).name == "epoch=1-step=4.ckpt"
    assert Path(second.best_model_path).name == "epoch=1-step=4-v1.ckpt"


def test_every_written_file_loads_with_weights_only_and_holds_the_expected_keys(tmp_path):
    class WithScheduler(Scripted):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    callbacks = [
        ModelCheckpoint(dirpath=tmp_path / "all", save_top_k=-1, save_last=True),
        ModelCheckpoint(dirpath=tmp_path / "best", monitor="val_loss", save_top_k=2, filename="{epoch}-{val_loss:.2f}"),
        ModelCheckpoint(dirpath=tmp_path / "steps", every_n_train_steps=3, save_weights_only=True, save_top_k=-1),
    ]
    _fit(callbacks, WithScheduler(), max_epochs=3)
    written = sorted(tmp_path.rglob("*"))
    files = [p for p in written if p.is_file()]
    # Atomic writes leave no temporary files behind.
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        "all/epoch=0-step=2.ckpt", "all/epoch=1-step=4.ckpt", "all/epoch=2-step=6.ckpt", "all/last.ckpt",
        "best/epoch=1-val_loss=0.30.ckpt", "best/epoch=2-val_loss=0.40.ckpt",
        "steps/epoch=1-step=3.ckpt", "steps/epoch=2-step=6.ckpt",
    ]
    for path in files:
        checkpoint = torch.load(path, weights_only=True)
        assert {"epoch", "global_step", "state_dict", "resume", "fulmen_version", "hyper_parameters"} <= set(checkpoint)
    full = torch.load(tmp_path / "all" / "epoch=1-step=4.ckpt", weights_only=True)
    assert {"optimizer_states", "lr_schedulers", "callbacks"} <= set(full)
    assert (full["epoch"], full["global_step"]) == (1, 4)
    assert full["hyper_parameters"]["values"] == (0.5, 0.3, 0.4, 0.2, 0.6, 0.7)  # the tuple the model was given
    assert len(full["optimizer_states"]) == 1 and full["lr_schedulers"][0]["last_epoch"] == 2
    assert full["fulmen_version"] == pl.__version__
    # Lightning's state keys, one per ModelCheckpoint configuration.
    assert sorted(full["callbacks"]) == sorted([
        "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
        "'train_time_interval': None}",
        "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
        "'train_time_interval': None}",
        "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 3, 'every_n_epochs': 0, "
        "'train_time_interval': None}",
    ])
    assert "optimizer_states" not in torch.load(tmp_path / "steps" / "epoch=1-step=3.ckpt", weights_only=True)


def test_checkpoint_hyper_parameters_do_not_depend_on_the_name_of_self(tmp_path):
    class Terse(Scripted):
        def __init__(m, width=3, values=(0.5, 0.3)):  # noqa: N805 - the instance is not called `self`
            super().__init__(values=values)
            m.save_hyperparameters()

    _fit([ModelCheckpoint(dirpath=tmp_path)], Terse(width=5), max_epochs=1)
    saved = torch.load(tmp_path / "epoch=0-step=2.ckpt", weights_only=True)["hyper_parameters"]
    assert (saved["width"], saved["values"]) == (5, (0.5, 0.3))


# ==============================================================================================
# ModelCheckpoint: ckpt_path="best" / "last"
# ==============================================================================================
def _weight_sum(path) -> float:
    state = torch.load(path, weights_only=True)["state_dict"]
    return (state["layer.weight"].sum() + state["layer.bias"].sum()).item()


def test_ckpt_path_best_and_last_in_test_validate_and_fit(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, save_last=True)
    trainer, model = _fit([mc], Scripted([0.5, 0.3, 0.4, 0.2, 0.25]), max_epochs=5)
    best, last = tmp_path / "epoch=3-step=8.ckpt", tmp_path / "last.ckpt"
    # The last epoch (0.25) makes the top 2, so last.ckpt (written with it) is newer than the best.
    assert _files(tmp_path) == ["epoch=3-step=8.ckpt", "epoch=4-step=10.ckpt", "last.ckpt"]
    assert _weight_sum(best) != _weight_sum(last)

    result = trainer.test(ckpt_path="best", dataloaders=_loader(), verbose=False)
    assert trainer.ckpt_path == str(best)
    assert result[0]["weight_sum"] == pytest.approx(_weight_sum(best), abs=1e-6)

    trainer.validate(ckpt_path="last", dataloaders=_loader(), verbose=False)
    assert trainer.ckpt_path == str(last)
    assert (model.layer.weight.sum() + model.layer.bias.sum()).item() == pytest.approx(_weight_sum(last), abs=1e-6)

    # No model and no ckpt_path after fit: the best checkpoint, as in Lightning.
    result = trainer.test(dataloaders=_loader(), verbose=False)
    assert trainer.ckpt_path == str(best)
    assert result[0]["weight_sum"] == pytest.approx(_weight_sum(best), abs=1e-6)

    # fit from "best" (epoch 3) resumes at epoch 4: one more epoch of 2 steps up to max_epochs=5.
    again = Scripted([0.5, 0.3, 0.4, 0.2, 0.25])
    trainer.fit(again, _loader(), _loader(), ckpt_path="best")
    assert trainer.ckpt_path == str(best)
    assert (again.train_steps, trainer.global_step, trainer.current_epoch) == (2, 10, 5)

    # fit from "last" in a new Trainer: it finds last.ckpt (step 10) in the callback's dirpath.
    resumed, model = _fit(
        [ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, save_last=True)],
        Scripted([0.5, 0.3, 0.4, 0.2, 0.25]), max_epochs=7, ckpt_path="last",
    )
    assert resumed.ckpt_path == str(last)
    assert (model.train_steps, resumed.global_step, resumed.current_epoch) == (4, 14, 7)


def test_ckpt_path_best_without_a_best_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(MisconfigurationException, match='ckpt_path="best" needs a ModelCheckpoint'):
        _fit([], max_epochs=1, ckpt_path="best")
    trainer = pl.Trainer(default_root_dir=tmp_path, **_QUIET)
    with pytest.raises(MisconfigurationException, match='ckpt_path="best" needs a ModelCheckpoint'):
        trainer.validate(Scripted(), _loader(), ckpt_path="best")


# ==============================================================================================
# ModelCheckpoint / EarlyStopping: argument checks
# ==============================================================================================
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ModelCheckpoint(monitor="val_loss", mode="avg"), "`mode` must be 'min' or 'max'. Received: mode='avg'"),
        (lambda: EarlyStopping("val_loss", mode="minimum"), "`mode` must be 'min' or 'max'. Received: mode='minimum'"),
        (lambda: ModelCheckpoint(save_top_k=-2), "`save_top_k` must be an int >= -1. Received: save_top_k=-2"),
        (lambda: ModelCheckpoint(save_top_k=2), "save_top_k=2, monitor=None"),
        (lambda: ModelCheckpoint(every_n_train_steps=2, every_n_epochs=2), "are exclusive"),
        (lambda: ModelCheckpoint(save_last="yes"), "`save_last` must be True, False, 'link' or None"),
        (lambda: EarlyStopping("val_loss", patience=-1), "`patience` must be an int >= 0"),
    ],
)
def test_invalid_arguments_raise_before_training(make, match):
    with pytest.raises(MisconfigurationException, match=match):
        make()


# ==============================================================================================
# configure_callbacks and callback order
# ==============================================================================================
def test_configure_callbacks_replaces_trainer_callbacks_of_the_same_type(tmp_path):
    log: list[str] = []

    class Rec(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            log.append("rec")

    class MC(ModelCheckpoint):
        def on_train_epoch_end(self, trainer, pl_module):
            log.append("mc")
            super().on_train_epoch_end(trainer, pl_module)

    class WithCallbacks(Scripted):
        def configure_callbacks(self):
            return [model_es]

    trainer_es, model_es = EarlyStopping("val_loss", patience=5), EarlyStopping("val_loss", patience=1)
    mc, rec = MC(dirpath=tmp_path), Rec()
    trainer, _ = _fit([mc, trainer_es, rec], WithCallbacks([0.5, 0.3, 0.4, 0.2]))
    # The module's EarlyStopping replaced the Trainer's; ModelCheckpoint moved to the end.
    assert trainer.callbacks == [rec, model_es, mc]
    assert trainer.early_stopping_callback is model_es
    # patience=1 (the module's) stops after epoch 2; patience=5 would have run on.
    assert (model_es.stopped_epoch, trainer.current_epoch) == (2, 3)
    assert trainer_es.wait_count == 0
    # Checkpointing runs after the other callbacks, although it was passed first.
    assert log == ["rec", "mc"] * 3


def test_configure_callbacks_model_checkpoint_replaces_the_default_one(tmp_path):
    own = ModelCheckpoint(dirpath=tmp_path / "own")

    class Rec(pl.Callback):
        pass

    class WithCheckpoint(Scripted):
        def configure_callbacks(self):
            return [own, Rec()]

    trainer, _ = _fit([], WithCheckpoint(), max_epochs=1, enable_checkpointing=True, default_root_dir=tmp_path)
    assert [type(c).__name__ for c in trainer.callbacks] == ["Rec", "ModelCheckpoint"]
    assert trainer.checkpoint_callback is own and trainer.checkpoint_callbacks == [own]
    assert _files(tmp_path) == ["own"]
    assert _files(tmp_path / "own") == ["epoch=0-step=2.ckpt"]
