"""Checks for the Trainer's arguments, each failing with a message that names the argument, what
was received and the fix (the Trainer validates everything before the first step)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fulmen.errors import MisconfigurationException


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False, fix: str = "") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MisconfigurationException(
            f"`{name}` must be an int >= {minimum}{' or None' if allow_none else ''}. "
            f"Received: {name}={value!r}. Fix: {fix or f'e.g. {name}={max(minimum, 1)}'}."
        )


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
