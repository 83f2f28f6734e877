"""Run with `fulmen run`: which fulmen objects Lightning's CLI import paths give (JSON)."""

import json

import fulmen.cli
import fulmen.callbacks
import fulmen.loggers
from lightning.pytorch.cli import (  # noqa: F401 (the import itself is under test)
    ArgsType, LightningArgumentParser, LightningCLI, LRSchedulerCallable, OptimizerCallable, ReduceLROnPlateau,
    SaveConfigCallback, instantiate_class,
)
import lightning.pytorch.cli
import pytorch_lightning.callbacks
import pytorch_lightning.cli
import pytorch_lightning.loggers

names = ["ArgsType", "LightningArgumentParser", "LightningCLI", "LRSchedulerCallable", "OptimizerCallable",
         "ReduceLROnPlateau", "SaveConfigCallback", "instantiate_class"]
print(json.dumps({
    "lightning.pytorch.cli": {n: getattr(lightning.pytorch.cli, n) is getattr(fulmen.cli, n) for n in names},
    "pytorch_lightning.cli": {n: getattr(pytorch_lightning.cli, n) is getattr(fulmen.cli, n) for n in names},
    "callbacks": {n: getattr(pytorch_lightning.callbacks, n) is getattr(fulmen.callbacks, n)
                  for n in ("EarlyStopping", "ModelCheckpoint", "LearningRateMonitor")},
    "loggers": {n: getattr(pytorch_lightning.loggers, n) is getattr(fulmen.loggers, n)
                for n in ("CSVLogger", "TensorBoardLogger")},
}))
