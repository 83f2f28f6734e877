"""Kill a real training process with SIGKILL mid-epoch, restart it, and get the same model.

tests/scripts/train_until_killed.py trains with shuffling, dropout, AdamW, a per-step scheduler
and validation twice per epoch, checkpoints every 3 steps, and starts with ckpt_path="last". Here
it is killed at three mid-epoch steps in turn, each time re-run with the same command; the final
weights must equal an uninterrupted run's bit for bit, and the logged points must be the same
steps, none missing and none written twice.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "train_until_killed.py"
KILL_STEPS = (4, 13, 22)  # epochs are 10 steps long: one kill in each epoch, none on a boundary


def train(root: Path, kill_at: int, workers: int, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(root), str(kill_at), str(workers), str(out), *extra],
        capture_output=True, text=True, timeout=300,
    )


def logged_steps(root: Path, key: str) -> list[int]:
    """Every step at which `key` was written, across all the runs' CSV logs."""
    steps = []
    for path in sorted((root / "logs").glob("version_*/metrics.csv")):
        with open(path) as f:
            steps += [int(row["step"]) for row in csv.DictReader(f) if row.get(key)]
    return sorted(steps)


@pytest.mark.parametrize(("workers", "loader"), [(0, "DataLoader"), (2, "DataLoader"), (0, "stateful")])
def test_sigkill_mid_epoch_then_rerun_gives_bitwise_identical_weights(tmp_path, workers, loader):
    extra = ("stateful",) if loader == "stateful" else ()
    if extra:
        pytest.importorskip("torchdata.stateful_dataloader")
    reference = train(tmp_path / "reference", -1, workers, tmp_path / "reference.pt", *extra)
    assert reference.returncode == 0, reference.stderr[-3000:]

    root = tmp_path / "interrupted"
    for kill_at in KILL_STEPS:
        killed = train(root, kill_at, workers, tmp_path / "never.pt", *extra)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = train(root, -1, workers, tmp_path / "resumed.pt", *extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "never.pt").exists()

    expected = torch.load(tmp_path / "reference.pt", weights_only=True)
    got = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name

    for key in ("train_loss", "val_loss"):
        assert logged_steps(root, key) == logged_steps(tmp_path / "reference", key)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_saves_at_the_batch_boundary_and_resumes_exactly(tmp_path, sig):
    reference = train(tmp_path / "reference", -1, 0, tmp_path / "reference.pt")
    assert reference.returncode == 0, reference.stderr[-3000:]

    root = tmp_path / "preempted"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(root), "-2", "0", str(tmp_path / "never.pt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in process.stdout:  # wait until training is in the middle of its second epoch
            if line.strip() == "step 14":
                process.send_signal(sig)
                break
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + sig, err[-3000:]
    assert f"received {signal.Signals(sig).name}" in out and "ckpt_path='last'" in out
    saved = torch.load(root / "ckpts" / "preempted.ckpt", weights_only=True)
    assert 14 <= saved["global_step"] < 30 and saved["resume"]["batches_done"] not in (0, 10)
    assert not (tmp_path / "never.pt").exists()

    resumed = train(root, -1, 0, tmp_path / "resumed.pt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = torch.load(tmp_path / "reference.pt", weights_only=True)
    got = torch.load(tmp_path / "resumed.pt", weights_only=True)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert logged_steps(root, "train_loss") == logged_steps(tmp_path / "reference", "train_loss")


def test_sigusr1_under_slurm_requeues_the_job(tmp_path):
    # A stand-in `scontrol` on PATH records how it was called; SLURM itself is not needed.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train"}
    root = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(root), "-2", "0", str(tmp_path / "never.pt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        for line in process.stdout:
            if line.strip() == "step 3":
                process.send_signal(signal.SIGUSR1)
                break
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "the SLURM job was requeued" in out
    assert calls.read_text().split() == ["requeue", "4242"]
    assert (root / "ckpts" / "preempted.ckpt").is_file()


def test_preemption_signals_are_configurable_and_checked():
    import fulmen as pl
    from fulmen.errors import MisconfigurationException

    assert pl.Trainer(logger=False).preemption_signals == (signal.SIGTERM, signal.SIGUSR1)
    assert pl.Trainer(logger=False, preemption_signals=None).preemption_signals == ()
    assert pl.Trainer(logger=False, preemption_signals=(signal.SIGINT,)).preemption_signals == (signal.SIGINT,)
    with pytest.raises(MisconfigurationException, match=r"Received: preemption_signals=\('TERM',\)"):
        pl.Trainer(logger=False, preemption_signals=("TERM",))
