"""The core's shape (issue 15): one body for the automatic step, profiling that runs the same step,
no import cycle, monitors found by their base class, one published "logging point" decision.

Black-box where the behaviour is public (hook order, logged steps, the profiler's report); the
frames between the loop and training_step are read from the real stack, as the design notes measure them.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks.monitor import MonitorCallback
from fulmen.loggers import CSVLogger, TensorBoardLogger
from fulmen.loop import should_update_logs
from fulmen.profilers import SimpleProfiler

ROOT = Path(__file__).resolve().parents[1]


def data(n: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


class StackRecorder(pl.LightningModule):
    """Records the functions between `run_train_batch` and training_step (innermost first)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)
        self.frames: list[str] = []

    def training_step(self, batch, batch_idx):
        names = [frame.function for frame in inspect.stack()[1:]]
        self.frames = names[: names.index("run_train_batch") + 1]
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class BackwardHook(pl.Callback):
    def on_before_backward(self, trainer, pl_module, loss):
        pass  # overriding a step hook: the full, hook-by-hook path


def frames_of(tmp_path, **kwargs) -> list[str]:
    model = StackRecorder()
    quiet_trainer(tmp_path, max_epochs=1, **kwargs).fit(model, data())
    return [f for f in model.frames if f not in ("wrapper", "autocast_step")]  # a profiler's / autocast's wrapper


def test_the_plain_and_the_full_step_share_one_body_a_few_frames_from_the_loop(tmp_path):
    plain = frames_of(tmp_path)
    full = frames_of(tmp_path, callbacks=[BackwardHook()])
    assert plain == ["_forward_backward", "run_train_batch"]
    # the full step runs the same body, as the closure of the module's optimizer_step
    assert full[0] == "_forward_backward" and full[-1] == "run_train_batch"
    assert full == ["_forward_backward", "__call__", "optimizer_step", "step", "optimizer_step", "run_train_batch"]


def test_a_profiled_run_takes_the_same_step_and_still_reports_its_actions(tmp_path):
    profiler = SimpleProfiler(filename="perf")
    assert frames_of(tmp_path, profiler=profiler) == frames_of(tmp_path)  # was the full path (8 frames)
    report = (tmp_path / "fit-perf.txt").read_text()
    for action in ("training_step", "optimizer_step", "optimizer_zero_grad", "backward"):
        assert f"[LightningModule]StackRecorder.{action}" in report
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in report.splitlines() if line.count("|") == 6}
    assert rows["[LightningModule]StackRecorder.optimizer_step"] == "4"  # 4 batches, one epoch
    assert rows["[LightningModule]StackRecorder.backward"] == "4"


class WithScheduler(StackRecorder):
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)]


@pytest.mark.parametrize("model_class", [StackRecorder, WithScheduler])
def test_profiling_a_plain_step_leaves_the_optimizer_as_it_was(tmp_path, model_class):
    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler="simple")
    trainer.fit(model_class(), data())
    optimizer = trainer.optimizers[0]
    optimizer = getattr(optimizer, "optimizer", optimizer)
    assert "zero_grad" not in vars(optimizer)
    if model_class is StackRecorder:
        assert "step" not in vars(optimizer)
    else:  # the scheduler's step counter that torch set on the instance is back in place
        assert vars(optimizer)["step"]._wrapped_by_lr_sched
        assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 1


@pytest.mark.parametrize("first", ["fulmen.hooks", "fulmen.callbacks.lambda_function", "fulmen.loop",
                                   "fulmen.callbacks.lr_monitor", "fulmen.profilers.wiring"])
def test_core_modules_import_alone_in_a_fresh_interpreter(first):
    """No import cycle: each module imports first, on its own (not only in fulmen/__init__'s order)."""
    code = f"import {first}; import fulmen.hooks, fulmen.loop, fulmen.callbacks.lambda_function"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr


class Order(pl.Callback):
    def __init__(self, events: list[str], name: str) -> None:
        self.events, self.name = events, name

    def on_train_epoch_end(self, trainer, pl_module):
        self.events.append(self.name)


class WatchesMetric(MonitorCallback):
    """A monitor of one's own (neither EarlyStopping nor ModelCheckpoint)."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(monitor="loss", mode="min")
        self.events = events

    def on_train_epoch_end(self, trainer, pl_module):
        self.events.append("monitor")


class LogsAtEpochEnd(StackRecorder):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    def on_train_epoch_end(self):
        self.events.append("module")


def test_every_monitor_callback_runs_its_epoch_end_after_the_module(tmp_path):
    events: list[str] = []
    callbacks = [WatchesMetric(events), Order(events, "plain")]
    quiet_trainer(tmp_path, max_epochs=1, callbacks=callbacks).fit(LogsAtEpochEnd(events), data())
    assert events == ["plain", "module", "monitor"]


class LogPoints(pl.Callback):
    def __init__(self) -> None:
        self.due: list[tuple[int, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.due.append((batch_idx, should_update_logs(trainer)))


class LogsLoss(StackRecorder):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss)
        return loss


def test_should_update_logs_names_the_batches_whose_values_reach_the_loggers(tmp_path):
    points = LogPoints()
    trainer = quiet_trainer(tmp_path, max_epochs=2, log_every_n_steps=3, callbacks=[points],
                            logger=CSVLogger(tmp_path, name="csv"))
    trainer.fit(LogsLoss(), DataLoader(data(24).dataset, batch_size=4))  # 6 batches per epoch
    due = [i for i, (_, flag) in enumerate(points.due) if flag]
    assert due == [2, 5, 8, 11]
    rows = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()
    steps = sorted({int(line.split(",")[rows[0].split(",").index("step")]) for line in rows[1:]})
    assert steps == due


def test_csv_and_tensorboard_refuse_a_tensor_of_several_values_in_the_same_words(tmp_path):
    metrics = {"acc": torch.ones(3)}
    for logger, name in ((CSVLogger(tmp_path), "CSVLogger"), (TensorBoardLogger(tmp_path), "TensorBoardLogger")):
        with pytest.raises(ValueError, match=rf"^{name} can only log scalars\. Received: 'acc' = tensor of shape \(3,\)"):
            logger.log_metrics(metrics, step=0)
            logger.save()
    csv = CSVLogger(tmp_path, name="ok")
    csv.log_metrics({"acc": torch.tensor(0.5), "note": "x"}, step=0)
    csv.save()
    assert "0.5" in (Path(csv.log_dir) / "metrics.csv").read_text()


def test_evaluation_hooks_are_called_by_names_that_grep_finds():
    source = (ROOT / "fulmen" / "loop.py").read_text()
    assert 'f"on_{' not in source
    for stage in ("validation", "test"):
        for hook in ("start", "epoch_start", "batch_start", "batch_end", "epoch_end", "end", "model_eval", "model_train"):
            assert f'"on_{stage}_{hook}"' in source
