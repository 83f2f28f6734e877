"""`XLAProfiler` under Lightning's name: importable, refusing to be built (fulmen does not run on XLA/TPU)."""

from __future__ import annotations

from typing import Any

from fulmen.errors import MisconfigurationException
from fulmen.profilers.profiler import Profiler


class XLAProfiler(Profiler):
    """Lightning's TPU profiler (torch_xla's trace server). fulmen does not run on XLA, so building one raises."""

    def __init__(self, port: int = 9012, **profiler_kwargs: Any) -> None:
        raise MisconfigurationException(
            "XLAProfiler is not supported by fulmen: fulmen does not run on XLA (TPU). "
            f"Received: profiler=XLAProfiler(port={port!r}). "
            "Fix: use Trainer(profiler='pytorch') (PyTorchProfiler) or 'simple' on CUDA, MPS or CPU."
        )

    def start(self, action_name: str) -> None:  # pragma: no cover (never built)
        pass

    def stop(self, action_name: str) -> None:  # pragma: no cover
        pass
