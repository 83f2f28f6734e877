"""Behaviours found missing or wrong by running Lightning 2.6's own public-behaviour tests on fulmen
through the alias (early stopping, data modules, val_check_interval, CombinedLoader, resuming).
Each test here states the behaviour in fulmen's terms."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.callbacks import EarlyStopping, ModelCheckpoint
from fulmen.errors import MisconfigurationException
from fulmen.utilities.combined_loader import _SUPPORTED_MODES, CombinedLoader, _MaxSizeCycle, _Sequential
from helpers import quiet_trainer


class Regressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.val_batches = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.val_batches += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(n: int = 8, batch_size: int = 2) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 2, generator=g), torch.randn(n, 1, generator=g)),
                      batch_size=batch_size)


def test_a_step_set_to_none_on_the_instance_is_switched_off(tmp_path):
    # `model.validation_step = None` is how Lightning code turns validation off for one model
    # (fulmen used to inspect None as if it were the step: TypeError: unsupported callable).
    model = Regressor()
    model.validation_step = None
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, data(), data())
    assert trainer.global_step == 4 and model.val_batches == 0


def test_from_datasets_makes_its_loaders_with_the_module_level_dataloader():
    dataset = TensorDataset(torch.arange(6.0))
    dm = pl.LightningDataModule.from_datasets(dataset, batch_size=3, num_workers=0)
    with mock.patch("fulmen.datamodule.DataLoader") as made:
        dm.train_dataloader()
    made.assert_called_once_with(dataset, batch_size=3, shuffle=True, num_workers=0, pin_memory=True)
    with pytest.raises(MisconfigurationException, match="`val_dataloader` must be implemented to be used with the Trainer"):
        dm.val_dataloader()


class StopEveryEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


@pytest.mark.filterwarnings("ignore:should_stop was set")
@pytest.mark.parametrize(("min_epochs", "min_steps", "steps"), [(None, 10, 10), (2, 10, 10), (2, None, 8), (3, 10, 12)])
def test_a_stop_asked_before_the_minimum_ends_training_at_the_batch_that_reaches_it(tmp_path, min_epochs, min_steps, steps):
    # 4 batches an epoch; the stop asked at the end of epoch 0 stays asked (as in Lightning), so
    # training ends at step 10 in the middle of epoch 2, not at the end of that epoch (step 12).
    trainer = quiet_trainer(tmp_path, max_epochs=10, min_epochs=min_epochs, min_steps=min_steps,
                            limit_val_batches=0, callbacks=[StopEveryEpoch()])
    trainer.fit(Regressor(), data())
    assert trainer.global_step == steps and trainer.should_stop


def test_callback_metrics_is_the_trainers_own_dict_and_early_stopping_reads_it_squeezed():
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.callback_metrics["score"] = torch.tensor([[[2.0]]])
    assert trainer.callback_metrics["score"].shape == (1, 1, 1)
    stopper = EarlyStopping(monitor="score")
    with mock.patch.object(EarlyStopping, "_evaluate_stopping_criteria", return_value=(False, None)) as rule:
        stopper._run_early_stopping_check(trainer)
    (current,), _ = rule.call_args
    assert current.shape == () and current.item() == 2.0


@pytest.mark.parametrize(("world_size", "rank", "rank_zero_only", "logged"), [
    (1, 0, True, "improved"), (2, 0, True, "[rank: 0] improved"), (2, 1, False, "[rank: 1] improved"), (2, 1, True, None),
])
def test_early_stopping_verbose_messages_go_to_its_module_logger(world_size, rank, rank_zero_only, logged):
    trainer = mock.Mock(world_size=world_size, global_rank=rank)
    with mock.patch("fulmen.callbacks.early_stopping.log.info") as info:
        EarlyStopping._log_info(trainer, "improved", rank_zero_only)
    assert info.call_args_list == ([mock.call(logged)] if logged else [])


def test_resuming_a_checkpoint_past_max_epochs_is_an_error(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    quiet_trainer(tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[checkpoint]).fit(Regressor(), data())
    again = quiet_trainer(tmp_path, max_epochs=1)
    with pytest.raises(MisconfigurationException, match=r"current_epoch=3, but you have set Trainer\(max_epochs=1\)"):
        again.fit(Regressor(), data(), ckpt_path=checkpoint.last_model_path)
    # Resuming with max_epochs equal to the finished run's epochs is no error: nothing is left to train.
    finished = quiet_trainer(tmp_path, max_epochs=3)
    finished.fit(Regressor(), data(), ckpt_path=checkpoint.last_model_path)
    assert finished.global_step == 12


def test_an_int_val_check_interval_above_the_epochs_batches_is_a_value_error(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, val_check_interval=10)
    with pytest.raises(ValueError, match=r"`val_check_interval` \(10\) must be less than or equal to the number of the training batches \(4\)"):
        trainer.fit(Regressor(), data(), data())


@pytest.mark.parametrize(("kwargs", "said"), [
    ({"val_check_interval": 1}, "`Trainer(val_check_interval=1)` was configured so validation will run after every batch."),
    ({"val_check_interval": 1.0},
     "`Trainer(val_check_interval=1.0)` was configured so validation will run at the end of the training epoch."),
    ({"limit_train_batches": 1}, "`Trainer(limit_train_batches=1)` was configured so 1 batch per epoch will be used."),
    ({"limit_val_batches": 1.0}, "`Trainer(limit_val_batches=1.0)` was configured so 100% of the batches will be used."),
    ({}, None),
])
def test_an_explicit_one_says_whether_it_meant_one_batch_or_all(kwargs, said):
    with mock.patch("fulmen.utilities.rank_zero.rank_zero_info") as info:
        pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, **kwargs)
    assert info.call_args_list == ([mock.call(said)] if said else [])


def test_combined_loader_names_lightning_code_reaches_for():
    assert {m: (v["iterator"].__name__, v["fn"]([2, 5])) for m, v in _SUPPORTED_MODES.items()} == {
        "min_size": ("_MinSize", 2), "max_size_cycle": ("_MaxSizeCycle", 5),
        "max_size": ("_MaxSize", 5), "sequential": ("_Sequential", 7),
    }
    assert list(_Sequential([["a", "b"], ["c"]], [1, float("inf")])) == [("a", 0, 0), ("c", 0, 1)]
    with pytest.raises(ValueError, match=r"number of limits \(1\) and number of iterables \(2\)"):
        _Sequential([[0], [1]], [1])
    with pytest.raises(ValueError, match="Unsupported mode 'zip'"):
        CombinedLoader([range(2)], "zip")
    combined = CombinedLoader([range(2), range(3)], "max_size_cycle")
    assert sum(1 for _ in combined) == 3
    assert isinstance(combined._iterator, _MaxSizeCycle) and combined._iterator._consumed == [True, True]
    with pytest.raises(ValueError, match=r"Mismatch in flattened length \(1\) and existing length \(2\)"):
        combined.flattened = [range(4)]
