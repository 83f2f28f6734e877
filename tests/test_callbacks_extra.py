"""The toolbox callbacks, each checked against what it must do: values in the CSV log, optimizer
steps counted, weights compared with hand-computed averages, files on disk."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import (
    BackboneFinetuning,
    BasePredictionWriter,
    DeviceStatsMonitor,
    EMAWeightAveraging,
    GradientAccumulationScheduler,
    LambdaCallback,
    LearningRateMonitor,
    ModelPruning,
    RichModelSummary,
    RichProgressBar,
    SpikeDetection,
    StochasticWeightAveraging,
    ThroughputMonitor,
    Timer,
    TrainingSpikeException,
    WeightAveraging,
)
from fulmen.callbacks import throughput_monitor as throughput_module
from fulmen.callbacks import timer as timer_module
from fulmen.errors import MisconfigurationException
from fulmen.loggers import CSVLogger


# --- small models and helpers ------------------------------------------------------------------
class Regressor(pl.LightningModule):
    """Linear regression on 4 features; optimizer and scheduler chosen per test."""

    def __init__(self, make_optim=None, hidden: int = 0, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(4, hidden or 1)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        if hidden:
            layers += [nn.ReLU(), nn.Linear(hidden, 1)]
        self.net = nn.Sequential(*layers)
        self.make_optim = make_optim or (lambda params: torch.optim.SGD(params, lr=0.05))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return self.make_optim(self.parameters())


def loader(n: int = 32, batch_size: int = 4, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def read_csv(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# --- LearningRateMonitor -------------------------------------------------------------------------
def test_lr_monitor_logs_step_scheduler_values_at_each_step(tmp_path):
    def optim(params):
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
                                                    "interval": "step"}}

    logger = CSVLogger(tmp_path)
    monitor = LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[monitor], max_steps=4, log_every_n_steps=1)
    trainer.fit(Regressor(optim), loader())
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
    trainer.fit(Regressor(optim), loader(n=16))  # 4 steps per epoch
    rows = read_csv(logger)
    assert [(s, pytest.approx(v)) for s, v in column(rows, "lr-Adam")] == [(0, 0.1), (4, 0.01), (8, 0.001)]
    assert column(rows, "lr-Adam-momentum") == [(0, 0.9), (4, 0.9), (8, 0.9)]  # Adam's beta1

    # "step" with log_every_n_steps=3: the batches whose step + 1 is a multiple of 3.
    logger = CSVLogger(tmp_path, name="steps")
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[LearningRateMonitor(logging_interval="step")],
                            max_epochs=2, log_every_n_steps=3)
    trainer.fit(Regressor(optim), loader(n=16))
    assert [s for s, _ in column(read_csv(logger), "lr-Adam")] == [2, 5]


def test_lr_monitor_names_param_groups_and_named_schedulers(tmp_path):
    class TwoGroups(Regressor):
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
                  limit_train_batches=1, log_every_n_steps=1).fit(model, loader())
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
        quiet_trainer(tmp_path, callbacks=[LearningRateMonitor()], max_steps=1).fit(Regressor(), loader())


# --- Timer -------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self, start: float = 100.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class Ticking(Regressor):
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
    trainer.fit(Ticking(clock), loader())  # 8 batches per epoch
    assert trainer.global_step == 3  # 10, 20, 30 s: stopped after the batch that crossed 25 s
    assert timer.time_elapsed("train") == 30 and timer.time_remaining() == -5
    ckpt = tmp_path / "t.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=True)["callbacks"]["Timer"]["time_elapsed"]["train"] == 30

    # Resumed with a 45 s budget: 30 s are already spent, so two more 10 s steps.
    timer2 = Timer(duration="00:00:00:45", verbose=False)
    trainer2 = quiet_trainer(tmp_path, callbacks=[timer2], max_epochs=5)
    trainer2.fit(Ticking(clock), loader(), ckpt_path=ckpt)
    assert trainer2.global_step == 5 and timer2.time_elapsed() == 50


def test_timer_epoch_interval_and_stage_times(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timer_module, "_now", clock)
    timer = Timer(duration=timer_module.dt.timedelta(seconds=50), interval="epoch", verbose=False)
    trainer = quiet_trainer(tmp_path, callbacks=[timer], max_epochs=5, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(Ticking(clock), loader(n=12))  # 3 steps (30 s) per epoch: stops after epoch 1
    assert trainer.current_epoch == 2 and trainer.global_step == 6
    assert timer.time_elapsed("validate") == 0  # validation took no time on the fake clock
    assert timer.start_time("train") == 100 and timer.end_time("train") == 160
    assert Timer("01:02:03:04")._duration == 93784
    with pytest.raises(MisconfigurationException, match="DD:HH:MM:SS"):
        Timer("1:2:3")
    with pytest.raises(MisconfigurationException, match="interval"):
        Timer(interval="batch")


# --- LambdaCallback ------------------------------------------------------------------------------------
def test_lambda_callback_calls_the_given_functions(tmp_path):
    calls: list[tuple] = []
    cb = LambdaCallback(on_fit_start=lambda trainer, module: calls.append(("fit_start",)),
                        on_train_epoch_end=lambda trainer, module: calls.append(("epoch_end", trainer.current_epoch)),
                        on_train_batch_end=lambda trainer, module, out, batch, i: calls.append(("batch", i)))
    quiet_trainer(tmp_path, callbacks=[cb], max_epochs=2, limit_train_batches=2).fit(Regressor(), loader())
    assert calls == [("fit_start",), ("batch", 0), ("batch", 1), ("epoch_end", 0), ("batch", 0), ("batch", 1),
                     ("epoch_end", 1)]
    assert cb.state_key == "LambdaCallback"
    with pytest.raises(MisconfigurationException, match="not callback hooks"):
        LambdaCallback(on_trian_start=print)


# --- GradientAccumulationScheduler -------------------------------------------------------------------
@pytest.mark.parametrize("customised", [False, True])
def test_accumulation_scheduler_steps_per_epoch(tmp_path, customised):
    steps: list[int] = []

    class Counting(Regressor):
        pass

    if customised:  # takes the hook-by-hook step path instead of the plain one
        Counting.on_before_optimizer_step = lambda self, optimizer: steps.append(self.trainer.current_epoch)
    trainer = quiet_trainer(tmp_path, callbacks=[GradientAccumulationScheduler({1: 2, 2: 4})], max_epochs=3)
    per_epoch: list[int] = []
    trainer.callbacks.append(LambdaCallback(on_train_epoch_end=lambda t, m: per_epoch.append(t.global_step)))
    trainer.fit(Counting(), loader(n=32))  # 8 batches per epoch
    assert per_epoch == [8, 12, 14]
    assert trainer.accumulate_grad_batches == 4
    if customised:
        assert steps == [0] * 8 + [1] * 4 + [2] * 2


def test_accumulation_scheduler_checks_arguments(tmp_path):
    with pytest.raises(TypeError):
        GradientAccumulationScheduler({})
    with pytest.raises(MisconfigurationException, match="factors"):
        GradientAccumulationScheduler({0: 0})
    with pytest.raises(ValueError, match="Both"):
        quiet_trainer(tmp_path, callbacks=[GradientAccumulationScheduler({0: 2})], accumulate_grad_batches=3,
                      max_steps=1).fit(Regressor(), loader())


# --- BackboneFinetuning ----------------------------------------------------------------------------------
class WithBackbone(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)


def test_backbone_finetuning_freezes_then_unfreezes_with_the_right_lr(tmp_path):
    seen: list[tuple] = []

    def record(trainer, module, batch, batch_idx):
        if batch_idx == 0:
            opt = trainer.optimizers[0]
            seen.append((trainer.current_epoch, module.backbone[0].weight.requires_grad,
                         [round(g["lr"], 10) for g in opt.param_groups]))

    model = WithBackbone()
    start = params(model.backbone)
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=2, backbone_initial_ratio_lr=0.1)
    trainer = quiet_trainer(tmp_path, callbacks=[finetuning, LambdaCallback(on_train_batch_start=record)],
                            max_epochs=2)
    trainer.fit(model, loader(n=8))
    assert seen == [(0, False, [0.1]), (1, False, [0.1])]
    assert all(torch.equal(a, b) for a, b in zip(start, params(model.backbone)))  # frozen: untouched
    ckpt = tmp_path / "epoch2.ckpt"
    trainer.save_checkpoint(ckpt)

    # Resume for 3 more epochs: unfrozen at epoch 2 with lr 0.1 * 0.1, then doubled each epoch.
    seen.clear()
    trainer = quiet_trainer(tmp_path, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=2,
                                                                    backbone_initial_ratio_lr=0.1),
                                                 LambdaCallback(on_train_batch_start=record)], max_epochs=5)
    trainer.fit(WithBackbone(), loader(n=8), ckpt_path=ckpt)
    assert seen == [(2, True, [0.1, 0.01]), (3, True, [0.1, 0.02]), (4, True, [0.1, 0.04])]
    assert not torch.equal(start[0], trainer.lightning_module.backbone[0].weight)
    ckpt2 = tmp_path / "epoch5.ckpt"
    trainer.save_checkpoint(ckpt2)
    state = torch.load(ckpt2, weights_only=True)
    assert len(state["optimizer_states"][0]["param_groups"]) == 2
    groups = state["callbacks"]["BackboneFinetuning"]["internal_optimizer_metadata"][0]
    assert [g["params"] for g in groups] == [["head.weight", "head.bias"], ["backbone.0.weight", "backbone.0.bias"]]

    # Resuming after the unfreeze puts the second group back, with its lr, before the optimizer state loads.
    seen.clear()
    trainer = quiet_trainer(tmp_path, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=2,
                                                                    backbone_initial_ratio_lr=0.1),
                                                 LambdaCallback(on_train_batch_start=record)], max_epochs=6)
    trainer.fit(WithBackbone(), loader(n=8), ckpt_path=ckpt2)
    assert seen == [(5, True, [0.1, 0.08])]


def test_backbone_finetuning_needs_a_backbone(tmp_path):
    with pytest.raises(MisconfigurationException, match="backbone"):
        quiet_trainer(tmp_path, callbacks=[BackboneFinetuning()], max_steps=1).fit(Regressor(), loader())


# --- StochasticWeightAveraging ----------------------------------------------------------------------------
def test_swa_weights_are_the_average_of_the_epoch_start_weights(tmp_path):
    snapshots: dict[int, list[torch.Tensor]] = {}
    recorder = LambdaCallback(on_train_epoch_start=lambda t, m: snapshots.__setitem__(t.current_epoch, params(m)))
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2, annealing_epochs=1)
    model = Regressor(hidden=3)
    trainer = quiet_trainer(tmp_path, callbacks=[recorder, swa], max_epochs=4)
    trainer.fit(model, loader(n=16))
    # swa_epoch_start=2 (1-based): the weights at the start of epochs 1, 2 and 3 are averaged.
    expected = [torch.stack([snapshots[e][i] for e in (1, 2, 3)]).mean(0) for i in range(len(snapshots[0]))]
    for got, want in zip(model.parameters(), expected):
        torch.testing.assert_close(got.detach(), want)
    assert type(trainer.lr_scheduler_configs[0].scheduler).__name__ == "SWALR"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)
    assert swa.n_averaged.item() == 3


def test_swa_recomputes_batch_norm_statistics_for_the_averaged_weights(tmp_path):
    torch.manual_seed(0)
    model = Regressor(hidden=3, batch_norm=True)
    data = loader(n=16)
    trainer = quiet_trainer(tmp_path, callbacks=[StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1)],
                            max_epochs=2)
    trainer.fit(model, data)
    x = torch.cat([b[0] for b in data])
    with torch.no_grad():
        features = model.net[0](x)
    bn = model.net[1]
    torch.testing.assert_close(bn.running_mean, features.mean(0))
    assert bn.momentum == 0.1  # restored after the cumulative pass
    assert model.training


# --- WeightAveraging / EMAWeightAveraging --------------------------------------------------------------------
def test_ema_equals_hand_computed_average_and_is_used_for_validation(tmp_path):
    after_steps: list[list[torch.Tensor]] = []
    in_validation: list[list[torch.Tensor]] = []

    class Recording(Regressor):
        def validation_step(self, batch, batch_idx):
            if batch_idx == 0:
                in_validation.append(params(self))
            return super().validation_step(batch, batch_idx)

    decay = 0.5
    recorder = LambdaCallback(on_train_batch_end=lambda t, m, o, b, i: after_steps.append(params(m)))
    model = Recording()
    trainer = quiet_trainer(tmp_path, callbacks=[recorder, EMAWeightAveraging(decay=decay)], max_epochs=2,
                            limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, loader(), loader(n=4))

    def ema(snapshots):
        avg = [p.clone() for p in snapshots[0]]
        for snap in snapshots[1:]:
            avg = [decay * a + (1 - decay) * s for a, s in zip(avg, snap)]
        return avg

    for got, want in zip(in_validation[0], ema(after_steps[:3])):  # validation after epoch 0 sees the EMA
        torch.testing.assert_close(got, want)
    for got, want in zip(model.parameters(), ema(after_steps)):  # and the module ends with it
        torch.testing.assert_close(got.detach(), want)


def test_weight_averaging_mean_and_checkpoint_layout(tmp_path):
    after_steps: list[list[torch.Tensor]] = []
    current: list[list[torch.Tensor]] = []
    recorder = LambdaCallback(on_train_batch_end=lambda t, m, o, b, i: after_steps.append(params(m)))
    averaging = WeightAveraging()
    model = Regressor()
    trainer = quiet_trainer(tmp_path, callbacks=[recorder, averaging], max_epochs=1, limit_train_batches=4)

    def save(t, m):
        current.append(params(m))
        t.save_checkpoint(tmp_path / "mid.ckpt")

    trainer.callbacks.append(LambdaCallback(on_train_epoch_end=save))
    trainer.fit(model, loader())
    mean = [torch.stack(ps).mean(0) for ps in zip(*after_steps)]
    for got, want in zip(model.parameters(), mean):
        torch.testing.assert_close(got.detach(), want)
    state = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    torch.testing.assert_close(state["state_dict"]["net.0.weight"], mean[0])
    torch.testing.assert_close(state["current_model_state"]["net.0.weight"], current[0][0])
    assert state["averaging_state"]["n_averaged"].item() == 4


# --- BasePredictionWriter ---------------------------------------------------------------------------------------
class FileWriter(BasePredictionWriter):
    def __init__(self, out: Path, interval: str):
        super().__init__(interval)
        self.out = out

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        torch.save({"prediction": prediction, "indices": batch_indices}, self.out / f"batch_{batch_idx}.pt")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        torch.save({"predictions": predictions, "indices": batch_indices}, self.out / "epoch.pt")


@pytest.mark.parametrize("interval", ["batch", "epoch", "batch_and_epoch"])
def test_prediction_writer_writes_files(tmp_path, interval):
    class Predictor(Regressor):
        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch[0])

    model = Predictor()
    data = loader(n=10, batch_size=4)
    trainer = quiet_trainer(tmp_path, callbacks=[FileWriter(tmp_path, interval)])
    assert trainer.predict(model, data, return_predictions=False) is None
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    want = {"batch": ["batch_0.pt", "batch_1.pt", "batch_2.pt"], "epoch": ["epoch.pt"]}
    assert files == sorted(want.get(interval, want["batch"] + want["epoch"]))
    x = torch.cat([b[0] for b in data])
    if interval != "epoch":
        saved = torch.load(tmp_path / "batch_2.pt", weights_only=True)
        assert saved["indices"] == [8, 9]
        torch.testing.assert_close(saved["prediction"], model(x[8:]).detach())
    if interval != "batch":
        saved = torch.load(tmp_path / "epoch.pt", weights_only=True)
        assert saved["indices"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        torch.testing.assert_close(torch.cat(saved["predictions"]), model(x).detach())


# --- ThroughputMonitor ----------------------------------------------------------------------------------------------
def test_throughput_numbers_match_counts_on_a_fake_clock(tmp_path, monkeypatch):
    clock = FakeClock(0.0)

    def tick():  # each reading is 0.5 s after the previous one: one per batch after the start
        clock.now += 0.5
        return clock.now

    monkeypatch.setattr(throughput_module, "_now", tick)

    class WithFlops(Regressor):
        flops_per_batch = 1000

        def test_step(self, batch, batch_idx):
            pass

    logger = CSVLogger(tmp_path)
    monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch[0].size(0), length_fn=lambda b: 3 * b[0].size(0),
                                window_size=2, available_flops=4000)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[monitor], max_epochs=1, log_every_n_steps=2,
                            limit_val_batches=0)
    trainer.fit(WithFlops(), loader(n=24, batch_size=4))  # 6 batches of 4
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
    trainer.test(WithFlops(), loader(n=16, batch_size=8), verbose=False)
    rows = read_csv(logger)
    assert column(rows, "test/samples") == [(2, 16)]
    assert column(rows, "test/device/samples_per_sec") == [(2, 16.0)]


# --- SpikeDetection --------------------------------------------------------------------------------------------------
class Scripted(Regressor):
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
        trainer.fit(Scripted(values), loader(n=32))
    assert trainer.global_step == 6
    assert json.loads((path / "skip_batches.json").read_text()) == [4, 5]
    assert list(detector.running) == pytest.approx([1.1, 0.9, 1.0, 1.05])  # the window of accepted losses


def test_spike_detection_tolerances_mode_and_warn_only(tmp_path):
    # 2.5 vs a mean of 1.0: above rtol=1 (diff 1.5 >= 1.0) but below atol=2: no spike.
    trainer = quiet_trainer(tmp_path, callbacks=[SpikeDetection(atol=2.0, rtol=1.0)], max_epochs=1)
    trainer.fit(Scripted([1.0, 1.0, 2.5, 1.0, 1.0, 1.0, 1.0, 1.0]), loader(n=32))
    assert trainer.global_step == 8
    # mode="max": a drop is the spike; warn_only keeps training.
    detector = SpikeDetection(mode="max", rtol=0.5, warn_only=True)
    trainer = quiet_trainer(tmp_path, callbacks=[detector], max_epochs=1)
    with pytest.warns(UserWarning, match="spike detected in batch 3"):
        trainer.fit(Scripted([1.0, 1.0, 1.0, 0.2, 1.0, 1.0, 1.0, 1.0]), loader(n=32))
    assert trainer.global_step == 8 and detector.bad_batches == [2, 3]
    # A NaN loss is always a spike with finite_only (the default).
    with pytest.raises(TrainingSpikeException, match="batch 2"):
        quiet_trainer(tmp_path, callbacks=[SpikeDetection()], max_epochs=1).fit(
            Scripted([1.0, 1.0, float("nan")] + [1.0] * 5), loader(n=32))


# --- DeviceStatsMonitor ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="CPU statistics come from Linux /proc")
def test_device_stats_monitor_logs_cpu_statistics(tmp_path):
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[DeviceStatsMonitor()], max_epochs=1,
                            log_every_n_steps=2, limit_train_batches=4, limit_val_batches=0)
    trainer.fit(Regressor(), loader())
    rows = read_csv(logger)
    start = column(rows, "DeviceStatsMonitor.on_train_batch_start/cpu_vm_percent")
    end = column(rows, "DeviceStatsMonitor.on_train_batch_end/cpu_percent")
    assert [s for s, _ in start] == [1, 3] and [s for s, _ in end] == [1, 3]
    assert all(0 < v <= 100 for _, v in start) and all(0 <= v <= 100 for _, v in end)
    rss = column(rows, "DeviceStatsMonitor.on_train_batch_end/cpu_rss_bytes")
    assert all(v > 10e6 for _, v in rss)  # a Python process with torch holds well over 10 MB
    with pytest.raises(MisconfigurationException, match="logger"):
        quiet_trainer(tmp_path, callbacks=[DeviceStatsMonitor()], max_steps=1).fit(Regressor(), loader())


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="CPU statistics come from Linux /proc")
def test_device_stats_monitor_logs_at_the_loops_logging_steps_under_accumulation(tmp_path):
    """12 batches, windows of 3: optimizer steps 1-4; with log_every_n_steps=2 the loop logs at steps
    1 and 3, each from the batch that closes the window, and so must the monitor (once each)."""
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, logger=logger, callbacks=[DeviceStatsMonitor()], max_epochs=1,
                            accumulate_grad_batches=3, log_every_n_steps=2, limit_train_batches=12, limit_val_batches=0)
    trainer.fit(Regressor(), loader(n=48))
    rows = read_csv(logger)
    assert [s for s, _ in column(rows, "DeviceStatsMonitor.on_train_batch_start/cpu_vm_percent")] == [1, 3]
    assert [s for s, _ in column(rows, "DeviceStatsMonitor.on_train_batch_end/cpu_percent")] == [1, 3]


# --- ModelPruning ------------------------------------------------------------------------------------------------------
def test_pruning_sparsity_is_exact_and_permanent(tmp_path):
    model = Regressor(hidden=10)
    first = model.net[0]
    pruning = ModelPruning("l1_unstructured", parameters_to_prune=[(first, "weight")], amount=0.5,
                           use_lottery_ticket_hypothesis=False)
    trainer = quiet_trainer(tmp_path, callbacks=[pruning], max_epochs=1, limit_train_batches=2)
    trainer.fit(model, loader())
    assert (first.weight == 0).sum().item() == 20  # exactly half of the 40 weights
    assert not hasattr(first, "weight_orig") and not hasattr(first, "weight_mask")  # made permanent
    assert isinstance(first.weight, nn.Parameter)


def test_pruning_global_over_epochs_with_lottery_ticket_and_checkpoint(tmp_path):
    model = Regressor(hidden=6)
    initial = model.net[0].weight.detach().clone()
    pruning = ModelPruning("l1_unstructured", amount=lambda epoch: 0.25, parameter_names=["weight"],
                           make_pruning_permanent=True)
    saved: list = []
    trainer = quiet_trainer(tmp_path, callbacks=[pruning], max_epochs=2, limit_train_batches=2)
    trainer.callbacks.append(LambdaCallback(on_train_epoch_end=lambda t, m: saved.append(
        t.save_checkpoint(tmp_path / f"e{t.current_epoch}.ckpt"))))
    trainer.fit(model, loader())
    weights = [model.net[0].weight, model.net[2].weight]
    assert sum(w.numel() for w in weights) == 30  # 24 + 6
    zeros = sum((w == 0).sum().item() for w in weights)
    # 25% of 30 = 7.5 -> 8 after epoch 0 (torch rounds), then 25% of the 22 left = 5.5 -> 6 more.
    assert zeros == 8 + 6
    kept = model.net[0].weight != 0
    torch.testing.assert_close(model.net[0].weight[kept], initial[kept])  # lottery ticket: initial values
    state = torch.load(tmp_path / "e0.ckpt", weights_only=True)["state_dict"]
    assert "net.0.weight" in state and "net.0.weight_orig" not in state
    assert (state["net.0.weight"] == 0).sum() + (state["net.2.weight"] == 0).sum() == 8


def test_pruning_rejects_bad_arguments():
    with pytest.raises(MisconfigurationException, match="pruning_fn"):
        ModelPruning("l3_magic")
    with pytest.raises(MisconfigurationException, match="pruning_dim"):
        ModelPruning("ln_structured", use_global_unstructured=False)
    with pytest.raises(MisconfigurationException, match="unstructured"):
        ModelPruning("random_structured", pruning_dim=0)


# --- RichProgressBar / RichModelSummary ----------------------------------------------------------------------------------
def test_rich_progress_bar_and_summary_draw(tmp_path):
    import io

    out = io.StringIO()
    console = {"file": out, "force_terminal": False, "width": 120}
    bar = RichProgressBar(leave=True, console_kwargs=console)
    summary = RichModelSummary(max_depth=1, console_kwargs=console)
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, accelerator="cpu",
                         callbacks=[bar, summary], max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(Regressor(hidden=2), loader(), loader(n=4))
    text = out.getvalue()
    assert "Epoch 0" in text and "3/3" in text
    assert "Sequential" in text and "Trainable params" in text
    assert trainer.progress_bar_callback is bar


def test_rich_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(ModuleNotFoundError, match=r"fulmen\[rich\]"):
        RichProgressBar()
    with pytest.raises(ModuleNotFoundError, match=r"fulmen\[rich\]"):
        RichModelSummary()


# --- docs/callbacks.md ---------------------------------------------------------------------------------------------------
def test_docs_snippets_run(tmp_path, monkeypatch, capsys):
    """Every python block of docs/callbacks.md runs as is (in a scratch directory)."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "callbacks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) == 14
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/callbacks.md block {i}", "exec"), {"__name__": f"doc_block_{i}"})
    out = capsys.readouterr().out
    assert "Training spike detected in batch 6" in out
    assert "0.25 of the weights are zero" in out
    assert "['0.pt', '1.pt', '2.pt']" in out


def test_ema_checkpoint_resumes_with_current_and_averaged_weights(tmp_path):
    ckpt = tmp_path / "ema.ckpt"
    saver = LambdaCallback(on_train_epoch_end=lambda t, m: t.save_checkpoint(ckpt))  # before the average is copied in
    trainer = quiet_trainer(tmp_path, callbacks=[EMAWeightAveraging(decay=0.5), saver], max_epochs=1,
                            limit_train_batches=3)
    trainer.fit(Regressor(), loader())
    state = torch.load(ckpt, weights_only=True)
    assert not torch.equal(state["current_model_state"]["net.0.weight"], state["state_dict"]["net.0.weight"])

    seen: dict[str, list[torch.Tensor]] = {}
    resumed = EMAWeightAveraging(decay=0.5)
    recorder = LambdaCallback(on_train_start=lambda t, m: seen.update(
        module=params(m), average=[p.detach().clone() for p in resumed._average_model.module.parameters()]))
    trainer = quiet_trainer(tmp_path, callbacks=[resumed, recorder], max_epochs=2, limit_train_batches=3)
    trainer.fit(Regressor(), loader(), ckpt_path=ckpt)
    torch.testing.assert_close(seen["module"][0], state["current_model_state"]["net.0.weight"])
    torch.testing.assert_close(seen["average"][0], state["state_dict"]["net.0.weight"])
    assert resumed._latest_update_step == 6


def test_timer_duration_is_parsed_as_trainer_max_time_is():
    assert Timer(duration="00:12:00:00")._duration == Timer(duration={"hours": 12})._duration == 12 * 3600
    assert Timer(duration="1:2:3:4")._duration == 93784  # the same forms Trainer(max_time=...) accepts
    with pytest.raises(MisconfigurationException, match=r"`duration` must be 'DD:HH:MM:SS'.*Received: duration='1 hour'"):
        Timer(duration="1 hour")


def test_swa_batch_norm_pass_reads_several_training_loaders_and_a_step_without_batch_idx(tmp_path):
    """With a dict of training loaders the batch-norm pass gets the combined batches, as training_step does."""
    class TwoLoaders(Regressor):
        def training_step(self, batch):  # no batch_idx, a dict of two batches
            return sum(super(TwoLoaders, self).training_step(part, 0) for part in batch.values())

    torch.manual_seed(0)
    model = TwoLoaders(hidden=3, batch_norm=True)
    a, b = loader(n=16), loader(n=8, seed=1)
    trainer = quiet_trainer(tmp_path, callbacks=[StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1)],
                            max_epochs=2)
    trainer.fit(model, {"a": a, "b": b})
    # max_size_cycle: 4 combined batches, all of a and b read twice; momentum=None makes the running
    # mean the plain average of the 8 batch means the pass saw.
    with torch.no_grad():
        batch_means = [model.net[0](x).mean(0) for pair in zip(a, list(b) * 2) for x, _ in pair]
    torch.testing.assert_close(model.net[1].running_mean, torch.stack(batch_means).mean(0))
    assert model.training
