"""Hyperparameters: the attribute dict behind `self.hparams`, `save_hyperparameters` (collecting
`__init__` arguments from the caller's frame), and the form they take in a checkpoint.

A checkpoint must load with `torch.load(weights_only=True)`, so its hyperparameters are data that
loader accepts: `to_checkpoint` keeps tuples, lists, dicts, sets, numbers, strings, bytes, tensors,
dtypes and devices exactly as they are, and turns the value-only classes people pass to `__init__`
(dataclasses, `argparse.Namespace`, enums, paths, namedtuples) into their fields or value, noting
each one's class beside them. `from_checkpoint` rebuilds those classes when
`load_from_checkpoint` builds the module again, so `__init__` receives what it was given. Anything
else is stored as its text, as before.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import PurePath
from typing import Any

from fulmen.errors import warn_once


class AttributeDict(dict):
    """A dict whose keys are also attributes: `hparams.lr == hparams["lr"]`."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"No hyperparameter {key!r}. Known: {sorted(self, key=str)}") from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        del self[key]


def collect_init_args(frame: Any, obj: object) -> dict[str, Any]:
    """The named arguments (and **kwargs) of every `__init__` of `obj` on the stack; the child class wins.

    Positional *args have no names to store, so, as in Lightning, they are not collected.
    """
    frames = []
    while frame is not None:
        code = frame.f_code
        # The instance is __init__'s first parameter, whatever it is named (`self`, `s`, ...).
        if code.co_name == "__init__" and code.co_argcount and frame.f_locals.get(code.co_varnames[0]) is obj:
            frames.append(frame)
        frame = frame.f_back
    collected: dict[str, Any] = {}
    for f in frames:  # innermost first; outermost (the child class) last, so it overrides parents
        info = inspect.getargvalues(f)
        for name in info.args[1:]:
            collected[name] = info.locals[name]
        if info.keywords:
            collected.update(info.locals.get(info.keywords) or {})
    return collected


def as_dict(params: Any) -> dict[str, Any]:
    """A dict of hyperparameters from a dict, Namespace or dataclass (values kept as they are)."""
    if isinstance(params, argparse.Namespace):
        return dict(vars(params))
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    if isinstance(params, Mapping):
        return dict(params)
    raise TypeError(
        f"Hyperparameters must be a dict, Namespace or dataclass. Received: {type(params).__name__}. "
        "Fix: save_hyperparameters() with no arguments, or pass a dict."
    )


# --- the checkpoint form ------------------------------------------------------------------------
# Exact types `torch.load(weights_only=True)` rebuilds as they are.
_KEPT_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_KEPT_KEYS = (type(None), bool, int, float, str)


def to_checkpoint(params: Any) -> tuple[dict[str, Any], dict[tuple, tuple[str, str, str]]]:
    """`params` as (data that loads with weights_only=True, {key path: (kind, module, class name)}).

    Example:
        >>> import argparse
        >>> to_checkpoint({"sizes": (3, 4), "opt": argparse.Namespace(lr=0.1)})
        ({'sizes': (3, 4), 'opt': {'lr': 0.1}}, {('opt',): ('namespace', 'argparse', 'Namespace')})
    """
    types: dict[tuple, tuple[str, str, str]] = {}
    plain = _plain(as_dict(params), (), types)
    return plain, types


# Beside a checkpoint's hyperparameters (`<key>_classes`): the classes `to_checkpoint` noted.
CLASSES_SUFFIX = "_classes"


def checkpoint_entries(owner: Any) -> dict[str, Any]:
    """What a checkpoint stores for the hyperparameters of a module or datamodule, under its class's
    keys (Lightning's: `hyper_parameters` and `hparams_name`, or their `datamodule_` forms)."""
    if not owner.hparams:
        return {}
    key = getattr(owner, "CHECKPOINT_HYPER_PARAMS_KEY", "hyper_parameters")
    plain, types = to_checkpoint(owner.hparams)
    entries = {getattr(owner, "CHECKPOINT_HYPER_PARAMS_NAME", "hparams_name"): getattr(owner, "_hparams_name", "kwargs"),
               key: plain}
    if types:
        entries[key + CLASSES_SUFFIX] = types
    return entries


def to_plain_hparams(params: Any) -> dict[str, Any]:
    """Hyperparameters as plain data (the first half of `to_checkpoint`), e.g. for the loggers."""
    return to_checkpoint(params)[0]


def _plain(value: Any, path: tuple, types: dict) -> Any:
    import torch

    kind = type(value)
    if kind in _KEPT_SCALARS or kind in (torch.dtype, torch.device, torch.Size):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, Enum):
        _note(types, path, "enum", value)
        return _plain(value.value, path, types)
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()  # a numpy scalar (np.float64, np.int64, np.bool_): the Python number, not its text
    if isinstance(value, PurePath):
        _note(types, path, "path", value)
        return str(value)
    if isinstance(value, argparse.Namespace):
        _note(types, path, "namespace", value)
        return _plain_mapping(vars(value), path, types, dict)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _note(types, path, "dataclass", value)
        return _plain_mapping({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, path, types, dict)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        _note(types, path, "namedtuple", value)
        return tuple(_plain(v, (*path, i), types) for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return _plain_mapping(value, path, types, OrderedDict if kind is OrderedDict else dict)
    if isinstance(value, (tuple, list)):
        return (tuple if isinstance(value, tuple) else list)(_plain(v, (*path, i), types) for i, v in enumerate(value))
    if isinstance(value, (set, frozenset)):  # frozenset does not load with weights_only: a set instead
        return {_plain(v, (*path, "<set>"), {}) for v in value}
    return str(value)


def _plain_mapping(value: Mapping, path: tuple, types: dict, into: type) -> Any:
    out = into()
    for key, item in value.items():
        key = key if type(key) in _KEPT_KEYS else str(key)
        out[key] = _plain(item, (*path, key), types)
    return out


def _note(types: dict, path: tuple, kind: str, value: Any) -> None:
    cls = type(value)
    types[path] = (kind, cls.__module__, cls.__qualname__)


def from_checkpoint(plain: Mapping[str, Any], types: Mapping[tuple, Any] | None) -> dict[str, Any]:
    """The hyperparameters `to_checkpoint` stored, with the noted classes rebuilt.

    A class is looked up among the modules already imported, never imported: reading a checkpoint
    must not run code the file chooses. One that is not found (or no longer fits its fields) is
    passed on in its stored form, with a warning.
    """
    if not types:
        return dict(plain)
    return {key: _rebuild(value, (key,), types) for key, value in plain.items()}


def _rebuild(value: Any, path: tuple, types: Mapping[tuple, Any]) -> Any:
    if isinstance(value, dict):
        value = type(value)((k, _rebuild(v, (*path, k), types)) for k, v in value.items())
    elif type(value) in (list, tuple):
        value = type(value)(_rebuild(v, (*path, i), types) for i, v in enumerate(value))
    spec = types.get(path)
    return value if spec is None else _build(spec, value, path)


def _build(spec: Any, value: Any, path: tuple) -> Any:
    kind, module, qualname = spec
    cls: Any = sys.modules.get(module)
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    fits = isinstance(cls, type) and {
        "enum": lambda: issubclass(cls, Enum),
        "path": lambda: issubclass(cls, PurePath),
        "namespace": lambda: issubclass(cls, argparse.Namespace),
        "dataclass": lambda: dataclasses.is_dataclass(cls),
        "namedtuple": lambda: issubclass(cls, tuple) and hasattr(cls, "_fields"),
    }.get(kind, lambda: False)()
    if isinstance(value, Mapping) != (kind in ("namespace", "dataclass")):
        return value  # not the shape this class was stored in (e.g. hparams_file replaced it)
    where = ".".join(str(p) for p in path)
    if not fits:
        warn_once(
            f"The hyperparameter {where!r} was saved as a {module}.{qualname}, which is not imported now, so "
            f"it is passed as a {type(value).__name__}. Fix: import {module} before load_from_checkpoint."
        )
        return value
    try:
        if kind == "namespace":
            return cls(**value)
        if kind == "dataclass":
            fields = dataclasses.fields(cls)
            built = cls(**{f.name: value[f.name] for f in fields if f.init and f.name in value})
            for f in fields:  # fields __init__ does not take are set as they were
                if not f.init and f.name in value:
                    object.__setattr__(built, f.name, value[f.name])
            return built
        if kind == "namedtuple":
            return cls(*value)
        return cls(value)  # enum (by value) or path (from its text)
    except Exception as err:  # the class changed since the checkpoint was written
        warn_once(
            f"The hyperparameter {where!r} could not be rebuilt as a {module}.{qualname} ({type(err).__name__}: "
            f"{err}), so it is passed as a {type(value).__name__}. Fix: pass it to load_from_checkpoint yourself."
        )
        return value


# --- the mixin ------------------------------------------------------------------------------------
class HyperparametersMixin:
    """`save_hyperparameters`, `hparams` and `hparams_initial`, shared by LightningModule and
    LightningDataModule (Lightning's `core.mixins.HyperparametersMixin`).

    Example:
        >>> class Config(HyperparametersMixin):
        ...     def __init__(self, sizes=(64, 32), lr=0.1):
        ...         super().__init__()
        ...         self.save_hyperparameters()
        >>> Config().hparams
        {'sizes': (64, 32), 'lr': 0.1}
    """

    # torch.jit.script compiles every property of a module it scripts unless it is listed here.
    __jit_unused_properties__: list[str] = ["hparams", "hparams_initial"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._log_hyperparams = True

    @property
    def hparams(self) -> AttributeDict:
        """The saved hyperparameters; yours to change (`hparams_initial` keeps them as saved)."""
        try:
            return self._hparams
        except AttributeError:  # a subclass whose __init__ does not call super().__init__()
            self._hparams = AttributeDict()
            return self._hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        """A copy of the hyperparameters as `save_hyperparameters` stored them."""
        try:
            return copy.deepcopy(self._hparams_initial)
        except AttributeError:
            return AttributeDict()

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: Any = None,
        logger: bool = True,
    ) -> None:
        """Store `__init__`'s arguments in `self.hparams` (and in checkpoints and loggers), as they are.

        With no arguments, all init arguments are saved; with names, only those; with one dict,
        Namespace or dataclass, its contents. `ignore` drops names (e.g. a backbone module);
        `logger=False` keeps them from the loggers; `frame` is the `__init__` frame to read
        (default: the caller's).
        """
        self._log_hyperparams = logger
        if len(args) == 1 and not isinstance(args[0], str) and not args[0]:
            return  # an empty container: nothing to save
        caller = frame if frame is not None else inspect.currentframe().f_back  # type: ignore[union-attr]
        if isinstance(ignore, str):
            ignored = [ignore]
        else:
            ignored = [name for name in (ignore or []) if isinstance(name, str)]
        if dataclasses.is_dataclass(self):
            init_args = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        else:
            init_args = collect_init_args(caller, self)
        init_args = {k: v for k, v in init_args.items() if k not in ignored}
        objects = [a for a in args if not isinstance(a, str)]
        if not args:
            params, name = init_args, ("kwargs" if init_args else None)
        elif len(objects) == 1:
            # Saved whole: remember which __init__ argument it was, so load_from_checkpoint passes it back as that.
            params = as_dict(objects[0])
            name = next((k for k, v in init_args.items() if v is objects[0]), None)
        else:
            unknown = [a for a in args if isinstance(a, str) and a not in init_args]
            if unknown:
                raise KeyError(
                    f"save_hyperparameters was given names that are not __init__ arguments. Received: {unknown}. "
                    f"Fix: use names from {sorted(init_args)}."
                )
            params, name = {a: init_args[a] for a in args if isinstance(a, str)}, "kwargs"
        self._set_hparams(params)
        self.remove_ignored_hparams(ignored)
        self._hparams_name = name
        for key, value in self._hparams.items():
            if _is_module(value):
                warn_once(
                    f"save_hyperparameters stored the nn.Module argument {key!r}, whose weights are already in "
                    f"the checkpoint's state_dict (its hyperparameters keep only its text). "
                    f"Fix: save_hyperparameters(ignore=[{key!r}]) and pass it again to load_from_checkpoint."
                )
        self._hparams_initial = copy.deepcopy(self._hparams)

    def _set_hparams(self, params: Mapping[str, Any]) -> None:
        self.hparams.update(params)

    def remove_ignored_hparams(self, ignore_list: list[str]) -> None:
        """Drop these names from the saved hyperparameters (e.g. ones a parent class saved)."""
        for key in ignore_list:
            self.hparams.pop(key, None)


def _is_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)
