"""ModelCheckpoint follows Lightning 2.6's rules: when last.ckpt is written, what save_last="link"
makes, and how a step/time trigger waits for a monitored metric that is not logged yet.

The expected file lists were produced by running the same scenarios on pytorch-lightning 2.6.6
(a BoringModel, 2 training batches and 1 validation batch per epoch, `val_loss` logged in
validation_step from a list indexed by the epoch); where fulmen differs on purpose it says so.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from torch.utils.data import DataLoader

from fulmen.callbacks import ModelCheckpoint
from fulmen.demos import BoringModel, RandomDataset
from fulmen.errors import MisconfigurationException


class Scored(BoringModel):
    """Logs `val_loss` = values[current_epoch] in validation_step."""

    def __init__(self, values=(0.5, 0.3, 0.4, 0.2, 0.6)):
        super().__init__()
        self.values = values

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.values[min(self.current_epoch, len(self.values) - 1)])


def _fit(mc, model=None, *, val=True, ckpt_path=None, **kwargs):
    options = dict(max_epochs=3, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                   enable_checkpointing=True, callbacks=[mc])
    options.update(kwargs)
    if not val:
        options["limit_val_batches"] = 0
    trainer = quiet_trainer(options.pop("root"), **options)
    model = model if model is not None else Scored()
    trainer.fit(model, DataLoader(RandomDataset(32, 64)), DataLoader(RandomDataset(32, 8)), ckpt_path=ckpt_path)
    return trainer


def _listing(directory: Path) -> list[str]:
    """Each file as name@global_step, a link as name->target@global_step (no temporary files)."""
    out = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        step = torch.load(path, weights_only=True)["global_step"]
        link = f"->{os.readlink(path)}" if path.is_symlink() else ""
        out.append(f"{path.name}{link}@{step}")
    return out


@pytest.mark.parametrize(
    ("make", "values", "epochs", "extra", "expected"),
    [
        # A non-improving last epoch writes no newer last.ckpt.
        (lambda: ModelCheckpoint(monitor="val_loss", save_last=True), (0.5, 0.3, 0.4), 3, {},
         ["epoch=1-step=4.ckpt@4", "last.ckpt@4"]),
        # Nothing saved by the triggers: last.ckpt once, at the end of training.
        (lambda: ModelCheckpoint(save_top_k=0, save_last=True), None, 3, {}, ["last.ckpt@6"]),
        (lambda: ModelCheckpoint(every_n_epochs=5, save_last=True), None, 3, {}, ["last.ckpt@6"]),
        # every_n_epochs=2: last.ckpt only beside the epochs that save.
        (lambda: ModelCheckpoint(every_n_epochs=2, save_last=True), None, 5, {}, ["epoch=3-step=8.ckpt@8", "last.ckpt@8"]),
        # A step trigger writes last.ckpt every time it fires, a top-k file or not.
        (lambda: ModelCheckpoint(every_n_train_steps=2, save_top_k=0, save_last=True), None, 3, {}, ["last.ckpt@6"]),
        (lambda: ModelCheckpoint(monitor="val_loss", every_n_train_steps=3, save_top_k=-1, save_last=True),
         None, 3, {}, ["epoch=1-step=3.ckpt@3", "epoch=2-step=6.ckpt@6", "last.ckpt@6"]),
        # Validation twice an epoch: saves at validation ends, last.ckpt only with a new best.
        (lambda: ModelCheckpoint(monitor="val_loss", save_last=True), None, 2, {"val_check_interval": 0.5},
         ["epoch=1-step=3.ckpt@3", "last.ckpt@3"]),
        # save_last="link": a symlink to the newest saved file, re-pointed at each epoch end.
        (lambda: ModelCheckpoint(monitor="val_loss", save_last="link"), None, 5, {},
         ["epoch=3-step=8.ckpt@8", "last.ckpt->epoch=3-step=8.ckpt@8"]),
        (lambda: ModelCheckpoint(save_last="link"), None, 3, {}, ["epoch=2-step=6.ckpt@6", "last.ckpt->epoch=2-step=6.ckpt@6"]),
        # The newest file, not the best: 0.4 (epoch 2) enters the top 2 and is what last.ckpt names.
        (lambda: ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last="link"), (0.5, 0.3, 0.4), 3, {},
         ["epoch=1-step=4.ckpt@4", "epoch=2-step=6.ckpt@6", "last.ckpt->epoch=2-step=6.ckpt@6"]),
        (lambda: ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last="link"), (0.5, 0.3, 0.6), 3, {},
         ["epoch=0-step=2.ckpt@2", "epoch=1-step=4.ckpt@4", "last.ckpt->epoch=1-step=4.ckpt@4"]),
        # save_top_k=0 leaves nothing to link to: last.ckpt is a full file.
        (lambda: ModelCheckpoint(save_top_k=0, save_last="link"), None, 3, {}, ["last.ckpt@6"]),
    ],
    ids=["not-improved", "top0", "epoch-never-due", "every-2-epochs", "steps-top0", "steps-monitor",
         "val-twice-an-epoch", "link-top1", "link-no-monitor", "link-newest-not-best", "link-kept", "link-top0"],
)
def test_when_last_ckpt_is_written_matches_lightning_2_6(tmp_path, make, values, epochs, extra, expected):
    model = Scored(values) if values else Scored()
    _fit(make(), model, root=tmp_path, max_epochs=epochs, **extra)
    assert _listing(tmp_path / "checkpoints") == expected


def _ckpt_dir(tmp_path):
    return tmp_path / "checkpoints"  # where ModelCheckpoint writes without a logger


def test_a_step_trigger_waits_for_its_monitored_metric(tmp_path):
    # every 3 steps with 4 batches an epoch and validation at the epoch's end only: step 3 comes
    # before any val_loss, so it waits and the validation after step 4 saves (Lightning: the same).
    mc = ModelCheckpoint(monitor="val_loss", every_n_train_steps=3, save_top_k=-1, save_on_train_epoch_end=False)
    _fit(mc, root=tmp_path, max_epochs=2, limit_train_batches=4)
    assert _listing(_ckpt_dir(tmp_path)) == ["epoch=0-step=4.ckpt@4", "epoch=1-step=6.ckpt@6"]
    # Step 6 still sees epoch 0's val_loss: two files of the same score.
    assert {Path(p).name: v.item() for p, v in mc.best_k_models.items()} == {
        "epoch=0-step=4.ckpt": 0.5, "epoch=1-step=6.ckpt": 0.5}


def test_a_time_trigger_waits_for_its_monitored_metric_instead_of_raising(tmp_path):
    # Due after every batch; step 1 has no val_loss yet and is skipped, not an error. (Lightning
    # decides before the batch's validation, so it also skips step 2; fulmen saves once the batch
    # is done, validation included, and so already has the epoch's val_loss at step 2.)
    mc = ModelCheckpoint(monitor="val_loss", train_time_interval=dt.timedelta(0), save_top_k=-1)
    _fit(mc, root=tmp_path, max_epochs=2)
    assert _listing(_ckpt_dir(tmp_path)) == ["epoch=0-step=2.ckpt@2", "epoch=1-step=3.ckpt@3", "epoch=1-step=4.ckpt@4"]


def test_a_monitored_key_missing_after_validation_ran_is_an_error_at_epoch_triggers(tmp_path):
    with pytest.raises(MisconfigurationException,
                       match=r"ModelCheckpoint monitors 'val_acc', which was not logged\. Received: monitor='val_acc'; "
                             r"logged metrics: \['epoch', 'step', 'val_loss'\]\. Fix: self\.log\('val_acc', value\)"):
        _fit(ModelCheckpoint(monitor="val_acc"), root=tmp_path, max_epochs=1)


def test_a_step_trigger_whose_key_is_never_logged_saves_nothing_and_says_so(tmp_path):
    # Lightning 2.6: a step trigger only ever waits (no error), so nothing is saved; fulmen also
    # warns once validation has run without logging the key.
    mc = ModelCheckpoint(monitor="val_acc", every_n_train_steps=1)
    with pytest.warns(UserWarning, match=r"ModelCheckpoint monitors 'val_acc', which was not logged\..*"
                                         r"Checkpoints due at step triggers wait until it is"):
        _fit(mc, root=tmp_path, max_epochs=2)
    assert not _ckpt_dir(tmp_path).exists() or _listing(_ckpt_dir(tmp_path)) == []


def test_a_monitored_key_never_logged_without_validation_warns_and_saves_last_at_the_end(tmp_path):
    mc = ModelCheckpoint(monitor="val_loss", save_last=True)
    with pytest.warns(UserWarning, match=r"ModelCheckpoint monitors 'val_loss', which was not logged\..*"
                                         r"no checkpoint is saved until it is logged"):
        _fit(mc, root=tmp_path, val=False)
    assert _listing(_ckpt_dir(tmp_path)) == ["last.ckpt@6"]
    assert mc.best_model_path == "" and mc.last_model_path == str(_ckpt_dir(tmp_path) / "last.ckpt")


def test_without_validation_epoch_checkpoints_are_saved_whatever_check_val_every_n_epoch(tmp_path):
    # fulmen on purpose: Lightning 2.6 saves nothing here (it waits for a validation end that never comes).
    _fit(ModelCheckpoint(save_top_k=-1), root=tmp_path, val=False, max_epochs=2, check_val_every_n_epoch=2)
    assert _listing(_ckpt_dir(tmp_path)) == ["epoch=0-step=2.ckpt@2", "epoch=1-step=4.ckpt@4"]


def test_link_resumes_through_the_link_and_repoints_it(tmp_path):
    _fit(ModelCheckpoint(save_last="link"), root=tmp_path, max_epochs=2)
    ckpt = _ckpt_dir(tmp_path)
    assert _listing(ckpt) == ["epoch=1-step=4.ckpt@4", "last.ckpt->epoch=1-step=4.ckpt@4"]
    mc = ModelCheckpoint(save_last="link")
    trainer = _fit(mc, root=tmp_path, max_epochs=3, ckpt_path="last")
    assert trainer.ckpt_path == str(ckpt / "last.ckpt")
    assert trainer.global_step == 6
    # The link moves to the new file, and the old one goes: it was resumed from through the
    # link, which is what the resume guard compares (as in Lightning).
    assert _listing(ckpt) == ["epoch=2-step=6.ckpt@6", "last.ckpt->epoch=2-step=6.ckpt@6"]
    assert [p.name for p in ckpt.iterdir() if p.name.startswith(".")] == []  # no temporary link left


def test_a_dangling_link_is_skipped_by_ckpt_path_last(tmp_path):
    _fit(ModelCheckpoint(save_last="link", save_top_k=-1), root=tmp_path, max_epochs=2)
    ckpt = _ckpt_dir(tmp_path)
    (ckpt / "epoch=1-step=4.ckpt").unlink()  # the file the link names, deleted by hand
    trainer = _fit(ModelCheckpoint(save_last="link", save_top_k=-1), root=tmp_path, max_epochs=3, ckpt_path="last")
    assert trainer.ckpt_path == str(ckpt / "epoch=0-step=2.ckpt")  # the newest intact one
    assert trainer.global_step == 2 + 4


def test_link_falls_back_to_a_copy_where_links_fail(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)
    _fit(ModelCheckpoint(save_last="link"), root=tmp_path, max_epochs=2)
    monkeypatch.undo()
    ckpt = _ckpt_dir(tmp_path)
    assert _listing(ckpt) == ["epoch=1-step=4.ckpt@4", "last.ckpt@4"]
    assert not (ckpt / "last.ckpt").is_symlink()
    assert (ckpt / "last.ckpt").read_bytes() == (ckpt / "epoch=1-step=4.ckpt").read_bytes()


def test_the_checkpoint_resumed_from_is_not_deleted_when_replaced(tmp_path):
    _fit(ModelCheckpoint(), root=tmp_path, max_epochs=2)
    ckpt = _ckpt_dir(tmp_path)
    resumed_from = ckpt / "epoch=1-step=4.ckpt"
    mc = ModelCheckpoint()
    _fit(mc, root=tmp_path, max_epochs=3, ckpt_path=resumed_from)
    assert Path(mc.best_model_path).name == "epoch=2-step=6.ckpt"
    assert _listing(ckpt) == ["epoch=1-step=4.ckpt@4", "epoch=2-step=6.ckpt@6"]
