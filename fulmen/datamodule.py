"""`LightningDataModule`: everything about the data in one reusable object.

It downloads (`prepare_data`), builds datasets per stage (`setup`) and hands out dataloaders.
The Trainer calls these at the same points as the module's data hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fulmen.hparams import AttributeDict, HyperparametersMixin

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

DATALOADER_METHODS = ("train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader")


class LightningDataModule(HyperparametersMixin):
    """Base class for data modules. Override the dataloader methods you need.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> class RandomData(LightningDataModule):
        ...     def setup(self, stage):
        ...         self.data = TensorDataset(torch.randn(64, 3), torch.randn(64, 1))
        ...     def train_dataloader(self):
        ...         return DataLoader(self.data, batch_size=16, shuffle=True)
    """

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self._hparams = AttributeDict()
        self._hparams_initial = AttributeDict()
        self._log_hyperparams = True

    def prepare_data(self) -> None:
        """Download or write data (called once, before setup)."""

    def setup(self, stage: str) -> None:
        """Build datasets for `stage` ('fit', 'validate', 'test' or 'predict')."""

    def teardown(self, stage: str) -> None:
        """Release what setup built."""

    def train_dataloader(self) -> Any:
        raise NotImplementedError

    def val_dataloader(self) -> Any:
        raise NotImplementedError

    def test_dataloader(self) -> Any:
        raise NotImplementedError

    def predict_dataloader(self) -> Any:
        raise NotImplementedError

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """Move `batch` to `device`; when overridden here, used instead of the module's (as in Lightning)."""
        from fulmen.data import move_to_device

        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def state_dict(self) -> dict[str, Any]:
        """State to store in checkpoints (under the class name)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
