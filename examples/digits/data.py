"""`DigitsDataModule`: the data half of the digits example (split, normalise, load).

scikit-learn's digits set (1,797 images of 8x8 pixels, values 0-16) ships inside the package,
so nothing is downloaded. The split is fixed by a seed, so the same images land in train,
validation and test in every run and every process.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl


class DigitsDataModule(pl.LightningDataModule):
    """Seeded train/val/test split of the digits data, normalised with training statistics.

    Example:
        >>> dm = DigitsDataModule(batch_size=32)
        >>> dm.setup("fit")
        >>> len(dm.train_set), len(dm.val_set), len(dm.test_set)
        (1257, 270, 270)
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def prepare_data(self) -> None:
        # The place for downloads (run once, before setup). Loading here checks that
        # scikit-learn and its bundled data are present before any training starts.
        from sklearn.datasets import load_digits

        load_digits()

    def setup(self, stage: str) -> None:
        from sklearn.datasets import load_digits

        # Every stage builds all three splits: it takes milliseconds and keeps the split
        # identical whichever of fit/test/predict runs first.
        images, labels = load_digits(return_X_y=True)
        x = torch.as_tensor(images, dtype=torch.float32)
        y = torch.as_tensor(labels, dtype=torch.long)

        n = len(x)
        n_val, n_test = round(n * self.hparams.val_fraction), round(n * self.hparams.test_fraction)
        # Its own generator: the split must not depend on (or disturb) the global seed.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.split_seed))
        train_idx, val_idx, test_idx = order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]

        # One mean and std over all training pixels, not per pixel: some border pixels are
        # always 0 in training, and a per-pixel std of 0 would blow up the few test images
        # where they are not.
        mean, std = x[train_idx].mean(), x[train_idx].std()
        x = (x - mean) / std
        self.train_set = TensorDataset(x[train_idx], y[train_idx])
        self.val_set = TensorDataset(x[val_idx], y[val_idx])
        self.test_set = TensorDataset(x[test_idx], y[test_idx])

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
            num_workers=workers, persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
