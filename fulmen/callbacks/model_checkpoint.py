"""ModelCheckpoint: save checkpoints during fit, keep the best k, and remember where they are.

When to save: every `every_n_epochs` epochs (default 1), every `every_n_train_steps` optimizer
steps, or every `train_time_interval`. What to keep: with `monitor`, the `save_top_k` best by
that metric; without it, the latest (`save_top_k=1`) or all (`-1`). `save_last` also keeps
`last.ckpt`, written whenever a checkpoint file is (Lightning 2.6's rule: an epoch whose metric
did not make the top k writes no newer last.ckpt); `save_last="link"` makes it a symlink to the
newest file instead of a second copy. A step or time trigger whose monitored metric is not logged
yet waits for it; a metric still missing after a validation ran is an error. Files are written
atomically, and an evicted top-k file is deleted only after the new one is in place.

`background_landing=True` (fulmen's own option) lets training go on as soon as a checkpoint's
bytes are written: its fsync and rename into place finish on a background thread
(`fulmen.checkpoint.atomic_save`), which every later save, load and the end of fit wait for.
The price: a crash in the few milliseconds before a checkpoint lands resumes from the one
before it, and the loggers, flushed for the newer one, then hold the steps in between twice.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import string
import time
from pathlib import Path
from typing import Any

import torch

from fulmen.arguments import check_bool
from fulmen.callbacks.monitor import MonitorCallback
from fulmen.checkpoint import restore_replaced_sharded, stale_temp_files, wait_for_checkpoints
from fulmen.errors import MisconfigurationException, warn_once


class ModelCheckpoint(MonitorCallback):
    """Save checkpoints during fit (Lightning 2.x arguments and attributes).

    Example:
        >>> ModelCheckpoint(monitor="val_loss", filename="{epoch}-{val_loss:.2f}", save_top_k=3)  # doctest: +ELLIPSIS
        <...ModelCheckpoint object at ...>
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | str | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: dt.timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
        *,
        background_landing: bool = False,
    ):
        super().__init__(monitor, mode)
        _check_what_to_keep(filename, monitor, save_last, save_top_k)
        every_n_epochs = _resolve_triggers(every_n_train_steps, train_time_interval, every_n_epochs)
        check_bool("background_landing", background_landing)
        self.dirpath: str | None = str(dirpath) if dirpath is not None else None
        self.filename = filename
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_on_exception = save_on_exception
        self.save_weights_only = save_weights_only
        self.background_landing = background_landing
        self.auto_insert_metric_name = auto_insert_metric_name
        self._every_n_train_steps = every_n_train_steps or 0
        self._every_n_epochs = every_n_epochs or 0
        self._train_time_interval = train_time_interval
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter

        self.best_k_models: dict[str, torch.Tensor] = {}
        self.kth_best_model_path = ""
        self.kth_value: torch.Tensor = self.worst_value
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.current_score: torch.Tensor | None = None
        self.last_model_path = ""
        self._last_global_step_saved = 0  # nothing to save before the first step
        self._last_checkpoint_saved = ""  # the newest file this callback wrote (what save_last="link" names)
        self._last_time_checked: float | None = None
        # A step/time trigger found its monitored metric missing: the next validation end saves.
        self._defer_save_until_validation = False
        self._validation_ran = False  # once a validation ran, a missing monitored key is an error

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor, mode=self.mode, every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs, train_time_interval=self._train_time_interval,
        )

    # --- where -------------------------------------------------------------------------------
    def resolve_dirpath(self, trainer: Any) -> str:
        """`dirpath`, or `<log_dir>/checkpoints` with a logger, or `<default_root_dir>/checkpoints`."""
        if self.dirpath is not None:
            return self.dirpath
        base = trainer.loggers[0].log_dir if trainer.loggers else None
        return os.path.join(str(base) if base is not None else trainer.default_root_dir, "checkpoints")

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # Rank 0's answer for all: another rank could see a different next logger version.
        self.dirpath = trainer.strategy.broadcast(self.resolve_dirpath(trainer))
        if os.path.exists(self.dirpath) and not os.path.isdir(self.dirpath):
            raise MisconfigurationException(
                f"ModelCheckpoint: `dirpath` must be a directory, but a file has that name. "
                f"Received: dirpath={self.dirpath!r}. Fix: pass a directory path (it is created if missing)."
            )
        if stage == "fit" and trainer.is_global_zero:
            # A run killed while writing a checkpoint leaves its temporary file; the checkpoint it was
            # to replace is intact. (Two runs writing into one dirpath at the same time would collide
            # anyway: their top-k bookkeeping deletes each other's files.)
            for stale in stale_temp_files(self.dirpath):
                if stale.is_dir():  # a sharded (FSDP) checkpoint's staging directory
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
            restore_replaced_sharded(self.dirpath)
        if stage == "fit":
            self._defer_save_until_validation = self._validation_ran = False

    # --- when --------------------------------------------------------------------------------
    # Lightning 2.6's rules, which decide two things separately:
    #   * a trigger (every_n_train_steps / train_time_interval after a batch, every_n_epochs at an
    #     epoch's end or a validation's end) asks for a top-k save;
    #   * last.ckpt follows a save: written at a step trigger, and at an epoch/validation end only
    #     when a file was saved at that step (or, for save_last="link", once any file was saved,
    #     so the link always names the newest one). A run that saved nothing gets last.ckpt at
    #     the end of training.
    def _should_skip(self, trainer: Any) -> bool:
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != "fit"
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        )

    def _saves_on_train_epoch_end(self, trainer: Any) -> bool:
        """Whether epoch-triggered saves happen at the training epoch's end (else at validation's end)."""
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if not trainer.run_state.val_enabled:
            # No validation end will come. (Lightning asks check_val_every_n_epoch first, so a run
            # without validation and check_val_every_n_epoch=2 there saves nothing at all.)
            return True
        return trainer.check_val_every_n_epoch == 1 and trainer.val_check_interval == 1.0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._last_time_checked = time.monotonic()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._every_n_train_steps and self._train_time_interval is None:
            return  # saving at epoch ends only: nothing to decide per batch
        if self._should_skip(trainer):
            return
        due = False
        if self._every_n_train_steps:
            due = trainer.global_step % self._every_n_train_steps == 0
        elif self._train_time_interval is not None:
            now = time.monotonic()
            # Rank 0's clock decides, so that every rank saves (and meets in its collectives) together.
            due = trainer.strategy.broadcast(now - (self._last_time_checked or now) >= self._train_time_interval.total_seconds())
            if due:
                self._last_time_checked = now
        if due:
            # Saved once the batch is completely done (its logging and validation too), so that
            # the checkpoint resumes exactly after this batch.
            trainer.run_state.after_batch.append(lambda: self._save_at_step(trainer))

    def _save_at_step(self, trainer: Any) -> None:
        if self._should_skip(trainer):
            return  # e.g. a validation-end save already took this step
        metrics = self._candidates(trainer)
        if self.monitor is not None and self.monitor not in metrics:
            # Not logged yet (e.g. a validation metric before the first validation): wait for it.
            # The next validation end saves (with save_on_train_epoch_end=False), or the next
            # trigger that finds it.
            self._defer_save_until_validation = True
            if self._validation_ran:  # Lightning waits silently; after a validation it may never come
                warn_once(
                    f"ModelCheckpoint monitors {self.monitor!r}, which was not logged. Received: monitor={self.monitor!r}; "
                    f"logged metrics: {sorted(metrics)}. Checkpoints due at step triggers wait until it is. "
                    f"Fix: self.log({self.monitor!r}, value), or monitor one of the logged metrics."
                )
            return
        self._defer_save_until_validation = False  # the save it waited for is this one
        self._save_top_k(trainer, metrics)
        self._save_last(trainer, metrics)

    def _epoch_due(self, trainer: Any) -> bool:
        n = self._every_n_epochs
        return n >= 1 and (trainer.current_epoch + 1) % n == 0

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._saves_on_train_epoch_end(trainer) and not self._should_skip(trainer):
            self._save_at_epoch_end(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        # From now on a monitored key that is missing is an error, not "not logged yet".
        self._validation_ran = any(n for n in trainer.num_val_batches)
        if not self._saves_on_train_epoch_end(trainer) and not self._should_skip(trainer):
            # As for step checkpoints: saved once the training batch this validation followed is done.
            trainer.run_state.after_batch.append(lambda: self._save_after_validation(trainer))

    def _save_after_validation(self, trainer: Any) -> None:
        if self._should_skip(trainer):
            return
        if self._defer_save_until_validation:  # a step/time trigger waited for this validation's metrics
            self._defer_save_until_validation = False
            metrics = self._candidates(trainer)
            self._save_top_k(trainer, metrics)
            self._save_last(trainer, metrics)
            return
        self._save_at_epoch_end(trainer)

    def _save_at_epoch_end(self, trainer: Any) -> None:
        metrics = self._candidates(trainer)
        if self._epoch_due(trainer):
            self._save_top_k(trainer, metrics)
        if self._last_global_step_saved == trainer.global_step or (self.save_last == "link" and self._last_checkpoint_saved):
            self._save_last(trainer, metrics)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # save_last promises a last.ckpt: a run whose triggers saved nothing writes it now.
        if self.save_last and not self._last_checkpoint_saved and not trainer.fast_dev_run:
            self._save_last(trainer, self._candidates(trainer))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.save_on_exception and trainer.state.fn == "fit" and trainer.lightning_module is not None:
            path = os.path.join(self.dirpath or self.resolve_dirpath(trainer), f"exception-step={trainer.global_step}.ckpt")
            trainer.save_checkpoint(path, self.save_weights_only)

    # --- what ----------------------------------------------------------------------------------
    def _candidates(self, trainer: Any) -> dict[str, Any]:
        metrics = dict(trainer.callback_metrics)
        metrics.setdefault("epoch", torch.tensor(trainer.current_epoch))
        metrics.setdefault("step", torch.tensor(trainer.global_step))
        return metrics

    def _save_top_k(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            self._save_latest(trainer, metrics)
            return
        if self.monitor not in metrics:
            message = (
                f"ModelCheckpoint monitors {self.monitor!r}, which was not logged. Received: monitor={self.monitor!r}; "
                f"logged metrics: {sorted(metrics)}. Fix: self.log({self.monitor!r}, value) in the LightningModule, "
                "or monitor one of the logged metrics"
            )
            if self._validation_ran:  # validation had its chance to log it
                raise MisconfigurationException(message + ".")
            warn_once(message + "; no checkpoint is saved until it is logged.")
            return
        self._save_if_top_k(trainer, metrics)

    def _save_latest(self, trainer: Any, metrics: dict[str, Any]) -> None:
        path = self._unique_path(trainer, self.format_checkpoint_name(metrics), self.best_model_path)
        previous = self.best_model_path
        self.best_model_path = path
        self._write(trainer, path)
        if self.save_top_k == 1 and previous and self._removable(trainer, previous, path):
            self._remove(trainer, previous)

    def _save_if_top_k(self, trainer: Any, metrics: dict[str, Any]) -> None:
        # One host sync per save decision (a trigger), never per step.
        current = torch.as_tensor(metrics[self.monitor]).detach().to("cpu").reshape(())
        if not current.is_floating_point():  # an int metric ranks as the default float, as in Lightning
            current = current.to(torch.get_default_dtype())
        # The score keeps the logged metric's dtype (float32 unless precision=64), so
        # best_model_score and best_k_models hold what Lightning's hold; no float64 widening.
        if trainer.strategy.distributed:  # rank 0 decides (metrics logged without sync_dist may differ by rank)
            current = trainer.strategy.broadcast(current)
        if torch.isnan(current):
            current = self.worst_value.to(current)  # a NaN never ranks above a real score
        self.current_score = current
        full = self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k
        if full and not self.better(current, self.kth_value.to(current)):
            if self.verbose:
                print(f"Epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor} was not in top {self.save_top_k}")
            return
        path = self._unique_path(trainer, self.format_checkpoint_name(metrics), "")
        evicted = self.kth_best_model_path if full else ""
        if evicted:
            del self.best_k_models[evicted]
        self.best_k_models[path] = current
        self._update_rankings()
        self._write(trainer, path)
        if evicted and self._removable(trainer, evicted, path):
            self._remove(trainer, evicted)  # only now: the new checkpoint is safely on disk
        if self.verbose:
            print(f"Epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor} reached "
                  f"{current.item():.5f} (best {self.best_model_score.item():.5f}), saving model to {path!r}")

    def _update_rankings(self) -> None:
        ranked = sorted(self.best_k_models.items(), key=lambda kv: kv[1].item(), reverse=self.mode == "max")
        self.best_model_path, self.best_model_score = ranked[0]
        self.kth_best_model_path, self.kth_value = ranked[-1]

    def _save_last(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if not self.save_last:
            return
        name = self.format_checkpoint_name(metrics, self.CHECKPOINT_NAME_LAST)
        path = self._unique_path(trainer, name, self.last_model_path)
        previous, self.last_model_path = self.last_model_path, path  # before the write: it is part of the state
        if self.save_last == "link" and self._last_checkpoint_saved and self.save_top_k != 0:
            self._link(trainer, self._last_checkpoint_saved, path)
        else:
            self._write(trainer, path)
        if previous and self._removable(trainer, previous, path):
            self._remove(trainer, previous)

    def _write(self, trainer: Any, path: str) -> None:
        trainer.save_checkpoint(path, self.save_weights_only, background=self.background_landing)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = path

    @staticmethod
    def _link(trainer: Any, target: str, link: str) -> None:
        """Point `link` at `target` (a relative symlink, so the directory can move), replacing what
        `link` was; a copy where the filesystem refuses links."""
        if trainer.is_global_zero and os.path.abspath(target) != os.path.abspath(link):
            if os.path.isdir(link) and not os.path.islink(link):  # e.g. a sharded last.ckpt from a full save
                shutil.rmtree(link)
            # Named like atomic_save's temporary files, so a run killed here leaves nothing setup keeps.
            tmp = os.path.join(os.path.dirname(link), f".{os.path.basename(link)}.link.tmp")
            if os.path.lexists(tmp):
                os.remove(tmp)
            try:
                os.symlink(os.path.relpath(target, os.path.dirname(link) or "."), tmp)
            except OSError:
                wait_for_checkpoints()  # the copy reads the target, which may still be landing
                (shutil.copytree if os.path.isdir(target) else shutil.copyfile)(target, tmp)
            os.replace(tmp, link)  # a reader sees the old last.ckpt or the new one, never none
        trainer.strategy.barrier()

    def _removable(self, trainer: Any, previous: str, current: str) -> bool:
        """Whether a checkpoint this callback replaced may be deleted: not when it is the new one,
        a file top-k still keeps, the checkpoint this fit resumed from, or outside `dirpath`."""
        if previous == current or previous in self.best_k_models or previous == self.best_model_path:
            return False
        absolute = Path(previous).absolute()
        resumed = getattr(trainer, "ckpt_path", None)
        if resumed is not None and absolute == Path(resumed).absolute():
            return False
        return Path(self.dirpath or "").absolute() in absolute.parents

    @staticmethod
    def _remove(trainer: Any, path: str) -> None:
        trainer.strategy.remove_checkpoint(path)  # on rank 0

    def _unique_path(self, trainer: Any, path: str, allowed_existing: str) -> str:
        """`path`, or `path` with -v1, -v2... when a file of another run already has that name.
        With several processes, rank 0's answer (the others may already see the file it wrote)."""
        if self._enable_version_counter:
            stem, version = path[: -len(self.FILE_EXTENSION)], self.STARTING_VERSION
            while os.path.exists(path) and path != allowed_existing and path not in self.best_k_models:
                path = f"{stem}{self.CHECKPOINT_JOIN_CHAR}v{version}{self.FILE_EXTENSION}"
                version += 1
        return trainer.strategy.broadcast(path)

    def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None) -> str:
        """The checkpoint path for `metrics`, e.g. "{epoch}-{val_loss:.2f}" → "epoch=3-val_loss=0.12.ckpt"."""
        template = filename or self.filename or "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        name = self._fill_template(template, metrics)
        return os.path.join(self.dirpath or "", name + self.FILE_EXTENSION)

    def _fill_template(self, template: str, metrics: dict[str, Any]) -> str:
        values: dict[str, Any] = {}
        fields = re.findall(r"\{([^{}:]+)(?::[^{}]*)?\}", template)
        for i, field in enumerate(fields):
            key = f"_m{i}"  # metric names may hold characters str.format treats specially ('/', '.')
            if self.auto_insert_metric_name:
                template = template.replace("{" + field, field + self.CHECKPOINT_EQUALS_CHAR + "{" + key, 1)
            else:
                template = template.replace("{" + field, "{" + key, 1)
            if field not in metrics:
                warn_once(f"ModelCheckpoint filename uses {field!r}, which was not logged; 0 is used in its place.")
            value = metrics.get(field, 0)
            values[key] = value.item() if isinstance(value, torch.Tensor) else value
        return template.format(**values)

    # --- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath") not in (None, self.dirpath) and self.dirpath is not None:
            warn_once(
                f"ModelCheckpoint resumed into a different dirpath ({self.dirpath!r}, was {state_dict['dirpath']!r}): "
                "only its best score is restored, not the file list."
            )
            self.best_model_score = state_dict.get("best_model_score")
            return
        self.best_model_score = state_dict.get("best_model_score")
        self.best_model_path = state_dict.get("best_model_path", "")
        self.current_score = state_dict.get("current_score")
        self.best_k_models = dict(state_dict.get("best_k_models", {}))
        self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
        self.kth_value = torch.as_tensor(state_dict.get("kth_value", self.worst_value))
        self.last_model_path = state_dict.get("last_model_path", "")


def _check_filename(filename: str) -> None:
    """Reject a `filename` template that str.format could not fill, before the first save."""
    if not isinstance(filename, str) or not filename:
        raise MisconfigurationException(
            f"ModelCheckpoint: `filename` must be a non-empty string template. Received: filename={filename!r}. "
            "Fix: e.g. filename='{epoch}-{val_loss:.2f}', or leave it None for '{epoch}-{step}'."
        )
    try:
        list(string.Formatter().parse(filename))
    except ValueError as err:
        raise MisconfigurationException(
            f"ModelCheckpoint: `filename` is not a valid template ({err}). Received: filename={filename!r}. "
            "Fix: put metric names in matching braces, e.g. filename='{epoch}-{val_loss:.2f}'."
        ) from None


def _check_what_to_keep(filename: str | None, monitor: str | None, save_last: Any, save_top_k: Any) -> None:
    """The arguments that say which checkpoints are kept and how they are named, checked before the first save."""
    if isinstance(save_top_k, bool) or not isinstance(save_top_k, int) or save_top_k < -1:
        raise MisconfigurationException(
            f"ModelCheckpoint: `save_top_k` must be an int >= -1. Received: save_top_k={save_top_k!r}. "
            "Fix: -1 keeps all, 0 none, k the best k."
        )
    if monitor is None and save_top_k not in (-1, 0, 1):
        raise MisconfigurationException(
            f"ModelCheckpoint(save_top_k={save_top_k}, monitor=None) cannot rank checkpoints without a metric. "
            "Received: monitor=None. Fix: set monitor='val_loss' (or similar), or save_top_k in (-1, 0, 1)."
        )
    if save_last not in (None, True, False, "link"):
        raise MisconfigurationException(
            f"ModelCheckpoint: `save_last` must be True, False, 'link' or None. Received: save_last={save_last!r}. "
            "Fix: save_last=True also keeps last.ckpt; 'link' makes it a link to the newest checkpoint."
        )
    if filename is not None:
        _check_filename(filename)


def _resolve_triggers(every_n_train_steps: Any, train_time_interval: Any, every_n_epochs: Any) -> int | None:
    """Check when to save (at most one of steps, time and epochs) and return `every_n_epochs`:
    1 when no trigger is given, as in Lightning."""
    for name, value in (("every_n_train_steps", every_n_train_steps), ("every_n_epochs", every_n_epochs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise MisconfigurationException(
                f"ModelCheckpoint: `{name}` must be an int >= 0. Received: {name}={value!r}. Fix: e.g. {name}=1."
            )
    if train_time_interval is not None and not isinstance(train_time_interval, dt.timedelta):
        raise MisconfigurationException(
            "ModelCheckpoint: `train_time_interval` must be a datetime.timedelta. "
            f"Received: {type(train_time_interval).__name__}. Fix: timedelta(minutes=30)."
        )
    triggers = sum(bool(v) for v in (every_n_train_steps, every_n_epochs, train_time_interval))
    if triggers > 1:
        raise MisconfigurationException(
            "ModelCheckpoint: every_n_train_steps, every_n_epochs and train_time_interval are exclusive. "
            f"Received: every_n_train_steps={every_n_train_steps}, every_n_epochs={every_n_epochs}, "
            f"train_time_interval={train_time_interval}. Fix: set only one of them."
        )
    if triggers == 0 and every_n_train_steps is None and every_n_epochs is None:
        every_n_epochs = 1
    return every_n_epochs
