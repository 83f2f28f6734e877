"""Strategies: how a run uses one device or several processes (DDP, FSDP2) on torch.distributed.

`parse_strategy` turns the Trainer's `strategy` argument (a name or an object) into a strategy;
see `single.py` for the verbs every strategy has.
"""

from __future__ import annotations

from typing import Any

from fulmen.errors import MisconfigurationException
from fulmen.strategies.ddp import DDPStrategy, DistributedFailure, ParallelStrategy
from fulmen.strategies.fsdp import FSDPStrategy
from fulmen.strategies.single import Strategy

SingleDeviceStrategy = Strategy  # Lightning's name for the one-device case

_NAMES = {
    "ddp": lambda: DDPStrategy(),
    "ddp_spawn": lambda: DDPStrategy(start_method="spawn"),
    "ddp_find_unused_parameters_true": lambda: DDPStrategy(find_unused_parameters=True),
    "fsdp": lambda: FSDPStrategy(),
    "single_device": lambda: Strategy(),
}


def parse_strategy(strategy: Any, processes: int) -> Strategy:
    """The strategy object for `strategy` ("auto", a name, or an object) with `processes` processes in all."""
    if isinstance(strategy, Strategy):
        return strategy
    name = strategy.lower() if isinstance(strategy, str) else strategy
    if name == "auto":
        return DDPStrategy() if processes > 1 else Strategy()
    if name not in _NAMES:
        raise MisconfigurationException(
            f"Unknown strategy. Received: strategy={strategy!r}. Fix: use 'auto', one of {sorted(_NAMES)}, "
            "or a strategy object such as DDPStrategy(find_unused_parameters=True)."
        )
    return _NAMES[name]()


__all__ = [
    "DDPStrategy", "DistributedFailure", "FSDPStrategy", "ParallelStrategy", "SingleDeviceStrategy", "Strategy",
    "parse_strategy",
]
