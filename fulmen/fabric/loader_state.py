"""Where a Fabric dataloader's iteration stands: the epoch, the batches taken in it, and the random
state that decided its order, so that a hand-written loop can save it and resume mid-epoch exactly.

`LoaderProgress` is what `fulmen.fabric.wrappers._FabricDataLoader` iterates through. Each
`iterate()` is one epoch: it calls `set_epoch` on the loader's samplers (a DistributedSampler then
reshuffles per epoch, the same order on every rank) and counts the batches it yields. As in
Lightning, every new iteration is a new epoch, also when the previous one was left unfinished.

`state_dict()` records the epoch, the batches yielded in it, the random state taken just before
the epoch's iterator was made (it decided the order: `fulmen.dataloading.epoch_start_state`) and
the random state live at the moment of saving. After `load_state_dict`, the next `iterate()`
continues the saved epoch the way the Trainer's resume does (one implementation:
`fulmen.dataloading._resumed_iterator`): the order is drawn again from the epoch-start state, the
batches already yielded are skipped by index without being loaded, and the saved live random state
is put back just before the next batch is loaded, so dropout and augmentation in the user's loop
draw what they drew in the uninterrupted run. A loader that saves its own position (torchdata's
StatefulDataLoader) is restored from its own state instead of skipping. Everything saved is
tensors and plain data, so the checkpoint loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fulmen.data import set_sampler_epoch
from fulmen.dataloading import _generators, _is_stateful, _resumed_iterator, epoch_start_state
from fulmen.seed import load_rng_state_dict, rng_state_dict

_KEYS = ("epoch", "batches", "epoch_start", "rng", "loader")


class LoaderProgress:
    """One loader's epochs and batches, as a hand-written loop draws them.

    >>> from torch.utils.data import DataLoader
    >>> progress = LoaderProgress(DataLoader(range(6), batch_size=2, shuffle=True))
    >>> batches = progress.iterate()
    >>> _ = next(batches)
    >>> state = progress.state_dict()  # epoch 0, one batch in
    >>> (state["epoch"], state["batches"])
    (0, 1)
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epoch = 0  # the epoch the next `iterate()` starts (or the one in progress)
        self.batches = 0  # batches yielded in the epoch in progress
        self._open = False  # an epoch has started and not run to its end
        self._epoch_start: dict[str, Any] | None = None  # the random state that decided the open epoch's order
        self._resume: dict[str, Any] | None = None  # a loaded mid-epoch position, for the next iterate()

    def iterate(self) -> Iterator[Any]:
        """The batches of one epoch, as the loader yields them (not moved to a device)."""
        resume, self._resume = self._resume, None
        if self._open:  # the previous iteration was left before its end: this is the next epoch
            self.epoch += 1
        set_sampler_epoch(self.loader, self.epoch)
        if resume is None:
            self._epoch_start = epoch_start_state(self.loader)
            self.batches = 0
            batches = iter(self.loader)
        else:
            self._epoch_start, self.batches = resume["epoch_start"], resume["batches"]
            batches = self._continue(resume)
        self._open = True
        for batch in batches:
            self.batches += 1
            yield batch
        self.epoch += 1
        self.batches = 0
        self._open = False

    def _continue(self, resume: dict[str, Any]) -> Iterator[Any]:
        """The saved epoch's iterator, `batches` in, with the saved live random state put back."""
        load_rng_state_dict(resume["rng"])  # what `_resumed_iterator` puts back before the next batch
        if resume["loader"] is not None and _is_stateful(self.loader):
            # Its own position; its iterator draws its seed from the epoch-start state, as before.
            load_rng_state_dict(resume["epoch_start"]["rng"])
            for generator, saved in zip(_generators(self.loader), resume["epoch_start"]["generators"]):
                generator.set_state(saved)
            self.loader.load_state_dict(resume["loader"])
            batches = iter(self.loader)
            load_rng_state_dict(resume["rng"])
            return batches
        return _resumed_iterator(self.loader, resume["epoch_start"], resume["batches"])

    def state_dict(self) -> dict[str, Any]:
        """Where the iteration stands, as tensors and plain data (`torch.load(weights_only=True)` reads it)."""
        if self._resume is not None:  # loaded but not yet iterated: still the loaded position
            return dict(self._resume)
        epoch, batches, epoch_start = self.epoch, self.batches, self._epoch_start
        length = _length(self.loader)
        if not self._open or (length is not None and batches >= length):
            # Between epochs (or after an epoch's last batch, before the loop asked for more):
            # the next iteration starts the following epoch afresh.
            epoch, batches, epoch_start = epoch + (1 if self._open else 0), 0, None
        stateful = _is_stateful(self.loader)
        return {
            "epoch": epoch,
            "batches": batches,
            "epoch_start": epoch_start,
            "rng": rng_state_dict(),
            "loader": self.loader.state_dict() if stateful else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (what `state_dict` returned): the next `iterate()` resumes its epoch."""
        if not isinstance(state, dict) or any(key not in state for key in _KEYS):
            received = f"keys={sorted(map(str, state))}" if isinstance(state, dict) else f"a {type(state).__name__}"
            raise ValueError(
                f"The dataloader state to load is not one a Fabric dataloader saved (it needs the keys {list(_KEYS)}). "
                f"Received: {received}. Fix: load the entry `fabric.save` wrote for this dataloader."
            )
        self.epoch, self.batches, self._open = int(state["epoch"]), 0, False
        self._epoch_start = None
        if state["batches"] > 0 and state["epoch_start"] is not None:
            self._resume = {key: state[key] for key in _KEYS}
            return
        # At an epoch boundary: the random state goes back now, before the loop draws anything.
        self._resume = None
        load_rng_state_dict(state["rng"])
        if state["loader"] is not None and _is_stateful(self.loader):
            self.loader.load_state_dict(state["loader"])


def _length(loader: Any) -> int | None:
    """The loader's number of batches, or None when it has none (an iterable dataset)."""
    try:
        return len(loader)
    except TypeError:
        return None
