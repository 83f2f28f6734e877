"""Fine-tuning with BackboneFinetuning: pretrain a small backbone on one synthetic task, then reuse it
for a related task that has little data, first with the backbone frozen, then unfrozen at a lower
learning rate.

    python examples/finetuning/finetune.py           # full run (~20 s on 2 CPU cores); exits 1 if the
                                                     # fine-tuned model does not beat training from scratch
    python examples/finetuning/finetune.py --fast    # a few epochs, for tests

The two tasks share hidden structure: inputs x (16 numbers) are a nonlinear mix of 8 latent factors z.
Task A (pretraining, 4000 examples) regresses z from x; task B (fine-tuning, only 96 examples) is a
3-class label read linearly from z, so a backbone that already extracts z from x helps task B.
The script prints the test accuracy on task B of the fine-tuned model and of the same network
trained from scratch on the same 96 examples, and the learning rates it used (from the CSV log).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import BackboneFinetuning, LearningRateMonitor
from fulmen.loggers import CSVLogger

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT_DIR = HERE / "runs"


# --- data: two tasks over the same latent factors ---------------------------------------------------
def make_tasks(seed: int = 0) -> dict[str, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(8, 16, generator=g)  # latent z (8) -> input x (16)
    read_b = torch.randn(8, 3, generator=g)   # task B: 3 classes from z

    def sample(n: int, task: str) -> TensorDataset:
        z = torch.randn(n, 8, generator=g)
        x = torch.tanh(z @ mixing) + 0.05 * torch.randn(n, 16, generator=g)
        return TensorDataset(x, z if task == "a" else (z @ read_b).argmax(1))

    return {"a_train": sample(4000, "a"), "a_val": sample(500, "a"),
            "b_train": sample(96, "b"), "b_val": sample(300, "b"), "b_test": sample(2000, "b")}


# --- model --------------------------------------------------------------------------------------------
class Net(pl.LightningModule):
    """`backbone` (features) + `head`: 8 regression outputs (task A) or class scores (task B).
    BackboneFinetuning looks for the `backbone` attribute."""

    def __init__(self, num_classes: int | None = None, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, num_classes or 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        out = self(x)
        if self.hparams.num_classes is None:  # task A: regress the latent factors
            loss = F.mse_loss(out, y)
        else:
            loss = F.cross_entropy(out, y)
            self.log(f"{stage}_acc", (out.argmax(1) == y).float().mean(), prog_bar=stage != "train")
        self.log(f"{stage}_loss", loss, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        # Only what is trainable now: BackboneFinetuning adds the backbone as a second param group later.
        return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=self.hparams.lr)


def trainer_for(root: Path, name: str, max_epochs: int, callbacks: list | None = None, fast: bool = False) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, default_root_dir=root, logger=CSVLogger(root, name=name),
                      callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, log_every_n_steps=1, num_sanity_val_steps=0, accelerator="cpu")


def read_lrs(logger: CSVLogger, steps_per_epoch: int) -> dict[int, list[float]]:
    """Learning rates per epoch from the CSV log: [head lr] or [head lr, backbone lr]. The monitor
    logs them at each epoch's first step (its rows carry the step, not the epoch)."""
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    out: dict[int, list[float]] = {}
    for row in rows:
        if row.get("lr-Adam") or row.get("lr-Adam/pg1"):
            lrs = [float(row[k]) for k in ("lr-Adam", "lr-Adam/pg1", "lr-Adam/pg2") if row.get(k)]
            out[int(row["step"]) // steps_per_epoch] = lrs
    return out


def run(*, fast: bool = False, root_dir: str | Path = DEFAULT_ROOT_DIR, seed: int = 0) -> dict[str, Any]:
    root = Path(root_dir)
    pl.seed_everything(seed)
    tasks = make_tasks(seed)
    loader = lambda name, shuffle=False: DataLoader(tasks[name], batch_size=32, shuffle=shuffle)  # noqa: E731
    pretrain_epochs, finetune_epochs, unfreeze_at = (3, 6, 2) if fast else (15, 30, 10)

    # 1. Pretrain on task A and save the checkpoint.
    pretrained = Net()
    trainer = trainer_for(root, "pretrain", pretrain_epochs)
    trainer.fit(pretrained, loader("a_train", True), loader("a_val"))
    pretrain_ckpt = root / "pretrained.ckpt"
    trainer.save_checkpoint(pretrain_ckpt)
    pretrain_loss = trainer.callback_metrics["val_loss"].item()

    # 2. Fine-tune on task B: a new head, the pretrained backbone from the checkpoint; frozen for
    #    `unfreeze_at` epochs while the head learns, then trained at 1/50 of the head's lr, growing 10%
    #    per epoch. (With only 96 examples a faster backbone lr overfits: the features were better.)
    model = Net(num_classes=3)
    state = torch.load(pretrain_ckpt, weights_only=True)["state_dict"]
    model.backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=unfreeze_at, backbone_initial_ratio_lr=0.02,
                                    lambda_func=lambda epoch: 1.1)
    trainer = trainer_for(root, "finetune", finetune_epochs, [finetuning, LearningRateMonitor("epoch")])
    trainer.fit(model, loader("b_train", True), loader("b_val"))
    finetune_acc = trainer.test(model, loader("b_test"), verbose=False)[0]["test_acc"]
    lrs = read_lrs(trainer.logger, len(loader("b_train")))

    # 3. The same network from scratch on the same 96 examples, for comparison.
    scratch = Net(num_classes=3)
    trainer = trainer_for(root, "scratch", finetune_epochs)
    trainer.fit(scratch, loader("b_train", True), loader("b_val"))
    scratch_acc = trainer.test(scratch, loader("b_test"), verbose=False)[0]["test_acc"]
    return {"pretrain_val_loss": pretrain_loss, "finetune_test_acc": finetune_acc, "scratch_test_acc": scratch_acc,
            "lrs": lrs, "unfreeze_at": unfreeze_at, "pretrained_ckpt": str(pretrain_ckpt)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune a pretrained backbone with BackboneFinetuning.")
    parser.add_argument("--fast", action="store_true", help="a few epochs (for tests); no accuracy check")
    parser.add_argument("--root-dir", type=Path, default=DEFAULT_ROOT_DIR, help="where logs go (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(fast=args.fast, root_dir=args.root_dir, seed=args.seed)
    print(f"pretrain_val_loss: {result['pretrain_val_loss']:.4f}")
    for epoch, lrs in sorted(result["lrs"].items()):
        print(f"epoch {epoch}: lr head {lrs[0]:.5f}" + (f", backbone {lrs[1]:.5f}" if len(lrs) > 1 else " (backbone frozen)"))
    print(f"finetune_test_acc: {result['finetune_test_acc']:.4f}")
    print(f"scratch_test_acc: {result['scratch_test_acc']:.4f}")
    if not args.fast and result["finetune_test_acc"] <= result["scratch_test_acc"]:
        print("fine-tuning did not beat training from scratch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
