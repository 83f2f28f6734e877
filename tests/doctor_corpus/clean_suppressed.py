"""Findings silenced on purpose with `# noqa: FMxxx` (on the line, or on the class line)."""

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl


class Quick(pl.LightningModule):  # noqa: FM502 (a self-contained demo model)
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1).to("cuda") if torch.cuda.is_available() else None  # noqa: FM101

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).sum()

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
