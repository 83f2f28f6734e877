"""A real `Trainer.fit` with the default logger, read back from disk and from a TensorBoard server.

The event files are read with TensorBoard's own `EventAccumulator`; one test starts
`python -m tensorboard.main` on 127.0.0.1 and reads a scalar through its HTTP API. Expected
values are what the module itself logged, recorded as Python floats on the side.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.loggers import TensorBoardLogger

from helpers import get_json, tensorboard_server


class Regression(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        # What was logged, as Python floats (the .item() here is the test's, not the framework's).
        self.train_losses: dict[int, float] = {}  # step -> loss
        self.val_batches: list[tuple[float, int]] = []  # (loss, batch size) of the current validation run
        self.val_means: list[float] = []  # one exact, batch-size-weighted mean per validation run

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.train_losses[self.global_step] = loss.item()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.val_batches.append((loss.item(), len(batch[0])))
        self.log("val_loss", loss)

    def on_validation_epoch_end(self):
        total = sum(loss * n for loss, n in self.val_batches)
        if not self.trainer.sanity_checking:  # the sanity check's metrics are not logged
            self.val_means.append(total / sum(n for _, n in self.val_batches))
        self.val_batches = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _loaders() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    train = DataLoader(TensorDataset(x[:8], y[:8]), batch_size=2)  # 4 steps per epoch
    val = DataLoader(TensorDataset(x[8:], y[8:]), batch_size=3)  # batches of 3, 3, 2
    return train, val


def _fit(root: Path, **kwargs) -> tuple[pl.Trainer, Regression]:
    torch.manual_seed(0)
    model = Regression(**kwargs)
    trainer = pl.Trainer(default_root_dir=root, max_epochs=2, log_every_n_steps=2, enable_progress_bar=False)
    trainer.fit(model, *_loaders())
    return trainer, model


def _events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})  # 0 = keep all
    accumulator.Reload()
    return accumulator


def _scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb_run")
    trainer, model = _fit(root, lr=0.05, hidden=4)
    return root, trainer, model


def test_default_logger_writes_version_0_with_an_event_file(run):
    root, trainer, _ = run
    version_dir = root / "lightning_logs" / "version_0"
    assert isinstance(trainer.logger, TensorBoardLogger)
    assert trainer.log_dir == str(version_dir)
    assert len(list(version_dir.glob("events.out.tfevents.*"))) == 1
    assert yaml.safe_load((version_dir / "hparams.yaml").read_text()) == {"lr": 0.05, "hidden": 4}


def test_event_file_holds_the_logged_steps_and_values(run):
    root, _, model = run
    events = _events(root / "lightning_logs" / "version_0")
    assert set(events.Tags()["scalars"]) == {"train_loss", "val_loss", "epoch", "hp_metric"}

    # log_every_n_steps=2 over 2 epochs of 4 steps: steps 1, 3, 5, 7 (Lightning's k-1, 2k-1, ...).
    train = _scalars(events, "train_loss")
    assert [step for step, _ in train] == [1, 3, 5, 7]
    assert [value for _, value in train] == pytest.approx([model.train_losses[s] for s in (1, 3, 5, 7)], rel=1e-6)
    assert len(set(model.train_losses.values())) == 8  # it did train: every step's loss differs

    # Validation at each epoch end, at the step of the last training batch; the value is the
    # batch-size-weighted mean over the batches of 3, 3 and 2.
    val = _scalars(events, "val_loss")
    assert [step for step, _ in val] == [3, 7]
    assert [value for _, value in val] == pytest.approx(model.val_means, rel=1e-6)
    assert val[0][1] != val[1][1]

    # "epoch" comes with every write: train at 1, 3, 5, 7 and validation at 3, 7.
    assert _scalars(events, "epoch") == [(1, 0.0), (3, 0.0), (3, 0.0), (5, 1.0), (7, 1.0), (7, 1.0)]
    assert _scalars(events, "hp_metric") == [(0, -1.0)]


def test_hparams_reach_the_hparams_plugin(run):
    root, _, _ = run
    events = _events(root / "lightning_logs" / "version_0")
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert set(hparams) == {"lr", "hidden"}
    assert (hparams["lr"].number_value, hparams["hidden"].number_value) == (0.05, 4.0)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [info.name.tag for info in experiment.metric_infos] == ["hp_metric"]


def test_second_fit_gets_the_next_version(tmp_path):
    first, _ = _fit(tmp_path)
    second, _ = _fit(tmp_path, lr=0.01)
    logs = tmp_path / "lightning_logs"
    assert (first.log_dir, second.log_dir) == (str(logs / "version_0"), str(logs / "version_1"))
    assert sorted(p.name for p in logs.iterdir()) == ["version_0", "version_1"]
    assert yaml.safe_load((logs / "version_1" / "hparams.yaml").read_text()) == {"lr": 0.01, "hidden": 4}
    assert [step for step, _ in _scalars(_events(logs / "version_1"), "train_loss")] == [1, 3, 5, 7]


# --- a real TensorBoard server --------------------------------------------------------------------


def test_tensorboard_server_serves_the_val_loss_of_the_run(run, tmp_path):
    root, _, _ = run
    logdir = root / "lightning_logs"
    expected = _scalars(_events(logdir / "version_0"), "val_loss")

    with tensorboard_server(logdir, "val_loss", log_file=tmp_path / "tensorboard.out") as base:
        query = urllib.parse.urlencode({"run": "version_0", "tag": "val_loss"})
        points = get_json(f"{base}/data/plugin/scalars/scalars?{query}")  # [[wall_time, step, value], ...]
        assert [(step, value) for _, step, value in points] == expected
        assert [step for step, _ in expected] == [3, 7]
