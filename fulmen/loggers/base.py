"""The `Logger` interface, the versioned log directory, and hyperparameter clean-up.

This module owns three things every logger shares:

* `Logger`: the methods the Trainer calls (names and signatures follow PyTorch Lightning 2.x).
* `_VersionedDirLogger`: the `save_dir/name/version_N` layout, resolved once per run, used by
  the TensorBoard and CSV loggers so that both agree on where a run lives.
* helpers that turn user hyperparameters (dicts, Namespaces, dataclasses, tensors, classes)
  into plain data: `_convert_params`, `_flatten_dict`, `_sanitize_params`, `_to_plain`.

Loggers write files; they do not know about distributed ranks. The Trainer calls them on
global rank 0 only.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from fulmen._fs import temp_file_beside

__all__ = ["Logger"]


class Logger(ABC):
    """Base class for experiment loggers.

    Subclasses must implement `name`, `version`, `log_metrics` and `log_hyperparams`; the
    other methods have do-nothing defaults.

    Example:
        >>> class PrintLogger(Logger):
        ...     name = "print"
        ...     version = 0
        ...     def log_metrics(self, metrics, step=None):
        ...         print(step, metrics)
        ...     def log_hyperparams(self, params, *args, **kwargs):
        ...         print(params)
        >>> PrintLogger().log_metrics({"loss": 0.5}, step=3)
        3 {'loss': 0.5}
    """

    # Joins a logger's `prefix` to metric names: prefix "train" turns "loss" into "train-loss".
    LOGGER_JOIN_CHAR = "-"
    _prefix = ""  # put before every metric name with LOGGER_JOIN_CHAR (see _add_prefix)
    # Metric names are grouped on this character (TensorBoard puts "val/loss" under "val").
    group_separator = "/"

    @property
    @abstractmethod
    def name(self) -> str | None:
        """Experiment name."""

    @property
    @abstractmethod
    def version(self) -> int | str | None:
        """Experiment version (run id within the experiment)."""

    @property
    def root_dir(self) -> str | None:
        """Directory that holds all versions of this experiment, or None if nothing is saved locally."""
        return None

    @property
    def log_dir(self) -> str | None:
        """Directory of this run, or None if nothing is saved locally."""
        return None

    @property
    def save_dir(self) -> str | None:
        """Directory the user passed as the place for logs, or None if nothing is saved locally."""
        return None

    @property
    def experiment(self) -> Any:
        """The backend object (e.g. a `SummaryWriter`), for features the Logger API does not cover."""
        return None

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record `metrics` (name -> number) at `step`."""

    @abstractmethod
    def log_hyperparams(self, params: dict[str, Any] | argparse.Namespace, *args: Any, **kwargs: Any) -> None:
        """Record the run's hyperparameters."""

    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Record the model's computational graph. Does nothing unless a logger supports it."""

    def save(self) -> None:
        """Write buffered data to disk."""

    def finalize(self, status: str) -> None:
        """Finish the run. `status` is how it ended: "success", "failed", "interrupted", ..."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Called after `ModelCheckpoint` writes a checkpoint (e.g. to upload it). Does nothing by default."""

    def _add_prefix(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        if not self._prefix:
            return dict(metrics)
        return {f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}": value for key, value in metrics.items()}


class CheckpointUploadingLogger(Logger):
    """A logger that uploads checkpoints as artifacts (`log_model`): True uploads the ModelCheckpoint's
    files once, at the end of the run; "all" (or `save_top_k=-1`) uploads each as it is saved.
    Subclasses set `_log_model` and implement `_scan_and_log_checkpoints(checkpoint_callback)`."""

    _log_model: Any = False
    _checkpoint_callback: Any = None  # remembered for the upload at the end

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if checkpoint_callback is None or not self._log_model:
            return
        if self._log_model == "all" or getattr(checkpoint_callback, "save_top_k", 1) == -1:
            self._scan_and_log_checkpoints(checkpoint_callback)
        else:
            self._checkpoint_callback = checkpoint_callback

    def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
        raise NotImplementedError


def checkpoint_metadata(checkpoint_callback: Any, path: str, score: Any, section: str) -> dict[str, Any]:
    """What MLflow and W&B store beside an uploaded checkpoint: its score, file name, and (under
    `section`, each logger's name for it as in Lightning) how the ModelCheckpoint was configured."""
    return {
        "score": score,
        "original_filename": os.path.basename(path),
        section: {
            key: getattr(checkpoint_callback, key)
            for key in ("monitor", "mode", "save_last", "save_top_k", "save_weights_only",
                        "_every_n_train_steps", "_every_n_epochs")
            if hasattr(checkpoint_callback, key)
        },
    }


def new_checkpoints(checkpoint_callback: Any, logged: dict[str, float]) -> list[tuple[str, Any]]:
    """(path, score) of the callback's checkpoints not logged yet or rewritten since, oldest first."""
    found: dict[str, Any] = {}
    for path, score in dict(getattr(checkpoint_callback, "best_k_models", {}) or {}).items():
        found[path] = score
    for attr in ("last_model_path", "best_model_path"):
        path = getattr(checkpoint_callback, attr, "")
        if path and path not in found:
            found[path] = getattr(checkpoint_callback, "best_model_score", None) if attr == "best_model_path" else None
    fresh = []
    for path, score in found.items():
        if not os.path.isfile(path):
            continue
        mtime = os.path.getmtime(path)
        if logged.get(path) != mtime:
            fresh.append((mtime, path, score))
    return [(path, score) for _, path, score in sorted(fresh, key=lambda item: item[0])]


class _VersionedDirLogger(Logger):
    """A logger that writes into `save_dir/name/version_N`, choosing N on first use.

    `version=None` takes the next free N (one more than the largest `version_<N>` directory
    already in `save_dir/name`); an int N gives `version_N`; a str is used as the directory
    name as is. `name` "" or None drops the name level: `save_dir/version_N`.

    A run resumed with `fit(ckpt_path="last")` continues the version its checkpoint was logged
    in (fulmen/checkpoint.py `continue_logs` calls `continue_at`): the logger then drops whatever
    the earlier run logged at or after the resume step, so no step is written twice.
    """

    def __init__(self, save_dir: str | os.PathLike, name: str | None, version: int | str | None, prefix: str) -> None:
        if not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(
                f"{type(self).__name__}(save_dir=...) must be a directory path. Received: save_dir={save_dir!r}. "
                f"Fix: e.g. {type(self).__name__}(save_dir='logs/')."
            )
        if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
            raise TypeError(
                f"{type(self).__name__}(version=...) must be an int, a str or None. "
                f"Received: version={version!r} ({type(version).__name__}). "
                "Fix: pass 3 for 'version_3', 'my_run' for a named directory, or None for the next free version."
            )
        if not isinstance(prefix, str):
            raise TypeError(
                f"{type(self).__name__}(prefix=...) must be a str. Received: prefix={prefix!r}. "
                "Fix: pass a string such as 'train', or '' for no prefix."
            )
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self.hparams: dict[str, Any] = {}
        self._resume_step: int | None = None  # set when this run continues an earlier run's version

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        # Resolved on first access and then fixed, so a run keeps its directory even after
        # another run creates `version_{N+1}` next to it.
        if self._version is None:
            self._version = _next_version(self.root_dir)
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        save_dir = os.path.expanduser(os.path.expandvars(self._save_dir))
        return os.path.join(save_dir, self._name) if self._name else save_dir

    @property
    def log_dir(self) -> str:
        return self.log_dir_of(self.version)

    def log_dir_of(self, version: int | str) -> str:
        """The log directory the run of `version` has (or had)."""
        return os.path.join(self.root_dir, version if isinstance(version, str) else f"version_{version}")

    def existing_versions(self) -> list[int]:
        """The N of each `version_<N>` directory in `root_dir`, the versions chosen automatically so far."""
        return _numbered_versions(self.root_dir)

    def continue_at(self, step: int) -> None:
        """This run continues the log directory of an earlier one from `step` on: what that run
        logged at `step` or later (after the checkpoint it resumes from) is discarded. Call before
        the first write."""
        self._resume_step = int(step)


def _next_version(root_dir: str) -> int:
    """One more than the largest N among the `version_<N>` directories in `root_dir`; 0 if none."""
    versions = _numbered_versions(root_dir)
    return max(versions) + 1 if versions else 0


def _numbered_versions(root_dir: str) -> list[int]:
    try:
        entries = os.listdir(root_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        int(entry[len("version_") :])
        for entry in entries
        if entry.startswith("version_")
        and entry[len("version_") :].isdigit()
        and os.path.isdir(os.path.join(root_dir, entry))
    ]


# --- hyperparameters -------------------------------------------------------------------------


def _convert_params(params: Mapping[str, Any] | argparse.Namespace | None) -> dict[str, Any]:
    """A shallow dict copy of `params` given as a mapping, `argparse.Namespace`, dataclass or None."""
    if params is None:
        return {}
    if isinstance(params, argparse.Namespace):
        return dict(vars(params))
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {field.name: getattr(params, field.name) for field in dataclasses.fields(params)}
    if isinstance(params, Mapping):
        return dict(params)
    raise TypeError(
        "Hyperparameters must be a dict, an argparse.Namespace or a dataclass instance. "
        f"Received: {type(params).__name__}. Fix: pass e.g. {{'lr': 0.01}} or vars(args)."
    )


def _flatten_dict(params: Mapping[Any, Any], delimiter: str = "/", parent_key: str = "") -> dict[str, Any]:
    """Flatten nested hyperparameters into one level: `{"a": {"b": 1}}` -> `{"a/b": 1}`.

    Namespaces and dataclass instances are flattened like dicts, and so is a list whose
    items are all dicts (`{"l": [{"x": 1}]}` -> `{"l/0/x": 1}`). Other values are kept.

    Example:
        >>> _flatten_dict({"optim": {"name": "adam", "betas": [0.9, 0.99]}, "lr": 0.1})
        {'optim/name': 'adam', 'optim/betas': [0.9, 0.99], 'lr': 0.1}
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        full_key = f"{parent_key}{delimiter}{key}" if parent_key else str(key)
        if isinstance(value, argparse.Namespace) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            value = _convert_params(value)
        if isinstance(value, Mapping):
            flat.update(_flatten_dict(value, delimiter, full_key))
        elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
            for index, item in enumerate(value):
                flat.update(_flatten_dict(item, delimiter, f"{full_key}{delimiter}{index}"))
        else:
            flat[full_key] = value
    return flat


def _sanitize_params(params: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """Values of a flat dict as bool/int/float/str, the types TensorBoard's hparams accept.

    One-element tensors and NumPy scalars become Python numbers; everything else (lists,
    None, classes, modules) becomes its `str`.

    Example:
        >>> _sanitize_params({"lr": 0.1, "layers": [64, 32], "act": None, "seed": torch.tensor(7)})
        {'lr': 0.1, 'layers': '[64, 32]', 'act': 'None', 'seed': 7}
    """
    sanitized = {}
    for key, value in params.items():
        value = _python_number(value)
        sanitized[key] = value if type(value) in (bool, int, float, str) else str(value)
    return sanitized


def scalar_from_tensor(logger: str, key: str, value: Any, numbers_only: bool = False) -> Any:
    """`value` as a logger writes it: a one-element tensor becomes a Python number (the one host
    sync of logging: the value must reach the CPU to be written). Anything else is returned as it
    is, or, with `numbers_only`, must be an int, a float or a numpy scalar (made a Python number).
    `logger` names the caller in the errors."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{logger} can only log scalars. Received: {key!r} = tensor of shape {tuple(value.shape)}. "
                "Fix: log a reduced value such as tensor.mean(), or one metric per element."
            )
        return value.item()
    if not numbers_only or isinstance(value, (int, float)):
        return value
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()
    raise ValueError(
        f"{logger} can only log numbers. Received: {key!r} = {value!r} ({type(value).__name__}). "
        "Fix: log a float, an int, a one-element tensor, or a dict of them."
    )


def _to_plain(value: Any) -> Any:
    """`value` as JSON-ready plain data (W&B's run config), keeping nesting (dicts, lists) but nothing
    else exotic. hparams.yaml is written by `fulmen.saving._hparams_yaml_text`, which keeps tuples.

    Example:
        >>> _to_plain({"opt": argparse.Namespace(lr=0.1), "sizes": (3, 4), "act": torch.nn.ReLU})
        {'opt': {'lr': 0.1}, 'sizes': [3, 4], 'act': "<class 'torch.nn.modules.activation.ReLU'>"}
    """
    if isinstance(value, argparse.Namespace) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        value = _convert_params(value)
    if isinstance(value, enum.Enum):
        value = value.value  # `Mode.TRAIN` is saved as "train", the way `fulmen.hparams` saves it
    if isinstance(value, Mapping):
        return {str(key): _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    value = _python_number(value)
    if value is None or type(value) in (bool, int, float, str):
        return value
    return str(value)


def _python_number(value: Any) -> Any:
    """A one-element tensor or NumPy scalar as a Python number; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        # `.item()` copies to the host (a sync on GPU). Hyperparameters are logged once per run.
        return value.item() if value.numel() == 1 else value
    # NumPy scalars and 0-d arrays, recognised without importing NumPy.
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()
    return value


def _atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` so that a crash leaves either the old file or the new one, never half."""
    fd, tmp_path = temp_file_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
