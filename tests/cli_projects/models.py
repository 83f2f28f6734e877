"""Tiny modules and datamodules for the LightningCLI scripts beside this file (fulmen's names)."""

from __future__ import annotations

import json
import os

import torch
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.cli import LRSchedulerCallable, OptimizerCallable, instantiate_class
from fulmen.demos.boring_classes import BoringDataModule, BoringModel, RandomDataset


class Model(BoringModel):
    """BoringModel with hyperparameters the config sets."""

    def __init__(self, width: int = 32, lr: float = 0.1, tag: str = "model", batch_size: int = 1,
                 num_classes: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, num_classes)

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.step(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.step(batch))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self.predicted_batches = getattr(self, "predicted_batches", 0) + 1
        return self(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class OtherModel(Model):
    """A second choice for `--model=OtherModel`."""

    def __init__(self, depth: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.depth = depth


class Data(BoringDataModule):
    """BoringDataModule with a batch size and a class count a link can read."""

    def __init__(self, batch_size: int = 4, length: int = 64, classes: str = "yes,no") -> None:
        super().__init__()
        self.batch_size, self.length = batch_size, length
        self.num_classes = len(classes.split(","))  # known once built: a link with apply_on="instantiate"
        self.random_full = RandomDataset(32, length * 4)

    def train_dataloader(self):
        return DataLoader(self.random_train, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.random_val, batch_size=self.batch_size)


class InitDictModel(Model):
    """The optimizer and scheduler as `class_path`/`init_args` dicts (add_optimizer_args(link_to=...))."""

    def __init__(self, optimizer_init: dict, scheduler_init: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.optimizer_init, self.scheduler_init = optimizer_init, scheduler_init

    def configure_optimizers(self):
        optimizer = instantiate_class(self.parameters(), self.optimizer_init)
        return [optimizer], [instantiate_class(optimizer, self.scheduler_init)]


class InjectedModel(BoringModel):
    """Dependency injection: the optimizer and scheduler come in as callables."""

    def __init__(self, optimizer: OptimizerCallable = torch.optim.Adam,
                 scheduler: LRSchedulerCallable = torch.optim.lr_scheduler.ConstantLR) -> None:
        super().__init__()
        self.optimizer, self.scheduler = optimizer, scheduler

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}


def report(cli, **extra) -> None:
    """Write what the CLI built and ran as JSON to $CLI_REPORT (when set)."""
    path = os.environ.get("CLI_REPORT")
    if not path:
        return
    trainer = cli.trainer
    optimizers = [{"class": type(o).__name__, "lr": o.param_groups[0]["lr"]} for o in trainer.optimizers]
    schedulers = [{"class": type(c.scheduler).__name__, "monitor": c.monitor} for c in trainer.lr_scheduler_configs]
    data = {
        "model": type(cli.model).__name__,
        "hparams": {k: v for k, v in dict(getattr(cli.model, "hparams", {})).items() if _plain(v)},
        "datamodule": None if cli.datamodule is None else type(cli.datamodule).__name__,
        "batch_size": getattr(cli.datamodule, "batch_size", None),
        "subcommand": cli.subcommand,
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "global_step": trainer.global_step,
        "callbacks": [type(c).__name__ for c in trainer.callbacks],
        "loggers": [type(lg).__name__ for lg in trainer.loggers],
        "log_dir": trainer.log_dir,
        "optimizers": optimizers,
        "schedulers": schedulers,
        "predicted_batches": getattr(cli.model, "predicted_batches", 0),
        **extra,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _plain(value) -> bool:
    return isinstance(value, (int, float, str, bool, type(None)))
