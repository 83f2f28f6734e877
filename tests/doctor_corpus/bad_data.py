"""FM601/FM602: data loader settings."""

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets

import fulmen as pl


class JpegFolder(Dataset):
    def __init__(self, root):
        self.files = sorted(Path(root).glob("*.pt"))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        return torch.load(self.files[index])


class ImagesData(pl.LightningDataModule):
    def __init__(self, root="data"):
        super().__init__()
        self.root = root

    def setup(self, stage):
        self.train_set = datasets.ImageFolder(f"{self.root}/train")
        self.val_set = JpegFolder(f"{self.root}/val")

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=64, shuffle=True)  # expect: FM601

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=64, shuffle=True, num_workers=4)  # expect: FM602

    def test_dataloader(self):
        return DataLoader(JpegFolder(f"{self.root}/test"), batch_size=64)  # expect: FM601


def loaders(train_data, val_data):
    return DataLoader(train_data, shuffle=True), DataLoader(val_data, shuffle=True)  # expect: FM602
