"""A training run for the interrupt tests: it trains until Ctrl-C, or fails in user code.

    python fit_until_signalled.py ROOT MODE

Logs `train_loss` every step to TensorBoard and CSV under ROOT/logs, checkpoints every 5 steps
into ROOT/checkpoints and keeps an OnExceptionCheckpoint in ROOT/crash. At global step 10 it
prints "READY" (MODE "sigint": the test then sends SIGINT) or raises a RuntimeError in
training_step (MODE "raise"). After Ctrl-C, fit raises SystemExit(1) (as Lightning's does); the
script prints the trainer's state and exits with that status.
"""

import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from fulmen.loggers import CSVLogger, TensorBoardLogger

root, mode = sys.argv[1], sys.argv[2]


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if self.global_step == 10:  # once: one optimizer step per batch
            if mode == "raise":
                raise RuntimeError("user bug at step 10")
            print("READY", flush=True)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


torch.manual_seed(0)
data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
# flush_secs: a SIGINT that lands inside the event writer's queue.put (between the condition's
# waiter.release() and its removal, a CPython race) leaves the writer thread unwoken by the closing
# sentinel until its next periodic flush, 120 s by default: the test's whole time limit.
tensorboard = TensorBoardLogger(f"{root}/logs", name="", version=0, flush_secs=5)
trainer = pl.Trainer(
    accelerator="cpu", max_epochs=-1, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
    logger=[tensorboard, CSVLogger(f"{root}/logs", name="", version=0)],
    callbacks=[ModelCheckpoint(dirpath=f"{root}/checkpoints", every_n_train_steps=5, save_top_k=-1),
               OnExceptionCheckpoint(f"{root}/crash")],
)
try:
    trainer.fit(Net(), data)
except SystemExit as stop:  # Ctrl-C: fit shuts down gracefully, then ends the script with status 1
    print(f"fit raised SystemExit({stop.code}): interrupted={trainer.interrupted} "
          f"status={trainer.state.status.value} global_step={trainer.global_step}", flush=True)
    raise
