"""A training run with fulmen's defaults, for the autoresume tests: it SIGKILLs itself at a given step.

    python train_with_defaults.py ROOT KILL_AT_STEP OUT [csv]

The Trainer gets only `default_root_dir`, `max_epochs` and `log_every_n_steps`: the default
logger (TensorBoard, or a CSVLogger with "csv") in `ROOT/lightning_logs/version_N` and the default
ModelCheckpoint (end of each epoch, into that version's `checkpoints/`). The script always calls
`fit(ckpt_path="last")`, so re-running the same command after a crash resumes the run.
Training shuffles and uses dropout, so only an exact resume gives the same weights.
KILL_AT_STEP=-1 never dies. At the end the final weights are saved to OUT.
"""

import os
import signal
import sys

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl

root, kill_at, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
csv = sys.argv[4:] == ["csv"]


class Net(pl.LightningModule):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        if self.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch, after the epoch's first checkpoint-free steps
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        self.log("train_loss_epoch_mean", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.01)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a test run in the background may have it ignored
    pl.seed_everything(7)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    data = TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(40, 1, generator=g))
    extra = {}
    if csv:
        from fulmen.loggers import CSVLogger

        extra["logger"] = CSVLogger(root, flush_logs_every_n_steps=1)
    trainer = pl.Trainer(max_epochs=4, default_root_dir=root, log_every_n_steps=2, enable_progress_bar=False, **extra)
    model = Net()
    trainer.fit(model, DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=20), ckpt_path="last")
    torch.save(model.state_dict(), out)
