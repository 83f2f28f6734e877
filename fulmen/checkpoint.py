"""Checkpoint files: the dict fulmen writes, crash-safe writing, and safe reading.

Writing goes to a temporary file in the same directory, is flushed and fsynced, then renamed
over the target with `os.replace` (atomic on POSIX), and the directory is fsynced: a crash at
any moment leaves either the old file or the new one under the name, never half a file.

Reading always uses `torch.load(weights_only=True)`: a checkpoint is tensors and plain data, so
a file crafted to run code when unpickled is refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any

import torch

from fulmen.errors import MisconfigurationException


class CheckpointError(MisconfigurationException):
    """A checkpoint file is missing, damaged, or holds something unsafe to load."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)`, such that `path` is never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path | IO, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; damaged or unsafe files raise `CheckpointError`."""
    name = str(path) if isinstance(path, (str, Path)) else getattr(path, "name", "<file object>")
    if isinstance(path, (str, Path)) and not Path(path).is_file():
        raise CheckpointError(
            f"Checkpoint file not found. Received: {name}. Fix: check the path, or use ckpt_path='last'."
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refused to load {name}: it contains objects other than tensors and plain data, which could "
            f"run code when loaded ({str(err).splitlines()[0][:200]}). "
            "Fix: load only checkpoints you trust; re-save it with plain data (fulmen always does)."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint {name} is truncated or corrupted and cannot be read "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}). "
            "Fix: resume from an earlier checkpoint (ckpt_path='last' picks the newest intact one)."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{name} does not hold a checkpoint dict. Received: {type(checkpoint).__name__}. "
            "Fix: pass a file written by Trainer.save_checkpoint or ModelCheckpoint."
        )
    return checkpoint
