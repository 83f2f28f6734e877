"""Callbacks: hooks into the Trainer's loops, one per file."""

from fulmen.callbacks.callback import Callback
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar

__all__ = [
    "Callback", "EarlyStopping", "ModelCheckpoint", "ModelSummary", "OnExceptionCheckpoint", "ProgressBar",
    "TQDMProgressBar",
]
