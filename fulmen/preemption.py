"""Preemption: SIGTERM (and SIGUSR1) become a checkpoint at the next batch boundary and a clean exit.

Clusters announce preemption with a signal (SLURM sends SIGUSR1 ahead of the time limit when the
job asks for it, and SIGTERM before killing it). During `fit`, fulmen only notes the signal; once
the current batch is completely done it saves `preempted.ckpt` next to the other checkpoints,
flushes and closes the loggers, requeues the job when SLURM sent SIGUSR1 (as Lightning does),
and exits with status 128 + the signal number. Running the same command again with
`ckpt_path="last"` resumes exactly where it stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fulmen.checkpoint import checkpoint_dir

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

# Plain ints, so that the Trainer's default reads as data (e.g. in a LightningCLI config).
DEFAULT_SIGNALS = (int(signal.SIGTERM), int(signal.SIGUSR1))


class PreemptionWatch:
    """Installs the signal handlers for the duration of a fit (main thread only) and records the signal."""

    def __init__(self, signals: tuple[int, ...]):
        self.signals = signals
        self.received: int | None = None  # by this process
        self.agreed: int | None = None  # by any rank, as the ranks' vote found (several processes)
        self._previous: dict[int, Any] = {}

    def due(self, distributed: bool) -> int | None:
        """The signal to stop for now: with several processes, only once all ranks know of it."""
        return self.agreed if distributed else self.received

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum  # only note it: the loop acts at a safe point

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def stop_for_preemption(trainer: Trainer, signum: int) -> None:
    """Save, close the loggers, requeue under SLURM, and exit. Called between batches."""
    name = signal.Signals(signum).name
    path = str(Path(checkpoint_dir(trainer)) / "preempted.ckpt")
    trainer.save_checkpoint(path)  # every rank at the same batch (see fulmen.loop._agree_on_stop)
    if not trainer.is_global_zero:  # rank 0 speaks for the run: loggers, requeue, message
        raise SystemExit(128 + signum)
    for logger in trainer.loggers:
        logger.finalize("preempted")
    requeued = _slurm_requeue(signum)
    print(
        f"fulmen: received {name} at epoch {trainer.current_epoch}, step {trainer.global_step}; saved {path}"
        + ("; the SLURM job was requeued." if requeued else ". Run the same command with ckpt_path='last' to resume."),
        flush=True,
    )
    raise SystemExit(128 + signum)


def _slurm_requeue(signum: int) -> bool:
    """As Lightning does under SLURM: on SIGUSR1 (sent ahead of the time limit with
    `sbatch --signal=USR1@90`), put the job back in the queue so it resumes from the checkpoint."""
    job = os.environ.get("SLURM_JOB_ID")
    if signum != signal.SIGUSR1 or not job or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return False
    try:
        return subprocess.run(["scontrol", "requeue", job], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
