"""`PyTorchProfiler`: torch.profiler over the run, each action a named range; a Chrome trace file.

The trace (`{stage}-{filename}.pt.trace.json` in `dirpath`, by default the Trainer's log dir) opens
in Perfetto (ui.perfetto.dev) or chrome://tracing, and in TensorBoard with the `torch-tb-profiler`
plugin, which lists `*.pt.trace.json` files under `--logdir`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fulmen.profilers.profiler import Profiler

__all__ = ["PyTorchProfiler"]


class PyTorchProfiler(Profiler):
    """Records operators (CPU, and CUDA kernels on a GPU) with `torch.profiler.profile`, labelled
    by the Trainer's actions through `torch.profiler.record_function`.

    Args:
        dirpath, filename: where the report and the trace go (see the module docstring).
        export_to_chrome: write the Chrome trace file when the run ends.
        row_limit: rows of the operator table in the report (-1: all).
        sort_by_key: the table's sort column, e.g. "cpu_time_total" (default), "cuda_time_total".
        **profiler_kwargs: passed to `torch.profiler.profile` (e.g. record_shapes=True,
            profile_memory=True, with_stack=True, activities=[...]).

    Example:
        >>> p = PyTorchProfiler(row_limit=5)
        >>> with p.profile("matmul"):
        ...     _ = torch.ones(8, 8) @ torch.ones(8, 8)
        >>> "matmul" in p.summary()
        True
    """

    def __init__(
        self, dirpath: str | Path | None = None, filename: str | None = None, export_to_chrome: bool = True,
        row_limit: int = 20, sort_by_key: str | None = None, **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.export_to_chrome = export_to_chrome
        self.row_limit = row_limit
        self.sort_by_key = sort_by_key or "cpu_time_total"
        self.profiler_kwargs = profiler_kwargs
        self.trace_path: str | None = None  # the Chrome trace written by the last `summary()`
        self.profiler: Any = None
        self._ranges: dict[str, list[Any]] = {}

    def _activities(self) -> list[Any]:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        return activities

    def start(self, action_name: str) -> None:
        if self.profiler is None:
            kwargs = {"activities": self._activities(), **self.profiler_kwargs}
            self.profiler = torch.profiler.profile(**kwargs)
            self.profiler.__enter__()
        record = torch.profiler.record_function(action_name)
        record.__enter__()
        self._ranges.setdefault(action_name, []).append(record)

    def stop(self, action_name: str) -> None:
        stack = self._ranges.get(action_name)
        if not stack:
            raise ValueError(
                f"Profiler action {action_name!r} was stopped but never started. Received: stop({action_name!r}). "
                "Fix: call start(name) first, or use `with profiler.profile(name):`."
            )
        stack.pop().__exit__(None, None, None)

    def _finish(self) -> None:
        """Close open ranges and stop recording; the events stay readable."""
        for stack in self._ranges.values():
            while stack:
                stack.pop().__exit__(None, None, None)
        if self.profiler is not None and getattr(self.profiler, "profiler", None) is not None and not getattr(
            self, "_stopped", False
        ):
            self.profiler.__exit__(None, None, None)
            self._stopped = True

    def summary(self) -> str:
        if self.profiler is None:
            return ""
        self._finish()
        if self.export_to_chrome and self.dirpath:
            os.makedirs(self.dirpath, exist_ok=True)
            path = os.path.join(os.fspath(self.dirpath), self._prepare_filename(extension=".pt.trace.json"))
            self.profiler.export_chrome_trace(path)
            self.trace_path = path
        table = self.profiler.key_averages().table(sort_by=self.sort_by_key, row_limit=self.row_limit)
        return self._stats_to_str({"records": table})

    def teardown(self, stage: str | None) -> None:
        super().teardown(stage)
        if self.profiler is not None and not getattr(self, "_stopped", False):
            self._finish()
        self.profiler, self._stopped = None, False
