"""Lightning's checkpoint-IO plugins: how a checkpoint file is written, read and deleted.

The strategy calls its `checkpoint_io` for every checkpoint file (rank 0 writes and removes,
every rank may read), so a `CheckpointIO` passed in `Trainer(plugins=[...])` sees each save from
ModelCheckpoint, `trainer.save_checkpoint` and preemption, each removal of a checkpoint ModelCheckpoint
no longer keeps, and the read of `fit(ckpt_path=...)`.

- `CheckpointIO`: the interface (subclass it: `save_checkpoint`, `load_checkpoint`, `remove_checkpoint`).
- `TorchCheckpointIO`: fulmen's own crash-safe writes (`fulmen.checkpoint.atomic_save`: a temporary
  file, fsync, rename) and its loader. What runs when no plugin is given.
- `AsyncCheckpointIO(checkpoint_io=None)`: the save runs on a background thread, on a copy of the
  tensors taken before returning (so training may change the weights meanwhile); `teardown` (end of
  the run) waits for it, and an error from a background save is raised at the next save or then.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from fulmen.data import apply_to_tensors

__all__ = ["AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO"]


class CheckpointIO(ABC):
    """Writes, reads and deletes checkpoint files; `path` is what ModelCheckpoint or the user named."""

    @abstractmethod
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        """Write `checkpoint` (a dict of tensors and plain values) to `path`."""

    @abstractmethod
    def load_checkpoint(self, path: str | Path, map_location: Any = None) -> dict[str, Any]:
        """The checkpoint dict stored at `path`."""

    @abstractmethod
    def remove_checkpoint(self, path: str | Path) -> None:
        """Delete the checkpoint at `path`."""

    def teardown(self) -> None:
        """Called at the end of a run; nothing by default."""


def _no_storage_options(plugin: CheckpointIO, storage_options: Any) -> None:
    if storage_options is not None:
        # TypeError, as Lightning raises here.
        raise TypeError(
            f"{type(plugin).__name__}.save_checkpoint takes no storage_options: it writes local files with "
            f"torch.save. Received: storage_options={storage_options!r}. Fix: drop storage_options, or pass "
            "a CheckpointIO subclass of your own that understands them."
        )


class TorchCheckpointIO(CheckpointIO):
    """`torch.save` / `torch.load` of local files, the write crash-safe (the old file stays whole until
    the new one is on disk)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        from fulmen.checkpoint import atomic_save

        _no_storage_options(self, storage_options)
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None) -> dict[str, Any]:
        from fulmen.checkpoint import load_checkpoint

        return load_checkpoint(path, map_location=map_location)

    def remove_checkpoint(self, path: str | Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class AsyncCheckpointIO(CheckpointIO):
    """Saves through `checkpoint_io` (default `TorchCheckpointIO`) on one background thread, in order."""

    def __init__(self, checkpoint_io: CheckpointIO | None = None) -> None:
        self.checkpoint_io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
        self._executor: ThreadPoolExecutor | None = None  # made on first save: teardown ends it
        self._pending: list[Future] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        self._raise_failed()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fulmen-async-ckpt")
        # A copy now: the next optimizer step would otherwise change the tensors being written.
        snapshot = apply_to_tensors(checkpoint, lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t)
        self._pending.append(self._executor.submit(self.checkpoint_io.save_checkpoint, snapshot, path, storage_options))

    def load_checkpoint(self, path: str | Path, map_location: Any = None) -> dict[str, Any]:
        self._wait()  # it may be the checkpoint still being written
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location)

    def remove_checkpoint(self, path: str | Path) -> None:
        self._wait()  # a save of the same path may still be queued
        self.checkpoint_io.remove_checkpoint(path)

    def teardown(self) -> None:
        self._wait()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.checkpoint_io.teardown()

    def _wait(self) -> None:
        for future in self._pending:
            future.exception()  # waits; the error, if any, is raised below
        self._raise_failed()

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            if future.exception() is not None:
                raise future.exception()

