"""Hyperparameters: the attribute dict behind `self.hparams`, collecting `__init__` arguments
from the caller's frame, and turning them into plain data that `torch.load(weights_only=True)`
can read back.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
from collections.abc import Mapping
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
            raise AttributeError(f"No hyperparameter {key!r}. Known: {sorted(self)}") from err

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


def to_plain(value: Any) -> Any:
    """Convert a value to data that loads with weights_only=True (else its string form)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Enum):
        return to_plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, argparse.Namespace):
        return {k: to_plain(v) for k, v in vars(value).items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().clone()
        if isinstance(value, torch.dtype):
            return str(value)
    except ImportError:  # pragma: no cover
        pass
    return str(value)


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


def to_plain_hparams(params: Any) -> dict[str, Any]:
    """Hyperparameters as plain data for checkpoints and loggers."""
    plain = to_plain(as_dict(params))
    assert isinstance(plain, dict)
    return plain


class HyperparametersMixin:
    """`save_hyperparameters` and `hparams`, shared by LightningModule and LightningDataModule."""

    _hparams: AttributeDict
    _hparams_initial: AttributeDict
    _log_hyperparams: bool

    @property
    def hparams(self) -> AttributeDict:
        return self._hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        return copy.deepcopy(self._hparams_initial)

    def save_hyperparameters(
        self, *args: Any, ignore: str | list[str] | None = None, frame: Any = None, logger: bool = True
    ) -> None:
        """Store `__init__`'s arguments in `self.hparams` (and in checkpoints and loggers).

        With no arguments, all init arguments are saved; with names, only those; with one dict or
        Namespace, that object. `ignore` drops names (e.g. a backbone module).
        """
        self._log_hyperparams = logger
        caller = frame if frame is not None else inspect.currentframe().f_back  # type: ignore[union-attr]
        ignored = [ignore] if isinstance(ignore, str) else list(ignore or [])
        if len(args) == 1 and not isinstance(args[0], str):
            params = as_dict(args[0])
        else:
            init_args = collect_init_args(caller, self)
            names = [a for a in args if isinstance(a, str)] or list(init_args)
            params = {k: init_args[k] for k in names if k in init_args}
        for name in ignored:
            params.pop(name, None)
        for name, value in params.items():
            if _is_module(value):
                warn_once(
                    f"save_hyperparameters stored the nn.Module argument {name!r} only as text. "
                    f"Fix: save_hyperparameters(ignore=[{name!r}]) and pass it again to load_from_checkpoint."
                )
        self._hparams.update(params)
        self._hparams_initial = copy.deepcopy(AttributeDict(self._hparams))


def _is_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)
