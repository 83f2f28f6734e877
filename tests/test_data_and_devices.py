"""Tests for batches, dataloaders, datamodules, devices and reproducibility.

Moving batches is checked with a real non-CPU target (the "meta" device: every moved tensor
reports it), data order and augmentation are compared batch by batch with `torch.equal`, and
reproducible training is checked on the final weights, bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
from collections import Counter, OrderedDict, defaultdict, namedtuple

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

import fulmen as pl
import fulmen.accelerators
import fulmen.errors
from fulmen.checkpoint import load_checkpoint
from fulmen.data import extract_batch_size, move_to_device

from helpers import quiet_trainer, random_regression

META = torch.device("meta")

pytestmark = pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")


@pytest.fixture(autouse=True)
def _restore_global_state(monkeypatch):
    """seed_everything and deterministic=True change process-wide settings; put them back."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG"):
        monkeypatch.delenv(name, raising=False)  # restored to the original value at teardown
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_deterministic = torch.backends.cudnn.deterministic
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.deterministic = cudnn_deterministic


# One epoch, no sanity check, on the default accelerator.
trainer = functools.partial(quiet_trainer, accelerator="auto", num_sanity_val_steps=0, max_epochs=1)


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.counts: Counter[str] = Counter()

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        self.counts["train"] += 1
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["val"] += 1

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["test"] += 1

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["predict"] += 1
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _all_on(obj, device: torch.device) -> list[bool]:
    """Whether each tensor nested in obj is on `device` (walks the same containers as fulmen)."""
    if isinstance(obj, torch.Tensor):
        return [obj.device == device]
    if isinstance(obj, dict):
        return [b for v in obj.values() for b in _all_on(v, device)]
    if isinstance(obj, (list, tuple)):
        return [b for v in obj for b in _all_on(v, device)]
    if dataclasses.is_dataclass(obj):
        return [b for f in dataclasses.fields(obj) for b in _all_on(getattr(obj, f.name), device)]
    return []


# ----------------------------------------------------------------------------------------------
# moving batches
# ----------------------------------------------------------------------------------------------
Pair = namedtuple("Pair", ["x", "y"])


@dataclasses.dataclass
class Sample:
    image: torch.Tensor
    label: torch.Tensor
    name: str
    meta: dict


@dataclasses.dataclass(frozen=True)
class Frozen:
    value: torch.Tensor


class CustomBatch:
    """A user type that knows how to move itself."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.moved_to: list[torch.device] = []

    def to(self, device, *args, **kwargs):
        self.moved_to.append(torch.device(device))
        return CustomBatch(self.data.to(device))


def test_move_to_device_tuple_list_dict():
    x, y = torch.ones(2, 3), torch.zeros(2)
    moved_tuple = move_to_device((x, y), META)
    assert type(moved_tuple) is tuple and _all_on(moved_tuple, META) == [True, True]
    moved_list = move_to_device([x, y], META)
    assert type(moved_list) is list and _all_on(moved_list, META) == [True, True]
    moved_dict = move_to_device({"x": x, "y": y}, META)
    assert type(moved_dict) is dict and list(moved_dict) == ["x", "y"] and all(_all_on(moved_dict, META))
    assert moved_dict["x"].shape == (2, 3) and moved_dict["x"].dtype == x.dtype
    # the originals are untouched
    assert x.device.type == "cpu" and y.device.type == "cpu"


def test_move_to_device_keeps_mapping_types():
    ordered = move_to_device(OrderedDict(b=torch.ones(1), a=torch.ones(1)), META)
    assert type(ordered) is OrderedDict and list(ordered) == ["b", "a"] and all(_all_on(ordered, META))
    default = defaultdict(list, {"x": torch.ones(1)})
    moved = move_to_device(default, META)
    assert type(moved) is defaultdict and moved.default_factory is list
    assert moved["x"].device == META
    assert moved["missing"] == []


def test_move_to_device_namedtuple_and_dataclasses():
    pair = move_to_device(Pair(torch.ones(2), torch.zeros(2)), META)
    assert type(pair) is Pair and pair.x.device == META and pair.y.device == META

    sample = Sample(torch.ones(1, 4), torch.tensor([1]), name="cat.png", meta={"id": 7, "mask": torch.ones(2)})
    moved = move_to_device(sample, META)
    assert type(moved) is Sample
    assert moved.image.device == META and moved.label.device == META and moved.meta["mask"].device == META
    assert moved.name == "cat.png" and moved.meta["id"] == 7
    assert sample.image.device.type == "cpu"  # a new object, the input is not mutated

    frozen = move_to_device(Frozen(torch.ones(1)), META)
    assert type(frozen) is Frozen and frozen.value.device == META


def test_move_to_device_nested_structures_and_non_tensor_leaves():
    array = np.arange(3)
    batch = {
        "inputs": [(torch.ones(2), {"deep": [torch.zeros(1), Pair(torch.ones(1), 3)]})],
        "ids": [1, 2, 3],
        "text": "hello",
        "none": None,
        "array": array,
        "float": 0.5,
    }
    moved = move_to_device(batch, META)
    assert all(_all_on(moved, META)) and len(_all_on(moved, META)) == 3
    assert moved["ids"] == [1, 2, 3] and moved["text"] == "hello" and moved["none"] is None
    assert moved["array"] is array and moved["float"] == 0.5
    inner = moved["inputs"][0][1]["deep"][1]
    assert type(inner) is Pair and inner.y == 3 and inner.x.device == META


def test_move_to_device_calls_to_on_custom_objects():
    custom = CustomBatch(torch.ones(2))
    moved = move_to_device({"batch": custom, "t": torch.ones(1)}, META)
    assert custom.moved_to == [META]
    assert isinstance(moved["batch"], CustomBatch) and moved["batch"].data.device == META
    assert moved["t"].device == META


def test_move_to_device_calls_to_on_every_tensor(monkeypatch):
    calls: list[tuple[tuple, torch.device]] = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        calls.append((tuple(self.shape), args[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    move_to_device({"a": torch.ones(1), "b": [torch.ones(2), (torch.ones(3),)]}, META)
    assert sorted(calls) == [((1,), META), ((2,), META), ((3,), META)]


# ----------------------------------------------------------------------------------------------
# batch-transfer hooks
# ----------------------------------------------------------------------------------------------
class TransferModel(Model):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.seen: dict[str, torch.Tensor] = {}

    def on_before_batch_transfer(self, batch, dataloader_idx):
        self.calls.append(("before", self.trainer.state.stage.value, dataloader_idx))
        x, y = batch
        return x * 2, y

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        self.calls.append(("transfer", self.trainer.state.stage.value, dataloader_idx, device))
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        self.calls.append(("after", self.trainer.state.stage.value, dataloader_idx))
        x, y = batch
        return x + 1, y

    def training_step(self, batch, batch_idx):
        self.calls.append(("step", "train", 0))
        self.seen.setdefault("train", batch[0])
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.calls.append(("step", "validate", dataloader_idx))

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.calls.append(("step", "test", dataloader_idx))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self.calls.append(("step", "predict", dataloader_idx))
        return batch[0]


class CallOrder(pl.Callback):
    def __init__(self, model: TransferModel) -> None:
        self.model = model

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.model.calls.append(("on_train_batch_start", "train", 0))


def test_transfer_hooks_run_in_order_with_the_trainers_device():
    model = TransferModel()
    data = random_regression(4)
    t = trainer(callbacks=[CallOrder(model)])
    t.fit(model, DataLoader(data, batch_size=4), [DataLoader(data, batch_size=4), DataLoader(data, batch_size=4)])
    cpu = torch.device("cpu")
    assert t.device == cpu
    assert model.calls == [
        ("before", "train", 0), ("transfer", "train", 0, cpu), ("after", "train", 0),
        ("on_train_batch_start", "train", 0), ("step", "train", 0),
        ("before", "validate", 0), ("transfer", "validate", 0, cpu), ("after", "validate", 0),
        ("step", "validate", 0),
        ("before", "validate", 1), ("transfer", "validate", 1, cpu), ("after", "validate", 1),
        ("step", "validate", 1),
    ]
    # the step sees the batch the hooks produced: (x * 2) + 1
    assert torch.equal(model.seen["train"], data.tensors[0] * 2 + 1)

    model.calls.clear()
    t.test(model, DataLoader(data, batch_size=4), verbose=False)
    predictions = t.predict(model, DataLoader(data, batch_size=4))
    assert model.calls == [
        ("before", "test", 0), ("transfer", "test", 0, cpu), ("after", "test", 0), ("step", "test", 0),
        ("before", "predict", 0), ("transfer", "predict", 0, cpu), ("after", "predict", 0), ("step", "predict", 0),
    ]
    assert torch.equal(predictions[0], data.tensors[0] * 2 + 1)


class TransferDataModule(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.data = random_regression(4)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=4)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        self.calls.append(("dm_before", dataloader_idx))
        x, y = batch
        return x * 10, y

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        self.calls.append(("dm_transfer", device))
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx):
        self.calls.append(("dm_after", dataloader_idx))
        x, y = batch
        return x - 3, y


def test_datamodule_transfer_hooks_are_used():
    class Plain(Model):
        def training_step(self, batch, batch_idx):
            self.seen = batch[0]
            return super().training_step(batch, batch_idx)

    dm, model = TransferDataModule(), Plain()
    trainer().fit(model, datamodule=dm)
    assert dm.calls == [("dm_before", 0), ("dm_transfer", torch.device("cpu")), ("dm_after", 0)]
    assert torch.equal(model.seen, dm.data.tensors[0] * 10 - 3)


def test_hooks_overridden_in_both_use_the_datamodules_as_in_lightning():
    dm, model = TransferDataModule(), TransferModel()
    with pytest.warns(UserWarning, match="overridden in both"):
        trainer().fit(model, datamodule=dm)
    assert dm.calls == [("dm_before", 0), ("dm_transfer", torch.device("cpu")), ("dm_after", 0)]
    assert [c for c in model.calls if c[0] != "step"] == []
    assert torch.equal(model.seen["train"], dm.data.tensors[0] * 10 - 3)


def test_batch_is_passed_intact_on_cpu():
    seen = []

    class Structured(Model):
        def training_step(self, batch, batch_idx):
            seen.append(batch)
            return torch.nn.functional.mse_loss(self(batch["x"]), batch["pair"].y)

    def collate(items):
        xs, ys = zip(*items)
        return {"x": torch.stack(xs), "pair": Pair(None, torch.stack(ys)), "name": "b", "custom": CustomBatch(torch.ones(1))}

    trainer().fit(Structured(), DataLoader(random_regression(4), batch_size=4, collate_fn=collate))
    batch = seen[0]
    assert set(batch) == {"x", "pair", "name", "custom"}
    assert type(batch["pair"]) is Pair and batch["pair"].x is None and batch["name"] == "b"
    assert batch["custom"].moved_to == []  # on CPU the move is skipped altogether


# ----------------------------------------------------------------------------------------------
# batch size
# ----------------------------------------------------------------------------------------------
def test_extract_batch_size():
    assert extract_batch_size(torch.ones(7, 3)) == 7
    assert extract_batch_size((torch.ones(5, 2), torch.ones(9))) == 5
    assert extract_batch_size({"ids": [1, 2], "x": torch.ones(6, 1)}) == 6
    assert extract_batch_size([{"a": Pair(torch.ones(4), torch.ones(8))}]) == 4
    assert extract_batch_size(Sample(torch.ones(3, 2), torch.ones(1), "n", {})) == 3
    assert extract_batch_size(torch.tensor(1.0)) == 1
    with pytest.warns(UserWarning, match="batch size"):
        assert extract_batch_size({"text": ["a", "b"]}) == 1


def test_epoch_mean_is_weighted_by_the_extracted_batch_size():
    class Logs(Model):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("x_mean", batch[0].mean())

    data = random_regression(10)
    result = trainer().validate(Logs(), DataLoader(data, batch_size=4), verbose=False)  # batches of 4, 4, 2
    assert result[0]["x_mean"] == pytest.approx(data.tensors[0].mean().item(), abs=1e-6)


# ----------------------------------------------------------------------------------------------
# LightningDataModule
# ----------------------------------------------------------------------------------------------
class RecordingDataModule(pl.LightningDataModule):
    def __init__(self, batch_size: int = 4, n: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.calls: list[str] = []

    def prepare_data(self):
        self.calls.append("prepare_data")

    def setup(self, stage):
        self.calls.append(f"setup:{stage}")
        self.data = random_regression(self.hparams.n)

    def teardown(self, stage):
        self.calls.append(f"teardown:{stage}")

    def _loader(self, kind):
        self.calls.append(kind)
        return DataLoader(self.data, batch_size=self.hparams.batch_size)

    def train_dataloader(self):
        return self._loader("train_dataloader")

    def val_dataloader(self):
        return self._loader("val_dataloader")

    def test_dataloader(self):
        return self._loader("test_dataloader")

    def predict_dataloader(self):
        return self._loader("predict_dataloader")

    def state_dict(self):
        return {"calls_so_far": len(self.calls)}


def test_datamodule_hooks_per_entry_point():
    dm, model = RecordingDataModule(batch_size=4, n=16), Model()
    t = trainer()
    t.fit(model, datamodule=dm)
    assert dm.calls == ["prepare_data", "setup:fit", "train_dataloader", "val_dataloader", "teardown:fit"]
    assert model.counts == Counter(train=4, val=4)
    assert dm.trainer is t

    dm.calls.clear()
    t.validate(model, datamodule=dm, verbose=False)
    assert dm.calls == ["prepare_data", "setup:validate", "val_dataloader", "teardown:validate"]
    dm.calls.clear()
    t.test(model, datamodule=dm, verbose=False)
    assert dm.calls == ["prepare_data", "setup:test", "test_dataloader", "teardown:test"]
    dm.calls.clear()
    predictions = t.predict(model, datamodule=dm)
    assert dm.calls == ["prepare_data", "setup:predict", "predict_dataloader", "teardown:predict"]
    assert model.counts == Counter(train=4, val=8, test=4, predict=4)
    assert len(predictions) == 4


def test_datamodule_as_positional_argument():
    dm, model = RecordingDataModule(batch_size=8, n=16), Model()
    t = trainer()
    t.fit(model, dm)  # fit(model, dm) is the same as fit(model, datamodule=dm)
    assert t.datamodule is dm
    assert t.num_training_batches == 2 and model.counts["train"] == 2
    t.validate(model, dm, verbose=False)
    t.test(model, dm, verbose=False)
    t.predict(model, dm)
    assert model.counts == Counter(train=2, val=4, test=2, predict=2)


def test_datamodule_hparams_and_state_are_in_the_checkpoint(tmp_path):
    dm, model = RecordingDataModule(batch_size=8, n=16), Model()
    t = trainer()
    t.fit(model, datamodule=dm)
    path = tmp_path / "dm.ckpt"
    t.save_checkpoint(path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 8, "n": 16}
    assert checkpoint["datamodule_hparams_name"] == "kwargs"
    assert checkpoint["RecordingDataModule"] == {"calls_so_far": len(dm.calls)}


# ----------------------------------------------------------------------------------------------
# devices
# ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="CPU-only machine")
def test_auto_accelerator_is_cpu_here():
    t = quiet_trainer(accelerator="auto", devices="auto", max_epochs=1)
    # As in Lightning, trainer.accelerator is the Accelerator object; fulmen's own code reads the name.
    assert isinstance(t.accelerator, fulmen.accelerators.CPUAccelerator) and t._accelerator == "cpu"
    assert t.device == torch.device("cpu")
    assert t.num_devices == 1 and t.device_ids == [0]
    model = Model()
    t.fit(model, DataLoader(random_regression(4), batch_size=4))
    assert model.device == torch.device("cpu")
    with pytest.raises(fulmen.errors.MisconfigurationException, match="no CUDA device"):
        pl.Trainer(accelerator="gpu")


# ----------------------------------------------------------------------------------------------
# reproducibility
# ----------------------------------------------------------------------------------------------
class AugmentedDataset(Dataset):
    """Each item draws random augmentation from Python's `random`, NumPy and torch."""

    def __init__(self, n: int = 24) -> None:
        self.x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 3)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        noise = torch.tensor([random.random(), float(np.random.rand()), torch.rand(1).item()])
        return self.x[i] + noise, torch.tensor([float(i)])


def test_seed_everything_with_workers_reproduces_order_and_augmentation():
    class Records(Model):
        def __init__(self):
            super().__init__()
            self.batches: list[torch.Tensor] = []

        def training_step(self, batch, batch_idx):
            self.batches.append(batch[0].clone())
            return super().training_step(batch, batch_idx)

    def run() -> list[torch.Tensor]:
        assert pl.seed_everything(1234, workers=True) == 1234
        assert os.environ["PL_SEED_WORKERS"] == "1"
        model = Records()
        dl = DataLoader(AugmentedDataset(), batch_size=4, shuffle=True, num_workers=2)
        trainer(max_epochs=2).fit(model, dl)
        assert dl.worker_init_fn is not None
        return model.batches

    first, second = run(), run()
    assert len(first) == 12
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # the data really is shuffled and augmented, and the epochs differ
    ids = torch.cat([b[:, 0].floor() for b in first[:6]])
    assert sorted(ids.tolist()) == [float(i) for i in range(24)] and ids.tolist() != sorted(ids.tolist())
    assert not torch.equal(torch.cat(first[:6]), torch.cat(first[6:]))
    noise = torch.cat(first) - torch.cat(first).floor()
    assert noise.unique().numel() == noise.numel()  # no two workers or samples share random draws


def test_deterministic_fits_give_bit_identical_weights():
    class WithDropout(Model):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(3, 16)
            self.drop = torch.nn.Dropout(0.3)
            self.layer = torch.nn.Linear(16, 1)

        def forward(self, x):
            return self.layer(self.drop(torch.relu(self.hidden(x))))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    def run(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        pl.seed_everything(seed)
        model = WithDropout()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        t = trainer(max_epochs=3, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        t.fit(model, DataLoader(random_regression(48), batch_size=8, shuffle=True),
              DataLoader(random_regression(16), batch_size=8))
        return initial, model.state_dict()

    init_a, final_a = run(7)
    init_b, final_b = run(7)
    assert all(torch.equal(init_a[k], init_b[k]) for k in init_a)
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert not all(torch.equal(init_a[k], final_a[k]) for k in init_a)  # it did train
    _, final_other = run(8)
    assert not all(torch.equal(final_a[k], final_other[k]) for k in final_a)


# ----------------------------------------------------------------------------------------------
# iterable datasets without a length
# ----------------------------------------------------------------------------------------------
class Stream(IterableDataset):
    def __init__(self, n: int = 10) -> None:
        self.data = random_regression(n)

    def __iter__(self):
        return iter(zip(*self.data.tensors))


def test_iterable_dataset_without_len_trains_and_validates_at_its_end():
    class Records(Model):
        def __init__(self):
            super().__init__()
            self.val_at: list[int] = []

        def on_validation_start(self):
            self.val_at.append(self.global_step)

    model = Records()
    t = trainer(max_epochs=2)
    t.fit(model, DataLoader(Stream(10), batch_size=4), DataLoader(Stream(6), batch_size=4))
    assert t.num_training_batches == float("inf")
    assert t.num_val_batches == [float("inf")]
    assert model.counts["train"] == 6  # 3 batches (4, 4, 2) per epoch
    assert t.global_step == 6
    assert model.val_at == [3, 6]  # once per epoch, after its last batch
    assert model.counts["val"] == 4


def test_iterable_dataset_with_int_limits_and_max_steps():
    model = Model()
    t = trainer(max_epochs=5, limit_train_batches=2, max_steps=7)
    t.fit(model, DataLoader(Stream(40), batch_size=4))
    assert t.num_training_batches == 2
    assert t.global_step == 7 and model.counts["train"] == 7


def test_dataclass_fields_outside_init_are_moved_too():
    @dataclasses.dataclass
    class Batch:
        x: torch.Tensor
        mask: torch.Tensor = dataclasses.field(init=False)

    batch = Batch(torch.ones(2))
    batch.mask = torch.zeros(2, dtype=torch.bool)
    moved = move_to_device(batch, torch.device("meta"))
    assert moved.x.device.type == "meta" and moved.mask.device.type == "meta"
    assert moved.mask.dtype == torch.bool and batch.mask.device.type == "cpu"
