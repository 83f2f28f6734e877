"""A module that trains on CPU but has two doctor findings, for the fit-start check."""

import torch
from torch.nn import functional as F

import fulmen as pl


class KeepsGraphs(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.losses = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.losses.append(loss)  # expect: FM403
        return loss + torch.zeros(1).sum()  # expect: FM103

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
