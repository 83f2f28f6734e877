"""The exception classes Lightning's `utilities.exceptions` names.

`MisconfigurationException` is fulmen's own class (`fulmen.errors`), so `except MisconfigurationException`
written against Lightning catches what fulmen raises.
"""

from __future__ import annotations

import re

from fulmen.errors import MisconfigurationException
from fulmen.tuner.exit import TunerExit


class SIGTERMException(SystemExit):
    """The process received SIGTERM; raised at a point where the loop can stop cleanly.

    A callback's `on_exception` sees it, e.g. to save a checkpoint before the process ends.
    """


# fulmen's tuners stop a run with this one; Lightning's name for it.
_TunerExitException = TunerExit


def _augment_message(exception: BaseException, pattern: str, new_message: str) -> None:
    """Replace the string arguments of `exception` that match `pattern` with `new_message`."""
    exception.args = tuple(
        new_message if isinstance(arg, str) and re.match(pattern, arg, re.DOTALL) else arg for arg in exception.args
    )


__all__ = ["MisconfigurationException", "SIGTERMException"]
