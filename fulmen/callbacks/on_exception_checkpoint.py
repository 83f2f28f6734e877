"""OnExceptionCheckpoint: save a checkpoint when fit ends with an exception (Ctrl-C included)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fulmen.callbacks.callback import Callback


class OnExceptionCheckpoint(Callback):
    """Save `<dirpath>/<filename>.ckpt` when an exception (or KeyboardInterrupt) ends `fit`.

    The file is overwritten by the next failure, and removed once a later fit with this callback
    finishes normally, so its presence means "the last run died here". Resume with
    `trainer.fit(model, ckpt_path=callback.ckpt_path)` (in a ModelCheckpoint's directory,
    `ckpt_path="last"` finds it too). The state saved is the one at the moment of the exception:
    batches that had finished count as done, a half-accumulated gradient is lost. Arguments
    follow PyTorch Lightning 2.x.

    Example:
        >>> OnExceptionCheckpoint("checkpoints").ckpt_path
        'checkpoints/on_exception.ckpt'
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception") -> None:
        if not isinstance(dirpath, (str, os.PathLike)):
            raise ValueError(
                f"OnExceptionCheckpoint: `dirpath` must be a directory path. Received: dirpath={dirpath!r}. "
                "Fix: e.g. OnExceptionCheckpoint('checkpoints')."
            )
        if not isinstance(filename, str) or not filename:
            raise ValueError(
                f"OnExceptionCheckpoint: `filename` must be a non-empty string, without the extension. "
                f"Received: filename={filename!r}. Fix: e.g. filename='on_exception'."
            )
        # Not resolved later: an exception can come at any moment, before any setup.
        self.dirpath = os.fspath(dirpath)
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if trainer.state.fn == "fit" and trainer.lightning_module is not None:
            trainer.save_checkpoint(self.ckpt_path)  # atomic: an older file is replaced whole

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # Teardown runs only when fit finished normally: the failure this file recorded is over.
        if stage == "fit":
            Path(self.ckpt_path).unlink(missing_ok=True)
