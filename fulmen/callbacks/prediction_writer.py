"""`BasePredictionWriter`: write predictions to disk during `trainer.predict`, per batch and/or per epoch.

Subclass it and implement `write_on_batch_end` (called after each predict batch) and/or
`write_on_epoch_end` (called once with all predictions and their sample indices). Batch indices are
the dataset indices of each batch's samples when the DataLoader uses a plain sampler (as in
Lightning); None otherwise. `WriteInterval` names the three intervals; `writer.interval` is one of
its members, which equal their strings ("batch", ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException
from fulmen.utilities.enums import LightningEnum

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer



class WriteInterval(LightningEnum):
    """When a BasePredictionWriter writes: after each batch, once at the epoch's end, or both.

    >>> WriteInterval("epoch").on_epoch, WriteInterval.BATCH == "batch"
    (True, True)
    """

    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


class BasePredictionWriter(Callback):
    """Base class for writing predictions.

    Args:
        write_interval: "batch", "epoch" or "batch_and_epoch" (or a `WriteInterval`).

    Example:
        >>> import os, torch
        >>> class Writer(BasePredictionWriter):
        ...     def __init__(self, output_dir):
        ...         super().__init__(write_interval="batch")
        ...         self.output_dir = output_dir
        ...     def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
        ...                            dataloader_idx):
        ...         torch.save(prediction, os.path.join(self.output_dir, f"{dataloader_idx}_{batch_idx}.pt"))
    """

    def __init__(self, write_interval: str | WriteInterval = "batch") -> None:
        if write_interval not in list(WriteInterval):
            raise MisconfigurationException(
                f"BasePredictionWriter got an unknown write_interval. Received: write_interval={write_interval!r}. "
                f"Fix: use one of {[i.value for i in WriteInterval]}."
            )
        # The member equal to it (LightningEnum compares in any letter case, so "EPOCH" is EPOCH).
        self.interval = next(i for i in WriteInterval if i == write_interval)
        self._predictions: list[list[Any]] = []
        self._indices: list[list[Any]] = []
        self._samplers: list[Any] = []

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        """Write one batch's prediction."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_on_batch_end for write_interval='batch'.")

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        """Write all predictions: one list per dataloader (a flat list with a single dataloader), as
        `trainer.predict` returns them, and the matching lists of batch indices."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_on_epoch_end for write_interval='epoch'.")

    # --------------------------------------------------------------------------------------------
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loaders = trainer._predict_loaders
        self._predictions = [[] for _ in loaders]
        self._indices = [[] for _ in loaders]
        self._samplers = [_batch_index_source(loader) for loader in loaders]

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        indices = self._batch_indices(dataloader_idx, batch_idx)
        if self.interval.on_epoch:
            self._predictions[dataloader_idx].append(outputs)
            self._indices[dataloader_idx].append(indices)
        if self.interval.on_batch:
            self.write_on_batch_end(trainer, pl_module, outputs, indices, batch, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.interval.on_epoch:
            return
        single = len(self._predictions) == 1
        self.write_on_epoch_end(trainer, pl_module, self._predictions[0] if single else self._predictions,
                                self._indices[0] if single else self._indices)
        self._predictions, self._indices = [], []

    def _batch_indices(self, dataloader_idx: int, batch_idx: int) -> list[int] | None:
        source = self._samplers[dataloader_idx] if dataloader_idx < len(self._samplers) else None
        return None if source is None else source[batch_idx] if batch_idx < len(source) else None


def _batch_index_source(loader: Any) -> list[list[int]] | None:
    """The dataset indices of every batch, from the loader's batch sampler, when it is a plain,
    finite one (drawn again: with a shuffling sampler the order would differ, so None then)."""
    from torch.utils.data import BatchSampler, SequentialSampler

    batch_sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(batch_sampler, BatchSampler) or not isinstance(batch_sampler.sampler, SequentialSampler):
        return None
    return [list(b) for b in batch_sampler]
