"""`SimpleProfiler`: wall-clock time per action, reported as a table (mean, calls, total, percent)."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

from fulmen.profilers.profiler import Profiler

__all__ = ["SimpleProfiler"]


class SimpleProfiler(Profiler):
    """Times every action the Trainer records (hooks, steps, data loading) with `time.perf_counter`.

    Args:
        dirpath: directory of the report (default: the Trainer's log dir).
        filename: report file name without extension; written as `{stage}-{filename}.txt`.
            None prints the report instead.
        extended: also report the number of calls and each action's share of the run.

    Example:
        >>> p = SimpleProfiler()
        >>> with p.profile("load"):
        ...     pass
        >>> p.recorded_durations["load"][0] >= 0.0
        True
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None, extended: bool = True) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.current_actions: dict[str, float] = {}
        self.recorded_durations: dict[str, list[float]] = defaultdict(list)
        self.extended = extended
        self.start_time = time.perf_counter()

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        super().setup(stage, local_rank, log_dir)
        self.start_time = time.perf_counter()  # "Total" is the run, not the time since construction

    def start(self, action_name: str) -> None:
        if action_name in self.current_actions:
            raise ValueError(
                f"Profiler action {action_name!r} was started twice without a stop. Received: start({action_name!r}) "
                "while it is running. Fix: stop it first, or use `with profiler.profile(name):`."
            )
        self.current_actions[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        end = time.perf_counter()
        started = self.current_actions.pop(action_name, None)
        if started is None:
            raise ValueError(
                f"Profiler action {action_name!r} was stopped but never started. Received: stop({action_name!r}). "
                "Fix: call start(name) first, or use `with profiler.profile(name):`."
            )
        self.recorded_durations[action_name].append(end - started)

    def _rows(self) -> tuple[float, list[tuple[str, float, int, float, float]]]:
        """(run duration, rows of (action, mean s, calls, total s, percent)), the costliest first."""
        total = time.perf_counter() - self.start_time
        rows = []
        for action, durations in self.recorded_durations.items():
            spent = sum(durations)
            rows.append((action, spent / len(durations), len(durations), spent, 100.0 * spent / total if total else 0.0))
        rows.sort(key=lambda row: row[3], reverse=True)
        return total, rows

    def summary(self) -> str:
        total, rows = self._rows()
        if not rows:
            return ""
        stage = f"{self._stage.upper()} " if self._stage else ""
        width = max(len("Action"), max(len(r[0]) for r in rows)) + 2
        if self.extended:
            head = ("Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %")
            body = [("Total", "-", str(sum(r[2] for r in rows)), f"{total:.5g}", "100 %")]
            body += [(a, f"{m:.5g}", str(n), f"{t:.5g}", f"{p:.5g}") for a, m, n, t, p in rows]
        else:
            head = ("Action", "Mean duration (s)", "Total time (s)")
            body = [(a, f"{m:.5g}", f"{t:.5g}") for a, m, _, t, _ in rows]
        widths = [width] + [max(len(h), *(len(r[i]) for r in body)) + 2 for i, h in enumerate(head) if i]

        def line(cells: tuple[str, ...]) -> str:
            return "|" + "|".join(c.center(w) if i else f" {c}".ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + "|"

        rule = "-" * len(line(head))
        return os.linesep.join([f"{stage}Profiler Report", "", rule, line(head), rule, *map(line, body), rule, ""])
