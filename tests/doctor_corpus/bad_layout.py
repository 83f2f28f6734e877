"""FM501/FM502: data and execution code in the model file."""

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl


class AllInOne(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))  # expect: FM502
        return DataLoader(data, batch_size=8, num_workers=0)

    def train_yourself(self, epochs):
        pl.Trainer(max_epochs=epochs).fit(self)  # expect: FM501


trainer = pl.Trainer(max_epochs=1)  # expect: FM501
trainer.fit(AllInOne())
