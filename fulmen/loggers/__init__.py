"""Experiment loggers: the `Logger` interface and the built-in TensorBoard and CSV loggers.

Importing this package does not import TensorBoard; `TensorBoardLogger` imports it when it
creates its writer.
"""

from fulmen.loggers.base import Logger
from fulmen.loggers.csv_logs import CSVLogger
from fulmen.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger"]
