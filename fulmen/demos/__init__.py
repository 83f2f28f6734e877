"""Small models, datasets and data modules for quick checks and tests, as in `lightning.pytorch.demos`.

    from fulmen.demos import BoringModel
    trainer = fulmen.Trainer(max_epochs=1, limit_train_batches=4)
    trainer.fit(BoringModel())
"""

from fulmen.demos.boring_classes import (
    BoringDataModule,
    BoringDataModuleNoLen,
    BoringModel,
    DemoModel,
    ManualOptimBoringModel,
    RandomDataset,
    RandomDictDataset,
    RandomIterableDataset,
    RandomIterableDatasetWithLen,
)

__all__ = [
    "BoringDataModule", "BoringDataModuleNoLen", "BoringModel", "DemoModel", "ManualOptimBoringModel",
    "RandomDataset", "RandomDictDataset", "RandomIterableDataset", "RandomIterableDatasetWithLen",
]
