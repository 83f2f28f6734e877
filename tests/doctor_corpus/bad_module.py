"""FM401/FM402/FM403: module set-up and logging."""

import torch
from torch.nn import functional as F

import fulmen as pl


class NoSuperInit(pl.LightningModule):
    def __init__(self, lr=0.1):  # expect: FM401
        self.lr = lr

    def training_step(self, batch, batch_idx):
        return batch.sum()


class LogsInForward(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.losses = []
        self.by_batch = {}

    def forward(self, x):
        out = self.net(x)
        self.log("out_mean", out.mean())  # expect: FM402
        return out

    def training_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        loss = F.mse_loss(pred, y)
        self.losses.append(loss)  # expect: FM403
        self.by_batch[batch_idx] = pred  # expect: FM403
        self.log("parts", [loss, pred.mean()])  # expect: FM403
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class NoSuperData(pl.LightningDataModule):
    def __init__(self, batch_size=32):  # expect: FM401
        self.batch_size = batch_size
