"""The learning-rate range test: train with a rising learning rate, record the loss, suggest one.

`lr_find` runs inside `fit` (from `LearningRateFinder.on_fit_start`, which `Tuner.lr_find` also
uses): with the user's optimizer, a scheduler that raises the learning rate every step from
`min_lr` to `max_lr` over `num_training` steps, and only the finder's callback, it runs real
training steps (no validation, no loggers), recording the smoothed loss after each. Then every
piece of state is put back (`fulmen/tuner/snapshot.py`). `LRFinder.suggestion()` is the point of
steepest descent of the smoothed loss, as in Lightning.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.tuner import snapshot

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

__all__ = ["LRFinder", "lr_find"]


class LRFinder:
    """What `lr_find` found: `results` {"lr": [...], "loss": [...]} (smoothed loss per step).

    Example:
        >>> finder = LRFinder("exponential", 1e-4, 1.0, 20)
        >>> finder.results = {"lr": [1e-4 * 10 ** (i / 5) for i in range(20)],
        ...                   "loss": [1.0 - 0.04 * i if i < 12 else 2.0 for i in range(20)]}
        >>> round(finder.suggestion(skip_begin=2), 6)
        0.025119
    """

    def __init__(self, mode: str, lr_min: float, lr_max: float, num_training: int) -> None:
        self.mode, self.lr_min, self.lr_max, self.num_training = mode, lr_min, lr_max, num_training
        self.results: dict[str, list[float]] = {}
        self._optimal_idx: int | None = None

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The learning rate where the loss falls fastest (the most negative d loss / d lr),
        ignoring the first `skip_begin` and last `skip_end` points and non-finite losses; None
        when fewer than two points are left."""
        end = len(self.results["loss"]) - skip_end
        losses = torch.tensor(self.results["loss"][skip_begin:end], dtype=torch.float64)
        lrs = torch.tensor(self.results["lr"][skip_begin:end], dtype=torch.float64)
        finite = torch.isfinite(losses)
        if int(finite.sum()) < 2:
            warn_once(
                "lr_find could not suggest a learning rate: fewer than two usable loss points. Received: "
                f"{len(self.results['loss'])} points, skip_begin={skip_begin}, skip_end={skip_end}. "
                "Fix: raise num_training, or give the finder more training batches."
            )
            self._optimal_idx = None
            return None
        gradients = torch.gradient(losses[finite], spacing=[lrs[finite]])[0]
        kept = torch.arange(skip_begin, end)[finite]
        self._optimal_idx = int(kept[int(torch.argmin(gradients))])
        return self.results["lr"][self._optimal_idx]

    def plot(self, suggest: bool = False, show: bool = False, ax: Any = None) -> Any:
        """The loss against the learning rate (log scale in exponential mode) as a matplotlib
        Figure; `suggest` marks the suggestion with a red dot; `show` also displays it."""
        try:
            from matplotlib.figure import Figure
        except ImportError as err:
            raise ModuleNotFoundError(
                "LRFinder.plot needs matplotlib, which is not installed. Received: no module named 'matplotlib'. "
                "Fix: pip install 'fulmen[tuner]'."
            ) from err
        if ax is None:
            if show:
                import matplotlib.pyplot as plt

                fig, ax = plt.subplots()
            else:  # no pyplot: nothing global is created, nothing to close
                fig = Figure()
                ax = fig.subplots()
        else:
            fig = ax.figure
        lrs, losses = self.results["lr"], self.results["loss"]
        ax.plot(lrs, losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest and self.suggestion() is not None:
            ax.plot(lrs[self._optimal_idx], losses[self._optimal_idx], markersize=10, marker="o", color="red")
        if show:
            import matplotlib.pyplot as plt

            plt.show()
        return fig


def _progress(last_epoch: int, num_iter: int) -> float:
    """As in Lightning: 0 at the first step, then (step + 1) / num_iter, so the last step is at end_lr."""
    return (last_epoch + 1) / num_iter if last_epoch > 0 else 0.0


class _ExponentialLR(LRScheduler):
    """lr = base_lr * (end_lr / base_lr) ** progress (see `_progress`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, end_lr: float, num_iter: int) -> None:
        self.end_lr, self.num_iter = end_lr, num_iter
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        r = _progress(self.last_epoch, self.num_iter)
        return [base * (self.end_lr / base) ** r for base in self.base_lrs]


class _LinearLR(LRScheduler):
    """lr = base_lr + (end_lr - base_lr) * progress (see `_progress`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, end_lr: float, num_iter: int) -> None:
        self.end_lr, self.num_iter = end_lr, num_iter
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        r = _progress(self.last_epoch, self.num_iter)
        return [base + r * (self.end_lr - base) for base in self.base_lrs]


class _LRCallback(Callback):
    """Records the learning rate of each step and the smoothed loss after it; stops the search
    when the loss exceeds `early_stop_threshold` times the best seen (it diverged)."""

    def __init__(self, num_training: int, early_stop_threshold: float | None, beta: float = 0.98) -> None:
        self.num_training, self.early_stop_threshold, self.beta = num_training, early_stop_threshold, beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.avg_loss = 0.0
        self.best_loss = 0.0
        self.start_step = 0

    @staticmethod
    def _steps_here(trainer: Trainer, batch_idx: int) -> bool:
        """Whether this batch ends a gradient-accumulation window (only those step the optimizer)."""
        from fulmen.loop import _window

        return _window(trainer, batch_idx).step

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._steps_here(trainer, batch_idx):
            self.lrs.append(trainer._optimizers[0].optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._steps_here(trainer, batch_idx):
            return
        if not outputs:
            self.losses.append(float("nan"))
            return
        loss = outputs if isinstance(outputs, torch.Tensor) else outputs["loss"]
        current = float(loss)  # one host sync per step: the search needs the number now
        step = trainer.global_step - self.start_step
        # As in Lightning: an exponential moving average with its bias corrected by 1 - beta ** (step + 1).
        self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * current
        smoothed = self.avg_loss / (1 - self.beta ** (step + 1))
        if self.early_stop_threshold is not None and step > 1 and smoothed > self.early_stop_threshold * self.best_loss:
            trainer.should_stop = True
        if trainer.world_size > 1:  # as in Lightning: rank 0 decides, so that every process stops together
            trainer.should_stop = trainer.strategy.broadcast(trainer.should_stop)
        if smoothed < self.best_loss or step == 1:
            self.best_loss = smoothed
        self.losses.append(smoothed)


def lr_attr_name(model: LightningModule, attr_name: str = "") -> str:
    """The model's learning-rate field: `attr_name`, else "lr" or "learning_rate" (on the model or in hparams)."""
    if attr_name:
        if not _has_attr(model, attr_name):
            raise AttributeError(
                f"lr_find(attr_name={attr_name!r}): neither the model nor model.hparams has that field. "
                f"Received: attr_name={attr_name!r}. Fix: pass the name of the attribute that holds the learning rate."
            )
        return attr_name
    for name in ("lr", "learning_rate"):
        if _has_attr(model, name):
            return name
    raise AttributeError(
        "lr_find(update_attr=True) found no learning-rate field on the model. Received: no `lr` or `learning_rate` "
        "on the model or in model.hparams. Fix: add one, or pass lr_find(attr_name='my_lr')."
    )


def _has_attr(obj: Any, name: str) -> bool:
    hparams = getattr(obj, "hparams", None)
    return hasattr(obj, name) or (hparams is not None and name in hparams)


def set_attr(obj: Any, name: str, value: Any, datamodule: Any = None) -> None:
    """Set `name` where it lives, like Lightning's `lightning_setattr`: on the model, in
    `model.hparams`, and on the datamodule (or its hparams) when it has it."""
    found = False
    for owner in (obj, datamodule):
        if owner is None:
            continue
        if name in owner.__dict__ or (hasattr(owner, name) and not callable(getattr(owner, name))):
            setattr(owner, name, value)
            found = True
        hparams = getattr(owner, "hparams", None)
        if hparams is not None and name in hparams:
            hparams[name] = value
            found = True
    if not found:
        raise AttributeError(f"No field {name!r} on the model, its hparams or the datamodule.")


def get_attr(obj: Any, name: str, datamodule: Any = None) -> Any:
    """Read `name` where `set_attr` would set it (the datamodule first, as in Lightning)."""
    for owner in (datamodule, obj):
        if owner is None:
            continue
        hparams = getattr(owner, "hparams", None)
        if name in owner.__dict__ or (hasattr(owner, name) and not callable(getattr(owner, name))):
            return getattr(owner, name)
        if hparams is not None and name in hparams:
            return hparams[name]
    raise AttributeError(
        f"No field {name!r} on the model, its hparams or the datamodule. Received: batch_arg_name={name!r}. "
        f"Fix: store the batch size as `self.{name}` (or in save_hyperparameters) and use it in train_dataloader()."
    )


def lr_find(
    trainer: Trainer, model: LightningModule, min_lr: float = 1e-8, max_lr: float = 1.0, num_training: int = 100,
    mode: str = "exponential", early_stop_threshold: float | None = 4.0, update_attr: bool = False,
    attr_name: str = "",
) -> LRFinder | None:
    """Run the range test inside a set-up `fit` (see the module docstring); return its `LRFinder`."""
    from fulmen import loop
    from fulmen.hooks import HookDispatch
    from fulmen.optim import LRSchedulerConfig

    if mode not in ("exponential", "linear"):
        raise MisconfigurationException(
            f"lr_find(mode=...) must be 'exponential' or 'linear'. Received: mode={mode!r}. Fix: mode='exponential'."
        )
    if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
        raise MisconfigurationException(
            f"lr_find needs 0 < min_lr < max_lr. Received: min_lr={min_lr!r}, max_lr={max_lr!r}. Fix: e.g. min_lr=1e-6, max_lr=1."
        )
    if trainer.fast_dev_run:
        warn_once("lr_find is skipped under fast_dev_run.")
        return None
    if len(trainer._optimizers) != 1:
        raise MisconfigurationException(
            f"lr_find works with one optimizer. Received: {len(trainer._optimizers)} from configure_optimizers. "
            "Fix: run it on a model that returns a single optimizer."
        )
    if update_attr:
        attr_name = lr_attr_name(model, attr_name)
    saved = snapshot.take(trainer)
    finder = LRFinder(mode, min_lr, max_lr, num_training)
    recorder = _LRCallback(num_training, early_stop_threshold)
    try:
        optimizer = trainer._optimizers[0].optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = min_lr
        scheduler = (_ExponentialLR if mode == "exponential" else _LinearLR)(optimizer, max_lr, num_training)
        s = trainer.state
        recorder.start_step = s.global_step
        trainer.lr_scheduler_configs = [LRSchedulerConfig(scheduler, interval="step")]
        trainer.callbacks, trainer.loggers = [recorder], []
        trainer.run_state.after_batch.clear()  # in place: the loop holds the list (snapshot.restore refills it)
        trainer._hooks = HookDispatch(trainer, model, trainer.callbacks)
        trainer.max_steps, trainer.max_epochs = s.global_step + num_training, -1
        trainer.min_epochs = trainer.min_steps = None
        trainer.run_state.val_enabled, trainer.run_state.resume, trainer.run_state.deadline = False, None, None
        trainer.reload_dataloaders_every_n_epochs = 0
        s.batches_done, s.should_stop = 0, False
        while not loop._fit_done(trainer):
            loop.run_train_epoch(trainer)
        finder.results = {"lr": recorder.lrs[: len(recorder.losses)], "loss": recorder.losses}
        if trainer.world_size > 1:  # every process uses rank 0's results, hence the same suggestion
            finder.results = trainer.strategy.broadcast(finder.results)
    finally:
        snapshot.restore(trainer, saved)
    if update_attr:
        lr = finder.suggestion()
        if lr is not None:
            set_attr(model, attr_name, lr)
            for group in trainer._optimizers[0].optimizer.param_groups:
                group["lr"] = lr
    return finder
