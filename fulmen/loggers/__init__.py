"""Experiment loggers: the `Logger` interface, the built-in TensorBoard and CSV loggers, and
`MLFlowLogger` / `WandbLogger` for the optional `mlflow` / `wandb` packages.

Importing this package imports none of TensorBoard, MLflow or wandb; each logger imports its
package when it is created.
"""

from fulmen.loggers.base import Logger
from fulmen.loggers.csv_logs import CSVLogger
from fulmen.loggers.mlflow import MLFlowLogger  # imports mlflow only when created
from fulmen.loggers.tensorboard import TensorBoardLogger
from fulmen.loggers.wandb import WandbLogger  # imports wandb only when created

__all__ = ["CSVLogger", "Logger", "MLFlowLogger", "TensorBoardLogger", "WandbLogger"]
