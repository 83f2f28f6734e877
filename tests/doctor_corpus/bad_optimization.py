"""FM301/FM302/FM303: optimizer calls that belong to the Trainer, or are missing."""

import torch
from torch.nn import functional as F

import fulmen as pl


class StepsItself(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()  # expect: FM301
        loss = F.mse_loss(self.net(x), y)
        loss.backward()  # expect: FM301
        optimizer.step()  # expect: FM301
        return loss

    def on_train_epoch_end(self):
        self.optimizers().step()  # expect: FM301

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ManualWithPlainBackward(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt = self.optimizers()
        opt.zero_grad()
        loss = F.mse_loss(self.net(x), y)
        loss.backward()  # expect: FM302
        opt.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ManualWithoutBackward(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):  # expect: FM303
        x, y = batch
        opt = self.optimizers()
        opt.zero_grad()
        self.log("loss", F.mse_loss(self.net(x), y))
        opt.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ForgotTheManualFlag(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = F.mse_loss(self.net(batch[0]), batch[1])
        self.manual_backward(loss)  # expect: FM301
        opt.step()  # expect: FM301
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
