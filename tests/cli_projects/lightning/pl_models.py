"""Modules and datamodules written against pytorch_lightning, for the parity scripts beside this
file: the real Lightning runs them with plain python, fulmen with `fulmen run`."""

from __future__ import annotations

import torch
from pytorch_lightning.demos.boring_classes import BoringDataModule, BoringModel


class Model(BoringModel):
    def __init__(self, width: int = 32, lr: float = 0.1, tag: str = "model", batch_size: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 2)


class OtherModel(Model):
    def __init__(self, depth: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.depth = depth


class Data(BoringDataModule):
    def __init__(self, batch_size: int = 4, classes: str = "yes,no") -> None:
        super().__init__()
        self.batch_size = batch_size
