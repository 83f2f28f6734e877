"""Fabric's loggers: `TensorBoardLogger` and `CSVLogger` with Lightning Fabric's signatures, and `Logger`.

They are fulmen's Trainer loggers (`fulmen.loggers.tensorboard`, `fulmen.loggers.csv_logs`) with the
three things Fabric does differently, and nothing else: the same event writer and the same
`metrics.csv` writer write the files.

* The first argument is `root_dir`, and the `root_dir` property is that directory (the Trainer
  loggers' `root_dir` is `save_dir/name`). A run still lives in `root_dir/name/version_N`.
* A hand-written loop calls its logger on every rank (`fabric.log` does too), so each method here
  does its work on global rank 0 only (`rank_zero_only.rank`, which the strategies set), and
  `experiment` is a do-nothing stand-in elsewhere. The Trainer calls its loggers on rank 0 itself.
* `TensorBoardLogger.log_graph` always writes the graph (Fabric has no `log_graph=` switch) and
  accepts a module from `fabric.setup`; it writes no `hparams.yaml` (Fabric's does not).

Beyond Lightning Fabric: `CSVLogger.log_hyperparams` writes `hparams.yaml` (Lightning Fabric's
raises NotImplementedError), and rewrites of `metrics.csv` are atomic.

Example:
    >>> import tempfile
    >>> logger = CSVLogger(tempfile.mkdtemp(), name="mnist")
    >>> logger.log_metrics({"loss": 0.5}, step=0)
    >>> logger.finalize("success")
    >>> os.path.relpath(logger.log_dir, logger.root_dir)
    'mnist/version_0'
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

import torch

from fulmen.loggers import csv_logs, tensorboard
from fulmen.loggers.base import Logger, _next_version, _numbered_versions, _VersionedDirLogger
from fulmen.loggers.logger import DummyExperiment, rank_zero_experiment
from fulmen.utilities.rank_zero import rank_zero_only

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger", "rank_zero_experiment"]


def _on_rank_zero() -> bool:
    return rank_zero_only.rank == 0  # type: ignore[attr-defined]


class _FabricLayout(_VersionedDirLogger):
    """`root_dir` as Fabric means it: the directory the user passed. Versions are counted and
    created in `root_dir/name` (what `_VersionedDirLogger.root_dir` is for the Trainer loggers).

    It sits *after* the Trainer logger in the subclasses' bases, so that the Trainer logger's own
    `log_dir_of` (TensorBoard's `sub_dir`) still runs and reaches the one here through `super()`.
    """

    @property
    def root_dir(self) -> str:
        return self._save_dir

    @property
    def _versions_dir(self) -> str:
        return _VersionedDirLogger.root_dir.fget(self)  # type: ignore[attr-defined]

    @property
    def version(self) -> int | str:
        if self._version is None:  # chosen once: the run keeps its directory
            self._version = _next_version(self._versions_dir)
        return self._version

    def log_dir_of(self, version: int | str) -> str:
        return os.path.join(self._versions_dir, version if isinstance(version, str) else f"version_{version}")

    def existing_versions(self) -> list[int]:
        return _numbered_versions(self._versions_dir)


class _RankZeroOnly:
    """First in a Fabric logger's bases: the Trainer logger's `experiment` and `log_metrics` run on
    global rank 0 only; elsewhere `experiment` is a do-nothing stand-in and metrics are dropped."""

    @property
    def experiment(self) -> Any:
        """The writer (SummaryWriter, the metrics.csv writer) on global rank 0, created on first access."""
        if not _on_rank_zero():
            return DummyExperiment()
        return super().experiment  # type: ignore[misc]

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if _on_rank_zero():
            super().log_metrics(metrics, step)  # type: ignore[misc]


class TensorBoardLogger(_RankZeroOnly, tensorboard.TensorBoardLogger, _FabricLayout):
    """Log scalars and hyperparameters as TensorBoard event files in `root_dir/name/version_N[/sub_dir]`.

    Args:
        root_dir: where experiments are stored.
        name: experiment name, a directory under `root_dir`; "" or None for none.
        version: int N for `version_N`, a str used as the directory name, or None for the next free N.
        default_hp_metric: log `hp_metric = -1` with the hyperparameters, so that TensorBoard's
            HPARAMS tab has a metric column.
        prefix: put before every metric name, joined with "-".
        sub_dir: an extra directory level inside the version directory.
        **kwargs: passed to `torch.utils.tensorboard.SummaryWriter` (`max_queue`, `flush_secs`, ...).

    Example:
        >>> import tempfile
        >>> logger = TensorBoardLogger(tempfile.mkdtemp(), name="my_model")
        >>> logger.log_hyperparams({"epochs": 5, "optimizer": "Adam"})
        >>> logger.log_metrics({"acc": 0.75}, step=0)
        >>> logger.finalize("success")
        >>> sorted(os.listdir(logger.log_dir))[0].startswith("events.out.tfevents")
        True
    """

    def __init__(
        self,
        root_dir: str | os.PathLike,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(root_dir, (str, os.PathLike)):
            raise TypeError(
                f"TensorBoardLogger(root_dir=...) must be a directory path. Received: root_dir={root_dir!r}. "
                "Fix: e.g. TensorBoardLogger(root_dir='logs/')."
            )
        super().__init__(root_dir, name=name, version=version, log_graph=True,
                         default_hp_metric=default_hp_metric, prefix=prefix, sub_dir=sub_dir, **kwargs)

    def log_hyperparams(
        self,
        params: Mapping[str, Any] | argparse.Namespace,
        metrics: Mapping[str, Any] | float | None = None,
        step: int | None = None,
    ) -> None:
        """Record `params` (flattened, values made TensorBoard types) for the HPARAMS tab, with
        `metrics` (a number means `{"hp_metric": number}`), on global rank 0."""
        if _on_rank_zero():
            super().log_hyperparams(params, metrics, step)

    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Write the graph of `model` (a module from `fabric.setup` is unwrapped first), traced on
        `input_array` or `model.example_input_array`; warns and writes nothing without either."""
        if not _on_rank_zero():
            return
        from fulmen.fabric.wrappers import _unwrap_objects  # the wrappers import the strategies

        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        super().log_graph(_unwrap_objects(model), input_array)

    def save(self) -> None:
        """Flush the event file."""
        if _on_rank_zero() and self._experiment is not None:
            self._experiment.flush()

    def finalize(self, status: str) -> None:
        """Flush and close the event file, whatever `status` is. Safe to call twice."""
        if _on_rank_zero() and self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()
            self._experiment = None


class CSVLogger(_RankZeroOnly, csv_logs.CSVLogger, _FabricLayout):
    """Log metrics to `root_dir/name/version_N/metrics.csv`.

    Args:
        root_dir: where experiments are stored.
        name: experiment name, a directory under `root_dir`; "" or None for none.
        version: int N for `version_N`, a str used as the directory name, or None for the next free N.
            A `metrics.csv` already in that directory is replaced (with a warning).
        prefix: put before every metric name, joined with "-".
        flush_logs_every_n_steps: rows are buffered and appended to the file every this many
            steps, and on `save()` / `finalize()`.

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
        root_dir: str | os.PathLike,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        if not isinstance(root_dir, (str, os.PathLike)):
            raise TypeError(
                f"CSVLogger(root_dir=...) must be a directory path. Received: root_dir={root_dir!r}. "
                "Fix: e.g. CSVLogger(root_dir='logs/')."
            )
        super().__init__(root_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)

    def log_hyperparams(self, params: Mapping[str, Any] | argparse.Namespace | None = None) -> None:
        """Merge `params` into `hparams.yaml` in the log directory, on global rank 0."""
        if _on_rank_zero():
            super().log_hyperparams(params)

    def save(self) -> None:
        """Append the buffered rows to `metrics.csv`."""
        if _on_rank_zero():
            super().save()

    def finalize(self, status: str) -> None:
        """Write the remaining rows, whatever `status` is."""
        if _on_rank_zero():
            super().finalize(status)
