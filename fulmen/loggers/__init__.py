"""Experiment loggers: the `Logger` interface, the built-in TensorBoard and CSV loggers, and
`MLFlowLogger` / `WandbLogger` for the optional `mlflow` / `wandb` packages.

Importing this package imports none of TensorBoard, MLflow or wandb; each logger imports its
package when it is created. `CometLogger` and `NeptuneLogger` are Lightning's names for loggers
fulmen does not provide: building one raises with what to use instead.
"""

from fulmen.loggers.base import Logger
from fulmen.loggers.comet import CometLogger  # raises when created
from fulmen.loggers.csv_logs import CSVLogger
from fulmen.loggers.logger import DummyLogger
from fulmen.loggers.mlflow import MLFlowLogger  # imports mlflow only when created
from fulmen.loggers.neptune import NeptuneLogger  # raises when created
from fulmen.loggers.tensorboard import TensorBoardLogger
from fulmen.loggers.wandb import WandbLogger  # imports wandb only when created

__all__ = [
    "CSVLogger", "CometLogger", "DummyLogger", "Logger", "MLFlowLogger", "NeptuneLogger", "TensorBoardLogger",
    "WandbLogger",
]
