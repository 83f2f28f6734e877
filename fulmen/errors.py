"""fulmen's exception type and its one-time warning helper.

Every error fulmen raises on purpose says what happened, what it received and how to fix it,
in the form: `<what happened>. Received: <arg>=<value>. Fix: <what to do>.` An error raised by
torch or the user's code that follows one of fulmen's own diagnoses gets that diagnosis attached
(`add_note`), so the last lines of its traceback say what to do.
"""

from __future__ import annotations

import sys
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


def warn_once_at(message: str, code_of: object, category: type[Warning] = UserWarning) -> None:
    """`warn_once`, attributed to the definition of the function `code_of` (the user's
    training_step, say) instead of the fulmen line that noticed the problem."""
    if message in _warned:
        return
    fn = getattr(code_of, "__func__", code_of)
    while hasattr(fn, "__wrapped__"):  # a decorated step: the user's own function
        fn = fn.__wrapped__
    code = getattr(fn, "__code__", None)
    if code is None:
        warn_once(message, category)
        return
    _warned.add(message)
    warnings.warn_explicit(message, category, code.co_filename, code.co_firstlineno)


def add_note(exc: BaseException, note: str) -> None:
    """Attach `note` to `exc` so that it prints as the last lines of its traceback.

    Python 3.11+ has PEP 678 notes (`exc.add_note`), printed after the message. Python 3.10 has
    none and would not print them, so there the note is appended to the message itself.

    Example:
        >>> err = RuntimeError("boom")
        >>> add_note(err, "Fix: do the other thing.")
        >>> import traceback; traceback.format_exception_only(err)[-1].strip()
        'Fix: do the other thing.'
    """
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:
        _append_to_message(exc, note)


def _append_to_message(exc: BaseException, note: str) -> None:
    """Python 3.10: the note becomes the message's last line (str(exc) is what the traceback shows)."""
    if len(exc.args) <= 1 and all(isinstance(a, str) for a in exc.args):
        exc.args = (f"{exc.args[0]}\n{note}" if exc.args else note,)
    else:  # several arguments are shown as a tuple: the note is one more of them
        exc.args = (*exc.args, note)
