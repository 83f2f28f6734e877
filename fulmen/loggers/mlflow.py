"""`MLFlowLogger`: hyperparameters, metrics and checkpoints of a run in an MLflow tracking store.

MLflow is optional: it is imported when the logger is created, and a missing package raises a
`ModuleNotFoundError` naming the extra (`pip install 'fulmen[mlflow]'`; `mlflow-skinny` is
enough). Arguments and behaviour follow Lightning 2.x's `MLFlowLogger`.

MLflow 3 refuses local file stores ("file:./mlruns", Lightning's default) unless the environment
variable `MLFLOW_ALLOW_FILE_STORE` is "true"; a logger given a `file:` URI sets it (when unset),
since asking for a file store is exactly that opt-in.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from fulmen.errors import warn_once
from fulmen.loggers.base import (
    CheckpointUploadingLogger, _convert_params, _flatten_dict, _python_number, checkpoint_metadata,
    new_checkpoints,
)

__all__ = ["MLFlowLogger"]

LOCAL_FILE_URI_PREFIX = "file:"
_PARAM_VALUE_MAX = 6000  # MLflow's limit on a parameter value's length (MLflow >= 1.28)
_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "preempted": "KILLED"}


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError as err:
        raise ModuleNotFoundError(
            "MLFlowLogger needs the mlflow package, which is not installed. Received: no module named 'mlflow'. "
            "Fix: pip install 'fulmen[mlflow]' (or: pip install mlflow-skinny)."
        ) from err
    return mlflow


class MLFlowLogger(CheckpointUploadingLogger):
    """Logs to MLflow: parameters, metrics with their steps, and (with `log_model`) checkpoints.

    Args:
        experiment_name: the MLflow experiment, created when missing.
        run_name: the run's name (the `mlflow.runName` tag).
        tracking_uri: where the tracking store is, e.g. "file:./mlruns", "sqlite:///mlflow.db" or
            "http://host:5000". Default: `MLFLOW_TRACKING_URI`, else `file:<save_dir>`.
        tags: tags set on the new run.
        save_dir: the local file store used when there is no `tracking_uri`.
        log_model: False: no checkpoints; True: the checkpoints ModelCheckpoint kept, uploaded when
            training ends (or each one as written with `save_top_k=-1`); "all": each checkpoint as
            it is written. Each lands under an artifact folder named after the file, with
            `metadata.yaml` (score, ModelCheckpoint settings) and `aliases.txt` ("latest", "best").
        prefix: put in front of every metric name, joined with "-".
        artifact_location: where a newly created experiment stores artifacts.
        run_id: continue this existing run instead of creating one.
        synchronous: passed to MLflow's `log_batch` (False: log in the background).

    Example:
        >>> logger = MLFlowLogger(experiment_name="demo", tracking_uri="file:./mlruns")  # doctest: +SKIP
        >>> trainer = Trainer(logger=logger)                                              # doctest: +SKIP
    """

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = os.getenv("MLFLOW_TRACKING_URI"),
        tags: dict[str, Any] | None = None,
        save_dir: str | None = "./mlruns",
        log_model: Literal[True, False, "all"] = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
    ) -> None:
        _import_mlflow()
        if log_model not in (True, False, "all"):
            raise ValueError(
                f"MLFlowLogger(log_model=...) must be True, False or 'all'. Received: log_model={log_model!r}. "
                "Fix: True uploads the kept checkpoints at the end, 'all' every checkpoint as it is written."
            )
        if not tracking_uri:
            tracking_uri = f"{LOCAL_FILE_URI_PREFIX}{save_dir}"
        if tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # see the module docstring
        self._experiment_name = experiment_name
        self._experiment_id: str | None = None
        self._tracking_uri = tracking_uri
        self._run_name = run_name
        self._run_id = run_id
        self.tags = dict(tags) if tags else None
        self._log_model = log_model
        self._logged_model_time: dict[str, float] = {}
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._log_batch_kwargs = {} if synchronous is None else {"synchronous": synchronous}
        self._initialized = False
        self._finalized_status: str | None = None

        from mlflow.tracking import MlflowClient

        self._mlflow_client = MlflowClient(tracking_uri)

    # --- the run ----------------------------------------------------------------------------
    @property
    def experiment(self) -> Any:
        """The `MlflowClient`; the experiment and the run are created on first use."""
        if self._initialized:
            return self._mlflow_client
        client = self._mlflow_client
        if self._run_id is not None:
            self._experiment_id = client.get_run(self._run_id).info.experiment_id
            self._initialized = True
            return client
        if self._experiment_id is None:
            found = client.get_experiment_by_name(self._experiment_name)
            if found is not None and found.lifecycle_stage != "deleted":
                self._experiment_id = found.experiment_id
            else:
                self._experiment_id = client.create_experiment(
                    name=self._experiment_name, artifact_location=self._artifact_location
                )
        tags = {str(k): str(v) for k, v in (self.tags or {}).items()}
        if self._run_name is not None:
            from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

            tags[MLFLOW_RUN_NAME] = self._run_name
        run = client.create_run(experiment_id=self._experiment_id, tags=_resolve_tags(tags))
        self._run_id = run.info.run_id
        self._initialized = True
        return client

    @property
    def run_id(self) -> str | None:
        _ = self.experiment
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        _ = self.experiment
        return self._experiment_id

    @property
    def name(self) -> str | None:
        """The experiment id (as in Lightning)."""
        return self.experiment_id

    @property
    def version(self) -> str | None:
        """The run id (as in Lightning)."""
        return self.run_id

    @property
    def save_dir(self) -> str | None:
        """The local store's directory for a `file:` tracking URI, else None."""
        if self._tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            return self._tracking_uri[len(LOCAL_FILE_URI_PREFIX):]
        return None

    @property
    def log_dir(self) -> str | None:
        """The run's directory in a local file store (`save_dir/experiment_id/run_id`, where
        ModelCheckpoint then puts `checkpoints/`, as in Lightning); None for other stores."""
        save_dir = self.save_dir
        if save_dir is None:
            return None
        return os.path.join(save_dir, str(self.experiment_id), str(self.run_id))

    # --- logging ----------------------------------------------------------------------------
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        from mlflow.entities import Param

        flat = _flatten_dict(_convert_params(params))
        plist = [Param(key=str(k), value=str(_python_number(v))[:_PARAM_VALUE_MAX]) for k, v in flat.items()]
        for start in range(0, len(plist), 100):  # MLflow takes at most 100 parameters per batch
            self.experiment.log_batch(run_id=self.run_id, params=plist[start:start + 100], **self._log_batch_kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        metrics = self._add_prefix(metrics)
        timestamp_ms = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            if isinstance(value, str):
                warn_once(f"MLFlowLogger: metric {key!r} has a string value ({value!r}) and is not logged.")
                continue
            clean = re.sub(r"[^a-zA-Z0-9_/. -]+", "", key)
            if clean != key:
                warn_once(
                    f"MLflow allows only letters, digits and '_', '/', '.', ' ', '-' in metric names. "
                    f"Received: {key!r}. It is logged as {clean!r}."
                )
            batch.append(Metric(key=clean, value=float(_python_number(value)), timestamp=timestamp_ms, step=step or 0))
        if batch:
            self.experiment.log_batch(run_id=self.run_id, metrics=batch, **self._log_batch_kwargs)

    def finalize(self, status: str = "success") -> None:
        """Upload checkpoints still due (log_model=True) and end the run: FINISHED, FAILED or KILLED."""
        if not self._initialized:
            return
        if self._checkpoint_callback is not None:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        mlflow_status = _STATUS.get(status, status.upper())
        self.experiment.set_terminated(self.run_id, mlflow_status)
        self._finalized_status = mlflow_status

    # --- checkpoints ------------------------------------------------------------------------
    def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
        from fulmen.saving import _hparams_yaml_text  # the metadata file is YAML, as in Lightning

        for path, score in new_checkpoints(checkpoint_callback, self._logged_model_time):
            metadata = checkpoint_metadata(checkpoint_callback, path, _python_number(score), "Checkpoint")
            aliases = ["latest", "best"] if path == getattr(checkpoint_callback, "best_model_path", "") else ["latest"]
            artifact_path = Path(path).stem
            self.experiment.log_artifact(self.run_id, path, artifact_path)
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "metadata.yaml").write_text(_hparams_yaml_text(metadata), encoding="utf-8")
                Path(tmp, "aliases.txt").write_text(str(aliases), encoding="utf-8")
                self.experiment.log_artifacts(self.run_id, tmp, artifact_path)
            self._logged_model_time[path] = os.path.getmtime(path)


def _resolve_tags(tags: dict[str, str]) -> dict[str, str]:
    """MLflow's default run tags (user, source) merged under the user's, as mlflow.start_run does."""
    try:
        from mlflow.tracking.context.registry import resolve_tags
    except ImportError:
        return tags
    return resolve_tags(tags)
