"""`Tuner`: run a learning-rate or batch-size search on its own, before training.

Each method adds the finder callback to the Trainer, runs `trainer.fit`, which ends right after
the search (the callback raises `TunerExit`, which the Trainer treats as a successful end), and
removes the callback. The model's weights are as before; with `update_attr` (lr) or always
(batch size) the value found is written to the model's field, so the next `fit` uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fulmen.errors import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer
    from fulmen.tuner.lr_finder import LRFinder

__all__ = ["Tuner"]


class Tuner:
    """Tuning helpers for a Trainer (Lightning 2.x's `Tuner`).

    Example:
        >>> tuner = Tuner(trainer)                                # doctest: +SKIP
        >>> finder = tuner.lr_find(model, train_dataloaders=dl)   # doctest: +SKIP
        >>> finder.suggestion(), finder.plot(suggest=True)        # doctest: +SKIP
        >>> tuner.scale_batch_size(model, mode="binsearch")       # doctest: +SKIP
    """

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    def lr_find(
        self, model: LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
        dataloaders: Any = None, datamodule: Any = None, method: str = "fit", min_lr: float = 1e-8,
        max_lr: float = 1, num_training: int = 100, mode: str = "exponential",
        early_stop_threshold: float | None = 4.0, update_attr: bool = True, attr_name: str = "",
    ) -> LRFinder | None:
        """The learning-rate range test (see `fulmen.tuner.lr_finder`); returns its `LRFinder`."""
        from fulmen.callbacks.lr_finder import LearningRateFinder

        self._check_method(method, dataloaders)
        self._check_no_finder(LearningRateFinder, "lr_find")
        finder = LearningRateFinder(
            min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training, mode=mode,
            early_stop_threshold=early_stop_threshold, update_attr=update_attr, attr_name=attr_name,
        )
        self._run(finder, model, train_dataloaders, val_dataloaders, datamodule)
        return finder.optimal_lr

    def scale_batch_size(
        self, model: LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
        dataloaders: Any = None, datamodule: Any = None, method: str = "fit", mode: str = "power",
        steps_per_trial: int = 3, init_val: int = 2, max_trials: int = 25, batch_arg_name: str = "batch_size",
        margin: float = 0.05, max_val: int = 8192, max_memory_bytes: int | None = None,
    ) -> int | None:
        """The batch-size search (see `fulmen.tuner.batch_size_scaling`); returns the size found.
        `max_memory_bytes` is fulmen's own: a memory budget, usable without a GPU."""
        from fulmen.callbacks.batch_size_finder import BatchSizeFinder
        from fulmen.tuner.batch_size_scaling import check_batch_size_search

        self._check_method(method, dataloaders)
        self._check_no_finder(BatchSizeFinder, "scale_batch_size")
        check_batch_size_search(self._trainer)  # before fit starts (ddp_spawn would start processes first)
        finder = BatchSizeFinder(
            mode=mode, steps_per_trial=steps_per_trial, init_val=init_val, max_trials=max_trials,
            batch_arg_name=batch_arg_name, margin=margin, max_val=max_val, max_memory_bytes=max_memory_bytes,
        )
        self._run(finder, model, train_dataloaders, val_dataloaders, datamodule)
        return finder.optimal_batch_size

    def _check_method(self, method: str, dataloaders: Any) -> None:
        if method != "fit" or dataloaders is not None:
            raise MisconfigurationException(
                "fulmen's Tuner searches with training steps (method='fit'). Received: "
                f"method={method!r}, dataloaders={'given' if dataloaders is not None else None}. "
                "Fix: use method='fit' with train_dataloaders or a datamodule."
            )

    def _check_no_finder(self, finder_type: type, method: str) -> None:
        """A finder callback already on the Trainer would run the search a second time inside this one."""
        given = [cb for cb in self._trainer.callbacks if isinstance(cb, finder_type)]
        if given:
            raise MisconfigurationException(
                f"Tuner.{method} adds its own {finder_type.__name__}, but the Trainer already has one. "
                f"Received: callbacks with {finder_type.__name__}. Fix: remove it from Trainer(callbacks=...) "
                f"or call trainer.fit without the Tuner."
            )

    def _run(self, finder: Any, model: Any, train: Any, val: Any, datamodule: Any) -> None:
        trainer = self._trainer
        finder._early_exit = True
        previous = trainer.callbacks
        trainer.callbacks = [finder, *previous]
        try:
            trainer.fit(model, train, val, datamodule)
        finally:
            trainer.callbacks = previous
