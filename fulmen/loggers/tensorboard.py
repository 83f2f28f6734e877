"""`TensorBoardLogger`: scalars, hyperparameters and the model graph as TensorBoard event files.

The writer is `torch.utils.tensorboard.SummaryWriter`, created on first use. TensorBoard is
imported only then, so `import fulmen` stays fast and works without it. Besides the event
files, each run gets an `hparams.yaml` in its log directory (PyYAML, imported when it is written;
the format is `fulmen.saving`'s, so `load_hparams_from_yaml` reads it back).
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from fulmen.loggers.base import (
    _atomic_write_text,
    _convert_params,
    _flatten_dict,
    _sanitize_params,
    _VersionedDirLogger,
    scalar_from_tensor,
)

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardLogger"]

_NAME = "TensorBoardLogger"  # in the errors of scalar_from_tensor


class TensorBoardLogger(_VersionedDirLogger):
    """Log to TensorBoard event files in `save_dir/name/version_N[/sub_dir]`.

    Args:
        save_dir: where experiments are stored.
        name: experiment name, a directory under `save_dir`; "" or None for none.
        version: int N for `version_N`, a str used as the directory name, or None for the next free N.
        log_graph: write the model graph in `log_graph()` (needs `model.example_input_array`).
        default_hp_metric: log `hp_metric = -1` with the hyperparameters so that the HPARAMS tab
            has a metric column; log your own `hp_metric` later to fill it in.
        prefix: put before every metric name, joined with "-".
        sub_dir: an extra directory level inside the version directory.
        **kwargs: passed to `SummaryWriter`, e.g. `flush_secs=30`.

    Example:
        >>> import tempfile
        >>> logger = TensorBoardLogger(tempfile.mkdtemp(), name="mnist")
        >>> logger.log_metrics({"train/loss": 0.25}, step=10)
        >>> logger.finalize("success")
        >>> os.path.basename(logger.log_dir)
        'version_0'
    """

    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_dir, name, version, prefix)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._kwargs = kwargs
        self._experiment: SummaryWriter | None = None
        self._hparams_saved = False  # hparams.yaml is up to date

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    def log_dir_of(self, version: int | str) -> str:
        log_dir = super().log_dir_of(version)
        return os.path.join(log_dir, self._sub_dir) if self._sub_dir else log_dir

    @property
    def experiment(self) -> SummaryWriter:
        """The `SummaryWriter`, created (with its directory) on first access."""
        if self._experiment is None:
            # Imported here, not at the top: TensorBoard and its protobufs take a while to import.
            from torch.utils.tensorboard import SummaryWriter

            if self._resume_step is not None:
                # TensorBoard's readers drop the earlier events at this step and later: the
                # points the crashed run logged after its checkpoint, which this run logs again.
                self._kwargs["purge_step"] = self._resume_step
            # `**self._kwargs` as such: jsonargparse reads SummaryWriter's arguments from this call,
            # so that a config may set them (flush_secs: 30).
            self._experiment = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Write the metrics as scalars at `step`. A dict value is written with `add_scalars`."""
        # Imported here for the same reason as SummaryWriter; cached by Python after the first call.
        from tensorboard.compat.proto.summary_pb2 import Summary

        scalars = []
        for key, value in self._add_prefix(metrics).items():
            if isinstance(value, Mapping):
                self.experiment.add_scalars(key, {k: scalar_from_tensor(_NAME, key, v, True) for k, v in value.items()}, step)
            else:
                scalars.append(Summary.Value(tag=key, simple_value=scalar_from_tensor(_NAME, key, value, True)))
        if scalars:
            # One event for all of them (what add_scalar writes, once per metric): half the cost
            # of a typical write, which carries the loss and the epoch.
            self.experiment.file_writer.add_summary(Summary(value=scalars), step)

    def log_hyperparams(
        self,
        params: Mapping[str, Any] | argparse.Namespace,
        metrics: Mapping[str, Any] | float | None = None,
        step: int | None = None,
    ) -> None:
        """Record hyperparameters for `hparams.yaml` and for TensorBoard's HPARAMS tab.

        `metrics` names the metrics the HPARAMS tab shows next to the hyperparameters; a plain
        number means `{"hp_metric": number}`. With neither, `hp_metric = -1` is logged when
        `default_hp_metric` is set, and nothing is written to the HPARAMS tab otherwise
        (TensorBoard shows no row for a run without a metric).
        """
        params = _convert_params(params)
        self.hparams.update(params)
        self._hparams_saved = False
        if self._resume_step is not None:
            return  # the run this one continues wrote them; again, they would be a second point at step 0

        if metrics is None:
            metrics = {"hp_metric": -1} if self._default_hp_metric else {}
        elif not isinstance(metrics, Mapping):
            metrics = {"hp_metric": metrics}
        if not metrics:
            return
        # The scalar tags carry the prefix, so the hparams summary names them with it too;
        # otherwise the HPARAMS tab would look for a metric that was never written.
        metrics = self._add_prefix(metrics)
        for key, value in metrics.items():
            self.experiment.add_scalar(key, scalar_from_tensor(_NAME, key, value, True), step)

        from torch.utils.tensorboard.summary import hparams

        # Written through the file writer rather than `SummaryWriter.add_hparams`, which would
        # put them in a separate run (a timestamped subdirectory) instead of this one.
        experiment, session_start, session_end = hparams(_sanitize_params(_flatten_dict(params)), metrics)
        file_writer = self.experiment._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary, step)

    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Write the model graph, traced on `input_array` or `model.example_input_array`."""
        if not self._log_graph:
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            warnings.warn(
                "TensorBoardLogger(log_graph=True) could not log the model graph: no example input. "
                "Received: input_array=None and model.example_input_array is not set. "
                "Fix: set `self.example_input_array = torch.randn(...)` in the module's __init__.",
                stacklevel=2,
            )
            return
        if not isinstance(input_array, (torch.Tensor, tuple)):
            warnings.warn(
                "TensorBoardLogger(log_graph=True) could not log the model graph: the example input must "
                "be a tensor or a tuple of forward()'s positional arguments. "
                f"Received: {type(input_array).__name__}. "
                "Fix: set `example_input_array` to a tensor or a tuple.",
                stacklevel=2,
            )
            return
        with warnings.catch_warnings():
            # add_graph traces with torch.jit.trace, which torch now flags as deprecated; the
            # warning is about TensorBoard's internals and there is nothing for the user to change.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
            self.experiment.add_graph(model, _to_model_device(model, input_array))

    def save(self) -> None:
        """Flush the event file and write `hparams.yaml` (once the log directory exists)."""
        if self._experiment is not None:
            self._experiment.flush()
        # Only into an existing directory: saving should not create an empty run on its own.
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        # save() runs at every epoch end: rewrite the file only when the hparams changed.
        if os.path.isdir(self.log_dir) and not (self._hparams_saved and os.path.isfile(hparams_file)):
            from fulmen.saving import _hparams_yaml_text

            _atomic_write_text(hparams_file, _hparams_yaml_text(self.hparams))
            self._hparams_saved = True

    def finalize(self, status: str) -> None:
        """Flush and close the writer; on "success" also write `hparams.yaml`. Safe to call twice."""
        if status == "success":
            self.save()
        if self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()
            self._experiment = None

    def __getstate__(self) -> dict[str, Any]:
        # A SummaryWriter holds a thread and an open file; the copy creates its own on first use.
        state = self.__dict__.copy()
        state["_experiment"] = None
        return state


def _to_model_device(model: torch.nn.Module, inputs: torch.Tensor | tuple) -> torch.Tensor | tuple:
    """Move example inputs to the model's device, since tracing runs the model on them."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return inputs.to(parameter.device)
    return tuple(item.to(parameter.device) if isinstance(item, torch.Tensor) else item for item in inputs)
