"""`RichProgressBar` and `RichModelSummary`: the progress bar and model summary drawn with `rich`.

`rich` is optional (`pip install 'fulmen[rich]'`): it is imported when one of these callbacks is
created, and a missing package raises `ModuleNotFoundError` naming the extra. The bar shows one
task per training epoch ("Epoch N", training batches only, as in Lightning 2.x) with the
progress-bar metrics below it, and one task per validation/test/predict run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fulmen.callbacks.model_summary import _PRECISION_BITS, ModelSummary, summarize
from fulmen.callbacks.progress import ProgressBar

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


def _require_rich(what: str) -> Any:
    try:
        import rich  # noqa: F401
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"{what} needs the rich package, which is not installed. Fix: pip install 'fulmen[rich]' "
            "(or use the default TQDMProgressBar / ModelSummary)."
        ) from err
    return rich


def _metrics_text(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items())


class RichProgressBar(ProgressBar):
    """Progress bars drawn by rich.

    Args:
        refresh_rate: advance the bar every this many batches (0 disables it).
        leave: keep each finished epoch's bar on screen.
        console_kwargs: passed to `rich.console.Console` (e.g. `{"file": f, "force_terminal": True}`).

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[RichProgressBar()])  # doctest: +SKIP
    """

    def __init__(self, refresh_rate: int = 1, leave: bool = False, theme: Any = None,
                 console_kwargs: dict[str, Any] | None = None) -> None:
        _require_rich("RichProgressBar")
        super().__init__()
        self._refresh_rate = refresh_rate
        self._leave = leave
        self._console_kwargs = console_kwargs or {}
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._totals: dict[str, int | None] = {}

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    @property
    def progress(self) -> Any:
        """The `rich.progress.Progress` drawing the bars (None when none is showing)."""
        return self._progress

    # --- drawing ------------------------------------------------------------------------------
    def _start(self) -> Any:
        if self._progress is None and self.is_enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"),
                console=Console(**self._console_kwargs), transient=not self._leave,
            )
            self._progress.start()
        return self._progress

    def _new_task(self, key: str, description: str, total: int | float) -> None:
        progress = self._start()
        if progress is None:
            return
        self._remove(key)
        self._totals[key] = None if total == float("inf") else total  # read per batch: kept beside the task
        self._tasks[key] = progress.add_task(description, total=self._totals[key], metrics="")

    def _remove(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        self._totals.pop(key, None)
        if task is not None and self._progress is not None:
            self._progress.remove_task(task)

    def _advance(self, key: str, n: int, metrics: Any = None) -> None:
        task = self._tasks.get(key)
        if task is None or self._progress is None:
            return
        total = self._totals[key]
        if n % self._refresh_rate != 0 and not (total is not None and n >= total):
            return
        fields = {"metrics": _metrics_text(metrics())} if metrics is not None else {}
        self._progress.update(task, completed=n, **fields)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._tasks, self._totals = None, {}, {}

    # --- hooks --------------------------------------------------------------------------------
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._new_task("val", self.sanity_check_description, sum(trainer.num_sanity_val_batches))

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._remove("val")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._new_task("train", f"Epoch {trainer.current_epoch}", self.total_train_batches)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._advance("train", batch_idx + 1, lambda: self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        task = self._tasks.get("train")
        if task is not None and self._progress is not None:
            self._progress.update(task, metrics=_metrics_text(self.get_metrics(trainer, pl_module)))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._new_task("val", self.validation_description, sum(trainer.num_val_batches))

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance_eval("val", trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._remove("val")
            self.on_train_epoch_end(trainer, trainer.lightning_module)  # show the fresh validation metrics
            if trainer.state.fn != "fit":
                self._stop()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._new_task("test", self.test_description, sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance_eval("test", trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._new_task("predict", self.predict_description, sum(trainer.num_predict_batches))

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._advance_eval("predict", trainer)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stop()

    def _advance_eval(self, key: str, trainer: Trainer) -> None:
        # One task per run, counted across its dataloaders.
        task = self._tasks.get(key)
        if task is None or self._progress is None:
            return
        self._progress.advance(task)

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.console.print(*args, **kwargs)
        else:
            print(*args, **kwargs)


class RichModelSummary(ModelSummary):
    """The ModelSummary table drawn by rich.

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[RichModelSummary(max_depth=2)])  # doctest: +SKIP
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        _require_rich("RichModelSummary")
        super().__init__(max_depth=max_depth)
        self._console_kwargs = summarize_kwargs.pop("console_kwargs", {}) or {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._max_depth == 0 or not trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.table import Table

        bits = _PRECISION_BITS.get(str(getattr(trainer, "precision", "32-true")), 32)
        lines = summarize(pl_module, max_depth=self._max_depth, bits_per_param=bits).splitlines()
        # summarize's layout: header, rule, rows, rule, totals. Rows become a rich table.
        header, rows, totals = lines[0], [], []
        seen_rules = 0
        for line in lines[1:]:
            if set(line) <= {"-"} and line:
                seen_rules += 1
                continue
            (rows if seen_rules < 2 else totals).append(line)
        table = Table(header_style="bold magenta")
        columns = [c.strip() for c in header.split("|")]
        for name in columns:
            table.add_column(name)
        for row in rows:
            table.add_row(*[c.strip() for c in row.split("|")])
        console = Console(**self._console_kwargs)
        console.print(table)
        for line in totals:
            console.print(line)
