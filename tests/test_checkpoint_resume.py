"""Tests for checkpoint files and resuming: what is written, how it is written, how it is read.

Files are read back with `torch.load(weights_only=True)`; resumed training is compared with an
uninterrupted run bit for bit (`torch.equal`) on weights, optimizer state and LR.

What the resume test pins, honestly: with shuffle=False and no dropout the data and the math
do not depend on random state, so resuming at an epoch boundary must reproduce the
uninterrupted run exactly. Restoring random-generator state (shuffled data order, dropout)
across a resume is not claimed here.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import os
import pickle
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as pl
import fulmen.checkpoint
import fulmen.errors
from fulmen.__about__ import __version__
from fulmen.callbacks import ModelCheckpoint
from fulmen.checkpoint import CheckpointError, atomic_save, load_checkpoint

from helpers import quiet_trainer, random_regression

pytestmark = pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")


@pytest.fixture(autouse=True)
def _no_seed_env(monkeypatch):
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(name, raising=False)


def loader(n: int = 32, batch_size: int = 8) -> DataLoader:
    return DataLoader(random_regression(n, features=4), batch_size=batch_size, shuffle=False)


class Net(pl.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.1, momentum: float = 0.9) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        self.counts: Counter[str] = Counter()

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        self.counts["train"] += 1
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return [optimizer], [scheduler]


# No sanity check, on the default accelerator.
trainer = functools.partial(quiet_trainer, accelerator="auto", num_sanity_val_steps=0)


def fitted(tmp_path: Path, **trainer_kwargs) -> tuple[pl.Trainer, Net, Path]:
    torch.manual_seed(0)
    model = Net()
    t = trainer(max_epochs=1, **trainer_kwargs)
    t.fit(model, loader())
    path = tmp_path / "model.ckpt"
    t.save_checkpoint(path)
    return t, model, path


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def test_save_checkpoint_writes_atomically_and_loads_with_weights_only(tmp_path):
    t, model, path = fitted(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt"]  # no temp file left behind
    checkpoint = torch.load(path, weights_only=True)
    assert states_equal(checkpoint["state_dict"], model.state_dict())


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    t, model, path = fitted(tmp_path)
    before = path.read_bytes()
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"PARTIAL" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        t.save_checkpoint(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt"]


def test_atomic_save_creates_missing_directories(tmp_path):
    target = tmp_path / "a" / "b" / "x.ckpt"
    atomic_save({"w": torch.ones(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert os.listdir(target.parent) == ["x.ckpt"]


def test_checkpoint_keys_and_values(tmp_path):
    t, model, path = fitted(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    expected = {"epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers", "callbacks",
                "hyper_parameters", "hparams_name", "resume", "fulmen_version"}
    assert expected <= set(checkpoint)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 4  # saved after one epoch of 4 steps
    assert checkpoint["fulmen_version"] == __version__
    assert checkpoint["hyper_parameters"] == {"hidden": 8, "lr": 0.1, "momentum": 0.9}
    assert checkpoint["hparams_name"] == "kwargs"
    assert len(checkpoint["optimizer_states"]) == 1
    momentum = checkpoint["optimizer_states"][0]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, t.optimizers[0].state[model.body[0].weight]["momentum_buffer"])
    assert checkpoint["lr_schedulers"] == [t.lr_schedulers[0].state_dict()]
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 1
    assert checkpoint["resume"]["global_step"] == 4 and checkpoint["resume"]["epoch"] == 1
    assert isinstance(checkpoint["callbacks"], dict)


def test_weights_only_checkpoint(tmp_path):
    t, model, _ = fitted(tmp_path)
    path = tmp_path / "weights.ckpt"
    t.save_checkpoint(path, weights_only=True)
    checkpoint = torch.load(path, weights_only=True)
    assert "optimizer_states" not in checkpoint and "lr_schedulers" not in checkpoint
    assert states_equal(checkpoint["state_dict"], model.state_dict())
    with pytest.raises(fulmen.errors.MisconfigurationException, match="weights only"):
        trainer(max_epochs=2).fit(Net(), loader(), ckpt_path=path)


# ----------------------------------------------------------------------------------------------
# resuming
# ----------------------------------------------------------------------------------------------
def _full_state(t: pl.Trainer, model: Net) -> dict:
    optimizer = t.optimizers[0]
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "momentum": [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()],
        "lr": optimizer.param_groups[0]["lr"],
        "scheduler": t.lr_schedulers[0].state_dict(),
        "global_step": t.global_step,
        "epoch": t.current_epoch,
    }


def _assert_same(resumed: dict, reference: dict) -> None:
    assert states_equal(resumed["weights"], reference["weights"])
    assert all(torch.equal(a, b) for a, b in zip(resumed["momentum"], reference["momentum"]))
    assert resumed["lr"] == reference["lr"]
    assert resumed["scheduler"] == reference["scheduler"]
    assert resumed["global_step"] == reference["global_step"]
    assert resumed["epoch"] == reference["epoch"]


@pytest.mark.parametrize("source", ["model_checkpoint", "save_checkpoint"])
def test_resume_from_an_epoch_end_matches_an_uninterrupted_run(tmp_path, source):
    torch.manual_seed(0)
    reference_model = Net()
    reference = trainer(max_epochs=4)
    reference.fit(reference_model, loader(), loader(16))
    expected = _full_state(reference, reference_model)
    assert expected["global_step"] == 16 and expected["epoch"] == 4
    assert expected["lr"] == 0.1 * 0.5**4

    torch.manual_seed(0)
    first_model = Net()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1)
    first = trainer(max_epochs=2, callbacks=[ckpt], enable_checkpointing=True)
    first.fit(first_model, loader(), loader(16))
    if source == "model_checkpoint":
        path = tmp_path / "ckpts" / "epoch=1-step=8.ckpt"
    else:
        path = tmp_path / "after_fit.ckpt"
        first.save_checkpoint(path)
    assert path.is_file()

    torch.manual_seed(999)  # a differently initialised model: everything must come from the file
    resumed_model = Net()
    resumed = trainer(max_epochs=4)
    resumed.fit(resumed_model, loader(), loader(16), ckpt_path=path)
    assert resumed.ckpt_path == str(path)
    assert resumed_model.counts["train"] == 8  # only epochs 2 and 3 ran
    _assert_same(_full_state(resumed, resumed_model), expected)


def test_ckpt_path_last_without_a_checkpoint_warns_and_starts_fresh(tmp_path):
    torch.manual_seed(0)
    model = Net()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    t = trainer(max_epochs=1, enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=tmp_path / "none")])
    with pytest.warns(UserWarning, match='ckpt_path="last": no checkpoint found'):
        t.fit(model, loader(), ckpt_path="last")
    assert t.ckpt_path is None
    assert t.global_step == 4 and model.counts["train"] == 4
    assert not states_equal(initial, model.state_dict())


def test_ckpt_path_last_resumes_from_the_newest_checkpoint(tmp_path):
    torch.manual_seed(0)
    first = trainer(max_epochs=2, enable_checkpointing=True,
                    callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    first.fit(Net(), loader())
    model = Net()
    second = trainer(max_epochs=3, enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=tmp_path)])
    second.fit(model, loader(), ckpt_path="last")
    assert Path(second.ckpt_path).name == "last.ckpt"
    assert model.counts["train"] == 4 and second.global_step == 12


def test_ckpt_path_last_outside_fit_is_an_error(tmp_path):
    t = trainer(enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=tmp_path)])
    with pytest.raises(fulmen.errors.MisconfigurationException, match='ckpt_path="last" found no checkpoint'):
        t.validate(Net(), loader(), ckpt_path="last", verbose=False)


# ----------------------------------------------------------------------------------------------
# load_from_checkpoint
# ----------------------------------------------------------------------------------------------
def test_load_from_checkpoint_restores_hparams_and_weights(tmp_path):
    torch.manual_seed(0)
    model = Net(hidden=6, lr=0.05)
    path = tmp_path / "m.ckpt"
    trained = trainer(max_epochs=1)
    trained.fit(model, loader())
    trained.save_checkpoint(path)

    loaded = Net.load_from_checkpoint(path)
    assert type(loaded) is Net
    assert dict(loaded.hparams) == {"hidden": 6, "lr": 0.05, "momentum": 0.9}
    assert loaded.body[0].out_features == 6
    assert states_equal(loaded.state_dict(), model.state_dict())


def test_load_from_checkpoint_kwargs_override_hparams(tmp_path):
    _, model, path = fitted(tmp_path)
    loaded = Net.load_from_checkpoint(path, lr=0.5)
    assert loaded.hparams.lr == 0.5 and loaded.hparams.hidden == 8
    assert states_equal(loaded.state_dict(), model.state_dict())
    # an argument that changes the architecture no longer fits the weights
    with pytest.raises(RuntimeError, match="size mismatch"):
        Net.load_from_checkpoint(path, hidden=3)


def test_load_from_checkpoint_map_location(tmp_path):
    _, model, path = fitted(tmp_path)
    seen = []

    def to_cpu(storage, location):
        seen.append(location)
        return storage

    loaded = Net.load_from_checkpoint(path, map_location=to_cpu)
    assert seen and set(seen) == {"cpu"}
    assert states_equal(loaded.state_dict(), model.state_dict())
    for location in ("cpu", torch.device("cpu"), {"cpu": "cpu"}):
        loaded = Net.load_from_checkpoint(path, map_location=location)
        assert loaded.device == torch.device("cpu")
        assert states_equal(loaded.state_dict(), model.state_dict())


def test_load_from_checkpoint_strict(tmp_path):
    _, model, path = fitted(tmp_path)

    class Bigger(Net):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.extra = torch.nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match="Missing key"):
        Bigger.load_from_checkpoint(path)
    loaded = Bigger.load_from_checkpoint(path, strict=False)
    assert states_equal({k: v for k, v in loaded.state_dict().items() if not k.startswith("extra.")},
                        model.state_dict())


# ----------------------------------------------------------------------------------------------
# damaged and unsafe files
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_raises_checkpoint_error_naming_the_file(tmp_path, damage):
    _, _, path = fitted(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / f"{damage}.ckpt"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not a checkpoint" * 50,
                     "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=str(bad)):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match=str(bad)):
        Net.load_from_checkpoint(bad)
    model = Net()
    with pytest.raises(CheckpointError, match=str(bad)):
        trainer(max_epochs=2).fit(model, loader(), ckpt_path=bad)
    assert model.counts["train"] == 0


@pytest.mark.parametrize("content", [b"hello world\n", b"name: run\nlr: 0.1\n", b"\x89PNG\r\n\x1a\n"])
def test_a_file_torch_save_did_not_write_is_called_not_a_checkpoint(tmp_path, content):
    # Before: a KeyError from deep inside torch.load for the first, "holds objects other than
    # tensors ... could run code" for the others: neither says what is wrong with the file.
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"notes\.txt is not a checkpoint: torch\.save did not write it"):
        load_checkpoint(path)


def test_missing_checkpoint_raises_checkpoint_error(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="not found.*nope.ckpt"):
        load_checkpoint(missing)
    assert isinstance(CheckpointError("x"), fulmen.errors.MisconfigurationException)


class _Payload:
    """Unpickling this object creates `target` (a stand-in for running arbitrary code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_pickle_that_runs_code_is_refused_and_never_executed(tmp_path):
    # First show the payload is live: an unsafe load really creates its file.
    proof_target = tmp_path / "proof"
    proof = tmp_path / "proof.ckpt"
    torch.save({"state_dict": {}, "x": _Payload(proof_target)}, proof)
    torch.load(proof, weights_only=False)
    assert proof_target.exists()

    target = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "x": _Payload(target)}, evil)
    with pytest.raises(CheckpointError, match=f"Refused to load {evil}"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="Refused"):
        Net.load_from_checkpoint(evil)
    with pytest.raises(CheckpointError, match="Refused"):
        trainer(max_epochs=1).fit(Net(), loader(), ckpt_path=evil)
    assert not target.exists()


def _two_epoch_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    """Checkpoints after epochs 0 and 1 of a run, with the second one clearly the newer."""
    torch.manual_seed(0)
    first = trainer(max_epochs=2, enable_checkpointing=True,
                    callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1)])
    first.fit(Net(), loader())
    older, newer = tmp_path / "ckpts" / "epoch=0-step=4.ckpt", tmp_path / "ckpts" / "epoch=1-step=8.ckpt"
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))  # explicit times: "newest" must not hinge on clock ticks
    os.utime(newer, ns=(2_000_000_000, 2_000_000_000))
    return older, newer


def test_ckpt_path_last_skips_a_truncated_newest_checkpoint_with_a_warning(tmp_path, monkeypatch):
    older, newer = _two_epoch_checkpoints(tmp_path)
    data = newer.read_bytes()
    newer.write_bytes(data[: len(data) // 3])  # e.g. the disk filled up while another tool copied it
    os.utime(newer, ns=(2_000_000_000, 2_000_000_000))
    reads = []
    real_load = fulmen.checkpoint.load_checkpoint
    monkeypatch.setattr(fulmen.checkpoint, "load_checkpoint",
                        lambda path, **kwargs: reads.append(Path(path)) or real_load(path, **kwargs))

    model = Net()
    resumed = trainer(max_epochs=3, enable_checkpointing=True,
                      callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1)])
    with pytest.warns(UserWarning, match=rf'ckpt_path="last" skips {newer}: Checkpoint {newer} is truncated or '
                                         r"corrupted.*Falling back to the next newest checkpoint"):
        resumed.fit(model, loader(), ckpt_path="last")
    assert resumed.ckpt_path == str(older)
    assert reads == [newer, older]  # the intact one is read once, not again to restore it
    assert model.counts["train"] == 8 and resumed.global_step == 12  # epochs 1 and 2 ran
    assert newer.read_bytes() == data[: len(data) // 3]  # the damaged file is left for inspection


def test_ckpt_path_last_with_no_intact_checkpoint_starts_fresh_with_a_notice(tmp_path):
    older, newer = _two_epoch_checkpoints(tmp_path)
    older.write_bytes(b"")
    newer.write_bytes(newer.read_bytes()[:100])
    model = Net()
    again = trainer(max_epochs=1, enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpts")])
    with pytest.warns(UserWarning) as record:
        with pytest.raises(fulmen.errors.MisconfigurationException, match="found no intact checkpoint of test_checkpoint_resume.Net among the 2"):
            trainer(enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpts")]).validate(
                Net(), loader(), ckpt_path="last", verbose=False)  # outside fit there is nothing to start
        again.fit(model, loader(), ckpt_path="last")
    messages = [str(w.message) for w in record]
    assert any(f"skips {newer}" in m for m in messages) and any(f"skips {older}" in m for m in messages)
    assert ('ckpt_path="last": no intact checkpoint of test_checkpoint_resume.Net among the 2 found for this run; '
            'starting from scratch.') in messages
    assert again.ckpt_path is None and again.global_step == 4 and model.counts["train"] == 4


def test_a_raw_pickle_file_is_refused(tmp_path):
    target = tmp_path / "pwned"
    evil = tmp_path / "raw.ckpt"
    evil.write_bytes(pickle.dumps({"x": _Payload(target)}, protocol=2))
    with pytest.raises(CheckpointError, match=str(evil)):
        load_checkpoint(evil)
    assert not target.exists()


# ----------------------------------------------------------------------------------------------
# hyperparameters as plain data
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class OptimConfig:
    lr: float = 0.1
    betas: tuple = (0.9, 0.99)


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class Configured(Net):
    def __init__(self, config: OptimConfig, args: argparse.Namespace, data_dir: Path, mode: Mode,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.save_hyperparameters()


def test_structured_hparams_are_stored_as_plain_data(tmp_path):
    model = Configured(OptimConfig(), argparse.Namespace(batch_size=32, tags=["a", "b"]),
                       Path("/data/digits"), Mode.FAST)
    assert model.hparams.config == OptimConfig()  # the live object is kept in hparams
    t = trainer(max_epochs=1)
    t.fit(model, loader(8))
    path = tmp_path / "h.ckpt"
    t.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # would fail on any non-plain object
    assert checkpoint["hyper_parameters"] == {
        "hidden": 8, "lr": 0.1, "momentum": 0.9,  # the parent's __init__ arguments, saved by Net
        "config": {"lr": 0.1, "betas": (0.9, 0.99)},  # tuples and dtypes load with weights_only as they are
        "args": {"batch_size": 32, "tags": ["a", "b"]},
        "data_dir": "/data/digits",
        "mode": "fast",
        "dtype": torch.float32,
    }
    # ... and the classes beside them, so that load_from_checkpoint passes __init__ what it was given.
    assert {path[0]: kind for path, (kind, _, _) in checkpoint["hyper_parameters_classes"].items()} == {
        "config": "dataclass", "args": "namespace", "data_dir": "path", "mode": "enum"}
    loaded = Configured.load_from_checkpoint(path)
    assert loaded.hparams.config == OptimConfig() and loaded.hparams.args == argparse.Namespace(batch_size=32, tags=["a", "b"])
    assert loaded.hparams.data_dir == Path("/data/digits") and loaded.hparams.mode is Mode.FAST


def test_checkpoints_wait_for_the_gradient_accumulation_window_to_close(tmp_path):
    # 10 batches, optimizer steps every 2; validation after batches 3, 6 and 9, each followed by a
    # ModelCheckpoint save. Saved after batch 3 or 9, a checkpoint would drop half a window's gradients:
    # those saves wait for the window to close (after batches 4 and 10).
    torch.manual_seed(0)
    dirpath = tmp_path / "ckpts"
    callback = ModelCheckpoint(dirpath=dirpath, save_top_k=-1, save_on_train_epoch_end=False)
    t = trainer(max_epochs=1, accumulate_grad_batches=2, val_check_interval=3, enable_checkpointing=True,
                callbacks=[callback])
    t.fit(Net(), loader(80), loader(16))
    saved = [torch.load(p, weights_only=True)["resume"] for p in sorted(dirpath.glob("*.ckpt"))]
    assert sorted((r["batches_done"], r["global_step"]) for r in saved) == [(4, 2), (6, 3), (10, 5)]


def test_an_optimizer_holding_a_parameter_outside_the_module_resumes(tmp_path):
    """E.g. a learnable temperature kept beside the model: its optimizer state is keyed by index
    and loads back as it is (no parameter names needed, so none are looked up)."""
    temperature = torch.nn.Parameter(torch.ones(()))

    class WithOutsideParameter(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((self.layer(x) * temperature - y) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam([*self.parameters(), temperature], lr=0.01)

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(WithOutsideParameter(), DataLoader(random_regression(16), batch_size=4))
    trainer.save_checkpoint(tmp_path / "outside.ckpt")
    saved = load_checkpoint(tmp_path / "outside.ckpt")["optimizer_states"][0]
    resumed = quiet_trainer(tmp_path, max_epochs=2)
    resumed.fit(WithOutsideParameter(), DataLoader(random_regression(16), batch_size=4), ckpt_path=tmp_path / "outside.ckpt")
    assert resumed.global_step == 8
    assert saved["state"][2]["step"].item() == 4.0  # the outside parameter's Adam state was saved and restored
    assert resumed.optimizers[0].state_dict()["state"][2]["step"].item() == 8.0
