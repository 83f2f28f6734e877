"""Messages that end where the user looks (issue 13, part 3).

- A runtime error that follows one of fulmen doctor's findings carries the finding and its fix
  as the last lines of its traceback (PEP 678 notes; in the message on Python 3.10): torch's
  "backward through the graph a second time" after a `loss.backward()` in training_step, a
  device error after a `.cuda()` in the module.
- A training_step that returns None for every batch of the first epoch fails with FM201; a batch
  skipped now and then stays a one-time warning, attributed to the user's training_step.
- `Trainer(max_epoch=3)` is a TypeError naming `max_epochs`; `max_epochs='3'` names the int.
- `fulmen doctor` reports a file named twice (a folder and a file in it) once.
- The end of fit says why it stopped, in Lightning's words; Lightning's warning when an epoch
  has fewer batches than log_every_n_steps.
- Ctrl-C: a graceful shut-down, then exit status 1, so `python train.py && next` stops there.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen import doctor
from fulmen.callbacks import EarlyStopping
from fulmen.errors import MisconfigurationException, _append_to_message, add_note
from fulmen.loggers import CSVLogger
from fulmen.utilities.warnings import PossibleUserWarning

REPO = Path(__file__).resolve().parent.parent


def loader(n: int = 16, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)),
                      batch_size=batch_size)


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.tensor(1.0))  # never improves

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def last_lines(exc: BaseException, n: int = 1) -> list[str]:
    """The last `n` lines of the traceback Python prints for `exc`."""
    return "".join(traceback.format_exception(exc)).rstrip().splitlines()[-n:]


# --- PEP 678 notes ------------------------------------------------------------------------------


def test_a_note_is_the_last_line_of_the_traceback_and_on_310_part_of_the_message():
    err = RuntimeError("torch's message")
    add_note(err, "Fix: what fulmen knows.")
    assert last_lines(err, 2) == ["RuntimeError: torch's message", "Fix: what fulmen knows."]
    # Python 3.10 prints no notes: there the note is appended to the message (also with several args).
    old = RuntimeError("torch's message")
    _append_to_message(old, "Fix: what fulmen knows.")
    assert str(old) == "torch's message\nFix: what fulmen knows."
    several = OSError(2, "No such file")
    _append_to_message(several, "Fix: check the path.")
    assert several.args == (2, "No such file", "Fix: check the path.")


class BackwardInStep(Net):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        loss.backward()  # the classic mistake: the Trainer runs backward on the returned loss again
        return loss


BACKWARD_LINE = inspect.getsourcelines(BackwardInStep.training_step)[1] + 2


@pytest.mark.parametrize("doctor_at_fit", ["1", "0"])
def test_double_backward_after_a_manual_backward_ends_with_the_fix(tmp_path, monkeypatch, doctor_at_fit):
    monkeypatch.setenv("FULMEN_DOCTOR", doctor_at_fit)  # the diagnosis does not depend on the fit-start warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="backward through the graph a second time") as info:
            quiet_trainer(tmp_path, max_epochs=1).fit(BackwardInStep(), loader())
    finding, fix = last_lines(info.value, 2)
    assert finding.startswith(f"fulmen doctor FM301 at {__file__}:{BACKWARD_LINE}: `loss.backward()` in training_step")
    assert fix.startswith("fulmen: under automatic optimization the Trainer runs backward on the loss")
    assert "Fix: delete loss.backward()" in fix and fix.endswith("(Not retain_graph=True, which torch suggests: "
                                                               "the gradients of the step would be added twice.)")


class CudaInStep(Net):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x.cuda()), y)  # the Trainer runs on the CPU


def test_a_device_error_after_a_hard_coded_cuda_names_the_line_and_the_fix(tmp_path):
    line = inspect.getsourcelines(CudaInStep.training_step)[1] + 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A CPU-only torch: "Torch not compiled with CUDA enabled"; with a GPU: tensors on two devices.
        with pytest.raises((AssertionError, RuntimeError)) as info:
            quiet_trainer(tmp_path, max_epochs=1).fit(CudaInStep(), loader())
    finding, fix = last_lines(info.value, 2)
    assert finding.startswith(f"fulmen doctor FM101 at {__file__}:{line}: .cuda() in CudaInStep.training_step")
    assert fix.startswith("fulmen: the Trainer puts the module and each batch on its device (cpu)")
    assert "Fix: let the Trainer place the module and batches" in fix


def test_an_error_fulmen_has_no_diagnosis_for_is_left_as_it_is(tmp_path):
    class Fails(Net):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("the user's own bug")

    with pytest.raises(RuntimeError) as info:
        quiet_trainer(tmp_path, max_epochs=1).fit(Fails(), loader())
    assert last_lines(info.value) == ["RuntimeError: the user's own bug"]
    assert not getattr(info.value, "__notes__", [])


# --- training_step returning None ---------------------------------------------------------------


class ReturnsNone(Net):
    def __init__(self, skip=lambda batch_idx: True) -> None:
        super().__init__()
        self.skip = skip

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        if not self.skip(batch_idx):
            return loss


@pytest.mark.parametrize("plain", [True, False], ids=["plain_step", "hooked_step"])
def test_none_from_every_batch_of_the_first_epoch_is_fm201(tmp_path, plain):
    class OnBackward(pl.Callback):  # a step hook: the full, hook-by-hook step
        def on_before_backward(self, trainer, pl_module, loss):
            pass

    callbacks = [] if plain else [OnBackward()]
    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=callbacks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MisconfigurationException, match=(
                r"^ReturnsNone\.training_step returned None for every batch of the first epoch, so nothing was "
                r"trained\. Received: None from 4 of 4 batches\. Fix: end training_step with `return loss` .*"
                r"\(fulmen doctor code FM201\)$")):
            trainer.fit(ReturnsNone(), loader())
    assert trainer._hooks.plain_step is plain
    assert trainer.current_epoch == 0 and trainer.interrupted


def test_a_batch_skipped_now_and_then_is_one_warning_at_the_users_training_step(tmp_path):
    line = inspect.getsourcelines(ReturnsNone.training_step)[1]
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.fit(ReturnsNone(skip=lambda batch_idx: batch_idx == 1), loader())
    skipped = [w for w in record if "returned None, so this batch is skipped" in str(w.message)]
    assert len(skipped) == 1 and "(fulmen doctor code FM201)" in str(skipped[0].message)
    assert (skipped[0].filename, skipped[0].lineno) == (__file__, line)
    assert trainer.current_epoch == 2  # trained on: not the every-batch mistake


def test_manual_optimization_returns_none_legitimately(tmp_path):
    class Manual(Net):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(super().training_step(batch, batch_idx))
            opt.step()

    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(Manual(), loader())
    assert trainer.global_step == 8


# --- Trainer arguments ----------------------------------------------------------------------------


def test_a_misspelt_trainer_argument_names_the_real_one():
    with pytest.raises(TypeError, match=r"^Trainer\.__init__\(\) got an unexpected keyword argument 'max_epoch' "
                                        r"\(did you mean max_epochs\?\)\. Received: max_epoch=3\. Fix: max_epochs=3\.$"):
        pl.Trainer(max_epoch=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'qqqq'\. Received: qqqq=1\. Fix: use one of the "
                                        r"arguments help\(Trainer\) lists\.$"):
        pl.Trainer(qqqq=1)
    # The explicit signature stays what tools and the CLI read.
    params = inspect.signature(pl.Trainer).parameters
    assert params["max_epochs"].default is None and "max_epoch" not in params


def test_a_misspelt_argument_of_a_trainer_subclass_is_caught_too():
    class MyTrainer(pl.Trainer):
        def __init__(self, *, note: str = "", **kwargs):
            super().__init__(**kwargs)
            self.note = note

    with pytest.raises(TypeError, match=r"'logr' \(did you mean logger\?\)"):
        MyTrainer(note="x", logr=False)


@pytest.mark.parametrize("kwargs, fix", [
    ({"max_epochs": "3"}, "pass an int, e.g. max_epochs=3 (use -1 for no limit)."),
    ({"max_steps": 100.0}, "pass an int, e.g. max_steps=100 (use -1 for no limit)."),
    ({"log_every_n_steps": "10"}, "pass an int, e.g. log_every_n_steps=10."),
    ({"max_epochs": -2}, "use -1 for no limit."),  # an int out of range keeps the special value's hint
])
def test_a_wrong_type_names_the_conversion(kwargs, fix):
    with pytest.raises(MisconfigurationException) as info:
        pl.Trainer(**kwargs)
    assert str(info.value).endswith(f"Fix: {fix}")


# --- fulmen doctor --------------------------------------------------------------------------------


def test_doctor_reads_a_file_named_twice_once(tmp_path, capsys):
    model = tmp_path / "model.py"
    model.write_text("import fulmen as pl\n\nclass M(pl.LightningModule):\n    def forward(self, x):\n"
                     "        return x.cuda()\n")
    assert doctor.main([str(tmp_path), str(model), str(tmp_path / "." / "model.py")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if "FM101" in line] == [f"{model}:5:16: FM101 (error) .cuda() in M.forward pins "
                                                         "this code to one GPU; it breaks CPU, MPS and multi-device "
                                                         "runs."]
    assert out[-1].startswith("fulmen doctor: 1 finding in 1 file (1 error)")


def test_fit_start_doctor_warnings_point_at_the_users_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FULMEN_DOCTOR", "1")
    doctor._cache.clear()
    line = inspect.getsourcelines(CudaInStep.training_step)[1] + 2
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        doctor.check_at_fit(CudaInStep())
    found = [(w.filename, w.lineno) for w in record if issubclass(w.category, doctor.DoctorWarning)]
    assert found == [(__file__, line)]


# --- why fit stopped ------------------------------------------------------------------------------


@pytest.fixture
def info_lines():
    """The lines fulmen's rank-zero info logger emits (how Lightning's "`Trainer.fit` stopped" goes out)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("fulmen.utilities.rank_zero")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def stopped(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("`Trainer.fit` stopped")]


def test_fit_says_max_epochs_or_max_steps_reached(tmp_path, info_lines):
    quiet_trainer(tmp_path, max_epochs=2).fit(Net(), loader())
    quiet_trainer(tmp_path, max_steps=3).fit(Net(), loader())
    assert stopped(info_lines) == ["`Trainer.fit` stopped: `max_epochs=2` reached.",
                                   "`Trainer.fit` stopped: `max_steps=3` reached."]


def test_fit_says_max_time_reached(tmp_path, info_lines):
    trainer = quiet_trainer(tmp_path, max_time={"seconds": 0})
    trainer.fit(Net(), loader())
    assert trainer.global_step == 1
    assert stopped(info_lines) == ["`Trainer.fit` stopped: `max_time` reached."]


def test_fit_says_early_stopping_stopped_it_with_monitor_best_and_patience(tmp_path, info_lines):
    trainer = quiet_trainer(tmp_path, max_epochs=10, callbacks=[EarlyStopping("val_loss", patience=2)])
    trainer.fit(Net(), loader(), loader(8))
    assert trainer.current_epoch == 3
    assert stopped(info_lines) == ["`Trainer.fit` stopped: EarlyStopping stopped at epoch 2: val_loss did not "
                                   "improve for 2 epochs (best 1, patience=2)."]


def test_fit_says_a_callback_set_should_stop(tmp_path, info_lines):
    class StopAfterEpoch1(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                trainer.should_stop = True

    quiet_trainer(tmp_path, max_epochs=10, callbacks=[StopAfterEpoch1()]).fit(Net(), loader())
    assert stopped(info_lines) == ["`Trainer.fit` stopped: a callback set trainer.should_stop at epoch 1."]


def test_fewer_batches_than_log_every_n_steps_is_lightnings_warning(tmp_path):
    expected = (r"^The number of training batches \(4\) is smaller than the logging interval "
                r"Trainer\(log_every_n_steps=50\)\. Set a lower value for log_every_n_steps if you want to see logs "
                r"for the training epoch\.$")
    logger = CSVLogger(tmp_path, name="", version=0)
    with pytest.warns(PossibleUserWarning, match=expected):
        quiet_trainer(tmp_path, max_epochs=1, logger=logger).fit(Net(), loader())
    with warnings.catch_warnings(record=True) as record:  # no logger, or enough batches: nothing to say
        warnings.simplefilter("always")
        quiet_trainer(tmp_path, max_epochs=1).fit(Net(), loader())
        quiet_trainer(tmp_path, max_epochs=1, logger=CSVLogger(tmp_path, name="", version=1),
                      log_every_n_steps=4).fit(Net(), loader())
    assert not [w for w in record if issubclass(w.category, PossibleUserWarning)]


# --- Ctrl-C ---------------------------------------------------------------------------------------

CHILD = """
import os, signal, sys
# A suite started with SIGINT ignored (`cmd &`, nohup) passes that on: Ctrl-C must raise here.
signal.signal(signal.SIGINT, signal.default_int_handler)
import torch
from torch.utils.data import DataLoader, TensorDataset
import fulmen as pl


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            print("READY", os.getpid(), flush=True)
        return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
trainer = pl.Trainer(accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Net(), data)
open("after", "w").close()
"""


def test_ctrl_c_ends_the_script_with_status_1_and_a_chained_command_does_not_run(tmp_path):
    (tmp_path / "train.py").write_text(CHILD)
    command = f"{sys.executable} train.py && touch chained"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shell = subprocess.Popen(["bash", "-c", command], cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready, pid = shell.stdout.readline().split()
        assert ready == "READY"
        os.kill(int(pid), signal.SIGINT)  # the training process, as Ctrl-C in its terminal
        out, err = shell.communicate(timeout=180)
    finally:
        shell.kill()
    assert shell.returncode == 1, err[-3000:]
    assert "Detected KeyboardInterrupt: shut down gracefully; trainer.interrupted is True. `Trainer.fit` " \
           "stopped at epoch" in err and "exiting with status 1." in err
    assert "Traceback" not in err
    assert not (tmp_path / "after").exists() and not (tmp_path / "chained").exists()
