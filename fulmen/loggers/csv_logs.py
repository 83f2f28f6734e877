"""`CSVLogger`: metrics as `metrics.csv` and hyperparameters as `hparams.yaml` (PyYAML, `fulmen.saving`'s format).

`ExperimentWriter` owns the files: it buffers one row per `log_metrics` call and appends the
buffer to `metrics.csv` when flushed. The header is the sorted union of all metric names seen
so far (including `step`); when a flush brings a new name, the file is rewritten with the wider
header and earlier rows get empty cells in the new column.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import warnings
from collections.abc import Mapping
from typing import Any

from fulmen.loggers.base import _atomic_write_text, _convert_params, _VersionedDirLogger, scalar_from_tensor

__all__ = ["CSVLogger", "ExperimentWriter"]


class ExperimentWriter:
    """Writes `metrics.csv` and `hparams.yaml` into `log_dir`; the `CSVLogger.experiment` object.

    Args:
        log_dir: directory of the run; created if missing. A `metrics.csv` already in it is
            removed (with a warning), because this run's header may not match its rows.
        keep_below_step: this run continues the one that wrote `metrics.csv` (a resumed run):
            its rows before this step are kept, the later ones dropped.
    """

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str, keep_below_step: int | None = None) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.metrics: list[dict[str, Any]] = []  # rows logged since the last flush
        self.metrics_keys: list[str] = []  # the header of metrics.csv as written so far
        self.hparams: dict[str, Any] = {}
        if keep_below_step is not None and os.path.isfile(self.metrics_file_path):
            self._truncate(keep_below_step)
        elif os.path.isfile(self.metrics_file_path):
            warnings.warn(
                f"CSVLogger found an existing {self.metrics_file_path} and removes it: this run starts a new file. "
                "Fix: pass version=None (the default) to get a fresh version_N directory per run.",
                stacklevel=3,
            )
            os.remove(self.metrics_file_path)
        os.makedirs(log_dir, exist_ok=True)

    def log_metrics(self, metrics_dict: Mapping[str, Any], step: int) -> None:
        """Buffer one row: the metrics plus a `step` column."""
        row = {key: _number(key, value) for key, value in metrics_dict.items()}
        row["step"] = step
        self.metrics.append(row)

    def log_hparams(self, params: Mapping[str, Any]) -> None:
        """Merge `params` into the run's hyperparameters and rewrite `hparams.yaml`."""
        self.hparams.update(params)
        self._write_hparams()

    def save(self) -> None:
        """Append the buffered rows to `metrics.csv`, widening its header first if needed."""
        if not self.metrics:
            return
        new_keys = {key for row in self.metrics for key in row} - set(self.metrics_keys)
        file_exists = os.path.isfile(self.metrics_file_path)
        if new_keys:
            self.metrics_keys = sorted([*self.metrics_keys, *new_keys])
            if file_exists:
                self._rewrite_with_header(self.metrics_keys)
        with open(self.metrics_file_path, "a" if file_exists else "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            if not file_exists:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.metrics = []

    def _truncate(self, step: int) -> None:
        """Keep the rows logged before `step` and the header they were written with."""
        with open(self.metrics_file_path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            rows = [row for row in reader if row.get("step", "").isdigit() and int(row["step"]) < step]
            self.metrics_keys = list(reader.fieldnames or [])
        self._write_rows(self.metrics_keys, rows)

    def _rewrite_with_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        self._write_rows(fieldnames, rows)

    def _write_rows(self, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        # Atomic: a crash mid-rewrite must not lose the rows already on disk.
        _atomic_write_text(self.metrics_file_path, buffer.getvalue())

    def _write_hparams(self) -> None:
        path = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        from fulmen.saving import _hparams_yaml_text  # imports PyYAML: only once there are hparams to write

        _atomic_write_text(path, _hparams_yaml_text(self.hparams))


class CSVLogger(_VersionedDirLogger):
    """Log metrics to `save_dir/name/version_N/metrics.csv` and hyperparameters to `hparams.yaml`.

    Args:
        save_dir: where experiments are stored.
        name: experiment name, a directory under `save_dir`; "" or None for none.
        version: int N for `version_N`, a str used as the directory name, or None for the next free N.
        prefix: put before every metric name, joined with "-".
        flush_logs_every_n_steps: rows are buffered in memory and appended to the file once the
            step has advanced this much since the last flush (or this many rows are waiting),
            and always on `save()` / `finalize()`.

    Example:
        >>> import csv, tempfile
        >>> logger = CSVLogger(tempfile.mkdtemp())
        >>> logger.log_metrics({"loss": 0.5}, step=0)
        >>> logger.log_metrics({"loss": 0.25, "acc": 0.75}, step=1)
        >>> logger.finalize("success")
        >>> with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
        ...     print(f.read(), end="")
        acc,loss,step
        ,0.5,0
        0.75,0.25,1
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        n = flush_logs_every_n_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                "CSVLogger(flush_logs_every_n_steps=...) must be an int >= 1. "
                f"Received: flush_logs_every_n_steps={flush_logs_every_n_steps!r}. Fix: pass e.g. 100 (the default)."
            )
        super().__init__(save_dir, name, version, prefix)
        self._flush_logs_every_n_steps = flush_logs_every_n_steps
        self._experiment: ExperimentWriter | None = None
        self._rows_logged = 0
        # The first flush comes at step n-1, i.e. after n steps counted from 0.
        self._next_flush_step = flush_logs_every_n_steps - 1

    @property
    def experiment(self) -> ExperimentWriter:
        """The `ExperimentWriter`, created (with the log directory) on first access."""
        if self._experiment is None:
            self._experiment = ExperimentWriter(self.log_dir, keep_below_step=self._resume_step)
        return self._experiment

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer one row of `metrics` at `step` (default: the number of rows logged so far)."""
        if step is None:
            step = self._rows_logged
        self.experiment.log_metrics(self._add_prefix(metrics), step)
        self._rows_logged += 1
        # Counting steps rather than calls keeps the flush cadence in training steps however
        # often the Trainer logs; the row cap covers steps that repeat or go backwards.
        if step >= self._next_flush_step or len(self.experiment.metrics) >= self._flush_logs_every_n_steps:
            self.save()

    def log_hyperparams(self, params: Mapping[str, Any] | argparse.Namespace | None = None) -> None:
        """Merge `params` into `hparams.yaml` (written at once; nested values stay nested)."""
        params = _convert_params(params)
        self.hparams.update(params)
        self.experiment.log_hparams(params)

    def save(self) -> None:
        """Append buffered rows to `metrics.csv`."""
        if self._experiment is None:
            return
        last_step = max((row["step"] for row in self._experiment.metrics), default=None)
        self._experiment.save()
        if last_step is not None:
            self._next_flush_step = max(self._next_flush_step, last_step + self._flush_logs_every_n_steps)

    def finalize(self, status: str) -> None:
        """Flush the remaining rows, whatever the status."""
        self.save()


def _number(key: str, value: Any) -> Any:
    return scalar_from_tensor("CSVLogger", key, value)  # other values are written as they are
