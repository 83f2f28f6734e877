"""`CometLogger` under Lightning's name: importable; building one raises (fulmen has no Comet integration)."""

from __future__ import annotations

import importlib.util
from typing import Any

from fulmen.errors import MisconfigurationException
from fulmen.loggers.base import Logger


class CometLogger(Logger):
    """Lightning's Comet logger. fulmen does not provide it: building one raises, naming what to use instead."""

    def __new__(cls, *args: Any, **kwargs: Any) -> CometLogger:
        if importlib.util.find_spec("comet_ml") is None:
            raise ModuleNotFoundError(
                "CometLogger needs the `comet_ml` package, which is not installed, and fulmen does not provide a "
                "Comet logger either. Received: logger=CometLogger(...). Fix: use MLFlowLogger, WandbLogger, "
                "TensorBoardLogger or CSVLogger, or log to Comet from your own Logger subclass."
            )
        raise MisconfigurationException(
            "CometLogger is not supported by fulmen. Received: logger=CometLogger(...). Fix: use MLFlowLogger, "
            "WandbLogger, TensorBoardLogger or CSVLogger, or log to Comet from your own fulmen Logger subclass."
        )
