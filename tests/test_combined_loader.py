"""Several dataloaders read as one: CombinedLoader's four modes, fit with a list or dict of
training loaders (what training_step gets, how many steps), exact mid-epoch resume with two
shuffled loaders, evaluation with a sequential CombinedLoader, and the distributed sampler's
shuffle flag for training and evaluation loaders."""

from __future__ import annotations

import pytest
import torch
from helpers import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset

import fulmen as pl
from fulmen.callbacks import ModelCheckpoint
from fulmen.dataloading import prepare_loader
from fulmen.errors import MisconfigurationException
from fulmen.strategies import DDPStrategy
from fulmen.utilities.combined_loader import CombinedLoader


def two_and_three() -> dict[str, DataLoader]:
    return {"a": DataLoader(range(4), batch_size=2), "b": DataLoader(range(10, 16), batch_size=2)}


def plain(batches):
    """Batches as lists of ints (None stays None), for comparisons."""
    out = []
    for batch, batch_idx, dataloader_idx in batches:
        if isinstance(batch, dict):
            batch = {k: None if v is None else v.tolist() for k, v in batch.items()}
        else:
            batch = batch.tolist()
        out.append((batch, batch_idx, dataloader_idx))
    return out


@pytest.mark.parametrize("mode, expected", [
    ("min_size", [({"a": [0, 1], "b": [10, 11]}, 0, 0), ({"a": [2, 3], "b": [12, 13]}, 1, 0)]),
    ("max_size_cycle", [({"a": [0, 1], "b": [10, 11]}, 0, 0), ({"a": [2, 3], "b": [12, 13]}, 1, 0),
                        ({"a": [0, 1], "b": [14, 15]}, 2, 0)]),
    ("max_size", [({"a": [0, 1], "b": [10, 11]}, 0, 0), ({"a": [2, 3], "b": [12, 13]}, 1, 0),
                  ({"a": None, "b": [14, 15]}, 2, 0)]),
    ("sequential", [([0, 1], 0, 0), ([2, 3], 1, 0), ([10, 11], 0, 1), ([12, 13], 1, 1), ([14, 15], 2, 1)]),
])
def test_each_mode_yields_lightnings_batches_and_length(mode, expected):
    combined = CombinedLoader(two_and_three(), mode)
    with pytest.raises(RuntimeError, match=r"call iter\(combined_loader\) first"):
        len(combined)
    assert plain(combined) == expected
    assert len(combined) == len(expected)
    assert plain(combined) == expected  # a second pass starts over


def test_limits_shorten_the_length_and_a_sequential_pass():
    combined = CombinedLoader(two_and_three(), "sequential")
    combined.limits = [1, 2]
    assert plain(combined) == [([0, 1], 0, 0), ([10, 11], 0, 1), ([12, 13], 1, 1)]
    assert len(combined) == 3
    with pytest.raises(ValueError, match="one limit per iterable. Received: 3 limits for 2 iterables"):
        combined.limits = [1, 2, 3]


def test_a_list_keeps_its_shape_and_the_collection_properties_follow_it():
    loaders = [DataLoader(range(4), batch_size=2), [DataLoader(range(2))]]
    combined = CombinedLoader(loaders, "max_size_cycle")
    batch, _, _ = next(iter(combined))
    assert isinstance(batch, list) and batch[0].tolist() == [0, 1] and isinstance(batch[1], list)
    assert combined.flattened == [loaders[0], loaders[1][0]]
    assert combined.iterables is loaders
    assert combined.batch_sampler == [loaders[0].batch_sampler, [loaders[1][0].batch_sampler]]
    assert combined.sampler == [loaders[0].sampler, [loaders[1][0].sampler]]
    replaced = DataLoader(range(6), batch_size=3)
    combined.flattened = [replaced, loaders[1][0]]
    assert combined.iterables == [replaced, [loaders[1][0]]]
    assert combined._dataset_length() == 6  # max_size_cycle: the longest dataset
    with pytest.raises(ValueError, match="must keep its length. Received: 1 iterables for 2"):
        combined.flattened = [replaced]


def test_a_bad_mode_is_refused_naming_the_four_modes():
    with pytest.raises(ValueError, match=r"mode='longest'.*\['min_size', 'max_size_cycle', 'max_size', 'sequential'\]"):
        CombinedLoader(two_and_three(), "longest")


# --- fit with several training loaders ---------------------------------------------------------
class Recorder(pl.LightningModule):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Dropout(dropout), nn.Linear(8, 1))
        self.seen: list = []

    def training_step(self, batch, batch_idx):
        parts = list(batch.values()) if isinstance(batch, dict) else list(batch)
        self.seen.append((batch_idx, [p[0][:, 0].tolist() for p in parts if p is not None]))
        x = torch.cat([p[0] for p in parts if p is not None]) / 100  # inputs up to ~1: no divergence
        return self.net(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def data(n: int, first: int, **kwargs) -> DataLoader:
    x = torch.arange(first, first + n, dtype=torch.float32)
    return DataLoader(TensorDataset(torch.stack([x, -x], 1)), batch_size=1, **kwargs)


def test_fit_with_a_dict_of_loaders_cycles_the_shorter_one(tmp_path):
    model = Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, {"a": data(2, 0), "b": data(3, 100)})
    assert trainer.num_training_batches == 3 and trainer.global_step == 6
    assert model.seen[:3] == [(0, [[0.0], [100.0]]), (1, [[1.0], [101.0]]), (2, [[0.0], [102.0]])]
    assert isinstance(trainer.train_dataloader, dict) and set(trainer.train_dataloader) == {"a", "b"}


def test_fit_with_a_list_from_train_dataloader_and_limit_train_batches(tmp_path):
    class FromModel(Recorder):
        def train_dataloader(self):
            return [data(2, 0), data(4, 10)]

    model = FromModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=3)
    trainer.fit(model)
    assert trainer.num_training_batches == 3 and trainer.global_step == 3
    assert model.seen == [(0, [[0.0], [10.0]]), (1, [[1.0], [11.0]]), (2, [[0.0], [12.0]])]


def test_fit_with_a_min_size_combined_loader_stops_at_the_shortest(tmp_path):
    model = Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, CombinedLoader([data(2, 0), data(5, 10)], "min_size"))
    assert trainer.global_step == 2 and model.seen == [(0, [[0.0], [10.0]]), (1, [[1.0], [11.0]])]
    with pytest.raises(MisconfigurationException, match='Received: CombinedLoader\\(mode="sequential"\\) as training data'):
        quiet_trainer(tmp_path, max_epochs=1).fit(Recorder(), CombinedLoader([data(2, 0)], "sequential"))


def test_validation_with_a_sequential_combined_loader_passes_dataloader_idx(tmp_path):
    calls = []

    class Validated(Recorder):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            calls.append((batch[0][0, 0].item(), batch_idx, dataloader_idx))

    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(Validated(), {"a": data(2, 0)}, CombinedLoader([data(1, 50), data(2, 60)], "sequential"))
    assert calls == [(50.0, 0, 0), (60.0, 0, 1), (61.0, 1, 1)]
    assert trainer.num_val_batches == [1, 2]


def _shuffled_pair():
    # Different lengths (4 and 7 batches), each shuffled by the global generator.
    return {"a": data(4, 0, shuffle=True), "b": data(7, 100, shuffle=True)}


def test_mid_epoch_resume_with_two_shuffled_loaders_is_bit_exact(tmp_path):
    def run(root, **fit_kwargs):
        pl.seed_everything(3)
        model = Recorder(dropout=0.5)  # the training steps draw random numbers too
        ckpt = ModelCheckpoint(dirpath=root, every_n_train_steps=5, save_top_k=-1, save_last=False,
                               filename="{step}")
        trainer = quiet_trainer(root, max_epochs=2, enable_checkpointing=True, callbacks=[ckpt])
        trainer.fit(model, _shuffled_pair(), **fit_kwargs)
        return model

    full = run(tmp_path / "full")
    saved = tmp_path / "full" / "step=5.ckpt"  # after 5 of the first epoch's 7 batches: "a" has started over
    assert saved.exists()
    pl.seed_everything(12345)  # the checkpoint's random state must win over whatever the new process has
    resumed = Recorder(dropout=0.5)
    trainer = quiet_trainer(tmp_path / "resumed", max_epochs=2)
    trainer.fit(resumed, _shuffled_pair(), ckpt_path=saved)
    assert resumed.seen == full.seen[5:]
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert trainer.global_step == 14


# --- the distributed sampler's shuffle flag -----------------------------------------------------
def test_distributed_training_loaders_are_shuffled_and_evaluation_loaders_keep_their_order(tmp_path):
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(), logger=False,
                         default_root_dir=tmp_path, enable_progress_bar=False)
    ds = TensorDataset(torch.arange(8.0))
    # As in Lightning: a training loader is shuffled across ranks even if it was not shuffled itself.
    train = prepare_loader(trainer, DataLoader(ds, batch_size=2), train=True)
    assert isinstance(train.sampler, DistributedSampler) and train.sampler.shuffle is True
    # Evaluation keeps the loader's own choice.
    val = prepare_loader(trainer, DataLoader(ds, batch_size=2), train=False)
    assert val.sampler.shuffle is False and list(val.sampler) == [0, 2, 4, 6]
    shuffled_val = prepare_loader(trainer, DataLoader(ds, batch_size=2, shuffle=True), train=False)
    assert shuffled_val.sampler.shuffle is True
    overfit = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(), logger=False, overfit_batches=2,
                         default_root_dir=tmp_path, enable_progress_bar=False)
    assert prepare_loader(overfit, DataLoader(ds, batch_size=2, shuffle=True), train=True).sampler.shuffle is False
    assert isinstance(DataLoader(ds, shuffle=True).sampler, RandomSampler)


def test_a_loader_started_over_for_a_prefetched_batch_resumes_from_that_start():
    # On CUDA the loop draws batch k+1 before it trains on batch k, so a loader may start over (its
    # order drawn from the global generator) before the checkpoint after batch k is taken: the
    # resumed run must start it from that same state, not draw a new order from the checkpoint's.
    from types import SimpleNamespace

    from fulmen.dataloading import _combined_epoch_batches
    from fulmen.run_state import RunState
    from fulmen.seed import rng_state_dict

    def pair():
        return {"a": data(2, 0, shuffle=True), "b": data(5, 100, shuffle=True)}

    def values(item):
        return item[0], {k: v[0].tolist() for k, v in item[1].items()}

    torch.manual_seed(0)
    combined = CombinedLoader(pair(), "max_size_cycle")
    trainer = SimpleNamespace(state=SimpleNamespace(batches_done=0), run_state=RunState())
    batches = _combined_epoch_batches(trainer, combined, None)
    seen = [values(next(batches)), values(next(batches))]
    torch.rand(3)  # the step on batch 0
    seen.append(values(next(batches)))  # batch 2, prefetched: "a" starts over
    torch.rand(3)  # the step on batch 1; then the checkpoint after it
    resume = {"rng": rng_state_dict(), "loader": {"combined": combined._start.position(2)}}
    seen.append(values(next(batches)))
    torch.rand(3)
    seen.append(values(next(batches)))
    after = torch.rand(3)

    torch.manual_seed(99)
    resumed = CombinedLoader(pair(), "max_size_cycle")
    trainer = SimpleNamespace(state=SimpleNamespace(batches_done=2), run_state=RunState(resume=resume))
    batches = _combined_epoch_batches(trainer, resumed, None)
    got = [values(next(batches)), values(next(batches))]
    torch.rand(3)
    got.append(values(next(batches)))
    assert got == seen[2:]
    assert torch.equal(torch.rand(3), after)


@pytest.mark.parametrize("empty", [[], {}, ()])
def test_an_empty_list_or_dict_of_training_loaders_is_no_training_data(tmp_path, empty):
    with pytest.raises(MisconfigurationException, match="fit found no training data"):
        quiet_trainer(tmp_path, max_epochs=1).fit(Recorder(), empty)
