"""Profilers: `Trainer(profiler="simple" | "advanced" | "pytorch" | Profiler())`.

`SimpleProfiler` times every hook and step, `AdvancedProfiler` runs cProfile per action and
`PyTorchProfiler` records a torch.profiler trace. How the Trainer records actions is
`fulmen/profilers/wiring.py`.
"""

from __future__ import annotations

from typing import Any

from fulmen.errors import MisconfigurationException
from fulmen.profilers.advanced import AdvancedProfiler
from fulmen.profilers.profiler import PassThroughProfiler, Profiler
from fulmen.profilers.pytorch import PyTorchProfiler
from fulmen.profilers.simple import SimpleProfiler

__all__ = ["AdvancedProfiler", "PassThroughProfiler", "Profiler", "PyTorchProfiler", "SimpleProfiler", "resolve_profiler"]

_BY_NAME = {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler}


def resolve_profiler(profiler: Any) -> Profiler:
    """The `Trainer(profiler=...)` argument as a Profiler: None gives a `PassThroughProfiler`."""
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str) and profiler.lower() in _BY_NAME:
        return _BY_NAME[profiler.lower()]()
    raise MisconfigurationException(
        f"`profiler` must be one of {sorted(_BY_NAME)}, a fulmen.profilers.Profiler or None. "
        f"Received: profiler={profiler!r}. Fix: e.g. Trainer(profiler='simple')."
    )
