"""A Lightning 2.x training script written the way real projects write them (not for fulmen).

It uses the package names `pytorch_lightning` and `lightning_fabric` (as most public projects do).
The tests run it unmodified twice: on the real Lightning (`python regression_program.py OUT`) and
on fulmen through the drop-in runner (`fulmen run regression_program.py OUT`), then compare the
JSON summary each run writes to OUT/summary.json: losses, checkpoint names, logged keys.

    python regression_program.py OUT [--multi] [--ddp]
"""

import argparse
import json
import os
import warnings

import torch
from packaging.version import Version
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning_fabric
import pytorch_lightning as pl
from lightning_fabric.utilities.seed import seed_everything as fabric_seed_everything
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning import LightningDataModule, LightningModule, Trainer, seed_everything
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from pytorch_lightning.utilities.types import STEP_OUTPUT, OptimizerLRScheduler
from pytorch_lightning.utilities.warnings import PossibleUserWarning

if Version(pl.__version__) < Version("2.0.0") or Version(lightning_fabric.__version__) < Version("2.0.0"):
    raise RuntimeError(f"this script needs Lightning 2.x, found {pl.__version__}")

warnings.filterwarnings("ignore", category=PossibleUserWarning)


def make_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=g))


class RegressionData(LightningDataModule):
    def __init__(self, batch_size: int = 16, multi: bool = False):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        self.train_a, self.train_b, self.val = make_data(64, 1), make_data(40, 2), make_data(32, 3)

    def train_dataloader(self):
        a = DataLoader(self.train_a, batch_size=self.hparams.batch_size)
        if not self.hparams.multi:
            return a
        return {"a": a, "b": DataLoader(self.train_b, batch_size=self.hparams.batch_size // 2)}

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=32)


class Regressor(LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 16, multi: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch) -> STEP_OUTPUT:  # no batch_idx: Lightning passes what the signature takes
        if self.hparams.multi:
            loss = sum(F.mse_loss(self(x), y) for x, y in batch.values())
        else:
            x, y = batch
            loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class LossRecorder(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@rank_zero_only
def write_summary(path: _PATH, summary: dict) -> None:
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    rank_zero_info(f"summary written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--multi", action="store_true")
    parser.add_argument("--ddp", action="store_true")
    args = parser.parse_args()
    seed_everything(7)
    fabric_seed_everything(7)
    recorder = LossRecorder()
    checkpoint = ModelCheckpoint(monitor="val_loss", filename="{epoch}-{val_loss:.4f}", save_top_k=2, save_last=True)
    trainer = Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=2 if args.ddp else 1,
        strategy="ddp" if args.ddp else "auto",
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=2,
        default_root_dir=args.out,
        logger=[CSVLogger(args.out, name="csv"), TensorBoardLogger(args.out, name="tb")],
        callbacks=[recorder, checkpoint, EarlyStopping(monitor="val_loss", patience=5), LearningRateMonitor()],
    )
    try:
        Trainer(max_epochs=-5)
    except MisconfigurationException:
        bad_argument_refused = True
    else:
        bad_argument_refused = False
    model = Regressor(multi=args.multi)
    trainer.fit(model, datamodule=RegressionData(multi=args.multi))
    validated = trainer.validate(model, datamodule=RegressionData(multi=args.multi), ckpt_path="best", verbose=False)
    reloaded = Regressor.load_from_checkpoint(checkpoint.best_model_path)
    with open(os.path.join(trainer.loggers[0].log_dir, "metrics.csv")) as f:
        logged_keys = sorted(f.readline().strip().split(","))
    write_summary(args.out, {
        "framework": type(trainer).__module__.split(".")[0],
        "world_size": trainer.world_size,
        "losses": recorder.losses,
        "global_step": trainer.global_step,
        "checkpoints": sorted(os.listdir(os.path.dirname(checkpoint.best_model_path))),
        "best": os.path.basename(checkpoint.best_model_path),
        "logged_keys": logged_keys,
        "validate": validated,
        "hparams": dict(reloaded.hparams),
        "bad_argument_refused": bad_argument_refused,
    })


if __name__ == "__main__":
    main()
