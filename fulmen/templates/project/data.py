"""The data of {{project_name}}: a LightningDataModule owning splits and loaders.

It starts with synthetic data so the project trains at once: one Gaussian cluster per class, the
clusters overlapping, so no model gets every sample right (about 0.85 validation accuracy) and a
few epochs in the network starts to fit the noise of its training set: val_loss turns up and
EarlyStopping ends the run. Replace `_make` with your own loading and keep the rest.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl


class SyntheticDataModule(pl.LightningDataModule):
    """Clusters of `input_dim` features around one random center per class, split train/val/test.

    Example:
        >>> dm = SyntheticDataModule(num_samples=100)
        >>> dm.setup("fit")
        >>> len(dm.train_set), len(dm.val_set)
        (80, 20)
    """

    def __init__(self, num_samples: int = 1024, input_dim: int = 16, num_classes: int = 3, batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()

    def _make(self, n: int, seed: int) -> TensorDataset:
        hp = self.hparams
        # Centers 0.6 apart per feature against noise of 1: the classes overlap (3 apart they would be
        # separable, solved in one epoch, and EarlyStopping would never have anything to do).
        centers = 0.6 * torch.randn(hp.num_classes, hp.input_dim, generator=torch.Generator().manual_seed(hp.seed))
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, hp.num_classes, (n,), generator=g)
        return TensorDataset(centers[y] + torch.randn(n, hp.input_dim, generator=g), y)

    def setup(self, stage: str) -> None:
        # Each split has its own seed, so it is the same in every run and every process.
        n = self.hparams.num_samples
        full = self._make(n, self.hparams.seed + 1)
        n_val = n // 5
        self.train_set = TensorDataset(*(t[n_val:] for t in full.tensors))
        self.val_set = TensorDataset(*(t[:n_val] for t in full.tensors))
        self.test_set = self._make(n // 5, self.hparams.seed + 2)

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle, num_workers=workers,
                          persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
