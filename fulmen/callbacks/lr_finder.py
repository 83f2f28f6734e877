"""`LearningRateFinder`: the learning-rate range test as a callback, run when fit starts."""

from __future__ import annotations

from typing import Any

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException

__all__ = ["LearningRateFinder"]


class LearningRateFinder(Callback):
    """Runs `fulmen.tuner.lr_finder.lr_find` in `on_fit_start` (Lightning 2.x arguments).

    The search trains `num_training_steps` steps with a rising learning rate, then puts the model,
    optimizer, schedulers, Trainer state and random generators back exactly as they were; with
    `update_attr=True` the suggestion is written to the model's `lr`/`learning_rate` (or
    `attr_name`) and to the optimizer, so the fit continues with it. The result is `optimal_lr`
    (an `LRFinder`: `.results`, `.suggestion()`, `.plot()`).

    Example:
        >>> trainer = Trainer(callbacks=[LearningRateFinder(num_training_steps=50)])  # doctest: +SKIP
        >>> trainer.fit(model)                                                         # doctest: +SKIP
        >>> trainer.callbacks[0].optimal_lr.suggestion()                               # doctest: +SKIP
    """

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(
        self, min_lr: float = 1e-8, max_lr: float = 1, num_training_steps: int = 100, mode: str = "exponential",
        early_stop_threshold: float | None = 4.0, update_attr: bool = True, attr_name: str = "",
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise MisconfigurationException(
                f"LearningRateFinder(mode=...) must be one of {self.SUPPORTED_MODES}. Received: mode={mode!r}. "
                "Fix: mode='exponential'."
            )
        self._min_lr, self._max_lr, self._num_training_steps = min_lr, max_lr, num_training_steps
        self._mode, self._early_stop_threshold = mode, early_stop_threshold
        self._update_attr, self._attr_name = update_attr, attr_name
        self._early_exit = False  # set by Tuner: end the fit after the search
        self.optimal_lr: Any = None

    def lr_find(self, trainer: Any, pl_module: Any) -> None:
        from fulmen.tuner.lr_finder import lr_find

        self.optimal_lr = lr_find(
            trainer, pl_module, min_lr=self._min_lr, max_lr=self._max_lr, num_training=self._num_training_steps,
            mode=self._mode, early_stop_threshold=self._early_stop_threshold, update_attr=self._update_attr,
            attr_name=self._attr_name,
        )
        if self._early_exit:
            from fulmen.tuner.exit import TunerExit

            raise TunerExit()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.lr_find(trainer, pl_module)
