"""The callbacks that measure and report: LearningRateMonitor (values, intervals, names, a logger
needed), Timer (on a fake clock, its resume, its duration forms), ThroughputMonitor (counts and
rates on a fake clock), SpikeDetection (an injected spike, tolerances, mode, warn_only, NaN) and
DeviceStatsMonitor (CPU statistics at the loop's logging steps). Each is checked against the
values in the CSV log, the steps it stopped at or the exception it raised.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from fulmen.callbacks import (
    DeviceStatsMonitor,
    LearningRateMonitor,
    SpikeDetection,
    ThroughputMonitor,
    Timer,
    TrainingSpikeException,
)
from fulmen.callbacks import throughput_monitor as throughput_module
from fulmen.callbacks import timer as timer_module
from fulmen.errors import MisconfigurationException
from fulmen.loggers import CSVLogger

from helpers import SmallRegressor, quiet_trainer, sum_loader


def read_csv(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


# --- LearningRateMonitor -------------------------------------------------------------------------
def test_lr_monitor_logs_step_scheduler_values_at_each_step(tmp_path):
    def optim(params):
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
                                                    "interval": "step"}}

    logger = CSVLogger(tmp_path)
    monitor = LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[monitor], max_steps=4, log_every_n_steps=1)
    trainer.fit(SmallRegressor(optim), sum_loader())
    rows = read_csv(logger)
    assert column(rows, "lr-SGD") == [(0, 0.1), (1, 0.05), (2, 0.025), (3, 0.0125)]
    assert column(rows, "lr-SGD-momentum") == [(i, 0.9) for i in range(4)]
    assert column(rows, "lr-SGD-weight_decay") == [(i, 0.01) for i in range(4)]
    assert monitor.lrs == {"lr-SGD": [0.1, 0.05, 0.025, 0.0125]}
    assert trainer.callback_metrics["lr-SGD"].item() == pytest.approx(0.0125)


def test_lr_monitor_epoch_interval_and_log_every_n_steps(tmp_path):
    def optim(params):
        opt = torch.optim.Adam(params, lr=0.1)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1)]

    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[LearningRateMonitor(logging_interval="epoch",
                                                                                    log_momentum=True)],
                            max_epochs=3, log_every_n_steps=3)
    trainer.fit(SmallRegressor(optim), sum_loader(n=16))  # 4 steps per epoch
    rows = read_csv(logger)
    assert [(s, pytest.approx(v)) for s, v in column(rows, "lr-Adam")] == [(0, 0.1), (4, 0.01), (8, 0.001)]
    assert column(rows, "lr-Adam-momentum") == [(0, 0.9), (4, 0.9), (8, 0.9)]  # Adam's beta1

    # "step" with log_every_n_steps=3: the batches whose step + 1 is a multiple of 3.
    logger = CSVLogger(tmp_path, name="steps")
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[LearningRateMonitor(logging_interval="step")],
                            max_epochs=2, log_every_n_steps=3)
    trainer.fit(SmallRegressor(optim), sum_loader(n=16))
    assert [s for s, _ in column(read_csv(logger), "lr-Adam")] == [2, 5]


def test_lr_monitor_names_param_groups_and_named_schedulers(tmp_path):
    class TwoGroups(SmallRegressor):
        def configure_optimizers(self):
            first, second = self.net[0], self.net[2]
            opt = torch.optim.Adam([{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.5}], lr=0.1)
            sgd = torch.optim.SGD(self.parameters(), lr=0.3)
            sched = {"scheduler": torch.optim.lr_scheduler.StepLR(sgd, 1), "name": "my-sgd"}
            return [opt, sgd], [sched]

        def training_step(self, batch, batch_idx):
            return None  # names are what is tested; no optimization needed

    model = TwoGroups(hidden=3)
    model.automatic_optimization = False
    logger = CSVLogger(tmp_path)
    quiet_trainer(tmp_path, logger=logger, callbacks=[LearningRateMonitor()], max_steps=1, max_epochs=1,
                  limit_train_batches=1, log_every_n_steps=1).fit(model, sum_loader())
    rows = read_csv(logger)
    # As in Lightning, with interval None an optimizer without a scheduler is logged both at the
    # epoch start and at each logged step; a scheduler at its own interval ("epoch" here).
    assert column(rows, "lr-Adam/pg1") == [(0, 0.1), (0, 0.1)]
    assert column(rows, "lr-Adam/pg2") == [(0, 0.5), (0, 0.5)]
    assert column(rows, "my-sgd") == [(0, 0.3)]


def test_lr_monitor_needs_a_logger_and_valid_interval(tmp_path):
    with pytest.raises(MisconfigurationException, match="logging_interval"):
        LearningRateMonitor(logging_interval="batch")
    with pytest.raises(MisconfigurationException, match=r"has none\. Received: logger=False"):
        quiet_trainer(tmp_path, callbacks=[LearningRateMonitor()], max_steps=1).fit(SmallRegressor(), sum_loader())


# --- Timer -------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self, start: float = 100.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class Ticking(SmallRegressor):
    """Each training step takes 10 s on the fake clock."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock = clock

    def training_step(self, batch, batch_idx):
        self.clock.now += 10
        return super().training_step(batch, batch_idx)


def test_timer_stops_at_duration_on_a_fake_clock_and_resumes_with_elapsed_time(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timer_module, "_now", clock)
    timer = Timer(duration=dict(seconds=25), verbose=False)
    trainer = quiet_trainer(tmp_path, callbacks=[timer], max_epochs=5)
    trainer.fit(Ticking(clock), sum_loader())  # 8 batches per epoch
    assert trainer.global_step == 3  # 10, 20, 30 s: stopped after the batch that crossed 25 s
    assert timer.time_elapsed("train") == 30 and timer.time_remaining() == -5
    ckpt = tmp_path / "t.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=True)["callbacks"]["Timer"]["time_elapsed"]["train"] == 30

    # Resumed with a 45 s budget: 30 s are already spent, so two more 10 s steps.
    timer2 = Timer(duration="00:00:00:45", verbose=False)
    trainer2 = quiet_trainer(tmp_path, callbacks=[timer2], max_epochs=5)
    trainer2.fit(Ticking(clock), sum_loader(), ckpt_path=ckpt)
    assert trainer2.global_step == 5 and timer2.time_elapsed() == 50


def test_timer_epoch_interval_and_stage_times(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timer_module, "_now", clock)
    timer = Timer(duration=timer_module.dt.timedelta(seconds=50), interval="epoch", verbose=False)
    trainer = quiet_trainer(tmp_path, callbacks=[timer], max_epochs=5, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(Ticking(clock), sum_loader(n=12))  # 3 steps (30 s) per epoch: stops after epoch 1
    assert trainer.current_epoch == 2 and trainer.global_step == 6
    assert timer.time_elapsed("validate") == 0  # validation took no time on the fake clock
    assert timer.start_time("train") == 100 and timer.end_time("train") == 160
    assert Timer("01:02:03:04")._duration == 93784
    with pytest.raises(MisconfigurationException, match="DD:HH:MM:SS"):
        Timer("1:2:3")
    with pytest.raises(MisconfigurationException, match="interval"):
        Timer(interval="batch")


def test_timer_duration_is_parsed_as_trainer_max_time_is():
    assert Timer(duration="00:12:00:00")._duration == Timer(duration={"hours": 12})._duration == 12 * 3600
    assert Timer(duration="1:2:3:4")._duration == 93784  # the same forms Trainer(max_time=...) accepts
    with pytest.raises(MisconfigurationException, match=r"`duration` must be 'DD:HH:MM:SS'.*Received: duration='1 hour'"):
        Timer(duration="1 hour")


# --- ThroughputMonitor ----------------------------------------------------------------------------------------------
def test_throughput_numbers_match_counts_on_a_fake_clock(tmp_path, monkeypatch):
    clock = FakeClock(0.0)

    def tick():  # each reading is 0.5 s after the previous one: one per batch after the start
        clock.now += 0.5
        return clock.now

    monkeypatch.setattr(throughput_module, "_now", tick)

    class WithFlops(SmallRegressor):
        flops_per_batch = 1000

        def test_step(self, batch, batch_idx):
            pass

    logger = CSVLogger(tmp_path)
    monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch[0].size(0), length_fn=lambda b: 3 * b[0].size(0),
                                window_size=2, available_flops=4000)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[monitor], max_epochs=1, log_every_n_steps=2,
                            limit_val_batches=0)
    trainer.fit(WithFlops(), sum_loader(n=24, batch_size=4))  # 6 batches of 4
    rows = read_csv(logger)
    assert column(rows, "train/batches") == [(1, 2), (3, 4), (5, 6)]
    assert column(rows, "train/samples") == [(1, 8), (3, 16), (5, 24)]
    assert column(rows, "train/lengths") == [(1, 24), (3, 48), (5, 72)]
    assert column(rows, "train/time") == [(1, 1.0), (3, 2.0), (5, 3.0)]
    assert column(rows, "train/device/batches_per_sec") == [(1, 2.0), (3, 2.0), (5, 2.0)]
    assert column(rows, "train/device/samples_per_sec") == [(1, 8.0), (3, 8.0), (5, 8.0)]
    assert column(rows, "train/device/items_per_sec") == [(1, 24.0), (3, 24.0), (5, 24.0)]
    assert column(rows, "train/device/flops_per_sec") == [(1, 2000.0), (3, 2000.0), (5, 2000.0)]
    assert column(rows, "train/device/mfu") == [(1, 0.5), (3, 0.5), (5, 0.5)]

    # Test: every n-th batch of the run, at the batch count.
    trainer.test(WithFlops(), sum_loader(n=16, batch_size=8), verbose=False)
    rows = read_csv(logger)
    assert column(rows, "test/samples") == [(2, 16)]
    assert column(rows, "test/device/samples_per_sec") == [(2, 16.0)]


# --- SpikeDetection --------------------------------------------------------------------------------------------------
class Scripted(SmallRegressor):
    """training_step returns a chosen loss value per batch (still connected to the weights)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def training_step(self, batch, batch_idx):
        return self.net[0].weight.sum() * 0 + self.values[batch_idx]


def test_spike_detection_raises_on_an_injected_spike(tmp_path):
    values = [1.0, 1.1, 0.9, 1.0, 1.05, 10.0, 1.0, 1.0]
    path = tmp_path / "skips"
    detector = SpikeDetection(window=4, warmup=1, rtol=2.0, exclude_batches_path=path)
    trainer = quiet_trainer(tmp_path, callbacks=[detector], max_epochs=1)
    with pytest.raises(TrainingSpikeException, match="batch 5"):
        trainer.fit(Scripted(values), sum_loader(n=32))
    assert trainer.global_step == 6
    assert json.loads((path / "skip_batches.json").read_text()) == [4, 5]
    assert list(detector.running) == pytest.approx([1.1, 0.9, 1.0, 1.05])  # the window of accepted losses


def test_spike_detection_tolerances_mode_and_warn_only(tmp_path):
    # 2.5 vs a mean of 1.0: above rtol=1 (diff 1.5 >= 1.0) but below atol=2: no spike.
    trainer = quiet_trainer(tmp_path, callbacks=[SpikeDetection(atol=2.0, rtol=1.0)], max_epochs=1)
    trainer.fit(Scripted([1.0, 1.0, 2.5, 1.0, 1.0, 1.0, 1.0, 1.0]), sum_loader(n=32))
    assert trainer.global_step == 8
    # mode="max": a drop is the spike; warn_only keeps training.
    detector = SpikeDetection(mode="max", rtol=0.5, warn_only=True)
    trainer = quiet_trainer(tmp_path, callbacks=[detector], max_epochs=1)
    with pytest.warns(UserWarning, match="spike detected in batch 3"):
        trainer.fit(Scripted([1.0, 1.0, 1.0, 0.2, 1.0, 1.0, 1.0, 1.0]), sum_loader(n=32))
    assert trainer.global_step == 8 and detector.bad_batches == [2, 3]
    # A NaN loss is always a spike with finite_only (the default).
    with pytest.raises(TrainingSpikeException, match="batch 2"):
        quiet_trainer(tmp_path, callbacks=[SpikeDetection()], max_epochs=1).fit(
            Scripted([1.0, 1.0, float("nan")] + [1.0] * 5), sum_loader(n=32))


# --- DeviceStatsMonitor ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="CPU statistics come from Linux /proc")
def test_device_stats_monitor_logs_cpu_statistics(tmp_path):
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[DeviceStatsMonitor()], max_epochs=1,
                            log_every_n_steps=2, limit_train_batches=4, limit_val_batches=0)
    trainer.fit(SmallRegressor(), sum_loader())
    rows = read_csv(logger)
    start = column(rows, "DeviceStatsMonitor.on_train_batch_start/cpu_vm_percent")
    end = column(rows, "DeviceStatsMonitor.on_train_batch_end/cpu_percent")
    assert [s for s, _ in start] == [1, 3] and [s for s, _ in end] == [1, 3]
    assert all(0 < v <= 100 for _, v in start) and all(0 <= v <= 100 for _, v in end)
    rss = column(rows, "DeviceStatsMonitor.on_train_batch_end/cpu_rss_bytes")
    assert all(v > 10e6 for _, v in rss)  # a Python process with torch holds well over 10 MB
    with pytest.raises(MisconfigurationException, match="logger"):
        quiet_trainer(tmp_path, callbacks=[DeviceStatsMonitor()], max_steps=1).fit(SmallRegressor(), sum_loader())


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="CPU statistics come from Linux /proc")
def test_device_stats_monitor_logs_at_the_loops_logging_steps_under_accumulation(tmp_path):
    """12 batches, windows of 3: optimizer steps 1-4; with log_every_n_steps=2 the loop logs at steps
    1 and 3, each from the batch that closes the window, and so must the monitor (once each)."""
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[DeviceStatsMonitor()], max_epochs=1,
                            accumulate_grad_batches=3, log_every_n_steps=2, limit_train_batches=12, limit_val_batches=0)
    trainer.fit(SmallRegressor(), sum_loader(n=48))
    rows = read_csv(logger)
    assert [s for s, _ in column(rows, "DeviceStatsMonitor.on_train_batch_start/cpu_vm_percent")] == [1, 3]
    assert [s for s, _ in column(rows, "DeviceStatsMonitor.on_train_batch_end/cpu_percent")] == [1, 3]
