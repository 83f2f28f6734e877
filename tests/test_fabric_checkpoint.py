"""Fabric's save/load/load_raw (fulmen.fabric.checkpoint) and the exact mid-epoch resume of a
Fabric dataloader (fulmen.fabric.loader_state.LoaderProgress).

The module-level functions are tested with a plain SingleDeviceStrategy; the end-to-end tests run
tests/scripts/fabric_resume.py, a hand-written Fabric loop, SIGKILL it right after a mid-epoch
save, run it again, and compare the final weights bitwise with an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from fulmen.checkpoint import CheckpointError
from fulmen.errors import MisconfigurationException
from fulmen.fabric import checkpoint as fabric_checkpoint
from fulmen.fabric.loader_state import LoaderProgress
from fulmen.fabric.wrappers import _FabricDataLoader, _FabricModule, _FabricOptimizer
from fulmen.precision import Precision
from fulmen.strategies import SingleDeviceStrategy

SCRIPT = Path(__file__).parent / "scripts" / "fabric_resume.py"
ROOT = Path(__file__).resolve().parents[1]


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))


def _data(n: int = 24) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 2, generator=g))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, batches) -> None:
    for x, y in batches:
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _trained():
    torch.manual_seed(1)
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _train(model, optimizer, DataLoader(_data(), batch_size=6))
    return model, optimizer


def _assert_same_optimizer(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys() and sa["state"]
    for i, per_param in sa["state"].items():
        for name, value in per_param.items():
            assert torch.equal(value, sb["state"][i][name]), (i, name)


# --- save / load ------------------------------------------------------------------------------
def test_round_trip_of_model_optimizer_and_values_is_bitwise(tmp_path):
    strategy = SingleDeviceStrategy()
    model, optimizer = _trained()
    path = tmp_path / "ckpt.pt"
    fabric_checkpoint.save(strategy, path, {
        "model": model, "optimizer": optimizer, "step": 4, "tensor": torch.arange(5.0), "extra": {"lr": 0.01},
    })

    torch.manual_seed(2)
    fresh = _net()
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.5)
    state = {"model": fresh, "optimizer": fresh_optimizer, "step": 0, "tensor": None}
    remainder = fabric_checkpoint.load(strategy, path, state)

    assert remainder == {"extra": {"lr": 0.01}}  # what the state did not ask for, as Lightning returns
    assert state["step"] == 4 and torch.equal(state["tensor"], torch.arange(5.0))  # plain values replaced in place
    assert state["model"] is fresh and state["optimizer"] is fresh_optimizer  # objects restored in place
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    _assert_same_optimizer(optimizer, fresh_optimizer)
    assert fresh_optimizer.param_groups[0]["lr"] == 0.01


def test_fabric_wrappers_are_saved_as_what_they_wrap(tmp_path):
    strategy = SingleDeviceStrategy()
    model, optimizer = _trained()
    precision = Precision("32-true", torch.device("cpu"))
    wrapped = _FabricModule(model, strategy, precision)
    wrapped_optimizer = _FabricOptimizer(optimizer, strategy, precision)
    path = tmp_path / "ckpt.pt"
    fabric_checkpoint.save(strategy, path, {"model": wrapped, "optimizer": wrapped_optimizer})

    saved = torch.load(path, weights_only=True)
    assert list(saved["model"]) == list(model.state_dict())  # the user's keys, no wrapper prefix
    fresh = _net()
    fresh_optimizer = torch.optim.Adam(fresh.parameters())
    state = {"model": _FabricModule(fresh, strategy, precision),
             "optimizer": _FabricOptimizer(fresh_optimizer, strategy, precision)}
    assert fabric_checkpoint.load(strategy, path, state) == {}
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), fresh.parameters()))
    _assert_same_optimizer(optimizer, fresh_optimizer)


def test_state_none_returns_the_whole_checkpoint(tmp_path):
    strategy = SingleDeviceStrategy()
    model, _ = _trained()
    fabric_checkpoint.save(strategy, tmp_path / "c.pt", {"model": model, "step": 3})
    whole = fabric_checkpoint.load(strategy, tmp_path / "c.pt")
    assert set(whole) == {"model", "step"} and whole["step"] == 3
    assert all(torch.equal(whole["model"][k], v) for k, v in model.state_dict().items())
    assert set(fabric_checkpoint.load(strategy, tmp_path / "c.pt", {})) == {"model", "step"}


def test_strict_load_names_the_missing_key_and_the_keys_present(tmp_path):
    strategy = SingleDeviceStrategy()
    model, _ = _trained()
    fabric_checkpoint.save(strategy, tmp_path / "c.pt", {"model": model, "step": 3})
    state = {"model": _net(), "scheduler_step": 7}
    with pytest.raises(KeyError, match=r"Received: key='scheduler_step'; the checkpoint holds \['model', 'step'\]"):
        fabric_checkpoint.load(strategy, tmp_path / "c.pt", state)
    # strict=False restores what is there and leaves the rest alone.
    assert fabric_checkpoint.load(strategy, tmp_path / "c.pt", state, strict=False) == {"step": 3}
    assert state["scheduler_step"] == 7
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), state["model"].parameters()))


def test_strict_module_load_refuses_a_filtered_state_dict(tmp_path):
    strategy = SingleDeviceStrategy()
    model, _ = _trained()
    fabric_checkpoint.save(strategy, tmp_path / "c.pt", {"model": model},
                           filter={"model": lambda name, _: "bias" not in name})
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert sorted(saved["model"]) == ["0.weight", "3.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        fabric_checkpoint.load(strategy, tmp_path / "c.pt", {"model": _net()})
    fresh = _net()
    fabric_checkpoint.load(strategy, tmp_path / "c.pt", {"model": fresh}, strict=False)
    assert torch.equal(fresh[0].weight, model[0].weight) and not torch.equal(fresh[0].bias, model[0].bias)


def test_filter_arguments_are_checked(tmp_path):
    strategy, model = SingleDeviceStrategy(), _net()
    with pytest.raises(TypeError, match="maps keys of the state to functions"):
        fabric_checkpoint.save(strategy, tmp_path / "c.pt", {"model": model}, filter=[lambda n, v: True])
    with pytest.raises(ValueError, match=r"Received: \['optimizer'\]; the state has \['model'\]"):
        fabric_checkpoint.save(strategy, tmp_path / "c.pt", {"model": model}, filter={"optimizer": lambda n, v: True})
    with pytest.raises(TypeError, match=r"Received: filter\['model'\]=3"):
        fabric_checkpoint.save(strategy, tmp_path / "c.pt", {"model": model}, filter={"model": 3})
    assert not (tmp_path / "c.pt").exists()


def test_load_raw_into_a_module_and_an_optimizer(tmp_path):
    strategy = SingleDeviceStrategy()
    model, optimizer = _trained()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    fresh = _net()
    fresh_optimizer = torch.optim.Adam(fresh.parameters())
    precision = Precision("32-true", torch.device("cpu"))
    fabric_checkpoint.load_raw(strategy, tmp_path / "model.pt", _FabricModule(fresh, strategy, precision))
    fabric_checkpoint.load_raw(strategy, tmp_path / "optimizer.pt", fresh_optimizer)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), fresh.parameters()))
    _assert_same_optimizer(optimizer, fresh_optimizer)

    bigger = nn.Sequential(*_net(), nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="Missing key"):
        fabric_checkpoint.load_raw(strategy, tmp_path / "model.pt", bigger)
    fabric_checkpoint.load_raw(strategy, tmp_path / "model.pt", bigger, strict=False)
    assert torch.equal(bigger[0].weight, model[0].weight)
    with pytest.raises(TypeError, match="Received: obj=dict"):
        fabric_checkpoint.load_raw(strategy, tmp_path / "model.pt", {"model": fresh})


class _Note:
    """A Python object that torch.load(weights_only=True) refuses to build."""

    def __init__(self, text: str) -> None:
        self.text = text


def test_a_file_with_other_objects_loads_only_when_the_caller_passes_weights_only_false(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"note": _Note("hello"), "step": 3}, path)  # e.g. written by another program
    with pytest.raises(CheckpointError, match="weights_only"):
        fabric_checkpoint.load(SingleDeviceStrategy(), path)
    state = {"step": 0}
    rest = fabric_checkpoint.load(SingleDeviceStrategy(), path, state, weights_only=False)
    assert state == {"step": 3} and rest["note"].text == "hello"


def test_the_file_loads_with_weights_only(tmp_path):
    strategy = SingleDeviceStrategy()
    model, optimizer = _trained()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    optimizer.step()
    scheduler.step()
    loader = _FabricDataLoader(DataLoader(_data(), batch_size=5, shuffle=True))
    batches = iter(loader)
    next(batches)
    fabric_checkpoint.save(strategy, tmp_path / "c.pt", {
        "model": model, "optimizer": optimizer, "scheduler": scheduler, "loader": loader, "step": 1,
    })
    saved = torch.load(tmp_path / "c.pt", weights_only=True)  # raises if anything but tensors and plain data
    assert saved["scheduler"] == scheduler.state_dict() and saved["scheduler"]["last_epoch"] == 1
    assert (saved["loader"]["epoch"], saved["loader"]["batches"]) == (0, 1)
    assert isinstance(saved["loader"]["rng"]["torch"], torch.Tensor)
    fresh_scheduler = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(_net().parameters(), lr=0.1), step_size=2)
    fabric_checkpoint.load(strategy, tmp_path / "c.pt", {"scheduler": fresh_scheduler}, strict=False)
    assert fresh_scheduler.state_dict() == scheduler.state_dict()  # a stateful object restored in place


def test_a_strategy_that_shards_its_checkpoints_is_refused_before_writing(tmp_path):
    from fulmen.strategies import FSDPStrategy

    with pytest.raises(MisconfigurationException, match="Received: state_dict_type='sharded'"):
        fabric_checkpoint.save(FSDPStrategy(state_dict_type="sharded"), tmp_path / "c.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_unreadable_paths_are_clear_errors(tmp_path):
    strategy = SingleDeviceStrategy()
    with pytest.raises(FileNotFoundError, match=r"Received: path='.*missing\.pt'"):
        fabric_checkpoint.load(strategy, tmp_path / "missing.pt", {"model": _net()})
    with pytest.raises(IsADirectoryError, match="is a directory, not a checkpoint file"):
        fabric_checkpoint.load(strategy, tmp_path)
    fabric_checkpoint.save(strategy, tmp_path / "whole.pt", {"weights": torch.randn(1000)})
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt is truncated or corrupted"):
        fabric_checkpoint.load(strategy, tmp_path / "cut.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.txt is not a checkpoint: torch.save did not write it"):
        fabric_checkpoint.load(strategy, tmp_path / "notes.txt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a checkpoint dict. Received: list"):
        fabric_checkpoint.load_raw(strategy, tmp_path / "list.pt", _net())


def test_a_save_interrupted_before_the_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    strategy = SingleDeviceStrategy()
    path = tmp_path / "c.pt"
    fabric_checkpoint.save(strategy, path, {"step": 1, "weights": torch.ones(3)})

    def no_rename(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk gone"):
        fabric_checkpoint.save(strategy, path, {"step": 2, "weights": torch.zeros(3)})
    monkeypatch.undo()
    kept = fabric_checkpoint.load(strategy, path)
    assert kept["step"] == 1 and torch.equal(kept["weights"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temporary file left behind


# --- LoaderProgress: exact mid-epoch resume ---------------------------------------------------
class _Counted(Dataset):
    """A dataset that counts the samples loaded from it (skipped batches must not be loaded)."""

    def __init__(self, n: int) -> None:
        self.n, self.loaded = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        self.loaded += 1
        return torch.tensor([float(i)])


def _resume_matches(make_loader, epochs: int = 2, stop_epoch: int = 1, stop_after: int = 2) -> _Counted:
    """Iterate `epochs` epochs, saving at (stop_epoch, stop_after); a fresh loader loaded from that
    state must yield the rest of the run's batches and random draws exactly. Returns the resumed
    loader's dataset."""
    torch.manual_seed(3)
    progress = LoaderProgress(make_loader())
    saved, after = None, []
    for epoch in range(epochs):
        for i, batch in enumerate(progress.iterate()):
            if saved is not None:
                after.append((batch, torch.rand(2)))  # the loop's own draws (dropout, augmentation)
            if (epoch, i + 1) == (stop_epoch, stop_after):
                saved = progress.state_dict()  # the last thing of the step, as in a loop's save
    assert saved["epoch"] == stop_epoch and saved["batches"] == stop_after

    torch.manual_seed(99)  # a fresh process: another random state
    loader = make_loader()
    resumed = LoaderProgress(loader)
    resumed.load_state_dict(saved)
    replay = []
    for epoch in range(stop_epoch, epochs):
        replay.extend((batch, torch.rand(2)) for batch in resumed.iterate())
    assert len(replay) == len(after)
    for (batch, draw), (batch2, draw2) in zip(after, replay):
        assert torch.equal(batch, batch2) and torch.equal(draw, draw2)
    return loader.dataset


def test_a_resumed_epoch_continues_the_order_and_random_state_without_loading_skipped_batches():
    dataset = _resume_matches(lambda: DataLoader(_Counted(20), batch_size=3, shuffle=True))
    # Epoch 1 resumed after 2 batches of 3: only its remaining 14 samples are loaded.
    assert dataset.loaded == 20 - 2 * 3


def test_resume_with_a_loader_generator_and_a_distributed_sampler():
    _resume_matches(lambda: DataLoader(_Counted(20), batch_size=4, shuffle=True,
                                       generator=torch.Generator().manual_seed(5)))
    data = _Counted(21)
    _resume_matches(lambda: DataLoader(data, batch_size=2, sampler=DistributedSampler(
        data, num_replicas=2, rank=1, shuffle=True, seed=4)), epochs=3, stop_epoch=2, stop_after=3)


def test_resume_of_a_stateful_loader_uses_its_own_state():
    from torchdata.stateful_dataloader import StatefulDataLoader

    _resume_matches(lambda: StatefulDataLoader(_Counted(20), batch_size=3, shuffle=True))


def test_a_save_after_the_epochs_last_batch_resumes_at_the_next_epoch():
    torch.manual_seed(0)
    progress = LoaderProgress(DataLoader(_Counted(6), batch_size=3, shuffle=True))
    batches = progress.iterate()
    next(batches), next(batches)
    state = progress.state_dict()  # the loop has the last batch; the generator has not finished
    assert (state["epoch"], state["batches"], state["epoch_start"]) == (1, 0, None)
    after = [next(progress.iterate()), torch.rand(1)]
    torch.manual_seed(5)
    resumed = LoaderProgress(DataLoader(_Counted(6), batch_size=3, shuffle=True))
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    again = [next(resumed.iterate()), torch.rand(1)]
    assert all(torch.equal(a, b) for a, b in zip(after, again))


def test_every_iteration_is_a_new_epoch_also_when_left_unfinished():
    data = _Counted(8)
    sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=True)
    progress = LoaderProgress(DataLoader(data, batch_size=2, sampler=sampler))
    next(progress.iterate())  # left after one batch (e.g. a `break`)
    assert (progress.epoch, progress.batches) == (0, 1)
    list(progress.iterate())
    assert sampler.epoch == 1 and (progress.epoch, progress.batches) == (2, 0)
    assert progress.state_dict()["epoch"] == 2


def test_loading_a_state_that_is_not_a_loader_state_is_refused():
    progress = LoaderProgress(DataLoader(_Counted(4)))
    with pytest.raises(ValueError, match=r"Received: keys=\['epoch', 'step'\]"):
        progress.load_state_dict({"epoch": 1, "step": 3})
    with pytest.raises(ValueError, match="Received: a list"):
        progress.load_state_dict([1, 2])


def test_fabric_dataloader_round_trips_through_save_and_load(tmp_path):
    strategy = SingleDeviceStrategy()
    torch.manual_seed(0)
    loader = _FabricDataLoader(DataLoader(_data(), batch_size=5, shuffle=True))
    batches = iter(loader)
    next(batches)
    fabric_checkpoint.save(strategy, tmp_path / "c.pt", {"loader": loader})
    expected = [b for b in batches]
    torch.manual_seed(1)
    fresh = _FabricDataLoader(DataLoader(_data(), batch_size=5, shuffle=True))
    fabric_checkpoint.load(strategy, tmp_path / "c.pt", {"loader": fresh})
    got = list(fresh)
    assert len(got) == len(expected) == 4
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(expected, got))


# --- end to end: a Fabric loop SIGKILLed mid-epoch resumes bit-exactly -------------------------
def _run_to_end(workdir: Path, save_every: int, devices: int) -> subprocess.CompletedProcess:
    workdir.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "ckpt.pt", "out.pt", str(save_every), "-1", str(devices)],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _run_until_killed(workdir: Path, save_every: int, wait_at: int, devices: int) -> str:
    """Start the loop, SIGKILL it (every process of it) once it announces step `wait_at`."""
    workdir.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "ckpt.pt", "out.pt", str(save_every), str(wait_at), str(devices)],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.strip() == f"step {wait_at}":
                # A real SIGKILL, to the whole process group (the launcher's rank processes too).
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None and not seen[-1:] == [f"step {wait_at}\n"]:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


@pytest.mark.parametrize(("devices", "save_every", "wait_at", "saved_at"), [
    (1, 3, 14, 12),  # 8 batches an epoch: saved after batch 4 of epoch 2, killed two steps later
    (2, 3, 7, 6),  # DDP, 4 batches a rank and epoch: saved after batch 2 of epoch 2, killed a step later
])
def test_a_fabric_loop_killed_mid_epoch_resumes_to_bit_identical_weights(
    tmp_path, devices, save_every, wait_at, saved_at,
):
    _run_to_end(tmp_path / "reference", save_every, devices)
    reference = torch.load(tmp_path / "reference" / "out.pt", weights_only=True)

    killed = tmp_path / "killed"
    _run_until_killed(killed, save_every, wait_at, devices)
    assert not (killed / "out.pt").exists()
    checkpoint = torch.load(killed / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == saved_at
    assert checkpoint["loader"]["epoch"] == 1 and 0 < checkpoint["loader"]["batches"] < 8 // devices
    if devices == 2:  # every rank's random state, each resumed by its own rank
        ranks = checkpoint["loader"]["ranks"]
        assert [r["batches"] for r in ranks] == [checkpoint["loader"]["batches"]] * 2
        assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])

    resumed = _run_to_end(killed, save_every, devices)
    assert f"resumed at step {saved_at}" in resumed.stdout
    weights = torch.load(killed / "out.pt", weights_only=True)
    assert weights.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(weights[name], value), name


def test_fsdp_save_gathers_one_file_that_loads_into_sharded_and_plain_modules(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("fabric_resume_fsdp.py")), "ckpt.pt", "out.pt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every rank's freshly sharded model and Adam came back: same outputs, also after one more step.
    for rank in (0, 1):
        assert f"rank {rank}: step 2, same before/after: True True" in done.stdout, done.stdout
        # init_module(empty_init=True) under FSDP: built on the meta device, given its shards by
        # setup_module, then loaded: the outputs of the model loaded the ordinary way.
        assert f"rank {rank}: empty_init: meta before True, after False, same True" in done.stdout, done.stdout
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 2 and sorted(checkpoint["optimizer"]["state"]) == [0, 1, 2, 3]
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    plain.load_state_dict(checkpoint["model"])  # whole tensors, the module's own keys
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(plain(out["x"]), out["y"])
