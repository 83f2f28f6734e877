"""FM101/FM102/FM103: device handling inside a LightningModule."""

import torch
from torch import nn

import fulmen as pl

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DeviceBound(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1).cuda()  # expect: FM101
        self.mask = torch.ones(4, device="cuda")  # expect: FM101

    def forward(self, x):
        return self.net(x.to("cuda:0"))  # expect: FM101

    def training_step(self, batch, batch_idx):
        x, y = batch
        noise = torch.randn(x.shape)  # expect: FM103
        x = x.to(device)  # expect: FM102
        y = y.to(torch.device("cuda"))  # expect: FM101
        target = y.to(self.hparams.device)  # expect: FM102
        return nn.functional.mse_loss(self(x + noise), target)

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        offsets = torch.arange(8)  # expect: FM103
        return self(x) + offsets.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
