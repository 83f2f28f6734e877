"""Step methods get the arguments their signature takes, as in Lightning (decided once at set-up):
`training_step(self, batch)` gets no batch_idx; `dataloader_idx` is passed only with several
evaluation dataloaders, and a step that cannot take it (or requires it with one) is refused;
`*args` takes everything; a 1.x `optimizer_idx` step is refused at fit's start."""

from __future__ import annotations

import pytest
import torch
from helpers import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl


def loader(n: int = 4, first: int = 0) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(first, first + n, dtype=torch.float32).view(n, 1)), batch_size=2)


class Base(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(1, 1)
        self.calls: list = []

    def loss(self, batch):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_training_step_with_only_batch(tmp_path):
    class OnlyBatch(Base):
        def training_step(self, batch):
            self.calls.append(batch[0][:, 0].tolist())
            return self.loss(batch)

    model = OnlyBatch()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader())
    assert model.calls == [[0.0, 1.0], [2.0, 3.0]] and trainer.global_step == 2


@pytest.mark.parametrize("callbacks", [[], "hooked"])
def test_training_step_with_batch_and_batch_idx_and_with_args(tmp_path, callbacks):
    class WithIdx(Base):
        def training_step(self, batch, batch_idx):
            self.calls.append(batch_idx)
            return self.loss(batch)

    class WithArgs(Base):
        def training_step(self, *args):
            self.calls.append(len(args))
            return self.loss(args[0])

    class Hook(pl.Callback):  # forces the full, hook-by-hook step
        def on_before_backward(self, trainer, pl_module, loss):
            pass

    for cls, expected in ((WithIdx, [0, 1]), (WithArgs, [2, 2])):
        model = cls()
        quiet_trainer(tmp_path, max_epochs=1, callbacks=[Hook()] if callbacks else []).fit(model, loader())
        assert model.calls == expected


def test_several_val_loaders_pass_dataloader_idx(tmp_path):
    class TwoVal(Base):
        def training_step(self, batch, batch_idx):
            return self.loss(batch)

        def validation_step(self, batch, batch_idx, dataloader_idx):
            self.calls.append((batch_idx, dataloader_idx))

    model = TwoVal()
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.validate(model, [loader(2), loader(4)], verbose=False)
    assert model.calls == [(0, 0), (0, 1), (1, 1)]


def test_one_val_loader_and_a_step_without_dataloader_idx(tmp_path):
    class OneVal(Base):
        def validation_step(self, batch, batch_idx):
            self.calls.append(batch_idx)

        def test_step(self, batch):
            self.calls.append("test")

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return dataloader_idx

    model = OneVal()
    trainer = quiet_trainer(tmp_path)
    trainer.validate(model, loader(), verbose=False)
    trainer.test(model, loader(2), verbose=False)
    assert model.calls == [0, 1, "test"]
    assert trainer.predict(model, [loader(2), loader(2)]) == [[0], [1]]


def test_a_step_that_cannot_take_dataloader_idx_with_several_loaders_is_refused(tmp_path):
    class NoIdx(Base):
        def validation_step(self, batch, batch_idx):
            pass

    with pytest.raises(RuntimeError, match=r"several val dataloaders, so NoIdx.validation_step is passed "
                                           r"`dataloader_idx`, but it does not take it.*Fix: add `dataloader_idx=0`"):
        quiet_trainer(tmp_path).validate(NoIdx(), [loader(), loader()], verbose=False)


def test_a_step_that_requires_dataloader_idx_with_one_loader_is_refused(tmp_path):
    class Requires(Base):
        def test_step(self, batch, batch_idx, dataloader_idx):
            pass

    with pytest.raises(RuntimeError, match=r"single test dataloader, so Requires.test_step is not passed "
                                           r"`dataloader_idx`, but it requires it"):
        quiet_trainer(tmp_path).test(Requires(), loader(), verbose=False)


def test_a_lightning_1x_optimizer_idx_step_is_refused_before_the_first_batch(tmp_path):
    class Gan(Base):
        def training_step(self, batch, batch_idx, optimizer_idx):
            self.calls.append(batch_idx)
            return self.loss(batch)

        def configure_optimizers(self):
            self.calls.append("configure_optimizers")
            return torch.optim.SGD(self.parameters(), lr=0.01)

    model = Gan()
    with pytest.raises(RuntimeError, match=r"takes `optimizer_idx`.*only supported with manual optimization.*"
                                           r"Fix: remove the `optimizer_idx` argument, set "
                                           r"`self.automatic_optimization = False`"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, loader())
    assert model.calls == []  # neither configure_optimizers nor a batch ran
