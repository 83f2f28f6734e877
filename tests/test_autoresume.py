"""`fit(ckpt_path="last")` with the defaults: start the same command again, get the same model.

tests/scripts/train_with_defaults.py uses the default logger and ModelCheckpoint (no dirpath, no
version). It is killed with a real SIGKILL in two different epochs and re-run each time with the
same command. The resumed runs must end with an uninterrupted run's weights bit for bit, log into
one version folder, and leave curves with every step once (read back with TensorBoard's own
reader, which applies the purge a resumed run writes, and from metrics.csv).
"""

from __future__ import annotations

import csv
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.loggers import CSVLogger, TensorBoardLogger
from helpers import random_regression

SCRIPT = Path(__file__).parent / "scripts" / "train_with_defaults.py"
KILL_STEPS = (7, 13)  # 5 steps per epoch: one kill in epoch 1, one in epoch 2, none on a boundary


def train(root: Path, kill_at: int, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(root), str(kill_at), str(out), *extra],
        capture_output=True, text=True, timeout=600,
    )


def tensorboard_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def csv_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(log_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key != "step" and value:
                    curves.setdefault(key, []).append((int(row["step"]), float(value)))
    return curves


@pytest.mark.parametrize("logger", ["tensorboard", "csv"])
def test_sigkill_then_the_same_command_resumes_into_the_same_version(tmp_path, logger):
    extra = ("csv",) if logger == "csv" else ()
    reference = train(tmp_path / "reference", -1, tmp_path / "reference.pt", *extra)
    assert reference.returncode == 0, reference.stderr[-3000:]

    root = tmp_path / "interrupted"
    for kill_at in KILL_STEPS:
        killed = train(root, kill_at, tmp_path / "never.pt", *extra)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = train(root, -1, tmp_path / "resumed.pt", *extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "never.pt").exists()

    expected = torch.load(tmp_path / "reference.pt", weights_only=True)
    got = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name

    # One version folder, one hparams.yaml, and the final run said where it resumed from.
    assert sorted(p.name for p in (root / "lightning_logs").iterdir()) == ["version_0"]
    assert "Resumed from " in resumed.stderr and "at epoch 2, step 10." in resumed.stderr, resumed.stderr[-3000:]
    log_dir = root / "lightning_logs" / "version_0"
    assert (log_dir / "hparams.yaml").read_text() == (
        tmp_path / "reference" / "lightning_logs" / "version_0" / "hparams.yaml"
    ).read_text()
    # The uninterrupted run's points, each once. ("epoch" goes with every write, so at an epoch's
    # last step it is there twice, with the training and the validation metrics, as in Lightning.)
    read = csv_curves if logger == "csv" else tensorboard_curves
    curves, reference_curves = read(log_dir), read(tmp_path / "reference" / "lightning_logs" / "version_0")
    assert curves.keys() == reference_curves.keys() >= {"train_loss", "val_loss", "train_loss_epoch_mean"}
    for tag, points in curves.items():
        assert points == reference_curves[tag], tag
        steps = [step for step, _ in points]
        assert tag == "epoch" or len(steps) == len(set(steps)), (tag, steps)
    assert [step for step, _ in curves["train_loss"]] == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]


class Small(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Other(Small):
    pass


def fit(root: Path, model: pl.LightningModule, max_epochs: int, **kwargs) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, default_root_dir=root, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1, **kwargs)
    trainer.fit(model, DataLoader(random_regression(16), batch_size=4), ckpt_path="last")
    return trainer


def test_last_finds_the_checkpoint_of_an_earlier_version_and_continues_that_version(tmp_path):
    first = fit(tmp_path, Small(), 2)
    assert first.logger.version == 0
    second = fit(tmp_path, Small(), 3)
    assert second.logger.version == 0 and second.global_step == 12
    assert second.ckpt_path.startswith(str(tmp_path / "lightning_logs" / "version_0" / "checkpoints"))
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]


def test_another_module_class_in_the_same_folder_is_another_run(tmp_path):
    fit(tmp_path, Small(), 2)
    with pytest.warns(UserWarning, match=r"no intact checkpoint of .*Other among the 1 found"):
        other = fit(tmp_path, Other(), 1)
    assert other.ckpt_path is None and other.logger.version == 1 and other.global_step == 4
    again = fit(tmp_path, Small(), 3)  # the first run's command, again: resumes its own run
    assert again.logger.version == 0 and again.global_step == 12


def test_a_logger_given_its_version_keeps_it(tmp_path):
    fit(tmp_path, Small(), 2)
    pinned = fit(tmp_path, Small(), 3, logger=TensorBoardLogger(tmp_path, version="mine"))
    assert pinned.logger.version == "mine" and pinned.global_step == 12  # resumed, logging where asked
    assert pinned.logger._resume_step is None  # a new folder: nothing to purge


def test_csv_continuation_drops_rows_logged_after_the_checkpoint(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=3)
    logger.log_metrics({"loss": 0.5}, step=4)
    logger.finalize("success")
    again = CSVLogger(tmp_path, version=0)
    again.continue_at(4)
    again.log_metrics({"loss": 0.25, "acc": 0.5}, step=4)
    again.finalize("success")
    with open(Path(again.log_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"], r["acc"]) for r in rows] == [("3", "1.0", ""), ("4", "0.25", "0.5")]


def test_checkpoints_and_hparams_get_the_mode_a_normal_file_gets(tmp_path):
    old = os.umask(0o022)
    try:
        trainer = fit(tmp_path, Small(), 1, logger=[TensorBoardLogger(tmp_path), CSVLogger(tmp_path, name="csv")])
        trainer.save_checkpoint(tmp_path / "manual.ckpt")
        os.umask(0o027)
        trainer.save_checkpoint(tmp_path / "group.ckpt")
    finally:
        os.umask(old)
    files = [Path(trainer.checkpoint_callback.best_model_path), tmp_path / "manual.ckpt",
             Path(trainer.loggers[0].log_dir) / "hparams.yaml", Path(trainer.loggers[1].log_dir) / "metrics.csv"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((tmp_path / "group.ckpt").stat().st_mode) == 0o640
