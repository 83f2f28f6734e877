"""Profilers: Trainer(profiler="simple" | "advanced" | "pytorch" | Profiler()), and nothing per batch without one."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.errors import MisconfigurationException
from fulmen.hooks import HookDispatch
from fulmen.profilers import AdvancedProfiler, PassThroughProfiler, Profiler, PyTorchProfiler, SimpleProfiler
from fulmen.profilers.wiring import timed
from helpers import quiet_trainer, random_regression

pytestmark = pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")


class Regressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.layer(x), y))

    def on_train_epoch_start(self):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Counter(pl.Callback):
    def __init__(self):
        self.batch_ends = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batch_ends += 1


def loader():
    return DataLoader(random_regression(16), batch_size=4)  # 4 batches


def table(text: str) -> dict[str, list[str]]:
    """The SimpleProfiler table as {action: [mean, calls, total, percent]}."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] != "Action":
            rows[cells[0]] = cells[1:]
    return rows


def test_simple_profiler_writes_a_table_of_every_hook_and_step(tmp_path):
    counter = Counter()
    profiler = SimpleProfiler(filename="perf")
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[counter], profiler=profiler, num_sanity_val_steps=0)
    trainer.fit(Regressor(), loader(), loader())
    report = tmp_path / "fit-perf.txt"  # dirpath defaults to the log dir (no logger: default_root_dir)
    assert profiler.report_path == str(report)
    rows = table(report.read_text())
    calls = {action: int(cells[1]) for action, cells in rows.items()}
    assert calls["[LightningModule]Regressor.training_step"] == 8
    assert calls["[LightningModule]Regressor.optimizer_step"] == 8
    assert calls["[LightningModule]Regressor.backward"] == 8
    assert calls["[LightningModule]Regressor.validation_step"] == 8
    assert calls["[LightningModule]Regressor.on_train_epoch_start"] == 2
    assert calls["[Callback]Counter.on_train_batch_end"] == 8 == counter.batch_ends
    assert calls["run_training_epoch"] == 2
    assert calls["run_training_batch"] == 8
    assert calls["[_TrainingEpochLoop].train_dataloader_next"] == 10  # 4 batches + the end, per epoch
    assert rows["Total"][3] == "100 %"
    # mean * calls == total, and every share is a percentage of the run
    for action, (mean, n, total, percent) in rows.items():
        if action != "Total":
            assert float(mean) * int(n) == pytest.approx(float(total), rel=1e-3)
            assert 0.0 <= float(percent) <= 100.0
    # the whole training epoch contains its batches
    assert float(rows["run_training_epoch"][2]) >= float(rows["run_training_batch"][2])


def test_simple_profiler_prints_without_filename(tmp_path, capsys):
    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler="simple")
    trainer.fit(Regressor(), loader())
    out = capsys.readouterr().out
    assert "FIT Profiler Report" in out and "[LightningModule]Regressor.training_step" in out
    assert not list(tmp_path.glob("*.txt"))


def test_profiling_changes_neither_the_weights_nor_the_module(tmp_path):
    def train(profiler):
        torch.manual_seed(0)
        model = Regressor()
        quiet_trainer(tmp_path, max_epochs=2, profiler=profiler).fit(model, loader(), loader())
        return model

    plain, profiled = train(None), train(SimpleProfiler(filename="p"))
    for a, b in zip(plain.state_dict().values(), profiled.state_dict().values()):
        assert torch.equal(a, b)
    # the wrappers set on the module for the run are gone afterwards
    assert not {"training_step", "optimizer_step", "backward", "_fulmen_profiled"} & set(vars(profiled))


def test_no_profiler_costs_nothing_per_batch(tmp_path, monkeypatch):
    calls = []
    for cls in (PassThroughProfiler, SimpleProfiler):
        monkeypatch.setattr(cls, "start", lambda self, name: calls.append(name))
    seen = {}

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["dispatch"] = type(trainer._hooks)
            seen["plain_step"] = trainer._hooks.plain_step

    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[Spy()])
    model = Regressor()
    trainer.fit(model, loader())
    assert calls == []
    assert isinstance(trainer.profiler, PassThroughProfiler) and trainer._profiler is None
    assert seen["dispatch"] is HookDispatch  # the plain dispatch, no wrappers
    assert "training_step" not in vars(model)
    fn = lambda: None  # noqa: E731
    assert timed(trainer, "run_training_batch", fn) is fn  # the loop calls the function itself
    with trainer.profiler.profile("user code"):  # usable in user code: the only action of the whole run
        pass
    assert calls == ["user code"]
    assert PassThroughProfiler().summary() == ""  # and the pass-through profiler reports nothing


def test_advanced_profiler_reports_cprofile_stats_per_action(tmp_path):
    # A first fit, unprofiled: the first training_step of a process also imports parts of torch,
    # which would fill the 5-line listing below when this test runs alone.
    quiet_trainer(tmp_path, max_epochs=1).fit(Regressor(), loader())
    profiler = AdvancedProfiler(dirpath=tmp_path / "prof", filename="adv", line_count_restriction=5, dump_stats=True)
    quiet_trainer(tmp_path, max_epochs=1, profiler=profiler).fit(Regressor(), loader())
    text = (tmp_path / "prof" / "fit-adv.txt").read_text()
    assert "FIT Profiler Report" in text
    section = text.split("Profile stats for: [LightningModule]Regressor.training_step")[1].split("Profile stats for:")[0]
    assert "training_step" in section and "mse_loss" in section  # cProfile saw the functions it called
    assert re.search(r"\d+ function calls", section)
    assert re.search(r"List reduced from \d+ to 5 due to restriction", section)
    dumps = {p.name for p in (tmp_path / "prof").glob("*.prof")}
    assert "fit-adv-[LightningModule]Regressor.training_step.prof" in dumps


def test_advanced_profiler_nested_actions_do_not_clash():
    profiler = AdvancedProfiler()
    with profiler.profile("outer"):
        with profiler.profile("inner"):
            sum(range(10))
        sorted(range(10))
    text = profiler.summary()
    assert "Profile stats for: outer" in text and "Profile stats for: inner" in text
    outer = text.split("Profile stats for: outer")[1].split("Profile stats for:")[0]
    assert "sorted" in outer


def test_pytorch_profiler_writes_a_chrome_trace_with_the_actions(tmp_path):
    profiler = PyTorchProfiler(filename="torch", row_limit=10)
    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler=profiler, logger=pl.loggers.CSVLogger(tmp_path))
    trainer.fit(Regressor(), loader())
    log_dir = tmp_path / "lightning_logs" / "version_0"
    trace = log_dir / "fit-torch.pt.trace.json"
    assert profiler.trace_path == str(trace)
    events = json.loads(trace.read_text())["traceEvents"]
    names = [e.get("name", "") for e in events]
    assert names.count("[LightningModule]Regressor.training_step") == 4
    assert "run_training_epoch" in names and "aten::mse_loss" in names
    report = (log_dir / "fit-torch.txt").read_text()
    assert "Name" in report and "CPU total" in report


def test_custom_profiler_and_bad_argument(tmp_path):
    class Recorder(Profiler):
        def __init__(self):
            super().__init__()
            self.log = []

        def start(self, action_name):
            self.log.append(("start", action_name))

        def stop(self, action_name):
            self.log.append(("stop", action_name))

    recorder = Recorder()
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, profiler=recorder).fit(Regressor(), loader())
    starts = [name for kind, name in recorder.log if kind == "start"]
    assert starts.index("run_training_epoch") < starts.index("run_training_batch") < starts.index(
        "[LightningModule]Regressor.training_step"
    )
    assert recorder._stage == "fit"
    with pytest.raises(MisconfigurationException, match="Received: profiler='fancy'"):
        pl.Trainer(profiler="fancy")


def test_profiler_report_is_written_after_a_failure(tmp_path):
    class Broken(Regressor):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    model = Broken()
    with pytest.raises(RuntimeError, match="boom"):
        quiet_trainer(tmp_path, max_epochs=1, profiler=SimpleProfiler(filename="perf")).fit(model, loader())
    calls = {a: int(c[1]) for a, c in table((tmp_path / "fit-perf.txt").read_text()).items()}
    assert calls["[LightningModule]Broken.training_step"] == 3
    assert "training_step" not in vars(model)


def test_profiler_names_reports_by_stage(tmp_path):
    profiler = SimpleProfiler(filename="perf")
    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler=profiler)
    model = Regressor()
    trainer.fit(model, loader())
    trainer.validate(model, loader(), verbose=False)
    validate = table((tmp_path / "validate-perf.txt").read_text())
    assert int(validate["[LightningModule]Regressor.validation_step"][1]) == 4
    assert "run_training_epoch" in table((tmp_path / "fit-perf.txt").read_text())
