"""Profilers: `Trainer(profiler="simple" | "advanced" | "pytorch" | Profiler())`.

`SimpleProfiler` times every hook and step, `AdvancedProfiler` runs cProfile per action and
`PyTorchProfiler` records a torch.profiler trace; `XLAProfiler` is importable but refuses to be
built (no XLA in fulmen). How the Trainer records actions is
`fulmen/profilers/wiring.py`.
"""

from __future__ import annotations

from typing import Any

from fulmen.errors import MisconfigurationException
from fulmen.profilers.advanced import AdvancedProfiler
from fulmen.profilers.profiler import PassThroughProfiler, Profiler
from fulmen.profilers.pytorch import PyTorchProfiler
from fulmen.profilers.simple import SimpleProfiler
from fulmen.profilers.xla import XLAProfiler

__all__ = [
    "AdvancedProfiler", "PassThroughProfiler", "Profiler", "PyTorchProfiler", "SimpleProfiler", "XLAProfiler",
    "resolve_profiler",
]

_BY_NAME = {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler}


def resolve_profiler(profiler: Any) -> Profiler:
    """The `Trainer(profiler=...)` argument as a Profiler: None gives a `PassThroughProfiler`."""
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str) and profiler.lower() in _BY_NAME:
        return _BY_NAME[profiler.lower()]()
    if isinstance(profiler, str) and profiler.lower() == "xla":
        return XLAProfiler()  # raises: says why and what to use instead
    raise MisconfigurationException(
        f"`profiler` must be one of {sorted(_BY_NAME)}, a fulmen.profilers.Profiler or None. "
        f"Received: profiler={profiler!r}. Fix: e.g. Trainer(profiler='simple')."
    )
