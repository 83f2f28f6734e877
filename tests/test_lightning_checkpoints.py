"""Checkpoints written by real PyTorch Lightning 2.6.6 load into fulmen, safely, and resume.

Each test trains the same small model under Lightning (installed with the `dev` extra) to get a
genuine Lightning checkpoint, then loads it into the equivalent fulmen module. What is pinned:

- Lightning's checkpoints load with `weights_only=True`; hyperparameters come back, and so do
  the value-only classes Lightning stores in them (`pathlib` paths, `argparse.Namespace`, its
  AttributeDict, as a plain dict); a user class is still refused, without running anything.
- `fit(ckpt_path=<Lightning checkpoint>)` resumes at its epoch: an end-of-epoch checkpoint (the
  default ModelCheckpoint) continues with the next epoch; global step, optimizer, scheduler and
  logger step continue; the weights end bit for bit where an uninterrupted Lightning run ends.
- A mid-epoch checkpoint (`every_n_train_steps`) continues the same epoch after the last batch it
  trained on, skipping the earlier batches by index, as fulmen does for its own checkpoints.
  This is a decision: Lightning itself, given a plain DataLoader, restarts the epoch's data at
  the first batch (it warns that the result is unreliable), so its own resumed run sees batch 0's
  data twice and batch 3's never. With `shuffle=False`, fulmen's continuation equals the
  uninterrupted run bit for bit. (With shuffling, Lightning does not store the data order, so
  no tool can recover the rest of that epoch exactly.)
"""

from __future__ import annotations

import argparse
import csv
import enum
import logging
import pathlib
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.checkpoint import CheckpointError, load_checkpoint
from fulmen.loggers import CSVLogger

from helpers import quiet_trainer, random_regression

L = pytest.importorskip("pytorch_lightning")

pytestmark = pytest.mark.filterwarnings("ignore")  # Lightning's own tips and deprecation notices


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def loader() -> DataLoader:
    return DataLoader(random_regression(32, features=4), batch_size=8, shuffle=False)  # 4 steps per epoch


class _Regressor:
    """The model, written once for both frameworks: their LightningModule APIs are the same."""

    def __init__(self, hidden: int = 8, lr: float = 0.1, momentum: float = 0.9, **extra) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.seen: list[tuple[int, int, float]] = []  # (epoch, batch_idx, first input value) per step

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((self.current_epoch, batch_idx, x[0, 0].item()))
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]


class LitRegressor(_Regressor, L.LightningModule):
    pass


class Regressor(_Regressor, pl.LightningModule):
    pass


def lightning_fit(root, model, **trainer_kwargs) -> L.Trainer:
    options = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                   default_root_dir=root, num_sanity_val_steps=0)
    trainer = L.Trainer(**{**options, **trainer_kwargs})
    trainer.fit(model, loader())
    return trainer


def lightning_reference(tmp_path, **trainer_kwargs) -> LitRegressor:
    """An uninterrupted Lightning run from the same initial weights."""
    torch.manual_seed(0)
    model = LitRegressor(hidden=6)
    lightning_fit(tmp_path / "reference", model, enable_checkpointing=False, **trainer_kwargs)
    return model


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    a_state, b_state = a.state_dict(), b.state_dict()
    assert a_state.keys() == b_state.keys()
    for name in a_state:
        assert torch.equal(a_state[name], b_state[name]), name


def test_lightning_checkpoint_loads_with_weights_only_into_the_fulmen_module(tmp_path):
    torch.manual_seed(0)
    lit = LitRegressor(hidden=6, lr=0.05)
    trainer = lightning_fit(tmp_path, lit, max_epochs=2)
    path = trainer.checkpoint_callback.best_model_path
    assert path.endswith("epoch=1-step=8.ckpt")

    raw = torch.load(path, weights_only=True)  # plain hparams: torch alone accepts it
    assert "pytorch-lightning_version" in raw and "loops" in raw
    checkpoint = load_checkpoint(path)
    assert checkpoint["hyper_parameters"] == {"hidden": 6, "lr": 0.05, "momentum": 0.9}

    model = Regressor.load_from_checkpoint(path)
    assert type(model) is Regressor
    assert dict(model.hparams) == {"hidden": 6, "lr": 0.05, "momentum": 0.9}
    assert model.body[0].out_features == 6
    assert_same_weights(model, lit)


def test_fit_resumes_a_lightning_end_of_epoch_checkpoint_at_the_next_epoch(tmp_path):
    reference = lightning_reference(tmp_path, max_epochs=4)

    torch.manual_seed(0)
    first = LitRegressor(hidden=6)
    path = lightning_fit(tmp_path / "lightning", first, max_epochs=2).checkpoint_callback.best_model_path

    torch.manual_seed(123)  # other initial weights: everything must come from the file
    model = Regressor(hidden=6)
    logger = CSVLogger(tmp_path / "logs", name="")
    trainer = quiet_trainer(tmp_path, max_epochs=4, logger=logger, log_every_n_steps=1)
    trainer.fit(model, loader(), ckpt_path=path)

    assert [(epoch, i) for epoch, i, _ in model.seen] == [(e, i) for e in (2, 3) for i in range(4)]
    assert trainer.global_step == 16 and trainer.current_epoch == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.1 * 0.5**4  # the scheduler continued
    assert_same_weights(model, reference)
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row["train_loss"]]
    assert steps == list(range(8, 16))  # the logger's step continues where Lightning's stopped


def test_fit_resumes_a_lightning_mid_epoch_checkpoint_after_its_last_batch(tmp_path):
    reference = lightning_reference(tmp_path, max_epochs=2)

    torch.manual_seed(0)
    first = LitRegressor(hidden=6)
    steps = L.callbacks.ModelCheckpoint(every_n_train_steps=3, save_top_k=-1)
    lightning_fit(tmp_path / "lightning", first, max_steps=3, callbacks=[steps])
    path = tmp_path / "lightning" / "checkpoints" / "epoch=0-step=3.ckpt"
    assert path.is_file()
    progress = torch.load(path, weights_only=True)["loops"]["fit_loop"]
    assert progress["epoch_loop.batch_progress"]["current"]["processed"] == 3  # saved after batch 2 of 4

    torch.manual_seed(123)
    model = Regressor(hidden=6)
    logger = CSVLogger(tmp_path / "logs", name="")
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=1)
    trainer.fit(model, loader(), ckpt_path=path)

    # The rest of epoch 0 (batch 3, with batch 3's data), then all of epoch 1.
    batches = list(loader())
    assert [(epoch, i) for epoch, i, _ in model.seen] == [(0, 3)] + [(1, i) for i in range(4)]
    assert model.seen[0][2] == batches[3][0][0, 0].item()
    assert trainer.global_step == 8 and trainer.current_epoch == 2
    assert_same_weights(model, reference)
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        logged = [int(row["step"]) for row in csv.DictReader(f) if row["train_loss"]]
    assert logged == list(range(3, 8))


# ----------------------------------------------------------------------------------------------
# hyperparameters Lightning stores as objects
# ----------------------------------------------------------------------------------------------
class Mode(enum.Enum):
    FAST = "fast"


def test_lightning_hparams_with_paths_and_namespaces_load_safely(tmp_path):
    torch.manual_seed(0)
    lit = LitRegressor(hidden=6, data_dir=pathlib.Path("/data/digits"), args=argparse.Namespace(batch_size=8))
    path = lightning_fit(tmp_path, lit, max_epochs=1).checkpoint_callback.best_model_path
    with pytest.raises(pickle.UnpicklingError, match="PosixPath|Namespace"):
        torch.load(path, weights_only=True)  # torch's default allowlist refuses them

    checkpoint = load_checkpoint(path)  # still weights_only=True, with the value-only classes allowed
    hparams = checkpoint["hyper_parameters"]
    assert hparams["data_dir"] == pathlib.Path("/data/digits") and isinstance(hparams["data_dir"], pathlib.Path)
    assert hparams["args"] == argparse.Namespace(batch_size=8)
    model = Regressor.load_from_checkpoint(path)
    assert model.hparams.data_dir == pathlib.Path("/data/digits") and model.hparams.args.batch_size == 8
    assert_same_weights(model, lit)


def test_lightning_attribute_dict_loads_as_a_plain_dict(tmp_path):
    # Older Lightning versions pickled `hyper_parameters` as their AttributeDict.
    attribute_dict = L.utilities.parsing.AttributeDict
    path = tmp_path / "old.ckpt"
    torch.manual_seed(0)
    torch.save({"state_dict": Regressor(hidden=5).state_dict(), "epoch": 0, "global_step": 0,
                "hyper_parameters": attribute_dict(hidden=5, lr=0.01)}, path)
    hparams = load_checkpoint(path)["hyper_parameters"]
    assert type(hparams) is dict and hparams == {"hidden": 5, "lr": 0.01}
    assert dict(Regressor.load_from_checkpoint(path).hparams) == {"hidden": 5, "lr": 0.01, "momentum": 0.9}


def test_lightning_checkpoint_with_a_user_class_in_hparams_is_refused(tmp_path):
    torch.manual_seed(0)
    lit = LitRegressor(hidden=6, mode=Mode.FAST)
    path = lightning_fit(tmp_path, lit, max_epochs=1).checkpoint_callback.best_model_path
    with pytest.raises(CheckpointError, match=rf"Refused to load .*epoch=0-step=4\.ckpt: it holds "
                                              rf"{__name__}\.Mode.*Fix: load only checkpoints you trust"):
        Regressor.load_from_checkpoint(path)


class _Touch:
    """Unpickling this creates `target`: a stand-in for code a crafted file would run."""

    def __init__(self, target: pathlib.Path) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def test_the_allowlist_does_not_let_a_payload_through(tmp_path):
    # A path object is allowed; calling a method of one (Path.touch) is not.
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"state_dict": {}, "hyper_parameters": {"data": tmp_path, "x": _Touch(target)}}, evil)
    with pytest.raises(CheckpointError, match="Refused to load"):
        load_checkpoint(evil)
    assert not target.exists()
