"""Tests for `TQDMProgressBar` and `ModelSummary`.

The bars are driven hook by hook with a small fake trainer, in the order the Trainer calls them,
and the assertions read the real tqdm output that lands in captured stderr.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from fulmen.callbacks.model_summary import ModelSummary, get_human_readable_count, summarize
from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar


class FakeTrainer:
    """The attributes a progress bar reads, and a count of `progress_bar_metrics` reads."""

    def __init__(self, train=20, val=(3,), sanity=(2,), test=(4,), predict=(4,), version=3):
        self.current_epoch = 0
        self.global_step = 0
        self.max_epochs = 2
        self.max_steps = -1
        self.num_training_batches = train
        self.num_val_batches = list(val)
        self.num_sanity_val_batches = list(sanity)
        self.num_test_batches = list(test)
        self.num_predict_batches = list(predict)
        self.sanity_checking = False
        self.is_global_zero = True
        self.logger = types.SimpleNamespace(version=version) if version is not None else None
        self.loggers = [self.logger] if self.logger is not None else []
        self.metrics = {"loss": 0.12345}
        self.metric_reads = 0

    @property
    def progress_bar_metrics(self):
        # The real property turns tensors into floats, a host sync: count each read.
        self.metric_reads += 1
        return dict(self.metrics)


class InstantBar(TQDMProgressBar):
    """A bar without tqdm's time throttle, so that every `refresh_rate`-th batch draws."""

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.mininterval = 0
        return bar


def run_sanity_check(cb, trainer):
    trainer.sanity_checking = True
    cb.on_sanity_check_start(trainer, None)
    run_validation(cb, trainer, trainer.num_sanity_val_batches)
    cb.on_sanity_check_end(trainer, None)
    trainer.sanity_checking = False


def run_validation(cb, trainer, batches_per_loader):
    cb.on_validation_start(trainer, None)
    for dl_idx, n in enumerate(batches_per_loader):
        for i in range(n):
            cb.on_validation_batch_start(trainer, None, None, i, dl_idx)
            cb.on_validation_batch_end(trainer, None, None, None, i, dl_idx)
    cb.on_validation_end(trainer, None)


def run_train_batches(cb, trainer, n):
    for i in range(n):
        cb.on_train_batch_end(trainer, None, None, None, i)
        trainer.global_step += 1


def start_fit_and_run_train_batches(cb, trainer, n):
    """setup("fit"), on_train_start and on_train_epoch_start, then `n` training batches."""
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    cb.on_train_epoch_start(trainer, None)
    run_train_batches(cb, trainer, n)


def run_fit(cb, trainer, epochs=1):
    cb.setup(trainer, None, "fit")
    run_sanity_check(cb, trainer)
    cb.on_train_start(trainer, None)
    for epoch in range(epochs):
        trainer.current_epoch = epoch
        cb.on_train_epoch_start(trainer, None)
        run_train_batches(cb, trainer, trainer.num_training_batches)
        run_validation(cb, trainer, trainer.num_val_batches)
        cb.on_train_epoch_end(trainer, None)
    cb.on_train_end(trainer, None)


def run_eval(cb, trainer, stage):
    cb.setup(trainer, None, stage)
    getattr(cb, f"on_{stage}_start")(trainer, None)
    for i in range(getattr(trainer, f"num_{stage}_batches")[0]):
        getattr(cb, f"on_{stage}_batch_start")(trainer, None, None, i, 0)
        getattr(cb, f"on_{stage}_batch_end")(trainer, None, None, None, i, 0)
    getattr(cb, f"on_{stage}_end")(trainer, None)


# --- progress bar: importing ------------------------------------------------------------------


def test_import_does_not_need_tqdm():
    # torch itself imports tqdm (torch.hub), so "not in sys.modules" cannot hold in any process
    # that imports torch. Instead make tqdm unimportable: the import and the constructor must
    # still work, which proves tqdm is only loaded when a bar is drawn.
    code = (
        "import sys; sys.modules['tqdm'] = None\n"
        "import fulmen.callbacks.progress as p\n"
        "p.TQDMProgressBar(refresh_rate=3)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_notebook_bars_only_in_a_kernel_with_ipywidgets(monkeypatch):
    from tqdm import tqdm as plain_tqdm

    from fulmen.callbacks import progress

    assert progress._tqdm_class() is plain_tqdm  # no IPython here
    kernel = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    assert progress._in_jupyter_kernel()
    # A terminal IPython shell is not a kernel.
    kernel.config = {"TerminalInteractiveShell": {}}
    assert not progress._in_jupyter_kernel()
    # In a kernel without ipywidgets the widget bar cannot draw: fall back to text bars.
    kernel.config = {"IPKernelApp": {}}
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: None)
    assert progress._tqdm_class() is plain_tqdm


# --- progress bar: training -------------------------------------------------------------------


def test_train_bar_reaches_total_and_shows_metrics(capsys):
    trainer = FakeTrainer(train=7)
    cb = TQDMProgressBar()
    start_fit_and_run_train_batches(cb, trainer, 7)
    bar = cb.train_progress_bar
    assert (bar.n, bar.total) == (7, 7)
    cb.on_train_epoch_end(trainer, None)
    cb.on_train_end(trainer, None)

    err = capsys.readouterr().err
    assert "Epoch 0: 100%" in err
    assert "7/7" in err
    # tqdm formats floats to 3 significant digits; the logger version shows as v_num.
    assert "v_num=3, loss=0.123" in err


def test_refresh_rate_draws_every_n_batches_and_reads_metrics_only_then(capsys):
    trainer = FakeTrainer(train=12)
    cb = InstantBar(refresh_rate=5)
    start_fit_and_run_train_batches(cb, trainer, 12)
    # Draws after batches 5 and 10, and at the last batch 12: one metrics read each.
    assert trainer.metric_reads == 3
    cb.on_train_epoch_end(trainer, None)  # shows epoch-level metrics: one more read
    assert trainer.metric_reads == 4
    cb.on_train_end(trainer, None)

    err = capsys.readouterr().err
    for drawn in ("5/12", "10/12", "12/12"):
        assert drawn in err
    for skipped in ("1/12", "4/12", "6/12", "11/12"):
        assert skipped not in err


def test_time_throttle_skips_metric_reads_between_draws(capsys):
    # refresh_rate=1, but tqdm draws at most once per `mininterval` (1 s when stderr is not a
    # terminal): the metrics are read only for the draws, here just the final one.
    trainer = FakeTrainer(train=200)
    cb = TQDMProgressBar(refresh_rate=1)
    start_fit_and_run_train_batches(cb, trainer, 200)
    assert trainer.metric_reads <= 3
    assert cb.train_progress_bar.n == 200
    cb.on_train_end(trainer, None)
    err = capsys.readouterr().err
    assert "200/200" in err and "loss=0.123" in err
    assert err.count("\r") < 20  # not one redraw per batch


def test_full_fit_labels_sanity_check_and_validation(capsys):
    trainer = FakeTrainer(train=4, val=(3, 2), sanity=(2, 2))
    run_fit(TQDMProgressBar(), trainer, epochs=2)
    err = capsys.readouterr().err
    assert "Sanity Checking DataLoader 0: 100%" in err
    assert "Sanity Checking DataLoader 1: 100%" in err
    # The epoch bar counts training batches only; each val dataloader gets its own total.
    assert "Epoch 0: 100%" in err and "Epoch 1: 100%" in err and "4/4" in err
    assert "Validation DataLoader 0: 100%" in err and "3/3" in err
    assert "Validation DataLoader 1: 100%" in err and "2/2" in err


def test_validation_metrics_reach_the_epoch_bar(capsys):
    trainer = FakeTrainer(train=2, val=(2,))
    cb = TQDMProgressBar()
    start_fit_and_run_train_batches(cb, trainer, 2)
    trainer.metrics["val_acc"] = 0.875
    run_validation(cb, trainer, [2])
    assert cb.train_progress_bar.postfix.endswith("val_acc=0.875")
    cb.on_train_end(trainer, None)


def test_bars_are_closed_after_each_stage():
    trainer = FakeTrainer(train=3)
    cb = TQDMProgressBar()
    start_fit_and_run_train_batches(cb, trainer, 3)
    train_bar = cb.train_progress_bar
    cb.on_validation_start(trainer, None)
    val_bar = cb.val_progress_bar
    cb.on_validation_end(trainer, None)
    assert val_bar.disable and cb.val_progress_bar is None  # tqdm marks a closed bar disabled
    cb.on_train_epoch_end(trainer, None)
    cb.on_train_end(trainer, None)
    assert train_bar.disable and cb.train_progress_bar is None
    assert not {train_bar, val_bar} & set(type(train_bar)._instances)


def test_on_exception_closes_every_open_bar():
    trainer = FakeTrainer()
    cb = TQDMProgressBar()
    start_fit_and_run_train_batches(cb, trainer, 3)
    cb.on_validation_start(trainer, None)
    cb.on_validation_batch_start(trainer, None, None, 0)
    bars = [cb.train_progress_bar, cb.val_progress_bar]
    cb.on_exception(trainer, None, RuntimeError("boom"))
    assert all(bar.disable for bar in bars)
    assert cb.train_progress_bar is None and cb.val_progress_bar is None


def test_leave_true_keeps_one_bar_per_epoch():
    trainer = FakeTrainer(train=2, val=())
    cb = TQDMProgressBar(leave=True)
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    seen = []
    for epoch in range(2):
        trainer.current_epoch = epoch
        cb.on_train_epoch_start(trainer, None)
        run_train_batches(cb, trainer, 2)
        seen.append(cb.train_progress_bar)
        cb.on_train_epoch_end(trainer, None)
        assert cb.train_progress_bar is None  # closed, and left on screen
    cb.on_train_end(trainer, None)
    assert seen[0] is not seen[1]
    assert [bar.desc for bar in seen] == ["Epoch 0: ", "Epoch 1: "]


def test_unknown_length_and_max_steps_totals(capsys):
    trainer = FakeTrainer(train=float("inf"))
    cb = InstantBar()
    start_fit_and_run_train_batches(cb, trainer, 3)
    assert cb.train_progress_bar.total is None and cb.train_progress_bar.n == 3
    assert "3/?" in capsys.readouterr().err

    # Without an epoch limit, the bar ends where max_steps ends training.
    trainer.num_training_batches, trainer.max_epochs, trainer.max_steps = 20, -1, 15
    trainer.global_step = 10
    cb.on_train_epoch_start(trainer, None)
    assert cb.train_progress_bar.total == 5
    cb.on_train_end(trainer, None)


# --- progress bar: test, predict, switches ----------------------------------------------------


@pytest.mark.parametrize("stage, label", [("test", "Testing"), ("predict", "Predicting")])
def test_eval_bars(capsys, stage, label):
    cb = TQDMProgressBar()
    run_eval(cb, FakeTrainer(), stage)
    assert getattr(cb, f"{stage}_progress_bar") is None
    err = capsys.readouterr().err
    assert f"{label} DataLoader 0: 100%" in err and "4/4" in err


def test_refresh_rate_zero_prints_nothing_and_reads_nothing(capsys):
    trainer = FakeTrainer()
    cb = TQDMProgressBar(refresh_rate=0)
    assert not cb.is_enabled
    run_fit(cb, trainer, epochs=2)
    run_eval(cb, trainer, "test")
    run_eval(cb, trainer, "predict")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert trainer.metric_reads == 0


def test_only_global_rank_zero_draws(capsys):
    trainer = FakeTrainer()
    trainer.is_global_zero = False
    cb = TQDMProgressBar()
    run_fit(cb, trainer)
    assert cb.is_disabled
    assert capsys.readouterr().err == ""
    cb.enable()
    assert cb.is_enabled


def test_invalid_refresh_rate_is_rejected():
    with pytest.raises(ValueError, match="refresh_rate=-1"):
        TQDMProgressBar(refresh_rate=-1)


def test_get_metrics_merges_version_and_progress_bar_metrics():
    cb = TQDMProgressBar()
    assert cb.get_metrics(FakeTrainer(version=7), None) == {"v_num": 7, "loss": 0.12345}
    # Long string versions keep their last four characters.
    assert cb.get_metrics(FakeTrainer(version="run_2024_0042"), None)["v_num"] == "0042"
    assert cb.get_metrics(FakeTrainer(version=None), None) == {"loss": 0.12345}
    assert isinstance(cb, ProgressBar)


def test_print_goes_above_an_open_bar(capsys):
    trainer = FakeTrainer()
    cb = TQDMProgressBar()
    cb.print("no bar yet", 1)
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    cb.on_train_epoch_start(trainer, None)
    cb.print("hello", 2)
    cb.on_train_end(trainer, None)
    captured = capsys.readouterr()
    assert captured.out == "no bar yet 1\nhello 2\n"
    # tqdm cleared the bar before the message and drew it again after.
    assert captured.err.count("Epoch 0") >= 2


def test_callback_with_open_bars_can_be_deep_copied():
    trainer = FakeTrainer()
    cb = TQDMProgressBar(refresh_rate=2)
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    clone = copy.deepcopy(cb)
    assert clone.train_progress_bar is None and clone.refresh_rate == 2
    cb.on_train_end(trainer, None)


# --- model summary ----------------------------------------------------------------------------


def mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))  # 2112 + 0 + 650


def summary_lines(text):
    return [" ".join(line.split()) for line in text.splitlines()]  # collapse column padding


def test_summary_of_a_known_model():
    lines = summary_lines(summarize(mlp()))
    assert lines[0] == "| Name | Type | Params | Mode"
    assert lines[2:5] == [
        "0 | 0 | Linear | 2.1 K | train",
        "1 | 1 | ReLU | 0 | train",
        "2 | 2 | Linear | 650 | train",
    ]
    assert lines[6:] == [
        "2.8 K Trainable params",
        "0 Non-trainable params",
        "2.8 K Total params",
        "0.011 Total estimated model params size (MB)",  # 2762 * 4 bytes
        "3 Modules in train mode",
        "0 Modules in eval mode",
    ]


def test_frozen_parameters_count_as_non_trainable_and_exact_small_counts():
    net = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 1))  # 55 + 6 parameters
    net[0].requires_grad_(False)
    net[1].eval()
    lines = summary_lines(summarize(net))
    assert "1 | 1 | Linear | 6 | eval" in lines
    assert "6 Trainable params" in lines
    assert "55 Non-trainable params" in lines
    assert "61 Total params" in lines
    assert "1 Modules in eval mode" in lines

    big = mlp()
    big[0].requires_grad_(False)
    lines = summary_lines(summarize(big))
    assert "650 Trainable params" in lines and "2.1 K Non-trainable params" in lines


def test_max_depth_and_parameters_owned_by_the_root():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp()
            self.scale = nn.Parameter(torch.ones(5))

    depth1 = summary_lines(summarize(Model(), max_depth=1))
    assert "0 | body | Sequential | 2.8 K | train" in depth1
    assert "| other params | n/a | 5 | n/a" in depth1
    assert not any("body.0" in line for line in depth1)

    every = summary_lines(summarize(Model(), max_depth=-1))
    assert "1 | body.0 | Linear | 2.1 K | train" in every
    assert "3 | body.2 | Linear | 650 | train" in every

    no_rows = summary_lines(summarize(Model(), max_depth=0))
    assert no_rows[1].startswith("---") and no_rows[2].startswith("---")
    assert "2.8 K Total params" in no_rows

    with pytest.raises(ValueError, match="max_depth=-2"):
        summarize(Model(), max_depth=-2)


def test_human_readable_count():
    assert [get_human_readable_count(n) for n in (0, 123, 1234, 12_345, 999_999, 2_762)] == [
        "0  ", "123  ", "1.2 K", "12.3 K", "999 K", "2.8 K"
    ]
    assert get_human_readable_count(3_400_000) == "3.4 M"
    assert get_human_readable_count(5 * 10**15) == "5,000 T"


def test_model_summary_callback_prints_on_rank_zero_only(capsys):
    trainer = types.SimpleNamespace(is_global_zero=True, precision="16-true")
    ModelSummary().on_fit_start(trainer, mlp())
    out = capsys.readouterr().out
    assert "2.8 K     Total params" in out
    assert "0.006     Total estimated model params size (MB)" in out  # 2762 * 2 bytes

    trainer.is_global_zero = False
    ModelSummary().on_fit_start(trainer, mlp())
    trainer.is_global_zero = True
    ModelSummary(max_depth=0).on_fit_start(trainer, mlp())
    assert capsys.readouterr().out == ""
