"""Where a Fabric dataloader's iteration stands: the epoch, the batches taken in it, and the random
state that decided its order, so that a hand-written loop can save it and resume mid-epoch exactly.

`LoaderProgress` is what `fulmen.fabric.wrappers._FabricDataLoader` iterates through. Each
`iterate()` is one epoch: it calls `set_epoch` on the loader's samplers (a DistributedSampler then
reshuffles per epoch, the same order on every rank) and counts the batches it yields.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fulmen.data import set_sampler_epoch


class LoaderProgress:
    """One loader's epochs and batches, as a hand-written loop draws them."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epoch = 0  # the epoch the next `iterate()` starts (or the one in progress)
        self.batches = 0  # batches yielded in the epoch in progress

    def iterate(self) -> Iterator[Any]:
        """The batches of one epoch, as the loader yields them (not moved to a device)."""
        set_sampler_epoch(self.loader, self.epoch)
        self.batches = 0
        for batch in self.loader:
            self.batches += 1
            yield batch
        self.epoch += 1
        self.batches = 0
