"""Walking nested collections: `apply_to_collection` (a function on every element of a type, in dicts,
lists, tuples, namedtuples and dataclasses), `apply_to_collections` (two collections zipped), and the
device moves built on them (`move_data_to_device`, `convert_to_tensors`).

The semantics are lightning_utilities' (which fulmen does not depend on): containers are rebuilt with
their own type; sets and strings are left as they are; a dataclass is copied, then its init fields
replaced; a frozen one is an error unless `allow_frozen=True`.
"""

from __future__ import annotations

import copy
from abc import ABC
import dataclasses
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from fulmen.utilities.types import _DEVICE


def is_namedtuple(obj: object) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_asdict") and hasattr(obj, "_fields")


def is_dataclass_instance(obj: object) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def apply_to_collection(
    data: Any,
    dtype: type | Any | tuple[type | Any, ...],
    function: Callable,
    *args: Any,
    wrong_dtype: type | tuple[type, ...] | None = None,
    include_none: bool = True,
    allow_frozen: bool = False,
    **kwargs: Any,
) -> Any:
    """`function(x, *args, **kwargs)` for every `x` of type `dtype` in `data`, the structure rebuilt around it.

    Args:
        wrong_dtype: elements of this type are left alone even when they are also `dtype`.
        include_none: keep elements for which `function` returned None (False drops them from
            dicts and sequences; a dataclass field keeps its old value).
        allow_frozen: on a frozen dataclass, stop replacing fields instead of raising.

    Example:
        >>> apply_to_collection({"a": [1, 2.5], "b": "x"}, int, lambda v: v * 10)
        {'a': [10, 2.5], 'b': 'x'}
    """
    if isinstance(data, dtype) and (wrong_dtype is None or not isinstance(data, wrong_dtype)):
        return function(data, *args, **kwargs)

    def again(value: Any) -> Any:
        return apply_to_collection(
            value, dtype, function, *args, wrong_dtype=wrong_dtype, include_none=include_none,
            allow_frozen=allow_frozen, **kwargs,
        )

    if is_dataclass_instance(data):
        return _apply_to_dataclass(data, again, include_none, allow_frozen)
    if isinstance(data, Mapping):
        items = [(k, again(v)) for k, v in data.items()]
        items = [(k, v) for k, v in items if include_none or v is not None]
        if isinstance(data, defaultdict):  # its constructor takes the default factory first
            return type(data)(data.default_factory, OrderedDict(items))
        return type(data)(OrderedDict(items))
    namedtuple = is_namedtuple(data)
    if namedtuple or (isinstance(data, Sequence) and not isinstance(data, str)):
        values = [v for v in map(again, data) if include_none or v is not None]
        return type(data)(*values) if namedtuple else type(data)(values)
    return data


def _apply_to_dataclass(data: Any, again: Callable[[Any], Any], include_none: bool, allow_frozen: bool) -> Any:
    fields = [(f.name, getattr(data, f.name), f.init) for f in dataclasses.fields(data)]
    # Copy everything except the field values about to be replaced (copying those would be wasted).
    result = copy.deepcopy(data, memo={id(value): value for _, value, _ in fields})
    for name, value, init in fields:
        new = again(value) if init else value
        if new is None and not include_none:
            new = value
        try:
            setattr(result, name, new)
        except dataclasses.FrozenInstanceError as err:
            if allow_frozen:
                break
            raise ValueError(
                f"apply_to_collection cannot replace the fields of a frozen dataclass. Received: {type(data).__name__}. "
                "Fix: pass allow_frozen=True to keep it as it is, or make the dataclass mutable."
            ) from err
    # A cached_property computed from the old fields would be stale.
    for name, attr in vars(type(data)).items():
        if isinstance(attr, cached_property):
            vars(result).pop(name, None)
    return result


def apply_to_collections(
    data1: Any,
    data2: Any,
    dtype: type | Any | tuple[type | Any, ...],
    function: Callable,
    *args: Any,
    wrong_dtype: type | tuple[type, ...] | None = None,
    **kwargs: Any,
) -> Any:
    """`function(x1, x2, *args, **kwargs)` for the pairs of `dtype` elements at the same place in two
    collections of the same structure. With one of them None, `function` is applied to the other
    (like `apply_to_collection`, called with one argument).

    Example:
        >>> apply_to_collections({"a": 1, "b": 2}, {"a": 10, "b": 20}, int, lambda x, y: x + y)
        {'a': 11, 'b': 22}
    """
    if data1 is None:
        if data2 is None:
            return None
        data1, data2 = data2, None

    def again(v1: Any, v2: Any) -> Any:
        return apply_to_collections(v1, v2, dtype, function, *args, wrong_dtype=wrong_dtype, **kwargs)

    if data2 is None:
        return apply_to_collection(data1, dtype, function, *args, wrong_dtype=wrong_dtype, **kwargs)
    if isinstance(data1, dtype) and (wrong_dtype is None or not isinstance(data1, wrong_dtype)):
        return function(data1, data2, *args, **kwargs)
    if isinstance(data1, Mapping):
        # Keys of both: a key missing from one raises KeyError, as in Lightning.
        return type(data1)({k: again(data1[k], data2[k]) for k in data1.keys() | data2.keys()})
    namedtuple = is_namedtuple(data1)
    if namedtuple or (isinstance(data1, Sequence) and not isinstance(data1, str)):
        if len(data1) != len(data2):
            raise ValueError(
                f"apply_to_collections needs sequences of the same length. Received: len(data1)={len(data1)}, "
                f"len(data2)={len(data2)}. Fix: pass collections of the same structure."
            )
        values = [again(v1, v2) for v1, v2 in zip(data1, data2)]
        return type(data1)(*values) if namedtuple else type(data1)(values)
    if is_dataclass_instance(data1):
        if not is_dataclass_instance(data2) or [f.name for f in dataclasses.fields(data1)] != [
            f.name for f in dataclasses.fields(data2)
        ]:
            raise TypeError(
                "apply_to_collections needs two dataclasses with the same fields. "
                f"Received: {type(data1).__name__} and {type(data2).__name__}. Fix: pass matching dataclasses."
            )
        result = copy.copy(data1)
        for f in dataclasses.fields(data1):
            if f.init:
                setattr(result, f.name, again(getattr(data1, f.name), getattr(data2, f.name)))
        return result
    return data1  # neither `dtype` nor a collection: kept, as apply_to_collection keeps it


class _TransferableDataType(ABC):
    """`isinstance(x, _TransferableDataType)`: whether `x` has a callable `.to` (tensors, modules, custom batches)."""

    @classmethod
    def __subclasshook__(cls, subclass: Any) -> bool:
        if cls is _TransferableDataType:
            return callable(getattr(subclass, "to", None))
        return NotImplemented


def move_data_to_device(batch: Any, device: _DEVICE) -> Any:
    """`batch` with everything that has a `.to(device)` moved to `device` (non-blocking to CUDA);
    other objects are left as they are.

    Example:
        >>> move_data_to_device({"x": torch.ones(2), "id": "a"}, "cpu")
        {'x': tensor([1., 1.]), 'id': 'a'}
    """
    if isinstance(device, str):
        device = torch.device(device)
    # CPU targets gain nothing from non_blocking; MPS has a race with it (pytorch#83015).
    non_blocking = isinstance(device, torch.device) and device.type not in ("cpu", "mps")

    def move(data: Any) -> Any:
        moved = data.to(device, non_blocking=True) if non_blocking and isinstance(data, Tensor) else data.to(device)
        return data if moved is None else moved  # a user `.to` that forgot to return self

    return apply_to_collection(batch, dtype=_TransferableDataType, function=move)


def convert_to_tensors(data: Any, device: _DEVICE) -> Any:
    """`data` with bools, ints, floats (and NumPy arrays) made tensors on `device`, and every tensor moved there.

    Bools become uint8 (NCCL cannot reduce torch.bool), ints int32, floats float32, as in Lightning.
    """
    conversions: list[tuple[type, Callable[[Any], Tensor]]] = [
        (bool, lambda v: torch.tensor(v, dtype=torch.uint8, device=device)),
        (int, lambda v: torch.tensor(v, dtype=torch.int, device=device)),
        (float, lambda v: torch.tensor(v, dtype=torch.float, device=device)),
    ]
    try:
        import numpy as np

        conversions.append((np.ndarray, lambda v: torch.from_numpy(v).to(device)))
    except ImportError:
        pass
    for kind, convert in conversions:
        data = apply_to_collection(data, kind, convert)
    return move_data_to_device(data, device)


def convert_tensors_to_scalars(data: Any) -> Any:
    """`data` with every one-element tensor replaced by its Python number."""

    def to_item(value: Tensor) -> int | float | bool:
        if value.numel() != 1:
            raise ValueError(
                f"Only one-element tensors convert to a scalar. Received: a tensor of shape {tuple(value.shape)}. "
                "Fix: reduce it first (e.g. .mean())."
            )
        return value.item()

    return apply_to_collection(data, Tensor, to_item)


__all__ = [
    "apply_to_collection", "apply_to_collections", "convert_tensors_to_scalars", "convert_to_tensors",
    "is_dataclass_instance", "is_namedtuple", "move_data_to_device",
]
