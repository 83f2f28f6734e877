"""fulmen.demos: the boring model, datasets and data modules train, evaluate and predict as Lightning's do."""

from __future__ import annotations

import torch
from helpers import quiet_trainer

from fulmen.demos import (
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


def test_datasets_shapes_and_lengths():
    ds = RandomDataset(32, 10)
    assert len(ds) == 10 and ds[3].shape == (32,)
    assert torch.equal(ds[3], ds[3])  # drawn once: indexing is repeatable
    d = RandomDictDataset(4, 5)[2]
    assert torch.equal(d["b"], d["a"] + 2)
    items = list(RandomIterableDataset(8, 7))
    assert len(items) == 7 and items[0].shape == (8,)
    assert not hasattr(RandomIterableDataset(8, 7), "__len__")
    assert len(RandomIterableDatasetWithLen(8, 7)) == 7 == len(list(RandomIterableDatasetWithLen(8, 7)))


def test_boring_model_fits_with_step_lr_and_evaluates(tmp_path):
    torch.manual_seed(0)
    model = BoringModel()
    before = model.layer.weight.detach().clone()
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=2)
    trainer.fit(model)
    assert trainer.global_step == 6
    assert not torch.equal(before, model.layer.weight)
    # SGD(lr=0.1) with StepLR(step_size=1, gamma=0.1) stepped once per epoch.
    assert abs(trainer.optimizers[0].param_groups[0]["lr"] - 0.1 * 0.1**2) < 1e-12
    assert trainer.validate(model, verbose=False) == [{}]  # validation_step logs nothing
    predictions = trainer.predict(model)
    assert len(predictions) == 64 and predictions[0].shape == (1, 2)


def test_boring_data_module_splits_are_disjoint(tmp_path):
    dm = BoringDataModule()
    for stage in ("fit", "test", "predict"):
        dm.setup(stage)
    full = dm.random_full.data
    assert [list(s.indices) for s in (dm.random_train, dm.random_val, dm.random_test, dm.random_predict)] == [
        list(range(i * 64, (i + 1) * 64)) for i in range(4)
    ]
    model = BoringModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=4, limit_val_batches=2)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4
    out = trainer.predict(model, datamodule=BoringDataModule())
    assert len(out) == 64
    assert full.shape == (256, 32)


def test_no_len_data_module_and_manual_model(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=5, limit_val_batches=2)
    trainer.fit(ManualOptimBoringModel(), datamodule=BoringDataModuleNoLen())
    assert trainer.global_step == 5


def test_demo_model_trains(tmp_path):
    model = DemoModel(out_dim=4, learning_rate=0.01)
    assert model.l1.out_features == 4
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=3)
    trainer.fit(model, torch.utils.data.DataLoader(RandomDataset(32, 12), batch_size=4))
    assert trainer.global_step == 3
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.01
