"""Strategies: how a run uses one device or several processes (DDP, FSDP2) on torch.distributed.

`parse_strategy` turns the Trainer's `strategy` argument (a name or an object) into a strategy;
see `single.py` for the verbs every strategy has. `StrategyRegistry` lists the names
`Trainer(strategy=...)` accepts. Lightning's strategies that fulmen does not run (DeepSpeed, XLA,
ModelParallel) are importable from here and raise a clear error when used (`unsupported.py`).
"""

from __future__ import annotations

from typing import Any, Callable

from fulmen.errors import MisconfigurationException
from fulmen.strategies.ddp import DDPStrategy, DistributedFailure, ParallelStrategy
from fulmen.strategies.fsdp import FSDPStrategy
from fulmen.strategies.single import SingleDeviceStrategy, Strategy
from fulmen.strategies.unsupported import (
    UNSUPPORTED_NAMES, DeepSpeedStrategy, ModelParallelStrategy, SingleDeviceXLAStrategy, XLAStrategy,
)


class _StrategyRegistry(dict):
    """Strategy names -> {"strategy": class, "description": str, "init_params": dict}, as Lightning's registry.

    >>> StrategyRegistry.get("ddp_spawn").spawns
    True
    """

    def register(
        self, name: str, strategy: Callable | None = None, description: str = "", override: bool = False,
        **init_params: Any,
    ) -> Callable:
        """Register `strategy` under `name`; used bare or as a decorator (`@StrategyRegistry.register("x")`)."""
        if not isinstance(name, str):
            raise TypeError(f"A strategy's name must be a str. Received: name={name!r}. Fix: e.g. 'my_ddp'.")
        if name in self and not override:
            raise ValueError(
                f"A strategy is already registered under this name. Received: name={name!r}. "
                "Fix: pass override=True to replace it, or choose another name."
            )

        def do_register(strategy: Callable) -> Callable:
            self[name] = {"strategy": strategy, "strategy_name": name, "description": description,
                          "init_params": init_params}
            return strategy

        return do_register if strategy is None else do_register(strategy)

    def get(self, name: str, default: Any = None) -> Any:
        """A new strategy object for `name`, built with its registered init_params."""
        if name in self:
            data = self[name]
            return data["strategy"](**data["init_params"])
        if default is not None:
            return default
        raise KeyError(f"No strategy is registered under this name. Received: name={name!r}. Fix: use one of {list(self)}.")

    def remove(self, name: str) -> None:
        self.pop(name)

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
