"""What a failing or interrupted fit leaves behind: everything told, everything closed, nothing lost.

An exception in user code calls `on_exception` on every callback and on the module, closes the
progress bars, finalizes the loggers with status "failed" (TensorBoard's event file flushed and
closed: its points read back), leaves every checkpoint intact, and re-raises the user's
exception. Ctrl-C (KeyboardInterrupt) does the same, with `trainer.interrupted` True, and then,
as in PyTorch Lightning 2.6.6, `fit` raises SystemExit(1): the script ends with status 1 and
nothing after `fit` runs (a chained `&& next_step` neither).
`OnExceptionCheckpoint` saves `<dirpath>/<filename>.ckpt` on the way out of fit.

test_exceptions_and_interrupts.py::test_real_* run tests/scripts/fit_until_signalled.py in a
real process and send it a real SIGINT (or let it fail), then read its files back. Test-level
`KeyboardInterrupt` and basic `on_exception` calls are in test_evaluation_and_state.py.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.callbacks import ModelCheckpoint, OnExceptionCheckpoint, TQDMProgressBar
from fulmen.checkpoint import load_checkpoint, stale_temp_files
from fulmen.loggers import CSVLogger, TensorBoardLogger
from fulmen.state import TrainerStatus

from helpers import quiet_trainer, random_regression

SCRIPT = Path(__file__).parent / "scripts" / "fit_until_signalled.py"


def loader() -> DataLoader:
    return DataLoader(random_regression(32, features=4), batch_size=8)  # 4 steps per epoch


class Net(pl.LightningModule):
    """Raises `error` in training_step at global step `fail_at` (never when None)."""

    def __init__(self, fail_at: int | None = None, error: BaseException | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.fail_at, self.error = fail_at, error
        self.exceptions: list[BaseException] = []

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise self.error
        x, y = batch
        loss = F.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        if self.error is not None and self.fail_at is None:
            raise self.error
        x, y = batch
        self.log("val_loss", F.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_exception(self, exception):
        self.exceptions.append(exception)


class Spy(pl.Callback):
    def __init__(self) -> None:
        self.exceptions: list[BaseException] = []
        self.bars: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.progress_bar_callback is not None:
            self.bars.append(trainer.progress_bar_callback.train_progress_bar)

    def on_exception(self, trainer, pl_module, exception):
        self.exceptions.append(exception)


class RecordingTensorBoardLogger(TensorBoardLogger):
    def finalize(self, status: str) -> None:
        self.statuses = [*getattr(self, "statuses", []), status]
        super().finalize(status)


class RecordingCSVLogger(CSVLogger):
    def finalize(self, status: str) -> None:
        self.statuses = [*getattr(self, "statuses", []), status]
        super().finalize(status)


def tensorboard_steps(log_dir: Path, tag: str) -> list[int]:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def csv_steps(path: Path, key: str) -> list[int]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(None not in row for row in rows)  # no row longer than the header
    return [int(row["step"]) for row in rows if row[key]]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def failing_fit(tmp_path: Path, error: BaseException, **trainer_kwargs):
    """Fit a Net that raises `error` at step 7, with a progress bar, both loggers and checkpoints,
    in a run directory that already holds a checkpoint from an earlier run."""
    earlier = tmp_path / "checkpoints" / "epoch=0-step=3.ckpt"
    earlier.parent.mkdir(parents=True)
    torch.save({"state_dict": Net().state_dict(), "note": "an earlier run"}, earlier)
    before = earlier.read_bytes()
    model, spy = Net(fail_at=7, error=error), Spy()
    tensorboard = RecordingTensorBoardLogger(tmp_path / "logs", name="", version=0)
    csv_logger = RecordingCSVLogger(tmp_path / "logs", name="", version=0)
    crash = OnExceptionCheckpoint(tmp_path / "crash")
    trainer = quiet_trainer(
        tmp_path, max_epochs=5, log_every_n_steps=1, enable_checkpointing=True, enable_progress_bar=True,
        logger=[tensorboard, csv_logger],
        callbacks=[spy, TQDMProgressBar(), crash,
                   ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=3, save_top_k=-1)],
        **trainer_kwargs,
    )
    return trainer, model, spy, (tensorboard, csv_logger), crash, (earlier, before)


def assert_cleaned_up(tmp_path, trainer, model, spy, loggers, crash, earlier, error) -> None:
    assert spy.exceptions == [error] and model.exceptions == [error]
    assert trainer.interrupted and trainer.state.status == TrainerStatus.INTERRUPTED
    # The progress bar was closed (tqdm disables a bar when it closes it) and let go.
    assert spy.bars and spy.bars[-1].disable and trainer.progress_bar_callback.train_progress_bar is None
    # Loggers: finalized once, as failed; the writer closed; every point before the failure readable.
    tensorboard, csv_logger = loggers
    assert tensorboard.statuses == ["failed"] and csv_logger.statuses == ["failed"]
    assert tensorboard._experiment is None
    log_dir = tmp_path / "logs" / "version_0"
    assert tensorboard_steps(log_dir, "train_loss") == list(range(7))
    assert csv_steps(log_dir / "metrics.csv", "train_loss") == list(range(7))
    # Checkpoints: the earlier run's untouched (this run's step-3 file got a version suffix instead of
    # its name), this run's two whole, no temporary file.
    path, before = earlier
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.glob("*.ckpt")) == [
        "epoch=0-step=3-v1.ckpt", "epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]
    assert load_checkpoint(path.parent / "epoch=1-step=6.ckpt")["global_step"] == 6
    assert stale_temp_files(path.parent) == []
    # OnExceptionCheckpoint: the state at the failure, 7 steps done.
    saved = load_checkpoint(crash.ckpt_path)
    assert saved["global_step"] == 7 and saved["epoch"] == 1 and saved["resume"]["batches_done"] == 3


def test_an_exception_in_user_code_cleans_up_and_propagates(tmp_path):
    error = ValueError("bad batch in training_step")
    trainer, model, spy, loggers, crash, earlier = failing_fit(tmp_path, error)
    with pytest.raises(ValueError, match="bad batch in training_step") as info:
        trainer.fit(model, loader())
    assert info.value is error  # the user's own exception object, re-raised
    assert_cleaned_up(tmp_path, trainer, model, spy, loggers, crash, earlier, error)


def test_keyboard_interrupt_cleans_up_then_exits_with_status_1(tmp_path):
    error = KeyboardInterrupt()
    trainer, model, spy, loggers, crash, earlier = failing_fit(tmp_path, error)
    with pytest.warns(UserWarning, match="Detected KeyboardInterrupt: shut down gracefully; trainer.interrupted"):
        with pytest.raises(SystemExit) as exit_info:
            trainer.fit(model, loader())
    assert exit_info.value.code == 1
    assert_cleaned_up(tmp_path, trainer, model, spy, loggers, crash, earlier, error)


def test_a_failing_on_exception_handler_does_not_hide_the_users_error(tmp_path):
    class Broken(pl.Callback):
        def on_exception(self, trainer, pl_module, exception):
            raise OSError("disk full")

    error = ValueError("the user's error")
    model, spy = Net(fail_at=2, error=error), Spy()
    logger = RecordingCSVLogger(tmp_path, name="", version=0)
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=logger, callbacks=[Broken(), spy])
    with pytest.warns(UserWarning, match=r"Broken\.on_exception raised OSError: disk full while handling ValueError"):
        with pytest.raises(ValueError, match="the user's error"):
            trainer.fit(model, loader())
    assert spy.exceptions == [error] and model.exceptions == [error]  # the others still ran
    assert logger.statuses == ["failed"]


def test_on_exception_checkpoint_resumes_and_is_removed_after_a_successful_fit(tmp_path):
    crash = OnExceptionCheckpoint(tmp_path / "crash", filename="died")
    assert crash.ckpt_path == str(tmp_path / "crash" / "died.ckpt")
    torch.manual_seed(0)
    failing = Net(fail_at=5, error=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        quiet_trainer(tmp_path, max_epochs=3, callbacks=[crash]).fit(failing, loader())
    saved = load_checkpoint(crash.ckpt_path)
    assert saved["global_step"] == 5
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in failing.state_dict().items())

    resumed = Net()
    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=[crash])
    trainer.fit(resumed, loader(), ckpt_path=crash.ckpt_path)
    assert trainer.global_step == 12  # 5 steps before the failure, 7 after
    assert not Path(crash.ckpt_path).exists()  # the failure it recorded is over


def test_on_exception_checkpoint_saves_only_during_fit(tmp_path):
    crash = OnExceptionCheckpoint(tmp_path)
    model = Net(error=RuntimeError("boom in validation_step"))
    with pytest.raises(RuntimeError, match="boom in validation_step"):
        quiet_trainer(tmp_path, callbacks=[crash]).validate(model, loader(), verbose=False)
    assert not Path(crash.ckpt_path).exists()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"dirpath": None}, r"`dirpath` must be a directory path\. Received: dirpath=None\. Fix:"),
    ({"dirpath": "x", "filename": ""}, r"`filename` must be a non-empty string.*Received: filename=''\. Fix:"),
])
def test_on_exception_checkpoint_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        OnExceptionCheckpoint(**kwargs)


# ----------------------------------------------------------------------------------------------
# real processes, real signals
# ----------------------------------------------------------------------------------------------
def _default_sigint() -> None:
    # A suite started with `cmd &` or nohup ignores SIGINT, and a child inherits that: Python then
    # installs no KeyboardInterrupt handler, the signal below would do nothing and the endless fit
    # would run into the timeout. The child gets the disposition an interactive shell gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(root: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(root), mode], preexec_fn=_default_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_steps(root: Path) -> tuple[list[int], list[int]]:
    """The steps at which train_loss reached TensorBoard and the CSV file."""
    log_dir = root / "logs" / "version_0"
    return tensorboard_steps(log_dir, "train_loss"), csv_steps(log_dir / "metrics.csv", "train_loss")


def test_real_sigint_ends_fit_gracefully(tmp_path):
    proc = start(tmp_path, "sigint")
    try:
        assert proc.stdout.readline().strip() == "READY"  # training is under way, at step 10
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-3000:]  # as Lightning's: after the graceful shut-down, status 1
    assert "Detected KeyboardInterrupt: shut down gracefully; trainer.interrupted is True." in err
    assert "Traceback" not in err
    last = out.strip().splitlines()[-1]
    assert last.startswith("fit raised SystemExit(1): interrupted=True status=interrupted global_step="), out
    steps_done = int(last.rsplit("=", 1)[1])
    assert steps_done >= 10
    # Both files are complete: every step up to the interrupt, none twice. (The signal may land
    # between a step and its logging, so the interrupted step itself may be missing.)
    for steps in logged_steps(tmp_path):
        assert steps == list(range(len(steps))) and len(steps) in (steps_done - 1, steps_done)
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        load_checkpoint(path)
    assert stale_temp_files(tmp_path / "checkpoints") == []
    assert load_checkpoint(tmp_path / "crash" / "on_exception.ckpt")["global_step"] == steps_done


def test_real_exception_in_user_code_exits_1_with_complete_files(tmp_path):
    proc = start(tmp_path, "raise")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.rstrip().endswith("RuntimeError: user bug at step 10"), err[-3000:]
    assert "fit raised" not in out
    assert logged_steps(tmp_path) == (list(range(10)), list(range(10)))
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")) == [
        "epoch=0-step=5.ckpt", "epoch=1-step=10.ckpt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "epoch=1-step=10.ckpt")["global_step"] == 10
    assert load_checkpoint(tmp_path / "crash" / "on_exception.ckpt")["global_step"] == 10


def test_an_error_after_a_preemption_signal_is_still_handled_as_an_error(tmp_path):
    """SIGTERM arrives, then the same batch fails before fulmen reaches its safe point: that is a
    failure (on_exception runs, the loggers close as failed), not a clean preemption exit."""
    import os

    class Seen(pl.Callback):
        def __init__(self):
            self.exceptions = []

        def on_exception(self, trainer, pl_module, exception):
            self.exceptions.append(type(exception).__name__)

    class SignalThenFail(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            if batch_idx == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # noted by fulmen's handler, acted on between batches
                raise ValueError("out of memory, say")
            x, y = batch
            return F.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen = Seen()
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[seen])
    with pytest.raises(ValueError, match="out of memory, say"):
        trainer.fit(SignalThenFail(), DataLoader(random_regression(16), batch_size=4))
    assert seen.exceptions == ["ValueError"]
    assert trainer.state.status == TrainerStatus.INTERRUPTED
