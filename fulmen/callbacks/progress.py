"""Progress bars: the `ProgressBar` base callback and the default `TQDMProgressBar`, with the helpers
Lightning keeps beside them (`get_standard_metrics`, `convert_inf`, the padded `Tqdm` bar class).

`ProgressBar` owns what every bar needs from the Trainer: how many batches each stage has, the
metrics to show (`get_metrics`), and on/off switches. `TQDMProgressBar` draws them with tqdm:

- a main bar per training epoch, "Epoch N". Its total counts training batches only, as in
  Lightning 2.x; validation inside the epoch gets its own bar below it;
- a validation bar, labelled "Sanity Checking" during the sanity check;
- a test bar and a predict bar.

Two costs shape the code. Reading `trainer.progress_bar_metrics` turns logged tensors into Python
floats, a host-device sync, so the bar reads it only when it is about to draw. And tqdm is
imported on first use, not at import time, so `import fulmen` stays cheap.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from typing import TYPE_CHECKING, Any

from fulmen.callbacks.callback import Callback

if TYPE_CHECKING:
    from tqdm import tqdm as Tqdm

    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class ProgressBar(Callback):
    """Base class for progress bars: batch totals, metrics to show, and `enable`/`disable`.

    Subclasses draw; this class only answers "how far, out of how many, showing what".

    Example:
        >>> class PrintingBar(ProgressBar):
        ...     def on_train_epoch_end(self, trainer, pl_module):
        ...         print(f"epoch {trainer.current_epoch}", self.get_metrics(trainer, pl_module))
    """

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._enabled = True
        # Index of the eval dataloader whose bar is showing; None between eval runs.
        self._current_eval_dataloader_idx: int | None = None

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise TypeError(
                f"{type(self).__name__}.trainer is not set. Received: a call before `setup`. "
                "Fix: the Trainer calls `setup(trainer, pl_module, stage)` first; do the same "
                "when driving the callback by hand."
            )
        return self._trainer

    # --- switches -------------------------------------------------------------------------
    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def enable(self) -> None:
        """Show the bars again (the Trainer may switch them off around e.g. an LR search)."""
        self._enabled = True

    def disable(self) -> None:
        """Stop drawing. Called on every process except global rank zero."""
        self._enabled = False

    # --- labels ---------------------------------------------------------------------------
    @property
    def sanity_check_description(self) -> str:
        return "Sanity Checking"

    @property
    def train_description(self) -> str:
        return "Training"

    @property
    def validation_description(self) -> str:
        return "Validation"

    @property
    def test_description(self) -> str:
        return "Testing"

    @property
    def predict_description(self) -> str:
        return "Predicting"

    # --- totals (int, or inf for a dataloader without a length) ----------------------------
    @property
    def total_train_batches(self) -> int | float:
        """Training batches in this epoch, cut short when `max_steps` ends training first."""
        trainer = self.trainer
        batches = trainer.num_training_batches
        # With no epoch limit, `max_steps` decides where training stops. One step is one batch
        # here; with gradient accumulation the bar may end early, never late.
        if trainer.max_epochs in (None, -1) and trainer.max_steps is not None and trainer.max_steps > 0:
            return min(batches, trainer.max_steps - trainer.global_step)
        return batches

    @property
    def total_val_batches_current_dataloader(self) -> int | float:
        trainer = self.trainer
        batches = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        return batches[self._current_eval_dataloader_idx or 0]

    @property
    def total_test_batches_current_dataloader(self) -> int | float:
        return self.trainer.num_test_batches[self._current_eval_dataloader_idx or 0]

    @property
    def total_predict_batches_current_dataloader(self) -> int | float:
        return self.trainer.num_predict_batches[self._current_eval_dataloader_idx or 0]

    def has_dataloader_changed(self, dataloader_idx: int) -> bool:
        """Record `dataloader_idx` as current; True when it differs from the previous batch's."""
        changed = self._current_eval_dataloader_idx != dataloader_idx
        self._current_eval_dataloader_idx = dataloader_idx
        return changed

    def reset_dataloader_idx_tracker(self) -> None:
        self._current_eval_dataloader_idx = None

    # --- what to show ---------------------------------------------------------------------
    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The items shown next to the bar: the logger's version as `v_num`, then every metric
        logged with `prog_bar=True`. Override to add or drop items.

        Reading `trainer.progress_bar_metrics` syncs with the device, so call this only when
        about to draw.

        Example:
            >>> class NoVersionBar(TQDMProgressBar):
            ...     def get_metrics(self, trainer, pl_module):
            ...         items = super().get_metrics(trainer, pl_module)
            ...         items.pop("v_num", None)
            ...         return items
        """
        items = get_standard_metrics(trainer)
        # A metric the user logged under the name "v_num" wins, as the later key.
        items.update(trainer.progress_bar_metrics)
        return items

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print without breaking the bars. The base class has no bars, so this is `print`."""
        print(*args, **kwargs)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer
        if not trainer.is_global_zero:
            self.disable()


def get_standard_metrics(trainer: Trainer) -> dict[str, int | str]:
    """The items every bar shows before the logged ones: the loggers' version as "v_num" (none without
    a logger, or when the version is None or "").

    With several loggers the versions are joined by "_", each once, in order. Long string versions
    (timestamps, hashes) would crowd the bar, so only their last four characters show.
    """
    loggers = trainer.loggers
    if not loggers:
        return {}
    if len(loggers) == 1:
        version = loggers[0].version
    else:
        version = "_".join(dict.fromkeys(str(logger.version) for logger in loggers))
    if version in (None, ""):
        return {}
    return {"v_num": version[-4:] if isinstance(version, str) else version}


def convert_inf(x: int | float | None) -> int | float | None:
    """`x`, or None for inf and nan: tqdm shows None as an unknown total.

    >>> convert_inf(float("inf")), convert_inf(3)
    (None, 3)
    """
    if x is None or math.isinf(x) or math.isnan(x):
        return None
    return x


class TQDMProgressBar(ProgressBar):
    """The default progress bar: tqdm bars on stderr for training, validation, test and predict.

    Args:
        refresh_rate: draw every this many batches; 0 turns the bars off. Between draws nothing
            is read from the device. tqdm also skips draws closer than `mininterval` seconds
            apart, and then the metrics are not read either.
        process_position: shift the bars down this many pairs of lines, to sit below bars
            drawn by other code.
        leave: keep one finished line per epoch instead of reusing a single line.

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[TQDMProgressBar(refresh_rate=10)])
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__()
        if isinstance(refresh_rate, bool) or not isinstance(refresh_rate, int) or refresh_rate < 0:
            raise ValueError(
                "Expected `refresh_rate` to be an int >= 0 (0 turns the bars off). "
                f"Received: refresh_rate={refresh_rate!r}. Fix: e.g. TQDMProgressBar(refresh_rate=10)."
            )
        if isinstance(process_position, bool) or not isinstance(process_position, int) or process_position < 0:
            raise ValueError(
                "Expected `process_position` to be an int >= 0 (how many bar pairs to leave above). "
                f"Received: process_position={process_position!r}. Fix: e.g. TQDMProgressBar(process_position=0)."
            )
        self._refresh_rate = refresh_rate
        self._process_position = process_position
        self._leave = leave
        self._train_progress_bar: Tqdm | None = None
        self._val_progress_bar: Tqdm | None = None
        self._test_progress_bar: Tqdm | None = None
        self._predict_progress_bar: Tqdm | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Open bars hold file handles and locks; a copied callback starts without bars.
        return {k: (None if k.endswith("_progress_bar") else v) for k, v in vars(self).items()}

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def process_position(self) -> int:
        return self._process_position

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    @property
    def train_progress_bar(self) -> Tqdm | None:
        return self._train_progress_bar

    @property
    def val_progress_bar(self) -> Tqdm | None:
        return self._val_progress_bar

    @property
    def test_progress_bar(self) -> Tqdm | None:
        return self._test_progress_bar

    @property
    def predict_progress_bar(self) -> Tqdm | None:
        return self._predict_progress_bar

    # --- bar factories: override these to restyle a bar -------------------------------------
    def init_sanity_tqdm(self) -> Tqdm:
        return self._new_bar(self.sanity_check_description, line=0, leave=False)

    def init_train_tqdm(self) -> Tqdm:
        # smoothing=0: the rate shown is the epoch average, steadier than a moving window.
        return self._new_bar(self.train_description, line=0, leave=True, smoothing=0)

    def init_validation_tqdm(self) -> Tqdm:
        # Inside fit the validation bar sits under the epoch bar and vanishes when done;
        # in `trainer.validate` it is the only bar and stays.
        inside_fit = self._train_progress_bar is not None
        return self._new_bar(self.validation_description, line=int(inside_fit), leave=not inside_fit)

    def init_test_tqdm(self) -> Tqdm:
        return self._new_bar(self.test_description, line=0, leave=True)

    def init_predict_tqdm(self) -> Tqdm:
        return self._new_bar(self.predict_description, line=0, leave=True, smoothing=0)

    def _new_bar(self, desc: str, *, line: int, leave: bool, **kwargs: Any) -> Tqdm:
        stream = sys.stderr
        is_tty = getattr(stream, "isatty", lambda: False)()
        return _tqdm_class()(
            desc=desc,
            position=2 * self._process_position + line,
            leave=leave,
            file=stream,
            dynamic_ncols=True,
            bar_format=self.BAR_FORMAT,
            # A log file keeps every redraw, joined by carriage returns: redraw it at most once a
            # second rather than tqdm's default ten times.
            mininterval=0.1 if is_tty else 1.0,
            # Our refresh_rate already spaces the updates; a fixed miniters keeps tqdm from
            # guessing its own batch interval on top.
            miniters=1,
            **kwargs,
        )

    # --- sanity check ---------------------------------------------------------------------
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.is_enabled:
            self._val_progress_bar = self.init_sanity_tqdm()

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_progress_bar = _close(self._val_progress_bar)

    # --- training -------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _close(self._train_progress_bar)
        self._train_progress_bar = self.init_train_tqdm() if self.is_enabled else None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._train_progress_bar is None:
            # With leave=True the previous epoch's bar was closed; or the bar was enabled late.
            if not self.is_enabled:
                return
            self._train_progress_bar = self.init_train_tqdm()
        epoch = f"Epoch {trainer.current_epoch}"
        self._restart(self._train_progress_bar, self.total_train_batches, epoch)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._advance(self._train_progress_bar, batch_idx + 1, lambda: self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        bar = self._train_progress_bar
        if bar is None:
            return
        # Metrics logged with on_epoch=True only exist now: show them once more.
        bar.set_postfix(self.get_metrics(trainer, pl_module))
        if self._leave:
            self._train_progress_bar = _close(bar)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_progress_bar = _close(self._train_progress_bar)

    # --- validation -----------------------------------------------------------------------
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # During the sanity check the bar already exists, made by on_sanity_check_start.
        if not trainer.sanity_checking and self.is_enabled:
            _close(self._val_progress_bar)
            self._val_progress_bar = self.init_validation_tqdm()

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.has_dataloader_changed(dataloader_idx) and self._val_progress_bar is not None:
            desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
            self._restart(self._val_progress_bar, self.total_val_batches_current_dataloader,
                          f"{desc} DataLoader {dataloader_idx}")

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        self._advance(self._val_progress_bar, batch_idx + 1)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_progress_bar = _close(self._val_progress_bar)
        self.reset_dataloader_idx_tracker()
        # Validation inside fit: put the fresh validation metrics on the epoch bar.
        if self._train_progress_bar is not None and not trainer.sanity_checking:
            self._train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    # --- test -----------------------------------------------------------------------------
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _close(self._test_progress_bar)
        self._test_progress_bar = self.init_test_tqdm() if self.is_enabled else None

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.has_dataloader_changed(dataloader_idx) and self._test_progress_bar is not None:
            self._restart(self._test_progress_bar, self.total_test_batches_current_dataloader,
                          f"{self.test_description} DataLoader {dataloader_idx}")

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        self._advance(self._test_progress_bar, batch_idx + 1)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._test_progress_bar = _close(self._test_progress_bar)
        self.reset_dataloader_idx_tracker()

    # --- predict --------------------------------------------------------------------------
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _close(self._predict_progress_bar)
        self._predict_progress_bar = self.init_predict_tqdm() if self.is_enabled else None

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.has_dataloader_changed(dataloader_idx) and self._predict_progress_bar is not None:
            self._restart(self._predict_progress_bar, self.total_predict_batches_current_dataloader,
                          f"{self.predict_description} DataLoader {dataloader_idx}")

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        self._advance(self._predict_progress_bar, batch_idx + 1)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._predict_progress_bar = _close(self._predict_progress_bar)
        self.reset_dataloader_idx_tracker()

    # --- failures -------------------------------------------------------------------------
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # Leave the terminal clean for the traceback.
        self._train_progress_bar = _close(self._train_progress_bar)
        self._val_progress_bar = _close(self._val_progress_bar)
        self._test_progress_bar = _close(self._test_progress_bar)
        self._predict_progress_bar = _close(self._predict_progress_bar)
        self.reset_dataloader_idx_tracker()

    def print(self, *args: Any, sep: str = " ", end: str = "\n", file: Any = None) -> None:
        """Print a line above the bars, which tqdm clears and redraws around it."""
        bars = (self._train_progress_bar, self._val_progress_bar,
                self._test_progress_bar, self._predict_progress_bar)
        bar = next((b for b in bars if b is not None), None)
        if bar is None:
            print(*args, sep=sep, end=end, file=file)
        else:
            bar.write(sep.join(map(str, args)), file=file, end=end)

    # --- drawing --------------------------------------------------------------------------
    def _restart(self, bar: Tqdm, total: int | float, desc: str) -> None:
        """Reuse `bar` from 0 for `total` batches, drawing once (`reset` draws)."""
        bar.set_description(desc, refresh=False)
        bar.reset(total=_tqdm_total(total))

    def _advance(self, bar: Tqdm | None, n: int, metrics: Any = None) -> None:
        """Move `bar` to `n` done batches, every `refresh_rate` batches and at the last one.

        `metrics` is a zero-argument callable giving the postfix items; it is called only
        when the bar will actually redraw, because it syncs with the device.
        """
        if bar is None or bar.disable:
            return
        last = bar.total is not None and n >= bar.total
        if n % self._refresh_rate != 0 and not last:
            return
        # tqdm redraws only `mininterval` seconds after its previous draw; skip the read too.
        due = time.time() - bar.last_print_t >= bar.mininterval
        if metrics is not None and (due or last):
            bar.set_postfix(metrics(), refresh=False)
        if last:
            # Always show the final count, even within `mininterval` of the previous draw.
            bar.n = n
            bar.refresh()
        else:
            bar.update(n - bar.n)


def _close(bar: Tqdm | None) -> None:
    """Close `bar` if there is one. Returns None, to clear the attribute holding it."""
    if bar is not None:
        bar.close()
    return None


def _tqdm_total(total: int | float) -> int | float:
    # tqdm shows an unknown total for inf itself, but chokes on nan.
    return float("inf") if isinstance(total, float) and math.isnan(total) else total


def _tqdm_class() -> type:
    """`tqdm.notebook.tqdm` inside a Jupyter kernel with ipywidgets, else plain `tqdm.tqdm`.

    Plain tqdm in a notebook prints text lines, which still work; the widget bar needs
    ipywidgets, and without it tqdm.notebook raises instead of drawing.
    """
    if _in_jupyter_kernel() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm
    return tqdm


def _in_jupyter_kernel() -> bool:
    ipython = sys.modules.get("IPython")  # never imported here: a kernel has already loaded it
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    # A terminal IPython shell has no kernel app; notebook, lab, VS Code and Colab do.
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


_PAD_WIDTH = 5  # the width Lightning pads postfix numbers to


def _make_tqdm_class() -> type:
    from tqdm import tqdm

    class Tqdm(tqdm):
        """tqdm whose postfix numbers are padded with zeros to a fixed width ("0.5" shows as "0.500"),
        so the bar does not jump as values change length. Lightning's bar class of the same name:
        bars built in an overridden `init_train_tqdm` etc. may use it."""

        @staticmethod
        def format_num(n: int | float | str) -> str:
            padded = isinstance(n, (float, str))
            text = n if isinstance(n, str) else tqdm.format_num(n)
            if not padded or "e" in text:  # ints and scientific notation stay as tqdm writes them
                return text
            if "." not in text and len(text) < _PAD_WIDTH:
                try:
                    float(text)
                except ValueError:  # a word, not a number
                    return text
                text += "."
            return text + "0" * (_PAD_WIDTH - len(text))

    Tqdm.__module__ = __name__
    return Tqdm


def __getattr__(name: str) -> Any:
    # `Tqdm` subclasses tqdm, which is imported only when a bar is first needed.
    if name == "Tqdm":
        value = _make_tqdm_class()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
