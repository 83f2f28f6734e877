"""`LightningDataModule`: everything about the data in one reusable object.

It downloads (`prepare_data`), builds datasets per stage (`setup`) and hands out dataloaders; the
defaults of those hooks are `fulmen.module_hooks.DataHooks`. The Trainer calls them at the same
points as the module's data hooks. This file adds what only a datamodule has: its state in
checkpoints (`state_dict`), `from_datasets`, and `load_from_checkpoint` (via `fulmen.saving`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from torch.utils.data import DataLoader, Dataset, IterableDataset  # module-level: code patches datamodule.DataLoader

from fulmen.hparams import HyperparametersMixin
from fulmen.module_hooks import DataHooks

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

DATALOADER_METHODS = ("train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader")


class LightningDataModule(DataHooks, HyperparametersMixin):
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

    name: str | None = None
    # Lightning's checkpoint keys for the datamodule's hyperparameters (beside the module's).
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "datamodule_hparams_type"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.trainer: Trainer | None = None

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Any = None,
        val_dataset: Any = None,
        test_dataset: Any = None,
        predict_dataset: Any = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> LightningDataModule:
        """A datamodule whose dataloaders serve these datasets (each may also be a list or dict of
        datasets); `batch_size`/`num_workers` also go to `__init__` when it takes them.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> dm = LightningDataModule.from_datasets(TensorDataset(torch.arange(6.0)), batch_size=4)
            >>> [len(b[0]) for b in dm.train_dataloader()]
            [4, 2]
        """
        def loaders(datasets: Any, shuffle: bool) -> Any:
            if isinstance(datasets, Dataset):
                shuffle = shuffle and not isinstance(datasets, IterableDataset)
                return DataLoader(datasets, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                  pin_memory=True)
            if isinstance(datasets, dict):
                return {k: loaders(v, shuffle) for k, v in datasets.items()}
            if isinstance(datasets, Iterable):
                return type(datasets)(loaders(v, shuffle) for v in datasets)  # type: ignore[call-arg]
            return datasets

        accepted = inspect.signature(cls.__init__).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        sizes = {"batch_size": batch_size, "num_workers": num_workers}
        datamodule = cls(**datamodule_kwargs, **{k: v for k, v in sizes.items() if takes_kwargs or k in accepted})
        # Instance attributes, as in Lightning: the Trainer treats them as overriding the defaults.
        for method, datasets, shuffle in (("train_dataloader", train_dataset, True), ("val_dataloader", val_dataset, False),
                                          ("test_dataloader", test_dataset, False),
                                          ("predict_dataloader", predict_dataset, False)):
            if datasets is not None:
                setattr(datamodule, method, lambda d=datasets, s=shuffle: loaders(d, s))
        return datamodule

    def state_dict(self) -> dict[str, Any]:
        """State to store in checkpoints (under the class name)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what state_dict returned."""

    def on_exception(self, exception: BaseException) -> None:
        """A fit/validate/test/predict is failing with `exception`."""

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the datamodule from the hyperparameters a checkpoint holds for it
        (`datamodule_hyper_parameters`, overridden by `hparams_file` and `kwargs`) and load its state.

        Example:
            >>> dm = MyData.load_from_checkpoint("best.ckpt", batch_size=64)  # doctest: +SKIP
        """
        from fulmen.saving import _load_from_checkpoint

        return _load_from_checkpoint(cls, checkpoint_path, map_location, hparams_file, None, **kwargs)
