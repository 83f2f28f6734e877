"""`LambdaCallback`: a callback made of plain functions, one per hook, for quick experiments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fulmen.callbacks.callback import CALLBACK_HOOKS, Callback
from fulmen.errors import MisconfigurationException


class LambdaCallback(Callback):
    """Pass any callback hook as a keyword argument: the function is called with the hook's arguments.

    Example:
        >>> import fulmen as pl
        >>> seen = []
        >>> cb = LambdaCallback(on_train_epoch_end=lambda trainer, pl_module: seen.append(trainer.current_epoch))
        >>> trainer = pl.Trainer(callbacks=[cb])
    """

    def __init__(self, **hooks: Callable | None) -> None:
        unknown = sorted(set(hooks) - set(CALLBACK_HOOKS))
        if unknown:
            raise MisconfigurationException(
                f"LambdaCallback got arguments that are not callback hooks. Received: {unknown}. "
                f"Fix: use hook names such as on_train_epoch_end, on_fit_start (all: {sorted(CALLBACK_HOOKS)})."
            )
        given = {name: _method(fn) for name, fn in hooks.items() if fn is not None}
        # The Trainer decides once, from the class, which hooks a callback overrides (fulmen.hooks),
        # so the functions go on a per-instance subclass rather than on the instance.
        cls = type(type(self).__name__, (type(self),), given)
        cls.__qualname__ = type(self).__qualname__
        self.__class__ = cls


def _method(fn: Callable) -> Callable:
    """`fn` as a method: the Trainer calls bound hooks (and reads their `__self__`)."""

    def hook(self: LambdaCallback, *args: Any) -> Any:
        return fn(*args)

    hook.__name__ = getattr(fn, "__name__", "hook")
    return hook
