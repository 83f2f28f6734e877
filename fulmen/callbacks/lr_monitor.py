"""`LearningRateMonitor`: log each optimizer's learning rate (and momentum, weight decay) to the loggers.

Names follow Lightning: "lr-<OptimizerClass>" (e.g. "lr-SGD"), "-1", "-2", ... for further optimizers
of the same class, "/pg1", "/pg2", ... (or the group's "name") when an optimizer has several parameter
groups, a scheduler's `name` when it has one; "<name>-momentum" and "<name>-weight_decay" beside them.

When values are logged, also as in Lightning: with `logging_interval="step"` at the start of each
training batch whose step is due for logging (`log_every_n_steps`), with "epoch" at the start of each
epoch, and with None at each scheduler's own interval ("step" or "epoch"; optimizers without a
scheduler every logged step). Values go straight to the loggers at the current logging step and into
`trainer.callback_metrics`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.loop import should_update_logs

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class LearningRateMonitor(Callback):
    """Log learning rates during training.

    Args:
        logging_interval: "step", "epoch", or None (each scheduler's own interval).
        log_momentum: also log momentum (or Adam's first beta), 0 where the optimizer has none.
        log_weight_decay: also log weight decay.

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[LearningRateMonitor(logging_interval="step")])
    """

    def __init__(self, logging_interval: str | None = None, log_momentum: bool = False,
                 log_weight_decay: bool = False) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException(
                "LearningRateMonitor got an unknown logging_interval. "
                f"Received: logging_interval={logging_interval!r}. Fix: use 'step', 'epoch' or None."
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}  # every value logged, per name (as Lightning keeps them)
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.loggers:
            raise MisconfigurationException(
                "LearningRateMonitor logs to the Trainer's loggers, but it has none. Received: logger=False. "
                "Fix: give the Trainer a logger (the default TensorBoardLogger or e.g. CSVLogger), or drop the callback."
            )
        if self.log_momentum:
            optimizers = [o.optimizer for o in trainer._optimizers]
            if any("momentum" not in o.defaults and "betas" not in o.defaults for o in optimizers):
                warn_once("LearningRateMonitor(log_momentum=True): some optimizers have no momentum; "
                          "0 is logged for them.")
        names = [n for group in self._names(trainer)[0] for n in group]
        self.lrs = {name: [] for name in names}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.logging_interval == "epoch" or not should_update_logs(trainer):
            return
        self._log(trainer, "step" if self.logging_interval is None else "any")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.logging_interval != "step":
            self._log(trainer, "epoch" if self.logging_interval is None else "any")

    # ------------------------------------------------------------------------------------------
    def _log(self, trainer: Trainer, interval: str) -> None:
        stats: dict[str, float] = {}
        (sched_names, opt_names), unscheduled = self._names(trainer)[1:], self._unscheduled(trainer)
        for names, config in zip(sched_names, trainer.lr_scheduler_configs):
            if interval in (config.interval, "any"):
                stats.update(self._stats(config.scheduler.optimizer, names))
        for names, optimizer in zip(opt_names, unscheduled):
            stats.update(self._stats(optimizer, names))
        if not stats:
            return
        trainer._callback_metrics.update({k: torch.tensor(v) for k, v in stats.items()})
        for logger in trainer.loggers:
            logger.log_metrics(stats, step=trainer.state.log_step)

    def _stats(self, optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        betas = "betas" in optimizer.defaults
        for group, name in zip(optimizer.param_groups, names):
            out[name] = group["lr"]
            if name.endswith("/pg1") and name not in self.lrs and name[: -len("/pg1")] in self.lrs:
                # A group was added (e.g. by BackboneFinetuning): the history continues as "/pg1", as in Lightning.
                self.lrs[name] = self.lrs.pop(name[: -len("/pg1")])
            self.lrs.setdefault(name, []).append(group["lr"])
            if self.log_momentum:
                momentum = group["betas"][0] if betas else group.get("momentum", 0)
                out[f"{name}-momentum"] = self.last_momentum_values[f"{name}-momentum"] = momentum
            if self.log_weight_decay:
                decay = group.get("weight_decay", 0)
                out[f"{name}-weight_decay"] = self.last_weight_decay_values[f"{name}-weight_decay"] = decay
        return out

    @staticmethod
    def _unscheduled(trainer: Trainer) -> list[torch.optim.Optimizer]:
        scheduled = [c.scheduler.optimizer for c in trainer.lr_scheduler_configs]
        return [o.optimizer for o in trainer._optimizers if not any(o.optimizer is s for s in scheduled)]

    def _names(self, trainer: Trainer) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
        """(all names, names per scheduler, names per unscheduled optimizer), recomputed each time
        because a callback such as BackboneFinetuning may add parameter groups during training."""
        seen_types: defaultdict[type, int] = defaultdict(int)
        per_scheduler = []
        for config in trainer.lr_scheduler_configs:
            optimizer = config.scheduler.optimizer
            if config.name is None:
                seen_types[type(optimizer)] += 1
            base = config.name if config.name is not None else f"lr-{type(optimizer).__name__}"
            per_scheduler.append(self._group_names(self._with_count(base, optimizer, seen_types), optimizer))
        per_optimizer = []
        for optimizer in self._unscheduled(trainer):
            seen_types[type(optimizer)] += 1
            base = f"lr-{type(optimizer).__name__}"
            per_optimizer.append(self._group_names(self._with_count(base, optimizer, seen_types), optimizer))
        return per_scheduler + per_optimizer, per_scheduler, per_optimizer

    @staticmethod
    def _with_count(name: str, optimizer: torch.optim.Optimizer, seen_types: dict[type, int]) -> str:
        count = seen_types.get(type(optimizer), 0)
        return f"{name}-{count - 1}" if count > 1 else name

    @staticmethod
    def _group_names(name: str, optimizer: torch.optim.Optimizer) -> list[str]:
        groups = optimizer.param_groups
        labels = [g.get("name", f"pg{i + 1}") for i, g in enumerate(groups)]
        duplicates = sorted({n for n in labels if labels.count(n) > 1})
        if duplicates:
            raise MisconfigurationException(
                f"An optimizer's parameter groups must have distinct names for LearningRateMonitor. "
                f"Received: {name} with duplicated group names {duplicates}. Fix: give each group its own 'name'."
            )
        if len(groups) > 1:
            return [f"{name}/{label}" for label in labels]
        return [f"{name}/{groups[0]['name']}" if groups[0].get("name") else name]
