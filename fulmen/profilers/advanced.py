"""`AdvancedProfiler`: a cProfile report per action (which functions the time went to)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from fulmen.profilers.profiler import Profiler

__all__ = ["AdvancedProfiler"]


class AdvancedProfiler(Profiler):
    """Runs `cProfile` during every action and reports the functions called, by cumulative time.

    Only one cProfile profiler can be active at a time (Python 3.12 refuses a second), so a nested
    action pauses the enclosing one: each action's report holds the time spent in it outside the
    actions nested in it.

    Args:
        dirpath, filename: as for `SimpleProfiler`.
        line_count_restriction: how many functions each action's report lists (an int), or which
            fraction of them (a float in (0, 1]).
        dump_stats: also write each action's raw stats to `dirpath/{stage}-{filename}-{action}.prof`
            (readable with `pstats` or snakeviz).

    Example:
        >>> p = AdvancedProfiler(line_count_restriction=3)
        >>> with p.profile("sum"):
        ...     _ = sum(range(1000))
        >>> "Profile stats for: sum" in p.summary()
        True
    """

    def __init__(
        self, dirpath: str | Path | None = None, filename: str | None = None,
        line_count_restriction: float = 1.0, dump_stats: bool = False,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.profiled_actions: dict[str, Any] = {}  # action -> cProfile.Profile
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats
        self._active: list[str] = []

    def start(self, action_name: str) -> None:
        if self._active:
            self.profiled_actions[self._active[-1]].disable()
        import cProfile  # here, not at the top: `import fulmen` imports every profiler module

        profiler = self.profiled_actions.setdefault(action_name, cProfile.Profile())
        self._active.append(action_name)
        profiler.enable()

    def stop(self, action_name: str) -> None:
        profiler = self.profiled_actions.get(action_name)
        if profiler is None or action_name not in self._active:
            raise ValueError(
                f"Profiler action {action_name!r} was stopped but is not running. Received: stop({action_name!r}). "
                "Fix: call start(name) first, or use `with profiler.profile(name):`."
            )
        profiler.disable()
        self._active.remove(action_name)
        if self._active:
            self.profiled_actions[self._active[-1]].enable()

    def summary(self) -> str:
        reports = {}
        for action, profiler in self.profiled_actions.items():
            if self.dump_stats and self.dirpath:
                os.makedirs(self.dirpath, exist_ok=True)
                profiler.dump_stats(os.path.join(os.fspath(self.dirpath), self._prepare_filename(action, ".prof")))
            buffer = io.StringIO()
            try:
                import pstats

                stats = pstats.Stats(profiler, stream=buffer)
            except TypeError:  # an action that ran no Python code has no stats to print
                continue
            stats.strip_dirs().sort_stats("cumulative").print_stats(self.line_count_restriction)
            reports[action] = buffer.getvalue()
        return self._stats_to_str(reports) if reports else ""

    def teardown(self, stage: str | None) -> None:
        super().teardown(stage)
        for action in reversed(self._active):  # a run that failed inside an action
            self.profiled_actions[action].disable()
        self._active.clear()
