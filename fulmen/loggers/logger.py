"""Lightning's `loggers.logger` module: `Logger`, `DummyLogger`, `DummyExperiment`, `rank_zero_experiment`
and `merge_dicts`.

`Logger` itself lives in `fulmen.loggers.base`; this module adds the do-nothing logger and the
decorator that custom loggers put on their `experiment` property, so Lightning code importing
`lightning.pytorch.loggers.logger` finds every name it expects.
"""

from __future__ import annotations

import functools
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from fulmen.loggers.base import Logger

__all__ = ["DummyExperiment", "DummyLogger", "Logger", "merge_dicts", "rank_zero_experiment"]


def _global_rank() -> int:
    """This process's rank: the process group's once it exists, else the launcher's variables (as Lightning reads them)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


class DummyExperiment:
    """Stands in for a logger's backend: every method call, index and item assignment does nothing.

    >>> DummyExperiment().add_image("x", None)  # returns None
    >>> DummyExperiment()[0].log({"a": 1})
    """

    def nop(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        return self.nop

    def __getitem__(self, idx: Any) -> DummyExperiment:
        return self  # so `logger.experiment[0].add_image(...)` works too

    def __setitem__(self, *args: Any, **kwargs: Any) -> None:
        pass


def rank_zero_experiment(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorate a logger's `experiment` property body: rank 0 gets the real backend, other ranks a DummyExperiment
    (so no other rank opens a run or writes files)."""

    @functools.wraps(fn)
    def experiment(self: Any) -> Any:
        if _global_rank() > 0:
            return DummyExperiment()
        return fn(self)

    return experiment


class DummyLogger(Logger):
    """A logger that accepts every call and records nothing, e.g. to switch the user's logger off for a
    while; `.experiment` is a DummyExperiment, and any other method name is a no-op.

    >>> logger = DummyLogger()
    >>> logger.log_metrics({"loss": 1.0}, step=0)
    >>> logger.experiment.add_histogram("w", None)
    >>> logger.any_method_at_all(1, 2, key=3)
    """

    def __init__(self) -> None:
        super().__init__()
        self._experiment = DummyExperiment()

    @property
    def experiment(self) -> DummyExperiment:
        return self._experiment

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getitem__(self, idx: Any) -> DummyLogger:
        return self  # so `trainer.loggers[0]`-style indexing of a DummyLogger keeps working

    def __getattr__(self, name: str) -> Callable[..., None]:
        # Only reached for names the class does not define: each is a method that does nothing.
        if name.startswith("__"):
            raise AttributeError(name)  # keep copy/pickle protocols honest
        return lambda *args, **kwargs: None


def merge_dicts(
    dicts: Sequence[Mapping],
    agg_key_funcs: Mapping | None = None,
    default_func: Callable[[Sequence[float]], float] = statistics.mean,
) -> dict:
    """One dict from several: each key's values (None skipped) reduced by `agg_key_funcs[key]`, else
    by `default_func` (the mean). Nested dicts merge the same way, with the nested mapping of
    `agg_key_funcs` for their keys.

    >>> merge_dicts([{"a": 1.0, "n": {"x": 1}}, {"a": 2.0, "b": 5, "n": {"x": 2}}], {"b": max, "n": {"x": sum}})
    {'a': 1.5, 'n': {'x': 3}, 'b': 5}
    """
    funcs = agg_key_funcs or {}
    keys = list(dict.fromkeys(k for d in dicts for k in d))  # first-seen order
    merged: dict = {}
    for key in keys:
        values = [d[key] for d in dicts if d.get(key) is not None]
        func = funcs.get(key)
        if isinstance(values[0], dict):
            merged[key] = merge_dicts(values, func, default_func)
        else:
            merged[key] = (func or default_func)(values)
    return merged
