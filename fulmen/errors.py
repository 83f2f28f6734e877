"""fulmen's exception type and its one-time warning helper.

Every error fulmen raises on purpose says what happened, what it received and how to fix it,
in the form: `<what happened>. Received: <arg>=<value>. Fix: <what to do>.`
"""

from __future__ import annotations

import warnings


class MisconfigurationException(Exception):
    """Raised when the Trainer, a module or a callback is set up in a way that cannot work."""


class CLIError(SystemExit):
    """A bad command line or config (fulmen.cli): the message goes to stderr and the exit status is 2."""

    def __init__(self, message: str) -> None:
        import sys

        print(f"error: {message}", file=sys.stderr)
        super().__init__(2)


_warned: set[str] = set()


def warn_once(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn with `message` the first time it is seen in this process, then stay quiet."""
    if message in _warned:
        return
    _warned.add(message)
    warnings.warn(message, category, stacklevel=3)
