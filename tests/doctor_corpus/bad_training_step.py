"""FM201/FM202: training_step that returns nothing or not the loss."""

import torch
from torch.nn import functional as F

import fulmen as pl


class Base(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ForgotReturn(Base):
    def training_step(self, batch, batch_idx):  # expect: FM201
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)


class ReturnsOnOneBranch(Base):
    def training_step(self, batch, batch_idx):  # expect: FM201
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        if batch_idx % 2 == 0:
            return loss
        elif batch_idx > 10:
            raise RuntimeError("too far")


class ReturnsNumbers(Base):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        if batch_idx == 0:
            return loss.item()  # expect: FM202
        if batch_idx == 1:
            return {"acc": loss}  # expect: FM202
        if batch_idx == 2:
            return loss, 0.5  # expect: FM202
        if batch_idx == 3:
            return float(loss)  # expect: FM202
        return loss.detach()  # expect: FM202
