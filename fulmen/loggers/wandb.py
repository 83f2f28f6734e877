"""`WandbLogger`: hyperparameters, metrics and checkpoints of a run in Weights & Biases.

wandb is optional: it is imported when the logger is created, and a missing package raises a
`ModuleNotFoundError` naming the extra (`pip install 'fulmen[wandb]'`). Arguments follow
Lightning 2.x's `WandbLogger`; `offline=True` (or `WANDB_MODE=offline`) writes the run under
`save_dir/wandb/` for a later `wandb sync`.

Unlike Lightning, `finalize` ends the wandb run (`finish`, exit code 0 after success, 1 after a
failure), so that a failed fit shows as failed rather than waiting for the interpreter to exit. A
later call on the same logger (e.g. `trainer.test` after `fit`) resumes the same run id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from fulmen.errors import warn_once
from fulmen.loggers.base import (
    CheckpointUploadingLogger, _convert_params, _to_plain, checkpoint_metadata, new_checkpoints,
)

__all__ = ["WandbLogger"]


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as err:
        raise ModuleNotFoundError(
            "WandbLogger needs the wandb package, which is not installed. Received: no module named 'wandb'. "
            "Fix: pip install 'fulmen[wandb]'."
        ) from err
    return wandb


class WandbLogger(CheckpointUploadingLogger):
    """Logs to Weights & Biases.

    Args:
        name: the run's display name.
        save_dir: where wandb writes its files (`save_dir/wandb/...`); `dir` is an alias.
        version / id: the run id; an existing id resumes that run.
        offline: write locally only, to sync later.
        anonymous: log without an account (wandb's anonymous mode).
        project: the project (default "lightning_logs").
        log_model: False; True: the checkpoints ModelCheckpoint kept, logged as a "model"
            artifact when training ends (or each one as written with `save_top_k=-1`); "all": each
            checkpoint as it is written. Aliases "latest" and "best" as in Lightning.
        experiment: an existing `wandb.Run` to log to.
        prefix: put in front of every metric name, joined with "-".
        checkpoint_name: the artifact's name (default "model-{run id}").
        **kwargs: passed to `wandb.init` (e.g. tags, group, entity, config, mode).

    Metrics are logged with "trainer/global_step" as their x-axis, as in Lightning.

    Example:
        >>> logger = WandbLogger(project="demo", offline=True)  # doctest: +SKIP
        >>> trainer = Trainer(logger=logger)                     # doctest: +SKIP
    """

    def __init__(
        self, name: str | None = None, save_dir: str | os.PathLike = ".", version: str | None = None,
        offline: bool = False, dir: str | os.PathLike | None = None, id: str | None = None,
        anonymous: bool | None = None, project: str | None = None, log_model: Literal["all"] | bool = False,
        experiment: Any = None, prefix: str = "", checkpoint_name: str | None = None, **kwargs: Any,
    ) -> None:
        _import_wandb()
        if log_model not in (True, False, "all"):
            raise ValueError(
                f"WandbLogger(log_model=...) must be True, False or 'all'. Received: log_model={log_model!r}. "
                "Fix: True logs the kept checkpoints at the end, 'all' every checkpoint as it is written."
            )
        self._offline = offline
        self._log_model = log_model
        self._prefix = prefix
        self._experiment = experiment
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_name = checkpoint_name
        if save_dir == "." and dir is not None:
            save_dir = dir
        self._save_dir = os.fspath(save_dir)
        self._project = project or "lightning_logs"
        self._id = version or id
        self._wandb_init: dict[str, Any] = dict(
            name=name, project=self._project, dir=self._save_dir, id=self._id, resume="allow",
            anonymous="allow" if anonymous else None,
        )
        self._wandb_init.update(kwargs)
        if offline:
            self._wandb_init["mode"] = "offline"
        self._wandb_init = {k: v for k, v in self._wandb_init.items() if v is not None}

    @property
    def experiment(self) -> Any:
        """The `wandb.Run`, started on first use (an active `wandb.run` is reused, with a warning)."""
        if self._experiment is not None:
            return self._experiment
        wandb = _import_wandb()
        if wandb.run is not None:
            warn_once("WandbLogger: a wandb run is already active; logging to it. Fix: call wandb.finish() first "
                      "to start a new run.")
            self._experiment = wandb.run
        else:
            os.makedirs(self._save_dir, exist_ok=True)
            self._experiment = wandb.init(**self._wandb_init)
        self._id = self._experiment.id
        self._wandb_init["id"] = self._id  # a later re-start resumes this run
        if hasattr(self._experiment, "define_metric"):
            self._experiment.define_metric("trainer/global_step")
            self._experiment.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        return self._experiment

    @property
    def name(self) -> str:
        """The project name (as in Lightning)."""
        return self._project

    @property
    def version(self) -> str | None:
        """The run id (as in Lightning)."""
        return self._experiment.id if self._experiment is not None else self._id

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        """`save_dir/project/run_id`: where ModelCheckpoint puts `checkpoints/` (Lightning's layout)."""
        return os.path.join(self._save_dir, self._project, str(self.experiment.id))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.experiment.config.update(_to_plain(_convert_params(params)), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = self._add_prefix(metrics)
        values = dict(metrics)
        if step is not None:
            values["trainer/global_step"] = step
        self.experiment.log(values)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Does nothing, as in Lightning: wandb records the graph with `watch(model, log_graph=True)`."""

    def watch(self, model: Any, log: str | None = "gradients", log_freq: int = 100, log_graph: bool = True) -> None:
        """Record gradients / parameters every `log_freq` steps and the model graph (`wandb.watch`)."""
        self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    def finalize(self, status: str) -> None:
        """Log checkpoints still due (after success), then end the run: exit code 0, or 1 if it failed."""
        if self._experiment is None:
            return
        if status == "success" and self._checkpoint_callback is not None:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        self._experiment.finish(exit_code=0 if status in ("success", "finished") else 1)
        self._experiment = None

    def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
        wandb = _import_wandb()
        for path, score in new_checkpoints(checkpoint_callback, self._logged_model_time):
            metadata = _to_plain(checkpoint_metadata(checkpoint_callback, path, score, type(checkpoint_callback).__name__))
            name = self._checkpoint_name or f"model-{self.experiment.id}"
            artifact = wandb.Artifact(name=name, type="model", metadata=metadata)
            artifact.add_file(path, name="model.ckpt")
            best = path == getattr(checkpoint_callback, "best_model_path", "")
            self.experiment.log_artifact(artifact, aliases=["latest", "best"] if best else ["latest"])
            self._logged_model_time[path] = os.path.getmtime(path)
