"""CombinedLoader: several iterables read as one, in Lightning's four modes.

`CombinedLoader(iterables, mode)` takes one iterable or a (nested) list, tuple or dict of them.
Iterating it yields `(batch, batch_idx, dataloader_idx)`:

* `min_size`: one batch from every iterable per step, until the shortest is done;
* `max_size_cycle`: until the longest is done, the shorter ones starting over when they run out
  (what `Trainer.fit` makes of several training dataloaders);
* `max_size`: until the longest is done, `None` in the place of the ones that ran out;
* `sequential`: each iterable to its end, one after the other; the batch is that iterable's own
  batch and `dataloader_idx` says which one it came from (evaluation's mode).

In the first three modes the batch has the shape of `iterables` (a list or dict of batches) and
`dataloader_idx` is always 0.

Each inner iterator is created right before its first batch is drawn (not all at the start), so
that what decides one loader's order (the random state when its iterator is made and its
sampler draws its seed) is the random state just before it. `fulmen.dataloading` records that
state per inner iterator during training, which is what lets a checkpoint taken mid-epoch resume
the combined data stream exactly.

    >>> from torch.utils.data import DataLoader
    >>> loaders = {"a": DataLoader(range(6), batch_size=4), "b": DataLoader(range(15), batch_size=5)}
    >>> combined = CombinedLoader(loaders, "max_size_cycle")
    >>> [(sorted(batch), idx) for batch, idx, _ in combined]
    [(['a', 'b'], 0), (['a', 'b'], 1), (['a', 'b'], 2)]
    >>> len(combined)
    3
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

_Mode = Literal["min_size", "max_size_cycle", "max_size", "sequential"]


# --- the collection of iterables, as a flat list and the shape to rebuild it from ----------------
def _is_leaf(tree: Any) -> bool:
    """An iterable to read from, not a collection of them. As in Lightning, a list or dict that
    holds only numbers and strings is itself a source of batches (e.g. `[1, 2, 3]`)."""
    if isinstance(tree, Mapping):
        children = list(tree.values())
    elif isinstance(tree, (list, tuple)):
        children = list(tree)
    else:
        return True
    return all(isinstance(child, (int, float, str)) for child in children)


def _flatten(tree: Any) -> tuple[list[Any], Any]:
    """(the leaves in order, a spec that `_unflatten` rebuilds the same shape from)."""
    if _is_leaf(tree):
        return [tree], None
    if isinstance(tree, Mapping):
        keys, children = list(tree.keys()), list(tree.values())
    else:
        keys, children = None, list(tree)
    leaves: list[Any] = []
    specs = []
    for child in children:
        flat, spec = _flatten(child)
        leaves += flat
        specs.append((len(flat), spec))
    return leaves, (type(tree), keys, specs)


def _unflatten(leaves: list[Any], spec: Any) -> Any:
    if spec is None:
        return leaves[0]
    kind, keys, specs = spec
    values, start = [], 0
    for n, child in specs:
        values.append(_unflatten(leaves[start : start + n], child))
        start += n
    if keys is not None:
        items = zip(keys, values)
        return kind(items) if kind in (dict, OrderedDict) else dict(items)
    if kind is list or kind is tuple:
        return kind(values)
    if issubclass(kind, tuple) and hasattr(kind, "_fields"):  # a namedtuple
        return kind(*values)
    return list(values) if issubclass(kind, list) else tuple(values)


def _length(iterable: Any) -> int | float:
    """`len(iterable)`, or inf for an iterable without one."""
    try:
        return len(iterable)
    except (TypeError, NotImplementedError):
        return float("inf")


# --- the four modes --------------------------------------------------------------------------
class _ModeIterator(Iterator):
    """One pass over the flat list of iterables; `start(i)` makes inner iterator i (plain `iter`
    unless the training loop records or resumes it)."""

    def __init__(self, iterables: list[Any], limits: list[int | float] | None = None,
                 start: Callable[[int], Iterator] | None = None):
        if limits is not None and len(limits) != len(iterables):
            raise ValueError(
                f"The number of limits ({len(limits)}) and number of iterables ({len(iterables)}) differ. "
                f"Received: limits={limits!r}. Fix: give one limit per iterable, or limits=None."
            )
        self.iterables, self.limits = iterables, limits
        self.start = start if start is not None else (lambda i: iter(self.iterables[i]))
        self.iterators: list[Iterator | None] = [None] * len(iterables)
        self.idx = 0  # the next batch_idx

    def _next_of(self, i: int) -> Any:
        iterator = self.iterators[i]
        if iterator is None:
            iterator = self.iterators[i] = self.start(i)
        return next(iterator)

    def reset(self) -> None:
        self.iterators = [None] * len(self.iterables)
        self.idx = 0

    def _lengths(self) -> list[int | float]:
        return [_length(it) for it in self.iterables]


class _MinSize(_ModeIterator):
    def __next__(self) -> tuple[list[Any], int, int]:
        out = [self._next_of(i) for i in range(len(self.iterables))]
        self.idx += 1
        return out, self.idx - 1, 0

    def __len__(self) -> int:
        lengths = self._lengths()
        return min(lengths + list(self.limits)) if self.limits is not None else min(lengths)  # type: ignore[return-value]


class _MaxSizeCycle(_ModeIterator):
    def __init__(self, *args: Any):
        super().__init__(*args)
        self.consumed = [False] * len(self.iterables)

    def __next__(self) -> tuple[list[Any], int, int]:
        out = []
        for i in range(len(self.iterables)):
            try:
                out.append(self._next_of(i))
            except StopIteration:
                self.consumed[i] = True
                if all(self.consumed):
                    raise
                self.iterators[i] = None  # start this one over
                out.append(self._next_of(i))
        self.idx += 1
        return out, self.idx - 1, 0

    def __len__(self) -> int:
        lengths = self._lengths()
        if self.limits is not None:
            return max(min(n, limit) for n, limit in zip(lengths, self.limits))  # type: ignore[return-value]
        return max(lengths)  # type: ignore[return-value]

    @property
    def _consumed(self) -> list[bool]:
        # Lightning's name for which iterables have run out at least once (its tests read it).
        return self.consumed

    def reset(self) -> None:
        super().reset()
        self.consumed = [False] * len(self.iterables)


class _MaxSize(_MaxSizeCycle):
    def __next__(self) -> tuple[list[Any], int, int]:
        out: list[Any] = []
        for i in range(len(self.iterables)):
            try:
                out.append(None if self.consumed[i] else self._next_of(i))
            except StopIteration:
                self.consumed[i] = True
                out.append(None)
        if all(self.consumed):
            raise StopIteration
        self.idx += 1
        return out, self.idx - 1, 0


class _Sequential(_ModeIterator):
    def __init__(self, *args: Any):
        super().__init__(*args)
        self.current = 0  # the dataloader_idx being read

    def __next__(self) -> tuple[Any, int, int]:
        while self.current < len(self.iterables):
            limit = float("inf") if self.limits is None else self.limits[self.current]
            if self.idx < limit:
                try:
                    batch = self._next_of(self.current)
                except StopIteration:
                    pass
                else:
                    self.idx += 1
                    return batch, self.idx - 1, self.current
            self.iterators[self.current] = None  # only the loader being read holds an iterator (and workers)
            self.current, self.idx = self.current + 1, 0
        raise StopIteration

    def __len__(self) -> int:
        lengths = self._lengths()
        if self.limits is not None:
            return sum(min(n, limit) for n, limit in zip(lengths, self.limits))  # type: ignore[return-value]
        return sum(lengths)  # type: ignore[return-value]

    def reset(self) -> None:
        super().reset()
        self.current = 0


_MODES: dict[str, tuple[type[_ModeIterator], Callable[[list[int]], int]]] = {
    "min_size": (_MinSize, min),
    "max_size_cycle": (_MaxSizeCycle, max),
    "max_size": (_MaxSize, max),
    "sequential": (_Sequential, sum),
}
# The same table under Lightning's name and shape: mode -> {"fn": combine lengths, "iterator": class}.
_SUPPORTED_MODES: dict[str, dict[str, Any]] = {
    mode: {"fn": fn, "iterator": cls} for mode, (cls, fn) in _MODES.items()
}


class CombinedLoader(Iterable):
    """Several iterables (a list, tuple or dict of them, possibly nested) read as one; see the
    module docstring for the four modes. As in Lightning, `mode` defaults to "min_size" and
    `len()` answers once the loader has been iterated (`iter(combined)`).

    Example:
        >>> from torch.utils.data import DataLoader
        >>> combined = CombinedLoader([DataLoader(range(4), batch_size=2), DataLoader(range(3))], "sequential")
        >>> [(batch.tolist(), idx, dl) for batch, idx, dl in combined]
        [([0, 1], 0, 0), ([2, 3], 1, 0), ([0], 0, 1), ([1], 1, 1), ([2], 2, 1)]
    """

    def __init__(self, iterables: Any, mode: _Mode = "min_size") -> None:
        if mode not in _MODES:
            raise ValueError(
                f"Unsupported mode {mode!r}: CombinedLoader has four modes. Received: mode={mode!r}. "
                f"Fix: use one of {list(_MODES)}."
            )
        self._iterables = iterables
        self._flattened, self._spec = _flatten(iterables)
        self._mode = mode
        self._iterator: _ModeIterator | None = None
        self._limits: list[int | float] | None = None
        # Set by fulmen's training loop: how inner iterator i is made (recorded, or resumed mid-epoch).
        self._start: Callable[[int], Iterator] | None = None

    @property
    def iterables(self) -> Any:
        """The collection of iterables, in the shape it was given."""
        return self._iterables

    @property
    def flattened(self) -> list[Any]:
        """The iterables as a flat list, in the order their batches appear."""
        return self._flattened

    @flattened.setter
    def flattened(self, flattened: list[Any]) -> None:
        if len(flattened) != len(self._flattened):
            raise ValueError(
                f"Mismatch in flattened length ({len(flattened)}) and existing length ({len(self._flattened)}): "
                f"CombinedLoader.flattened must keep its length. Received: {len(flattened)} iterables for "
                f"{len(self._flattened)}. Fix: replace the iterables one for one."
            )
        self._flattened = list(flattened)
        self._iterables = _unflatten(self._flattened, self._spec)

    @property
    def sampler(self) -> Any:
        """Each iterable's `sampler` (None where it has none), in the shape of `iterables`."""
        return _unflatten([getattr(it, "sampler", None) for it in self._flattened], self._spec)

    @property
    def batch_sampler(self) -> Any:
        """Each iterable's `batch_sampler` (None where it has none), in the shape of `iterables`."""
        return _unflatten([getattr(it, "batch_sampler", None) for it in self._flattened], self._spec)

    @property
    def limits(self) -> list[int | float] | None:
        """The most batches to take from each iterable (None: no limit)."""
        return self._limits

    @limits.setter
    def limits(self, limits: int | float | list[int | float] | None) -> None:
        if isinstance(limits, (int, float)):
            limits = [limits] * len(self._flattened)
        elif isinstance(limits, list) and len(limits) != len(self._flattened):
            raise ValueError(
                f"CombinedLoader.limits needs one limit per iterable. Received: {len(limits)} limits for "
                f"{len(self._flattened)} iterables. Fix: pass one number, or a list of {len(self._flattened)}."
            )
        self._limits = limits

    def __iter__(self) -> CombinedLoader:
        cls = _MODES[self._mode][0]
        self._iterator = cls(self._flattened, self._limits, self._start)
        return self

    def __next__(self) -> tuple[Any, int, int]:
        if self._iterator is None:
            iter(self)
        assert self._iterator is not None
        batch, batch_idx, dataloader_idx = next(self._iterator)
        if self._mode == "sequential":
            return batch, batch_idx, dataloader_idx
        return _unflatten(batch, self._spec), batch_idx, dataloader_idx

    def __len__(self) -> int:
        if self._iterator is None:
            raise RuntimeError(
                "len(CombinedLoader) is known once it is iterated. Received: a CombinedLoader not iterated yet. "
                "Fix: call iter(combined_loader) first."
            )
        return len(self._iterator)

    def _length(self) -> int | float:
        """The number of batches a pass yields (inf when an iterable has no length); no iteration needed."""
        return len(_MODES[self._mode][0](self._flattened, self._limits, None))

    def reset(self) -> None:
        """Forget the current pass and stop the inner loaders' worker processes."""
        if self._iterator is not None:
            self._iterator.reset()
            self._iterator = None
        for iterable in self._flattened:
            iterator = getattr(iterable, "_iterator", None)
            if iterator is not None and callable(getattr(iterator, "_shutdown_workers", None)):
                iterator._shutdown_workers()
            if hasattr(iterable, "_iterator"):
                iterable._iterator = None

    def _dataset_length(self) -> int:
        """The datasets' lengths combined as the mode combines batches (min, max or sum)."""
        lengths = []
        for iterable in self._flattened:
            dataset = getattr(iterable, "dataset", None)
            try:
                lengths.append(len(dataset))  # type: ignore[arg-type]
            except TypeError:
                continue
        if not lengths:
            raise NotImplementedError("All datasets are iterable-style datasets.")
        return _MODES[self._mode][1](lengths)

    def _state_dicts(self) -> list[dict[str, Any]]:
        """The state of each inner loader that saves its own (e.g. torchdata's StatefulDataLoader)."""
        return [it.state_dict() for it in self._flattened if _is_stateful(it)]

    def _load_state_dicts(self, states: list[dict[str, Any]]) -> None:
        if not states:
            return
        stateful = [it for it in self._flattened if _is_stateful(it)]
        if len(stateful) != len(states):
            raise RuntimeError(
                f"The checkpoint holds {len(states)} loader states, but this CombinedLoader has {len(stateful)} "
                f"stateful loaders. Received: {len(states)} states. Fix: resume with the dataloaders the "
                "checkpoint was saved with."
            )
        for loader, state in zip(stateful, states):
            loader.load_state_dict(state)


def _is_stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))
