"""What `self.log` stores, and how it is reduced, without a host sync per step.

Each loop run (one training epoch, one evaluation run) gets a `Results`. Logged values stay
device tensors: a step value is kept by reference, an epoch value is a running sum (weighted by
batch size for "mean") or a running max/min, all computed on the device. Values become Python
numbers only where someone reads them: a logger write every `log_every_n_steps`, a progress-bar
refresh, or a callback reading `trainer.callback_metrics` at epoch end.

Naming follows Lightning: a value logged with both `on_step` and `on_epoch` appears as
`name_step` and `name_epoch` (and as `name` in `callback_metrics`).
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable
from typing import Any

import torch

from fulmen.errors import MisconfigurationException
from fulmen.state import RunningStage

_REDUCTIONS = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
_TORCH_REDUCTIONS = {torch.mean: "mean", torch.sum: "sum", torch.max: "max", torch.min: "min"}


def parse_reduce_fx(name: str, reduce_fx: Any) -> str:
    if reduce_fx == "mean":  # the default: skip the lookups below on every self.log
        return "mean"
    if isinstance(reduce_fx, str) and reduce_fx.lower() in _REDUCTIONS:
        return _REDUCTIONS[reduce_fx.lower()]
    if reduce_fx in _TORCH_REDUCTIONS:
        return _TORCH_REDUCTIONS[reduce_fx]
    raise MisconfigurationException(
        f"self.log({name!r}, ...) got an unsupported reduce_fx. Received: reduce_fx={reduce_fx!r}. "
        "Fix: use 'mean', 'sum', 'max' or 'min' (or torch.mean/sum/max/min)."
    )


class LoggedValue:
    """One logged name within a loop run: its options, last step value and epoch accumulator."""

    __slots__ = ("on_step", "on_epoch", "prog_bar", "logger", "reduce_fx", "sync",
                 "step_value", "total", "weight", "updated_at", "synced")

    def __init__(self, on_step: bool, on_epoch: bool, prog_bar: bool, logger: bool,
                 reduce_fx: str, sync: Callable[[torch.Tensor, str], torch.Tensor] | None = None):
        self.on_step, self.on_epoch = on_step, on_epoch
        self.prog_bar, self.logger = prog_bar, logger
        # sync: for sync_dist=True with several processes, the all-reduce (tensor, reduce_fx) -> tensor.
        self.reduce_fx, self.sync = reduce_fx, sync
        self.step_value: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.weight = 0
        self.updated_at = -1
        # The epoch value `sync` last produced (reduced once, however many views read it).
        self.synced: torch.Tensor | None = None

    def update(self, value: torch.Tensor, batch_size: int, batch_counter: int) -> None:
        self.step_value = value
        self.synced = None
        self.updated_at = batch_counter
        if not self.on_epoch:
            return
        fx, total = self.reduce_fx, self.total
        if fx == "mean":
            weighted = value * batch_size
            self.total = weighted if total is None else total + weighted
            self.weight += batch_size
        elif total is None:
            self.total = value
        elif fx == "sum":
            self.total = total + value
        elif fx == "max":
            self.total = torch.maximum(total, value)
        else:
            self.total = torch.minimum(total, value)

    def epoch_value(self) -> torch.Tensor:
        assert self.total is not None
        if self.sync is not None:
            if self.synced is None:
                # As in Lightning: a mean over all ranks weights every rank's values by batch size.
                total = self.sync(self.total, "sum" if self.reduce_fx == "mean" else self.reduce_fx)
                weight = self.sync(torch.tensor(float(self.weight), device=total.device), "sum")
                self.synced = (total / weight).to(self.total.dtype) if self.reduce_fx == "mean" else total
            return self.synced
        return self.total / self.weight if self.reduce_fx == "mean" else self.total


class LoggedMetric(LoggedValue):
    """A torchmetrics `Metric` passed to `self.log`, as in Lightning: the step value is what the
    metric's last `forward` returned, the epoch value is `compute()` over everything it was updated
    with (the metric syncs across processes itself), after which the metric is `reset()` for the
    next epoch. The metric accumulates itself, so `reduce_fx` and `batch_size` do not apply."""

    __slots__ = ("metric",)

    def update(self, value: Any, batch_size: int, batch_counter: int) -> None:
        self.metric, self.synced = value, None
        self.updated_at = batch_counter
        cache = getattr(value, "_forward_cache", None)  # None when the user called .update(), not forward
        self.step_value = None if cache is None else _as_scalar_tensor(type(value).__name__, cache, False)
        self.total = value if self.on_epoch else None  # marks that an epoch value exists

    def epoch_value(self) -> torch.Tensor:
        if self.synced is None:  # computed once, however many views read it; then the metric starts over
            self.synced = _as_scalar_tensor(type(self.metric).__name__, self.metric.compute(), False)
            self.metric.reset()
        return self.synced


def _is_metric(value: Any) -> bool:
    """Whether `value` is a torchmetrics Metric, without importing torchmetrics (when it is not
    imported, no Metric can exist)."""
    torchmetrics = sys.modules.get("torchmetrics")
    return torchmetrics is not None and isinstance(value, torchmetrics.Metric)


class Results:
    """Everything `self.log` received during one loop run."""

    def __init__(self, *, training: bool = True) -> None:
        self.values: dict[str, LoggedValue] = {}
        self.batch_counter = 0
        self.epoch_end_reached = False
        # As in Lightning, an evaluation run's step values never reach callback_metrics (nor what
        # validate/test return): monitors there see epoch values only.
        self.training = training

    def view(self, target: str, *, fresh_only: bool = False) -> dict[str, torch.Tensor]:
        """The values visible to `target` ("callback", "prog_bar" or "logger") right now.

        Step values are shown during the run; epoch values replace them once the end of the
        run is reached. `fresh_only` keeps only step values logged in the current batch.
        """
        out: dict[str, torch.Tensor] = {}
        step_visible = self.training or target != "callback"
        for name, v in self.values.items():
            if (target == "prog_bar" and not v.prog_bar) or (target == "logger" and not v.logger):
                continue
            forked = v.on_step and v.on_epoch
            ended = self.epoch_end_reached
            # Loggers get step values only during the run; others keep the latest one afterwards.
            if step_visible and v.on_step and v.step_value is not None and not (ended and target == "logger"):
                if not (fresh_only and v.updated_at != self.batch_counter):
                    out[_forked_name(name, "_step") if forked else name] = v.step_value
                    if forked and target == "callback" and not ended:
                        out[name] = v.step_value
            if ended and v.on_epoch and v.total is not None:
                value = v.epoch_value()
                out[_forked_name(name, "_epoch") if forked else name] = value
                if forked and target == "callback":
                    out[name] = value
        return out


def _forked_name(name: str, suffix: str) -> str:
    """`loss` -> `loss_epoch`; with several eval loaders the suffix goes before the loader's, as in
    Lightning: `loss/dataloader_idx_1` -> `loss_epoch/dataloader_idx_1`."""
    head, sep, idx = name.partition("/dataloader_idx_")
    return f"{head}{suffix}{sep}{idx}"


def to_float_dict(metrics: dict[str, Any]) -> dict[str, float]:
    """Convert tensors to Python floats: one host sync per value. Call only at write points."""
    return {k: (v.item() if isinstance(v, torch.Tensor) else float(v)) for k, v in metrics.items()}


def log_value(
    trainer: Any, name: str, value: Any, *, prog_bar: bool, logger: bool | None,
    on_step: bool | None, on_epoch: bool | None, reduce_fx: Any, enable_graph: bool,
    sync_dist: bool, add_dataloader_idx: bool, batch_size: int | None,
) -> None:
    """The body of `LightningModule.log`: check the call, then record the value."""
    run = trainer.run_state
    results: Results | None = run.results
    if results is None:
        raise MisconfigurationException(
            f"self.log({name!r}, ...) was called outside a training, validation, test or predict "
            "loop (e.g. in __init__, setup or configure_optimizers). "
            "Fix: call self.log from *_step methods or on_*_epoch_end/on_*_batch_end hooks."
        )
    if not isinstance(name, str) or not name:
        raise MisconfigurationException(
            f"self.log needs a non-empty string name. Received: name={name!r}. Fix: self.log('train_loss', loss)."
        )
    value = _as_scalar_tensor(name, value, enable_graph)
    # `is`, not `==`: the stages are LightningEnums, whose case-insensitive == is a Python call per log
    in_step = run.in_batch and trainer.state.stage is RunningStage.TRAINING
    on_step = in_step if on_step is None else on_step
    on_epoch = (not in_step) if on_epoch is None else on_epoch
    if on_step and not run.in_batch:
        raise MisconfigurationException(
            f"self.log({name!r}, on_step=True) was called outside a batch (in an epoch-level hook), "
            "where there is no step to log at. Received: on_step=True. Fix: drop on_step or log from a *_step method."
        )
    if not (on_step or on_epoch):
        raise MisconfigurationException(
            f"self.log({name!r}, on_step=False, on_epoch=False) would log nothing. "
            "Fix: set on_step=True and/or on_epoch=True."
        )
    if add_dataloader_idx and run.num_eval_loaders > 1 and trainer.state.stage is not RunningStage.TRAINING:
        name = f"{name}/dataloader_idx_{run.dataloader_idx}"
    fx = parse_reduce_fx(name, reduce_fx)
    entry = results.values.get(name)
    if entry is None:
        _check_forked_names(results, name, on_step and on_epoch)
        strategy = trainer.strategy
        sync = strategy.all_reduce if sync_dist and strategy.distributed else None
        if not isinstance(value, torch.Tensor):  # a torchmetrics Metric (see _as_scalar_tensor)
            entry = LoggedMetric(on_step, on_epoch, prog_bar, True if logger is None else logger, fx)
        else:
            entry = LoggedValue(on_step, on_epoch, prog_bar, True if logger is None else logger, fx, sync)
        results.values[name] = entry
    elif (entry.on_step, entry.on_epoch, entry.reduce_fx) != (on_step, on_epoch, fx):
        raise MisconfigurationException(
            f"self.log({name!r}) was called twice in the same loop with different options. Received: "
            f"first on_step={entry.on_step}, on_epoch={entry.on_epoch}, reduce_fx={entry.reduce_fx!r}; "
            f"then on_step={on_step}, on_epoch={on_epoch}, reduce_fx={fx!r}. "
            "Fix: log different quantities under different names."
        )
    if batch_size is None:
        # Inferring the batch size touches only tensor shapes: no sync. Needed for weighted means.
        batch_size = trainer._current_batch_size() if (on_epoch and fx == "mean") else 1
    entry.update(value, batch_size, results.batch_counter)
    if entry.sync is not None and on_step:
        # The step value as all ranks see it (a collective per call); the epoch total stays local
        # and is reduced once, at the end.
        entry.step_value = entry.sync(value, fx)


def _check_forked_names(results: Results, name: str, forked: bool) -> None:
    """A value logged per step and per epoch is reported as `name_step` and `name_epoch`: another
    value logged under one of those names would silently overwrite it (checked once per name and loop)."""
    suffixes = ("_step", "_epoch")
    taken = [(f"{name}{suffix}", name) for suffix in suffixes if forked and f"{name}{suffix}" in results.values]
    for suffix in suffixes:
        base = results.values.get(name[: -len(suffix)]) if name.endswith(suffix) else None
        if base is not None and base.on_step and base.on_epoch:
            taken.append((name, name[: -len(suffix)]))
    if taken:
        reported, forked_name = taken[0]
        raise MisconfigurationException(
            f"self.log({name!r}) clashes with another logged name: {forked_name!r}, logged with on_step=True and "
            f"on_epoch=True, is reported as '{forked_name}_step' and '{forked_name}_epoch'. Received: both "
            f"{forked_name!r} (per step and per epoch) and {reported!r}. Fix: rename one of them."
        )


def _as_scalar_tensor(name: str, value: Any, enable_graph: bool) -> Any:
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:  # the usual case, e.g. a loss: no shape checks needed
            return value if enable_graph else value.detach()
        if value.numel() != 1:
            raise MisconfigurationException(
                f"self.log({name!r}, value) needs a single number, but the tensor has shape "
                f"{tuple(value.shape)}. Received: value of shape {tuple(value.shape)}. "
                "Fix: reduce it first, e.g. value.mean(), or log elements under separate names."
            )
        value = value if enable_graph else value.detach()
        return value.reshape(()) if value.ndim else value
    if isinstance(value, (bool, numbers.Real)):  # numbers.Real: also NumPy scalars, as Lightning accepts
        return torch.tensor(float(value))
    if _is_metric(value):  # kept as is: a LoggedMetric computes it at the end of the epoch
        return value
    raise MisconfigurationException(
        f"self.log({name!r}, value) needs a number or a one-element tensor. "
        f"Received: value of type {type(value).__name__} ({value!r:.60}). "
        "Fix: log a float or a scalar tensor, e.g. self.log(name, loss)."
    )
