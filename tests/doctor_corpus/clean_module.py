"""The legitimate look-alikes of every doctor code: none of this may be reported."""

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl


class Clean(pl.LightningModule):
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(4, 1)
        self.register_buffer("scale", torch.ones(1))  # buffers follow the module to its device
        self.step_losses = []

    def forward(self, x):
        return self.net(x.to(torch.float32)) * self.scale  # a dtype, not a device

    def training_step(self, batch, batch_idx):
        x, y = batch
        if not torch.isfinite(x).all():
            return None  # an explicit skip is intended
        noise = torch.randn(x.shape, device=self.device)
        mask = torch.ones(4).type_as(x)
        offset = torch.zeros(1).to(x.device)
        zero = torch.tensor(0.0)  # 0-dim tensors combine with any device
        pred = self(x + noise * mask) + offset + zero
        loss = F.mse_loss(pred, y)
        acc = (pred.round() == y).float().mean()
        self.step_losses.append(loss.detach())
        self.step_losses.append(acc)
        self.log("train_loss", loss)
        try:
            return {"loss": loss, "acc": acc}
        finally:
            self.step_losses.append(loss.item())

    def validation_step(self, batch, batch_idx):
        x, y = batch
        target = y.to(self.device)
        self.log("val_loss", F.mse_loss(self(x), target))
        values = x.cpu().numpy()
        return values

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return [t.to(device) for t in batch]  # this hook's job

    def backward(self, loss, *args, **kwargs):
        loss.backward(*args, **kwargs)  # the hook that owns backward

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        optimizer.step(closure=optimizer_closure)  # the hook that owns the step

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        optimizer.zero_grad(set_to_none=True)

    def lr_scheduler_step(self, scheduler, metric):
        scheduler.step()

    def on_train_epoch_end(self):
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()  # a scheduler, not an optimizer
        self.step_losses.clear()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1)]


class LoopsUntilReturn(Clean):
    def training_step(self, batch, batch_idx):
        while True:
            x, y = batch
            return F.mse_loss(self(x), y)


class Manual(pl.LightningModule):
    def __init__(self):
        super(Manual, self).__init__()
        self.automatic_optimization = False
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt = self.optimizers()
        opt.zero_grad()
        loss = F.mse_loss(self.net(x), y)
        self.manual_backward(loss)
        grads = torch.autograd.grad(loss, x, allow_unused=True) if x.requires_grad else None
        opt.step()
        del grads

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Data(pl.LightningDataModule):
    def __init__(self):
        pl.LightningDataModule.__init__(self)

    def setup(self, stage):
        self.train_set = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
        self.val_set = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=8, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=8, shuffle=False)


def make_loader(dataset, shuffle):
    return DataLoader(dataset, shuffle=shuffle, num_workers=2)


def main(epochs: int = 1) -> None:
    """A small single-file script: the Trainer is built only when it runs, not on import."""
    trainer = pl.Trainer(max_epochs=epochs)
    trainer.fit(Clean(), datamodule=Data())


if __name__ == "__main__":
    trainer = pl.Trainer(max_epochs=1)
    trainer.fit(Clean(), datamodule=Data())
