"""Strategies: how a run uses one device or several processes (DDP, FSDP2) on torch.distributed.

`parse_strategy` turns the Trainer's `strategy` argument (a name or an object) into a strategy;
see `single.py` for the verbs every strategy has. `StrategyRegistry` lists the names
`Trainer(strategy=...)` accepts. Lightning's strategies that fulmen does not run (DeepSpeed, XLA)
are importable from here and raise a clear error when used (`unsupported.py`).
"""

from __future__ import annotations

from typing import Any

from fulmen.errors import MisconfigurationException
from fulmen.utilities.registry import Registry
from fulmen.strategies.ddp import DDPStrategy, DistributedFailure, ParallelStrategy
from fulmen.strategies.fsdp import FSDPStrategy
from fulmen.strategies.model_parallel import ModelParallelStrategy
from fulmen.strategies.single import SingleDeviceStrategy, Strategy
from fulmen.strategies.unsupported import (
    UNSUPPORTED_NAMES, DeepSpeedStrategy, SingleDeviceXLAStrategy, XLAStrategy,
)


class _StrategyRegistry(Registry):
    """Strategy names -> {"strategy": class, "description": str, "init_params": dict}, as Lightning's registry.

    >>> StrategyRegistry.get("ddp_spawn").spawns
    True
    """

    kind = "strategy"

    def available_strategies(self) -> list[str]:
        return list(self)

    def __str__(self) -> str:
        return f"Registered Strategies: {', '.join(self)}"


StrategyRegistry = _StrategyRegistry()
StrategyRegistry.register("ddp", DDPStrategy, description="DistributedDataParallel, one script copy per device")
StrategyRegistry.register("ddp_spawn", DDPStrategy, description="DDP in spawned processes", start_method="spawn")
for _flag in (False, True):
    _suffix = f"_find_unused_parameters_{str(_flag).lower()}"
    StrategyRegistry.register("ddp" + _suffix, DDPStrategy, description=f"DDP, find_unused_parameters={_flag}",
                              find_unused_parameters=_flag)
    StrategyRegistry.register("ddp_spawn" + _suffix, DDPStrategy, start_method="spawn",
                              description=f"DDP in spawned processes, find_unused_parameters={_flag}",
                              find_unused_parameters=_flag)
StrategyRegistry.register("fsdp", FSDPStrategy, description="Fully sharded data parallel (FSDP2)")
StrategyRegistry.register("model_parallel", ModelParallelStrategy,
                          description="Tensor parallel x FSDP2 on a 2-D device mesh (the model parallelizes itself)")
StrategyRegistry.register("single_device", SingleDeviceStrategy, description="One process on one device")


def parse_strategy(strategy: Any, processes: int) -> Strategy:
    """The strategy object for `strategy` ("auto", a name, or an object) with `processes` processes in all."""
    if isinstance(strategy, Strategy):
        return strategy
    name = strategy.lower() if isinstance(strategy, str) else strategy
    if name == "auto":
        return DDPStrategy() if processes > 1 else SingleDeviceStrategy()
    if name in UNSUPPORTED_NAMES:
        raise MisconfigurationException(UNSUPPORTED_NAMES[name])
    if not isinstance(name, str) or name not in StrategyRegistry:
        raise MisconfigurationException(
            f"Unknown strategy. Received: strategy={strategy!r}. Fix: use 'auto', one of "
            f"{sorted(StrategyRegistry)}, or a strategy object such as DDPStrategy(find_unused_parameters=True)."
        )
    return StrategyRegistry.get(name)


__all__ = [
    "DDPStrategy", "DeepSpeedStrategy", "DistributedFailure", "FSDPStrategy", "ModelParallelStrategy",
    "ParallelStrategy", "SingleDeviceStrategy", "SingleDeviceXLAStrategy", "Strategy", "StrategyRegistry",
    "XLAStrategy", "parse_strategy",
]
