"""The `Profiler` interface (Lightning 2.x names) and `PassThroughProfiler`, the do-nothing one.

A profiler times named *actions*: `start(name)` ... `stop(name)`, or `with profiler.profile(name):`.
The Trainer calls `setup(stage, local_rank, log_dir)` before a run and `describe()` after it;
`describe()` writes `summary()` to `dirpath/{stage}-{filename}.txt` when `filename` is given,
else prints it. Which actions the Trainer records, and how that costs nothing when no profiler
is set, is `fulmen/profilers/wiring.py`.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TextIO

__all__ = ["PassThroughProfiler", "Profiler"]


class Profiler(ABC):
    """Base class for profilers: subclasses implement `start`, `stop` and `summary`.

    Example:
        >>> import time
        >>> class CountingProfiler(Profiler):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.calls = {}
        ...     def start(self, action_name):
        ...         self.calls[action_name] = self.calls.get(action_name, 0) + 1
        ...     def stop(self, action_name):
        ...         pass
        >>> p = CountingProfiler()
        >>> with p.profile("load"):
        ...     pass
        >>> p.calls
        {'load': 1}
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self._output_file: TextIO | None = None
        self._write_stream: Callable[[str], Any] | None = None
        self._local_rank: int | None = None
        self._stage: str | None = None

    @abstractmethod
    def start(self, action_name: str) -> None:
        """Start timing `action_name`."""

    @abstractmethod
    def stop(self, action_name: str) -> None:
        """Stop timing `action_name` and record it."""

    def summary(self) -> str:
        """The report, as text."""
        return ""

    @contextmanager
    def profile(self, action_name: str) -> Iterator[str]:
        """Time the block as `action_name`."""
        try:
            self.start(action_name)
            yield action_name
        finally:
            self.stop(action_name)

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        """Called by the Trainer before a run; a profiler without `dirpath` writes into `log_dir`."""
        self._stage = stage
        self._local_rank = local_rank
        self.dirpath = self.dirpath or log_dir

    def teardown(self, stage: str | None) -> None:
        """Close the report file."""
        self._write_stream = None
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None

    def describe(self) -> None:
        """Write the report (see the module docstring), then tear down."""
        self._prepare_streams()
        text = self.summary()
        if text and self._write_stream is not None:
            self._write_stream(text)
        if self._output_file is not None:
            self._output_file.flush()
        self.teardown(stage=self._stage)

    @property
    def local_rank(self) -> int:
        return 0 if self._local_rank is None else self._local_rank

    @property
    def report_path(self) -> str | None:
        """Where `describe()` writes (fulmen's own property), or None when it prints."""
        if not (self.filename and self.dirpath):
            return None
        return os.path.join(os.fspath(self.dirpath), self._prepare_filename())

    def _prepare_filename(self, action_name: str | None = None, extension: str = ".txt") -> str:
        """`{stage}-{filename}[-{rank}][-{action}]{extension}`, with path-unsafe characters replaced."""
        parts = [p for p in (self._stage, self.filename) if p]
        if self._local_rank is not None:
            parts.append(str(self._local_rank))
        if action_name is not None:
            parts.append(action_name)
        base = re.sub(r"_+", "_", re.sub(r"[\\/:*?\"<>|\n\r\t]", "_", "-".join(parts))).strip()
        return (base or "profile") + extension

    def _prepare_streams(self) -> None:
        if self._write_stream is not None:
            return
        path = self.report_path
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._output_file = open(path, "a", encoding="utf-8")
            self._write_stream = self._output_file.write
        else:
            self._write_stream = print

    def _stats_to_str(self, stats: dict[str, str]) -> str:
        stage = f"{self._stage.upper()} " if self._stage else ""
        lines = [f"{stage}Profiler Report"]
        for action, text in stats.items():
            lines += [f"Profile stats for: {action}", text]
        return os.linesep.join(lines)

    def __del__(self) -> None:
        try:
            self.teardown(stage=self._stage)
        except Exception:  # interpreter shutdown: nothing left to close cleanly
            pass


class PassThroughProfiler(Profiler):
    """Records nothing: what `trainer.profiler` is when no profiler was given, so that user code
    can always write `with self.trainer.profiler.profile("x"):`."""

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass
