"""A training run for the fault-injection tests: it SIGKILLs itself at a given global step.

    python train_until_killed.py ROOT KILL_AT_STEP NUM_WORKERS OUT [stateful]

Trains with shuffling, dropout, AdamW and a per-step scheduler, validates twice per epoch,
checkpoints every 3 optimizer steps, and always starts with `ckpt_path="last"`: re-running the
same command after a crash resumes from the newest checkpoint. KILL_AT_STEP=-1 never dies;
-2 prints each step and pauses briefly, for a test that sends a real signal. At the end the final
weights are saved to OUT. With "stateful", the training data comes from torchdata's
StatefulDataLoader, which saves its own position.
"""

import os
import signal
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import ModelCheckpoint
from fulmen.loggers import CSVLogger

root, kill_at, workers, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
stateful = sys.argv[5:] == ["stateful"]


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        if self.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-step: after the batch is loaded, before backward
        if kill_at == -2:
            print(f"step {self.global_step}", flush=True)
            time.sleep(0.02)
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=0.01)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_loader(*args, **kwargs):
    if stateful:
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(*args, **kwargs)
    return DataLoader(*args, **kwargs)


if __name__ == "__main__":
    pl.seed_everything(7)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 6, generator=g)
    data = TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(80, 1, generator=g))
    trainer = pl.Trainer(
        max_epochs=3, default_root_dir=root, val_check_interval=0.5, log_every_n_steps=2,
        logger=CSVLogger(root, name="logs"), enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=os.path.join(root, "ckpts"), every_n_train_steps=3, save_top_k=-1)],
    )
    model = Net()
    trainer.fit(
        model,
        train_loader(data, batch_size=8, shuffle=True, num_workers=workers),
        DataLoader(data, batch_size=16, num_workers=workers),
        ckpt_path="last",
    )
    torch.save(model.state_dict(), out)
