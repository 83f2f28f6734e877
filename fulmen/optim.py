"""Optimizers and schedulers: parsing `configure_optimizers`, the optimizer wrapper the module
sees, and stepping schedulers at the right interval.

`configure_optimizers` may return any form Lightning accepts:
    optimizer | [optimizers] | ([optimizers], [schedulers])
    | {"optimizer": opt, "lr_scheduler": scheduler | {"scheduler": s, "interval": ..., ...}}
    | [such dicts] | None (no optimizer: training steps run without an optimizer step)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import Optimizer

from fulmen.errors import MisconfigurationException, warn_once

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

_FIX = (
    "Fix: return an optimizer, a list of optimizers, ([optimizers], [schedulers]), or "
    '{"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}.'
)
_SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name", "reduce_on_plateau"}


@dataclass
class LRSchedulerConfig:
    """One scheduler and when to step it (Lightning's keys)."""

    scheduler: Any
    name: str | None = None
    interval: str = "epoch"
    frequency: int = 1
    reduce_on_plateau: bool = False
    monitor: str | None = None
    strict: bool = True


def do_nothing_closure() -> None:
    """A closure for `optimizer.step(closure)` when the gradients are already there: it computes
    nothing and returns None (the loss torch's closure-taking optimizers pass back)."""
    return None


class LightningOptimizer:
    """Wraps a torch optimizer so that `step` goes through the Trainer's precision and, under
    manual optimization, counts `global_step`. Every other attribute is the wrapped optimizer's."""

    def __init__(self, optimizer: Optimizer, trainer: Trainer):
        self.optimizer = optimizer
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"LightningOptimizer({self.optimizer!r})"

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        trainer = self._trainer
        result = trainer._precision.optimizer_step(self.optimizer, closure, trainer._after_closure, **kwargs)
        if not trainer.lightning_module.automatic_optimization:
            trainer.state.global_step += 1  # manual: every step() counts; automatic: the loop counts windows
        return result

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def _is_scheduler(obj: Any) -> bool:
    return isinstance(obj, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)) or (
        callable(getattr(obj, "step", None)) and hasattr(obj, "optimizer") and not isinstance(obj, Optimizer)
    )


def _scheduler_config(item: Any) -> LRSchedulerConfig:
    if isinstance(item, Mapping):
        unknown = set(item) - _SCHEDULER_KEYS
        if "scheduler" not in item or unknown:
            raise MisconfigurationException(
                "An lr_scheduler dict needs a 'scheduler' key and only Lightning's keys "
                f"{sorted(_SCHEDULER_KEYS)}. Received: keys {sorted(item)}. "
                'Fix: {"scheduler": sched, "interval": "epoch", "frequency": 1}.'
            )
        config = LRSchedulerConfig(**{k: v for k, v in item.items()})
    else:
        config = LRSchedulerConfig(scheduler=item)
    if not _is_scheduler(config.scheduler):
        raise MisconfigurationException(
            f"The scheduler must be a torch.optim.lr_scheduler object. "
            f"Received: {type(config.scheduler).__name__}. {_FIX}"
        )
    if config.interval not in ("epoch", "step"):
        raise MisconfigurationException(
            f"A scheduler's 'interval' must be 'epoch' or 'step'. Received: interval={config.interval!r}. "
            "Fix: use 'step' to step after every optimizer step, 'epoch' after every epoch."
        )
    if not isinstance(config.frequency, int) or isinstance(config.frequency, bool) or config.frequency < 1:
        raise MisconfigurationException(
            f"A scheduler's 'frequency' must be a positive int. Received: frequency={config.frequency!r}. "
            "Fix: e.g. frequency=1."
        )
    if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config.reduce_on_plateau = True
    if config.reduce_on_plateau and config.monitor is None:
        raise MisconfigurationException(
            "ReduceLROnPlateau needs a metric to watch, but no 'monitor' was given. Received: monitor=None. "
            'Fix: return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}.'
        )
    return config


def _from_dict(item: Mapping) -> tuple[Optimizer, list[LRSchedulerConfig]]:
    if "optimizer" not in item:
        raise MisconfigurationException(
            f"configure_optimizers returned a dict without an 'optimizer' key. Received: keys {sorted(item)}. {_FIX}"
        )
    extra = set(item) - {"optimizer", "lr_scheduler", "monitor"}
    if extra:
        raise MisconfigurationException(
            f"configure_optimizers returned a dict with unknown keys {sorted(extra)}. "
            f"Received: keys {sorted(item)}. {_FIX}"
        )
    configs = []
    if item.get("lr_scheduler") is not None:
        sched = item["lr_scheduler"]
        if isinstance(sched, Mapping):
            sched = dict(sched)
        elif item.get("monitor") is not None:
            sched = {"scheduler": sched}
        if isinstance(sched, dict) and item.get("monitor") is not None:
            sched.setdefault("monitor", item["monitor"])
        configs.append(_scheduler_config(sched))
    return item["optimizer"], configs


def parse_optimizers(output: Any) -> tuple[list[Optimizer], list[LRSchedulerConfig]]:
    """Turn `configure_optimizers()`'s return value into optimizers and scheduler configs."""
    optimizers: list[Any]
    configs: list[LRSchedulerConfig] = []
    if output is None:
        warn_once("configure_optimizers returned None: training steps will run without an optimizer step.")
        return [], []
    # A string is a Sequence too; "ab" must not read as ([optimizers], [schedulers]).
    is_list = isinstance(output, Sequence) and not isinstance(output, (str, bytes))
    if isinstance(output, Optimizer):
        optimizers = [output]
    elif isinstance(output, Mapping):
        opt, configs = _from_dict(output)
        optimizers = [opt]
    elif (
        is_list and len(output) == 2 and isinstance(output[0], Sequence)
        and not isinstance(output[0], (Mapping, str, bytes))
    ):
        optimizers = list(output[0])
        schedulers = output[1] if isinstance(output[1], Sequence) else [output[1]]
        configs = [_scheduler_config(s) for s in schedulers]
    elif is_list and output and all(isinstance(o, Mapping) for o in output):
        optimizers = []
        for item in output:
            opt, item_configs = _from_dict(item)
            optimizers.append(opt)
            configs.extend(item_configs)
    elif is_list and output and not any(isinstance(o, Mapping) for o in output):
        optimizers = list(output)  # a non-optimizer item is named by the check below
    else:
        raise MisconfigurationException(
            f"configure_optimizers returned something fulmen cannot use. Received: {type(output).__name__} "
            f"({output!r:.80}). {_FIX}"
        )
    for opt in optimizers:
        if not isinstance(opt, Optimizer):
            raise MisconfigurationException(
                f"configure_optimizers must return torch.optim.Optimizer objects. "
                f"Received: {type(opt).__name__}. {_FIX}"
            )
    for config in configs:
        if config.scheduler.optimizer not in optimizers:
            raise MisconfigurationException(
                f"The scheduler {type(config.scheduler).__name__} steps an optimizer that "
                "configure_optimizers did not return. Received: a scheduler built on a "
                f"{type(config.scheduler.optimizer).__name__} that is not among the returned optimizers. "
                "Fix: build the scheduler on a returned optimizer."
            )
    return optimizers, configs


def step_schedulers(trainer: Trainer, interval: str, count: int) -> None:
    """Step every scheduler whose `interval` matches and whose `frequency` divides `count`.

    `count` is the number of completed optimizer steps (interval "step") or epochs ("epoch").
    Plateau schedulers get their monitored value from `trainer.callback_metrics`.
    """
    module = trainer.lightning_module
    if not module.automatic_optimization:
        return  # as in Lightning: under manual optimization the user steps the schedulers
    for config in trainer.lr_scheduler_configs:
        if config.interval != interval or count % config.frequency:
            continue
        metric = None
        if config.reduce_on_plateau:
            metrics = trainer.callback_metrics
            if config.monitor not in metrics:
                if config.strict:
                    raise MisconfigurationException(
                        f"ReduceLROnPlateau monitors {config.monitor!r}, which was not logged. "
                        f"Received: monitor={config.monitor!r}; available: {sorted(metrics)}. "
                        "Fix: self.log it, or set 'strict': False to skip the step when it is missing."
                    )
                warn_once(
                    f"ReduceLROnPlateau skipped: {config.monitor!r} not in callback_metrics ({sorted(metrics)}). "
                    f"Received: monitor={config.monitor!r}. Fix: self.log it, or monitor one of the logged metrics."
                )
                continue
            metric = metrics[config.monitor]
        module.lr_scheduler_step(config.scheduler, metric)
