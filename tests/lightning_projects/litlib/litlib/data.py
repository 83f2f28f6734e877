import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities.seed import isolate_rng
from pytorch_lightning.utilities.types import EVAL_DATALOADERS, TRAIN_DATALOADERS
from torch.utils.data import DataLoader


class RandomDataModule(LightningDataModule):
    def __init__(self, features: int = 16, size: int = 64, batch_size: int = 8):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        with isolate_rng():  # the data does not shift the user's random stream
            torch.manual_seed(1234)
            self.data = torch.randn(self.hparams.size, self.hparams.features)

    def train_dataloader(self) -> TRAIN_DATALOADERS:
        return DataLoader(self.data, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> EVAL_DATALOADERS:
        return DataLoader(self.data[:16], batch_size=self.hparams.batch_size)

    def predict_dataloader(self) -> EVAL_DATALOADERS:
        return DataLoader(self.data[:16], batch_size=self.hparams.batch_size)
