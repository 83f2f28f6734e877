"""`DigitsClassifier`: the model half of the digits example (the math: network, steps, optimizer).

A small MLP over the 64 pixels of an 8x8 digit. It is written exactly as one would write it for
PyTorch Lightning; only the import differs (`import fulmen as pl`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import fulmen as pl


class DigitsClassifier(pl.LightningModule):
    """Classify 8x8 digit images (flattened to 64 features) into 10 classes.

    Example:
        >>> model = DigitsClassifier(hidden_dim=32)
        >>> model(torch.zeros(4, 64)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        hidden_dim: int = 128,
        dropout: float = 0.2,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        # Stored in checkpoints, so load_from_checkpoint can rebuild the model without arguments.
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(64, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss_and_acc(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return loss, acc

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, acc = self._loss_and_acc(batch)
        self.log("train_loss", loss, prog_bar=True)
        # Per-epoch mean: a per-step accuracy on 64 samples is too noisy to read.
        self.log("train_acc", acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, acc = self._loss_and_acc(batch)
        # Epoch values are means weighted by batch size, so a short last batch counts correctly.
        self.log("val_loss", loss, prog_bar=True)
        self.log("val_acc", acc, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, acc = self._loss_and_acc(batch)
        self.log("test_loss", loss)
        self.log("test_acc", acc)

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        # The predict loader may carry labels too; only the images are needed.
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        # Halve the learning rate when val_loss stalls; EarlyStopping (patience > this one's)
        # then ends the run once the smaller steps stop helping too.
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=2)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"},
        }
