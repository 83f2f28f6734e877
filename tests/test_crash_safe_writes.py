"""Crash-safe checkpoint writes, shown by killing real writers with SIGKILL at many moments.

tests/scripts/save_until_killed.py forks writers that save checkpoints back to back (a fork
server, so that a writer costs a fork rather than a Python start-up). Each writer here is killed
with SIGKILL after a seeded random delay and, before the next one starts, the files are checked:

- a checkpoint under its name either does not exist yet or loads whole with
  `torch.load(weights_only=True)` and holds what was written (no torn or truncated file);
- once a checkpoint existed, one as new or newer is still there (the previous good file is
  never lost, also not by top-k deletion);
- what a kill leaves behind is only the writer's temporary file, which the next
  `ModelCheckpoint.setup` removes.

Both writers spend almost all their time inside a save, so most kills land mid-write; the test
checks that at least one did (it left a temporary file), or it would prove nothing.
"""

from __future__ import annotations

import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import fulmen as pl
from fulmen.callbacks import ModelCheckpoint
from fulmen.checkpoint import CheckpointError, atomic_save, load_checkpoint, stale_temp_files, wait_for_checkpoints
from fulmen.errors import MisconfigurationException

from helpers import quiet_trainer

SCRIPT = Path(__file__).parent / "scripts" / "save_until_killed.py"
KILLS = 12

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the writers are forked (POSIX only)")


class ForkServer:
    """tests/scripts/save_until_killed.py, driven one writer at a time."""

    def __init__(self, mode: str, target: Path, log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), mode, str(target)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, bufsize=0,
            )

    def _answer(self, timeout: float = 60.0) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        assert line, f"the fork server did not answer:\n{self.log.read_text()[-3000:]}"
        return line.strip()

    def kill_writer_after(self, round_: int, delay: float, started: Callable[[], bool] | None = None) -> None:
        """Fork a writer, let it write for `delay` seconds (counted from when `started()` holds, if
        given), SIGKILL it, and wait until it is gone."""
        self.proc.stdin.write(f"fork {round_}\n".encode())
        kind, pid = self._answer().split()
        assert kind == "pid"
        for _ in range(6000):  # up to a minute: a liveness bound, not a timing assertion
            if started is None or started():
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"writer {round_} never started writing:\n{self.log.read_text()[-3000:]}")
        time.sleep(delay)
        os.kill(int(pid), signal.SIGKILL)
        assert self._answer() == f"died {signal.SIGKILL.value}", self.log.read_text()[-3000:]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    servers: list[ForkServer] = []

    def start(mode: str, target: Path) -> ForkServer:
        servers.append(ForkServer(mode, target, tmp_path / f"{mode}.log"))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.mark.parametrize("mode", ["atomic_save", "atomic_save_background"])
def test_atomic_save_killed_at_many_moments_never_leaves_a_torn_file(tmp_path, server, mode):
    target = tmp_path / "run" / "model.ckpt"
    target.parent.mkdir()
    writer = server(mode, target)
    # Kill moments spread over about ten saves of this machine, from before the first save is done on.
    started = time.perf_counter()
    atomic_save({"value": 0, "w": torch.zeros(10_000_000)}, tmp_path / "timing.ckpt")
    span = 10 * (time.perf_counter() - started)
    delays = random.Random(4).sample([0.0, 0.01, 0.03] + [span * k / 9 for k in range(1, 10)], KILLS)
    newest_value, kills_mid_write = None, 0
    for round_, delay in enumerate(delays):
        temps_before = set(stale_temp_files(target.parent))
        writer.kill_writer_after(round_, delay)
        if newest_value is not None:
            assert target.exists(), f"kill {round_} lost the previous checkpoint"
        if target.exists():
            checkpoint = torch.load(target, weights_only=True)  # raises on a truncated or torn file
            assert set(checkpoint) == {"value", "w"}
            value, weights = checkpoint["value"], checkpoint["w"]
            assert weights.shape == (10_000_000,) and torch.all(weights == float(value)), f"kill {round_}"
            assert newest_value is None or value >= newest_value  # never an older file than before
            assert value // 100_000 <= round_
            newest_value = value
        kills_mid_write += bool(set(stale_temp_files(target.parent)) - temps_before)
    assert newest_value is not None, "no writer finished a single save: the delays are too short to test anything"
    assert kills_mid_write >= 1, "no kill landed during a write"

    # What the kills left: the checkpoint, and one temporary file per kill that landed mid-write.
    leftovers = stale_temp_files(target.parent)
    assert len(leftovers) == kills_mid_write
    assert all(p.name.startswith(".model.ckpt.") and p.name.endswith(".tmp") for p in leftovers)
    unrelated = [target.parent / "notes.tmp", target.parent / ".model.ckpt.bak", target.parent / "other.ckpt"]
    for path in unrelated:
        path.write_bytes(b"keep me")
    before = target.read_bytes()

    # The next run's ModelCheckpoint removes exactly the stale temporary files.
    callback = ModelCheckpoint(dirpath=target.parent)
    trainer = quiet_trainer(tmp_path, enable_checkpointing=True, callbacks=[callback])
    callback.setup(trainer, pl.LightningModule(), "fit")
    assert stale_temp_files(target.parent) == []
    assert target.read_bytes() == before
    assert all(path.read_bytes() == b"keep me" for path in unrelated)


def test_model_checkpoint_top_k_killed_at_many_moments_keeps_intact_checkpoints(tmp_path, server):
    dirpath = tmp_path / "checkpoints"
    writer = server("model_checkpoint", dirpath)
    delays = random.Random(7).sample([0.02 * k for k in range(KILLS)], KILLS)
    newest_step, most_files, kills_mid_write = -1, 0, 0

    def saved_beyond(step: int) -> Callable[[], bool]:  # a checkpoint newer than `step` is in place
        return lambda: any(int(re.search(r"step=(\d+)", p.name)[1]) > step for p in dirpath.glob("*.ckpt"))

    for round_, delay in enumerate(delays):
        # Counted from this writer's first checkpoint, so that each round trains past its start-up.
        writer.kill_writer_after(round_, delay, started=saved_beyond(newest_step))
        files = sorted(dirpath.glob("*.ckpt"))
        steps = [load_checkpoint(path)["global_step"] for path in files]  # every file intact (weights_only)
        if newest_step >= 0:
            assert steps and max(steps) >= newest_step, f"kill {round_} lost the newest checkpoint"
        # Top-k deletes the evicted file only once the new one is in place: never fewer than two.
        assert len(files) >= min(most_files, 2), f"kill {round_}: {[p.name for p in files]}"
        newest_step, most_files = max(steps, default=-1), max(most_files, len(files))
        # Each writer's ModelCheckpoint.setup removed what the previous kill left: at most its own.
        temps = stale_temp_files(dirpath)
        assert len(temps) <= 1, [p.name for p in temps]
        kills_mid_write += len(temps)
    assert newest_step >= KILLS  # every writer saved at least once before it was killed
    assert kills_mid_write >= 1, "no kill landed during a write"


# ----------------------------------------------------------------------------------------------
# Background landing (ModelCheckpoint's saves): the same steps, finished off the training loop
# ----------------------------------------------------------------------------------------------
def test_a_background_save_lands_whole_under_its_name(tmp_path):
    path = tmp_path / "run" / "model.ckpt"
    atomic_save({"w": torch.zeros(3)}, path)
    atomic_save({"w": torch.arange(1_000_000.0)}, path, background=True)
    wait_for_checkpoints()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(1_000_000.0))
    assert stale_temp_files(path.parent) == []  # the temporary file became the checkpoint
    # Saves land in order: the last one saved is the one under the name.
    for value in range(3):
        atomic_save({"w": torch.full((1000,), float(value))}, path, background=True)
    assert load_checkpoint(path)["w"][0].item() == 2.0  # loading waits for the landing itself


class _Steps(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_checkpoint_that_cannot_land_fails_the_run_and_keeps_the_previous_one(tmp_path, monkeypatch):
    """The rename of the third checkpoint fails (as on a full or read-only disk): the run stops with
    an error naming that file, its temporary file is gone, and the checkpoint it would have
    displaced (ModelCheckpoint keeps only the newest) is still there and loads."""
    dirpath = tmp_path / "checkpoints"
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("step=3.ckpt"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    trainer = quiet_trainer(tmp_path, max_steps=6, enable_checkpointing=True,
                            callbacks=[ModelCheckpoint(dirpath=dirpath, every_n_train_steps=1, background_landing=True)])
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 2)), batch_size=2)
    with pytest.raises(CheckpointError, match=r"(?s)step=3\.ckpt.*No space left on device.*previous checkpoint"):
        trainer.fit(_Steps(), data)
    files = sorted(p.name for p in dirpath.iterdir())
    assert files == ["epoch=0-step=2.ckpt"], files
    assert load_checkpoint(dirpath / files[0])["global_step"] == 2


def test_a_forked_child_saves_in_the_background_too(tmp_path):
    """The landing thread of the parent does not exist in a forked child: the child starts its own
    (it would otherwise wait forever for a thread that is not there)."""
    atomic_save({"w": torch.zeros(10)}, tmp_path / "parent.ckpt", background=True)  # the parent's thread runs
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            atomic_save({"w": torch.ones(10)}, tmp_path / "child.ckpt", background=True)
            wait_for_checkpoints()
            code = 0
        finally:
            os._exit(code)
    for _ in range(3000):  # a liveness bound of 30 s, not a timing assertion
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the child hung waiting for its background save")
    wait_for_checkpoints()
    assert os.waitstatus_to_exitcode(status) == 0
    assert torch.equal(load_checkpoint(tmp_path / "child.ckpt")["w"], torch.ones(10))
    assert torch.equal(load_checkpoint(tmp_path / "parent.ckpt")["w"], torch.zeros(10))


def test_model_checkpoint_with_background_landing_keeps_the_newest_and_removes_the_rest(tmp_path):
    dirpath = tmp_path / "checkpoints"
    callback = ModelCheckpoint(dirpath=dirpath, every_n_train_steps=1, background_landing=True)
    trainer = quiet_trainer(tmp_path, max_steps=6, enable_checkpointing=True, callbacks=[callback])
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 2)), batch_size=2)
    trainer.fit(_Steps(), data)
    # fit returned: every landing is done, each displaced file was deleted after its successor landed.
    assert sorted(p.name for p in dirpath.iterdir()) == ["epoch=0-step=6.ckpt"]
    assert callback.best_model_path == str(dirpath / "epoch=0-step=6.ckpt")
    assert load_checkpoint(callback.best_model_path)["global_step"] == 6
    with pytest.raises(MisconfigurationException, match=r"background_landing.*Received: background_landing='yes'"):
        ModelCheckpoint(background_landing="yes")


def test_a_background_save_returns_before_it_lands_and_loading_waits_for_it(tmp_path, monkeypatch):
    """Hold the landing thread at its rename: the save has returned, the old checkpoint is still
    the one under the name and the new bytes sit in a temporary file; a load waits for the
    landing and reads the new checkpoint."""
    import threading

    path = tmp_path / "model.ckpt"
    atomic_save({"value": 1}, path)
    release, real_replace = threading.Event(), os.replace

    def held_replace(src, dst, *args, **kwargs):
        if str(dst) == str(path):
            assert release.wait(30), "the test never released the landing"
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", held_replace)
    atomic_save({"value": 2}, path, background=True)
    assert torch.load(path, weights_only=True)["value"] == 1  # returned; not landed yet
    assert len(stale_temp_files(tmp_path)) == 1
    threading.Timer(0.2, release.set).start()
    assert load_checkpoint(path)["value"] == 2  # waited for the landing
    assert stale_temp_files(tmp_path) == []
