"""Kill a real training process with SIGKILL mid-epoch, restart it, and get the same model.

tests/scripts/train_until_killed.py trains with shuffling, dropout, AdamW, a per-step scheduler
and validation twice per epoch, checkpoints every 3 steps, and starts with ckpt_path="last". Here
it is killed at three mid-epoch steps in turn, each time re-run with the same command; the final
weights must equal an uninterrupted run's bit for bit, and the logged points must be the same
steps, none missing and none written twice.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "train_until_killed.py"
KILL_STEPS = (4, 13, 22)  # epochs are 10 steps long: one kill in each epoch, none on a boundary


def train(root: Path, kill_at: int, workers: int, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(root), str(kill_at), str(workers), str(out)],
        capture_output=True, text=True, timeout=300,
    )


def logged_steps(root: Path, key: str) -> list[int]:
    """Every step at which `key` was written, across all the runs' CSV logs."""
    steps = []
    for path in sorted((root / "logs").glob("version_*/metrics.csv")):
        with open(path) as f:
            steps += [int(row["step"]) for row in csv.DictReader(f) if row.get(key)]
    return sorted(steps)


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_then_rerun_gives_bitwise_identical_weights(tmp_path, workers):
    reference = train(tmp_path / "reference", -1, workers, tmp_path / "reference.pt")
    assert reference.returncode == 0, reference.stderr[-3000:]

    root = tmp_path / "interrupted"
    for kill_at in KILL_STEPS:
        killed = train(root, kill_at, workers, tmp_path / "never.pt")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = train(root, -1, workers, tmp_path / "resumed.pt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "never.pt").exists()

    expected = torch.load(tmp_path / "reference.pt", weights_only=True)
    got = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name

    for key in ("train_loss", "val_loss"):
        assert logged_steps(root, key) == logged_steps(tmp_path / "reference", key)
