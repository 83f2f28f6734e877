"""Running code and emitting messages on the process of global rank 0 only.

`rank_zero_only.rank` holds this process's global rank. At import it is read from the variables
launchers set (RANK, LOCAL_RANK, SLURM_PROCID, JSM_NAMESPACE_RANK; 0 when none is set); fulmen's
DDP and FSDP strategies overwrite it once they know the real rank (`ParallelStrategy.set_ranks`).
The rank is read when a wrapped function is *called*, so functions decorated at import follow it.

    from fulmen.utilities.rank_zero import rank_zero_only, rank_zero_info

    @rank_zero_only
    def save_report(path): ...      # runs on rank 0, returns None elsewhere

    rank_zero_info("starting")      # logged once, not once per process
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)
# As in Lightning, info messages are shown when the program has configured no logging of its own;
# a program that has (a root handler) decides for itself.
log.setLevel(logging.INFO)
if not logging.getLogger().hasHandlers():
    log.addHandler(logging.StreamHandler())
    log.propagate = False


def _get_rank() -> int | None:
    """The global rank a launcher gave this process, or None when no launcher variable is set."""
    # LOCAL_RANK before SLURM_PROCID: SLURM sets SLURM_PROCID even when it does not start the processes.
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value is not None:
            return int(value)
    return None


def rank_zero_only(fn: Callable[..., T], default: T | None = None) -> Callable[..., T | None]:
    """Decorate `fn` so that it runs on global rank 0 only; other ranks get `default` back.

    Example:
        >>> @rank_zero_only
        ... def hello():
        ...     return "hi"
        >>> hello()
        'hi'
        >>> rank_zero_only.rank = 1; hello() is None
        True
        >>> rank_zero_only.rank = 0
    """

    @wraps(fn)
    def on_rank_zero(*args: Any, **kwargs: Any) -> T | None:
        rank = getattr(rank_zero_only, "rank", None)
        if rank is None:
            raise RuntimeError(
                "rank_zero_only was called before its rank was known. Received: rank_zero_only.rank=None. "
                "Fix: set rank_zero_only.rank = <global rank> first."
            )
        return fn(*args, **kwargs) if rank == 0 else default

    return on_rank_zero


rank_zero_only.rank = _get_rank() or 0  # type: ignore[attr-defined]


class LightningDeprecationWarning(DeprecationWarning):
    """A deprecation announced by the Lightning API (shown by default, unlike DeprecationWarning)."""


# Python hides DeprecationWarning outside __main__; Lightning shows its own deprecations everywhere.
warnings.simplefilter("default", category=LightningDeprecationWarning)


@rank_zero_only
def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """`logging.debug` on rank 0 only."""
    log.debug(*args, stacklevel=stacklevel - 1, **kwargs)


@rank_zero_only
def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """`logging.info` on rank 0 only."""
    log.info(*args, stacklevel=stacklevel - 1, **kwargs)


@rank_zero_only
def rank_zero_warn(message: str | Warning, stacklevel: int = 4, **kwargs: Any) -> None:
    """`warnings.warn` on rank 0 only; pass `category=` for another class than UserWarning."""
    # Lightning's stacklevel counts one helper frame more than this body has; -1 keeps its meaning
    # (the default 4 names the line that called rank_zero_warn; +1 per wrapper of your own).
    warnings.warn(message, stacklevel=stacklevel - 1, **kwargs)


def rank_zero_deprecation(message: str | Warning, stacklevel: int = 5, **kwargs: Any) -> None:
    """A `LightningDeprecationWarning` (or `category=`) on rank 0 only."""
    category = kwargs.pop("category", LightningDeprecationWarning)
    rank_zero_warn(message, stacklevel=stacklevel, category=category, **kwargs)


def rank_prefixed_message(message: str, rank: int | None) -> str:
    """`message` prefixed with `[rank: N] ` when a rank is given.

    Example:
        >>> rank_prefixed_message("saved", 1)
        '[rank: 1] saved'
    """
    return message if rank is None else f"[rank: {rank}] {message}"


class WarningCache(set):
    """The messages already emitted: each `warn`/`info`/`deprecation` message goes out once (on rank 0)."""

    def warn(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_warn(message, stacklevel=stacklevel, **kwargs)

    def deprecation(self, message: str, stacklevel: int = 6, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_deprecation(message, stacklevel=stacklevel, **kwargs)

    def info(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_info(message, stacklevel=stacklevel, **kwargs)


__all__ = [
    "LightningDeprecationWarning", "WarningCache", "rank_prefixed_message", "rank_zero_debug",
    "rank_zero_deprecation", "rank_zero_info", "rank_zero_only", "rank_zero_warn",
]
