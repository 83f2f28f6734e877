"""`BatchSizeFinder`: the batch-size search as a callback, run when fit starts."""

from __future__ import annotations

from typing import Any

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException

__all__ = ["BatchSizeFinder"]


class BatchSizeFinder(Callback):
    """Runs `fulmen.tuner.batch_size_scaling.scale_batch_size` in `on_fit_start` (Lightning 2.x
    arguments, plus fulmen's `max_memory_bytes`).

    Trials of `steps_per_trial` training steps find the largest `batch_arg_name` that fits in
    memory ("power": doubling; "binsearch": doubling, then bisection, less `margin`). The model,
    optimizer, Trainer state and random generators are then put back exactly as they were, and
    the fit continues with the size found, which is `optimal_batch_size`.

    Args:
        max_memory_bytes: fulmen only. A memory budget each trial must also fit in: a trial
            over it counts as out of memory. On CUDA it is compared with
            `torch.cuda.max_memory_allocated`; elsewhere with the bytes of the batch plus the
            tensors autograd saves for backward in one step. None: only real out-of-memory errors count.

    Example:
        >>> trainer = Trainer(callbacks=[BatchSizeFinder(mode="binsearch")])  # doctest: +SKIP
        >>> trainer.fit(model)  # model.train_dataloader() uses self.batch_size  # doctest: +SKIP
    """

    SUPPORTED_MODES = ("power", "binsearch")

    def __init__(
        self, mode: str = "power", steps_per_trial: int = 3, init_val: int = 2, max_trials: int = 25,
        batch_arg_name: str = "batch_size", margin: float = 0.05, max_val: int = 8192,
        max_memory_bytes: int | None = None,
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise MisconfigurationException(
                f"BatchSizeFinder(mode=...) must be one of {self.SUPPORTED_MODES}. Received: mode={mode!r}. "
                "Fix: mode='power'."
            )
        if not 0.0 <= margin < 1.0:
            raise MisconfigurationException(f"`margin` must be in [0, 1). Received: margin={margin!r}. Fix: e.g. 0.05.")
        self.optimal_batch_size: int | None = init_val
        self._mode, self._steps_per_trial, self._init_val = mode, steps_per_trial, init_val
        self._max_trials, self._batch_arg_name = max_trials, batch_arg_name
        self._margin, self._max_val, self._max_memory_bytes = margin, max_val, max_memory_bytes
        self._early_exit = False  # set by Tuner: end the fit after the search

    def scale_batch_size(self, trainer: Any, pl_module: Any) -> None:
        from fulmen.tuner.batch_size_scaling import scale_batch_size

        self.optimal_batch_size = scale_batch_size(
            trainer, pl_module, mode=self._mode, steps_per_trial=self._steps_per_trial, init_val=self._init_val,
            max_trials=self._max_trials, batch_arg_name=self._batch_arg_name, margin=self._margin,
            max_val=self._max_val, max_memory_bytes=self._max_memory_bytes,
        )
        if self._early_exit:
            from fulmen.tuner.exit import TunerExit

            raise TunerExit()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.scale_batch_size(trainer, pl_module)
