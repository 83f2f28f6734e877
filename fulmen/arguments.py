"""Checks for the Trainer's arguments, each failing with a message that names the argument, what
was received and the fix (the Trainer validates everything before the first step), and the
`PL_TRAINER_*` environment variables that give the Trainer's defaults."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import os
from ast import literal_eval
from collections.abc import Iterable
from typing import Any, Callable, TypeVar

from fulmen.errors import MisconfigurationException

_F = TypeVar("_F", bound=Callable[..., Any])


def env_defaults(cls: type, prefix: str = "PL") -> dict[str, Any]:
    """The arguments of `cls` given by environment variables `PL_<CLASS>_<ARGUMENT>` (as Lightning
    reads them: `PL_TRAINER_MAX_EPOCHS=3`), each value a Python literal when it parses as one
    (`3`, `True`, `[0, 1]`), else the string itself (`PL_TRAINER_ACCELERATOR=cpu`). Empty ones are unset."""
    found = {}
    for name in inspect.signature(cls).parameters:
        raw = os.environ.get(f"{prefix}_{cls.__name__.upper()}_{name.upper()}")
        if not raw:
            continue
        try:
            found[name] = literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            found[name] = raw
    return found


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt `name` (difflib's measure), or None when none is close."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """" (did you mean X?)" for the known name closest to a misspelt `name`, else "".

    Example:
        >>> did_you_mean("max_epoch", ["max_epochs", "min_epochs", "max_steps"])
        ' (did you mean max_epochs?)'
    """
    close = closest_name(name, known)
    return f" (did you mean {close}?)" if close else ""


def defaults_from_env(init: _F) -> _F:
    """Wrap `__init__` so that `PL_<CLASS>_*` environment variables fill the arguments not passed;
    an argument passed explicitly wins, as in Lightning. The class is the instance's own (a
    subclass `MyTrainer` reads `PL_MYTRAINER_*`). A misspelt argument is a TypeError that names
    the closest real one (`Trainer(max_epoch=3)`: "did you mean max_epochs?")."""
    parameters = inspect.signature(init).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    @functools.wraps(init)
    def init_with_env_defaults(self: Any, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if args:  # positional arguments of a subclass's __init__, by name
            kwargs.update(zip(inspect.signature(cls).parameters, args))
        unknown = [] if takes_any else [name for name in kwargs if name not in parameters]
        if unknown:
            name, owner = unknown[0], init.__qualname__.split(".")[0]
            close = closest_name(name, [p for p in parameters if p != "self"])
            raise TypeError(
                f"{owner}.__init__() got an unexpected keyword argument {name!r}"
                f"{f' (did you mean {close}?)' if close else ''}. Received: {name}={kwargs[name]!r}. Fix: "
                + (f"{close}={kwargs[name]!r}." if close else f"use one of the arguments help({owner}) lists.")
            )
        init(self, **{**env_defaults(cls), **kwargs})

    return init_with_env_defaults  # type: ignore[return-value]


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False, fix: str = "") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        if isinstance(value, int) and not isinstance(value, bool):  # an int, out of range: the special values help
            fix = fix or f"e.g. {name}={max(minimum, 1)}"
        else:  # the wrong type: the fix is the conversion, e.g. a string read from a config or the command line
            fix = f"pass an int, e.g. {name}={_as_int(value, max(minimum, 1))}" + (f" ({fix})" if fix else "")
        raise MisconfigurationException(
            f"`{name}` must be an int >= {minimum}{' or None' if allow_none else ''}. "
            f"Received: {name}={value!r}. Fix: {fix}."
        )


def _as_int(value: Any, fallback: int) -> int:
    """The int a wrong-typed `value` stands for ('3' -> 3, 3.0 -> 3), else `fallback`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return fallback
    return int(number) if number.is_integer() else fallback


def check_bool(name: str, value: Any, allow_none: bool = False) -> None:
    if not isinstance(value, bool) and not (allow_none and value is None):
        raise MisconfigurationException(
            f"`{name}` must be True or False{' (or None for the default)' if allow_none else ''}. "
            f"Received: {name}={value!r}. Fix: e.g. {name}=True."
        )


def parse_max_time(max_time: Any, name: str = "max_time") -> float | None:
    """Seconds from "DD:HH:MM:SS", a timedelta, or a dict of timedelta keywords (None stays None);
    `name` is the argument named in the error (Trainer's `max_time`, Timer's `duration`)."""
    if max_time is None:
        return None
    try:
        if isinstance(max_time, str):
            days, hours, minutes, seconds = (int(p) for p in max_time.strip().split(":"))
            max_time = dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        elif isinstance(max_time, dict):
            max_time = dt.timedelta(**max_time)
        if isinstance(max_time, dt.timedelta):
            return max_time.total_seconds()
    except (ValueError, TypeError):
        pass
    raise MisconfigurationException(
        f"`{name}` must be 'DD:HH:MM:SS', a datetime.timedelta or a dict like {{'hours': 1}}. "
        f"Received: {name}={max_time!r}. Fix: e.g. {name}='00:12:00:00' for twelve hours."
    )
