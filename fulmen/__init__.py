"""fulmen: a lightweight training loop over PyTorch with the PyTorch Lightning 2.x API.

    import fulmen as pl
    trainer = pl.Trainer(max_epochs=10)
    trainer.fit(model, train_loader, val_loader)
"""

from fulmen.__about__ import __version__
from fulmen.callbacks.callback import Callback
from fulmen.datamodule import LightningDataModule
from fulmen.module import LightningModule
from fulmen.seed import seed_everything
from fulmen.trainer import Trainer
from fulmen import callbacks, loggers

__all__ = [
    "Callback",
    "LightningDataModule",
    "LightningModule",
    "Trainer",
    "__version__",
    "callbacks",
    "loggers",
    "seed_everything",
]
