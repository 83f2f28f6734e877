"""Small models, datasets and data modules for quick checks and tests, as in `lightning.pytorch.demos`:
the boring classes, the Transformer and LSTM language models on WikiText-2, and MNIST (the
datasets read files already on disk; fulmen never downloads).

    from fulmen.demos import BoringModel
    trainer = fulmen.Trainer(max_epochs=1, limit_train_batches=4)
    trainer.fit(BoringModel())
"""

from fulmen.demos.boring_classes import (
    BoringDataModule,
    BoringDataModuleNoLen,
    BoringModel,
    DemoModel,
    IterableBoringDataModule,
    ManualOptimBoringModel,
    Net,
    RandomDataset,
    RandomDictDataset,
    RandomIterableDataset,
    RandomIterableDatasetWithLen,
)
from fulmen.demos.lstm import LightningLSTM, SequenceSampler, SimpleLSTM
from fulmen.demos.mnist_datamodule import MNIST, MNISTDataModule
from fulmen.demos.transformer import LightningTransformer, Transformer, WikiText2

__all__ = [
    # lightning.pytorch.demos exports these ...
    "BoringDataModule", "BoringModel", "DemoModel", "LightningLSTM", "LightningTransformer", "SequenceSampler",
    "SimpleLSTM", "Transformer", "WikiText2",
    # ... and fulmen also these, which Lightning keeps in its submodules
    "BoringDataModuleNoLen", "IterableBoringDataModule", "MNIST", "MNISTDataModule", "ManualOptimBoringModel", "Net",
    "RandomDataset", "RandomDictDataset", "RandomIterableDataset", "RandomIterableDatasetWithLen",
]
