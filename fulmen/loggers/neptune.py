"""`NeptuneLogger` under Lightning's name: importable; building one raises (Neptune was shut down, and
Lightning 2.6's NeptuneLogger refuses to be built as well)."""

from __future__ import annotations

from typing import Any

from fulmen.loggers.base import Logger


class NeptuneLogger(Logger):
    """Lightning's Neptune logger: building one raises RuntimeError, as Lightning 2.6's does."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NeptuneLogger:
        raise RuntimeError(
            "NeptuneLogger is not supported by fulmen (the Neptune service has been shut down, and Lightning 2.6 "
            "no longer supports it either). Received: logger=NeptuneLogger(...). Fix: use MLFlowLogger, "
            "WandbLogger, TensorBoardLogger or CSVLogger."
        )
