"""Tuner.lr_find / scale_batch_size and the LearningRateFinder / BatchSizeFinder callbacks: the numbers
they find, and that the model and Trainer are exactly as before (weights bitwise, and a following fit)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import BatchSizeFinder, LearningRateFinder
from fulmen.errors import MisconfigurationException
from fulmen.tuner import LRFinder, Tuner
from fulmen.tuner.batch_size_scaling import _MemoryMeter, is_oom_error
from helpers import quiet_trainer

pytestmark = pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated")


def dataset(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g))


class Net(pl.LightningModule):
    def __init__(self, lr: float = 0.01, batch_size: int = 8, hidden: int = 32, oom_above: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.lr = lr
        self.batch_size = batch_size
        self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        self.data = dataset()

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.hparams.oom_above is not None and len(x) > self.hparams.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- learning rate ---------------------------------------------------------------------------


def test_lr_find_records_the_schedule_and_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = Net()
    before = weights(model)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    callbacks_before = list(trainer.callbacks)
    finder = Tuner(trainer).lr_find(model, min_lr=1e-5, max_lr=1.0, num_training=40, early_stop_threshold=None)
    assert isinstance(finder, LRFinder)
    lrs, losses = finder.results["lr"], finder.results["loss"]
    assert len(lrs) == len(losses) == 40
    # exponential schedule as in Lightning: min_lr first, then min_lr * (max/min) ** ((k + 1) / n), ending at max_lr
    expected = [1e-5] + [1e-5 * (1.0 / 1e-5) ** ((k + 1) / 40) for k in range(1, 40)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[-1] == pytest.approx(1.0)
    suggestion = finder.suggestion()
    assert 1e-5 < suggestion < 1.0 and suggestion in lrs
    assert model.lr == suggestion == model.hparams.lr  # update_attr=True by default
    assert_same(weights(model), before)  # bit for bit
    assert trainer.global_step == 0 and trainer.current_epoch == 0
    assert trainer.callbacks == callbacks_before


def test_lr_find_smoothed_loss_and_suggestion_follow_lightning(tmp_path):
    """The same search under PyTorch Lightning 2.6 gives the same learning rates, losses and suggestion."""
    lightning = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.tuner import Tuner as LightningTuner

    class LightningNet(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.lr = 0.01
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def loader():
        return DataLoader(dataset(), batch_size=8)  # no shuffling: both see the same batches

    torch.manual_seed(1)
    ours = Net()
    torch.manual_seed(1)
    theirs = LightningNet()
    assert_same(weights(ours.net), weights(theirs.net))
    kwargs = dict(min_lr=1e-4, max_lr=3.0, num_training=30, update_attr=False)
    mine = Tuner(quiet_trainer(tmp_path / "f", max_epochs=10)).lr_find(ours, train_dataloaders=loader(), **kwargs)
    lt = lightning.Trainer(default_root_dir=tmp_path / "l", max_epochs=10, logger=False, enable_checkpointing=False,
                           enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    ref = LightningTuner(lt).lr_find(theirs, train_dataloaders=loader(), **kwargs)
    assert mine.results["lr"] == pytest.approx(ref.results["lr"], rel=1e-12)
    assert mine.results["loss"] == pytest.approx(ref.results["loss"], rel=1e-5)
    assert len(mine.results["loss"]) < 30  # the loss diverged at large lrs: both stopped at the same point
    assert mine.suggestion() == ref.suggestion()


def test_lr_find_linear_mode_and_plot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    finder = Tuner(quiet_trainer(tmp_path, max_epochs=5)).lr_find(
        Net(), min_lr=0.001, max_lr=0.1, num_training=20, mode="linear", update_attr=False
    )
    lrs = finder.results["lr"]
    assert lrs[0] == pytest.approx(0.001) and lrs[-1] == pytest.approx(0.1)
    steps = [b - a for a, b in zip(lrs[1:], lrs[2:])]
    assert steps == pytest.approx([0.099 / 20] * len(steps))  # evenly spaced
    fig = finder.plot(suggest=True, show=False)
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "Learning rate"
    curve, dot = ax.lines
    assert list(curve.get_xdata()) == lrs
    assert list(dot.get_xdata()) == [finder.suggestion()] and dot.get_color() == "red"


def test_learning_rate_finder_callback_leaves_the_fit_as_without_it(tmp_path):
    def fit(callbacks):
        torch.manual_seed(3)
        model = Net()
        quiet_trainer(tmp_path, max_epochs=2, callbacks=callbacks).fit(model)
        return model

    finder = LearningRateFinder(num_training_steps=15, update_attr=False)
    plain, tuned = fit([]), fit([finder])
    assert len(finder.optimal_lr.results["lr"]) == 15
    assert_same(weights(tuned), weights(plain))  # same data order, same optimizer state, same weights


def test_learning_rate_finder_callback_applies_the_suggestion(tmp_path):
    seen = {}

    class Spy(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            seen["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
            seen["steps"] = trainer.global_step

    finder = LearningRateFinder(num_training_steps=20, min_lr=1e-4, max_lr=1.0)
    model = Net()
    quiet_trainer(tmp_path, max_epochs=1, callbacks=[finder, Spy()]).fit(model)
    assert seen["lr"] == model.lr == finder.optimal_lr.suggestion()
    assert seen["steps"] == 8  # one epoch of 64 / 8 batches after the search, counted from 0


def test_lr_find_errors(tmp_path, monkeypatch):
    with pytest.raises(MisconfigurationException, match="Received: mode='cubic'"):
        LearningRateFinder(mode="cubic")
    with pytest.raises(AttributeError, match="attr_name='rate'"):
        Tuner(quiet_trainer(tmp_path)).lr_find(Net(), attr_name="rate")
    finder = LRFinder("exponential", 1e-3, 1.0, 3)
    finder.results = {"lr": [1e-3, 1e-2, 1e-1], "loss": [1.0, 0.5, 0.2]}
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fulmen\[tuner\]'"):
        finder.plot()


# --- batch size ------------------------------------------------------------------------------


def step_bytes(batch_size: int) -> int:
    """What BatchSizeFinder counts for one training step of Net at `batch_size` on CPU."""
    model, meter = Net(), _MemoryMeter(None, torch.device("cpu"))
    x, y = (t.clone() for t in dataset()[:batch_size])  # own storage, as a collated batch has
    meter.on_train_batch_start(None, None, (x, y), 0)
    with meter.hooks():
        model.training_step((x, y), 0).backward()
    meter.on_train_batch_end(None, None, None, (x, y), 0)
    return meter.peak


def test_memory_meter_grows_with_the_batch():
    a, b, c = step_bytes(1), step_bytes(2), step_bytes(10)
    per_sample = b - a
    assert per_sample > 0 and c == a + 9 * per_sample  # the activations and the batch: linear in its size


@pytest.mark.parametrize("mode, expected", [("power", 16), ("binsearch", 24)])
def test_scale_batch_size_fits_a_memory_budget(tmp_path, mode, expected):
    budget = step_bytes(24) + 10  # 24 fits, 25 does not
    torch.manual_seed(0)
    model = Net()
    before = weights(model)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    found = Tuner(trainer).scale_batch_size(model, mode=mode, init_val=2, steps_per_trial=2, margin=0.0,
                                            max_memory_bytes=budget)
    assert found == expected == model.batch_size == model.hparams.batch_size
    assert_same(weights(model), before)
    assert trainer.global_step == 0


def test_scale_batch_size_catches_out_of_memory_errors(tmp_path):
    model = Net(oom_above=20)
    assert Tuner(quiet_trainer(tmp_path)).scale_batch_size(model, mode="power", steps_per_trial=1) == 16
    model = Net(oom_above=20)
    found = Tuner(quiet_trainer(tmp_path)).scale_batch_size(model, mode="binsearch", steps_per_trial=1, margin=0.1)
    assert found == 18  # 20 found, less the 10% margin
    # the dataset's length caps the doubling
    assert Tuner(quiet_trainer(tmp_path)).scale_batch_size(Net(), steps_per_trial=1) == 64
    assert is_oom_error(torch.cuda.OutOfMemoryError("x")) and not is_oom_error(RuntimeError("shape mismatch"))


def test_scale_batch_size_lets_other_errors_through(tmp_path):
    class Broken(Net):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        Tuner(quiet_trainer(tmp_path)).scale_batch_size(Broken())


def test_batch_size_finder_callback_then_trains_as_with_that_size(tmp_path):
    def fit(model, callbacks):
        quiet_trainer(tmp_path, max_epochs=2, callbacks=callbacks).fit(model)
        return model

    finder = BatchSizeFinder(mode="binsearch", steps_per_trial=1, margin=0.0, max_memory_bytes=step_bytes(12) + 1)
    torch.manual_seed(5)
    tuned = fit(Net(), [finder])
    assert finder.optimal_batch_size == tuned.batch_size == 12
    torch.manual_seed(5)
    direct = fit(Net(batch_size=12), [])
    assert_same(weights(tuned), weights(direct))


def test_scale_batch_size_needs_train_dataloader(tmp_path):
    loader = DataLoader(dataset(), batch_size=4)
    with pytest.raises(MisconfigurationException, match="Received: train_dataloaders passed to fit"):
        Tuner(quiet_trainer(tmp_path)).scale_batch_size(Net(), train_dataloaders=loader)
    with pytest.raises(MisconfigurationException, match="Received: mode='triple'"):
        BatchSizeFinder(mode="triple")


def test_batch_size_and_lr_live_on_a_datamodule(tmp_path):
    class Data(pl.LightningDataModule):
        def __init__(self):
            super().__init__()
            self.batch_size = 4

        def train_dataloader(self):
            return DataLoader(dataset(), batch_size=self.batch_size)

    class Plain(Net):
        train_dataloader = None  # the datamodule provides the data

    data, model = Data(), Plain(oom_above=40)
    del model.batch_size, model.hparams["batch_size"]
    found = Tuner(quiet_trainer(tmp_path)).scale_batch_size(model, datamodule=data, init_val=5, steps_per_trial=1)
    assert found == data.batch_size == 40  # 5, 10, 20, 40; 80 would be over the dataset's 64
    finder = Tuner(quiet_trainer(tmp_path)).lr_find(model, datamodule=data, num_training=20)
    assert len(finder.results["lr"]) == 20 and model.lr == finder.suggestion() is not None
