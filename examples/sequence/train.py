"""A GRU on a synthetic sequence task, with a one-cycle learning-rate schedule stepped every batch.

Task: continue a sine wave. Each sequence is 16 samples of sin(f t + p) with its own frequency f
and phase p, plus a little noise; the target is the next sample, so the model must infer the
frequency and phase from what it has read. The learning rate
follows `OneCycleLR` with `"interval": "step"` in `configure_optimizers`: it warms up over the
first 30% of the steps, then anneals.

    python examples/sequence/train.py           # ~20 s on 2 CPU cores
    python examples/sequence/train.py --fast    # a few seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl

SEQ_LEN = 16


def make_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    freq = 0.2 + 0.6 * torch.rand(n, 1, generator=g)
    phase = 2 * torch.pi * torch.rand(n, 1, generator=g)
    t = torch.arange(SEQ_LEN + 1, dtype=torch.float32)
    wave = torch.sin(freq * t + phase)
    x = (wave[:, :SEQ_LEN] + 0.02 * torch.randn(n, SEQ_LEN, generator=g)).unsqueeze(-1)
    return TensorDataset(x, wave[:, SEQ_LEN:])


class SequenceRegressor(pl.LightningModule):
    def __init__(self, hidden: int = 32, max_lr: float = 1e-2, total_steps: int = 1000):
        super().__init__()
        self.save_hyperparameters()
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        self.lrs: list[float] = []  # the learning rate of every step, to look at the schedule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.head(h[-1])

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.lrs.append(self.lr_schedulers().get_last_lr()[0])

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_mse", F.mse_loss(self(x), y), prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.max_lr, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.max_lr, total_steps=self.hparams.total_steps, pct_start=0.3
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a short run (few epochs, no progress bar)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root-dir", default="examples/sequence/runs")
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed)
    train, val = make_data(2048, seed=args.seed), make_data(512, seed=args.seed + 1)
    epochs = args.max_epochs or (4 if args.fast else 15)
    batch_size = 64
    # The scheduler steps after every optimizer step, the last time after the last batch: one point
    # more than the number of batches keeps that last step on the annealing curve.
    total_steps = epochs * (len(train) // batch_size) + 1
    model = SequenceRegressor(total_steps=total_steps)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", default_root_dir=args.root_dir, logger=not args.fast,
        enable_checkpointing=False, enable_progress_bar=not args.fast, enable_model_summary=not args.fast,
    )
    val_loader = DataLoader(val, batch_size=256)
    baseline = F.mse_loss(val.tensors[1], torch.full_like(val.tensors[1], train.tensors[1].mean())).item()
    trainer.fit(model, DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True), val_loader)
    val_mse = trainer.callback_metrics["val_mse"].item()
    result = {"val_mse": val_mse, "baseline_mse": baseline, "steps": trainer.global_step, "lrs": model.lrs}
    print(f"validation MSE {val_mse:.4f} (predicting the mean: {baseline:.4f}) after {trainer.global_step} steps; "
          f"lr peaked at {max(model.lrs):.4g}, ended at {model.lrs[-1]:.3g}")
    return result


if __name__ == "__main__":
    out = main()
    sys.exit(0 if out["val_mse"] < 0.2 * out["baseline_mse"] else 1)
