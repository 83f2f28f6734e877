"""Checkpoint files: the dict fulmen writes, crash-safe writing, safe reading, and restoring a run.

This module owns everything about a checkpoint: building the dict from a trainer
(`checkpoint_dict`), choosing which file a run resumes from (`resolve_ckpt_path`: a path,
"best" or "last"), writing and reading it (`atomic_save`, `load_checkpoint`), and loading it back
into a trainer (`restore_modules`, then `restore_training_state` once the optimizers exist).
The functions take the trainer as their first argument; `Trainer` only calls them.

Writing goes to a temporary file in the same directory, is flushed and fsynced, then renamed
over the target with `os.replace` (atomic on POSIX), and the directory is fsynced: a crash at
any moment leaves either the old file or the new one under the name, never half a file.

Reading always uses `torch.load(weights_only=True)`: a checkpoint is tensors and plain data, so
a file crafted to run code when unpickled is refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from fulmen.__about__ import __version__
from fulmen.dataloading import loader_position
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.hparams import to_plain_hparams
from fulmen.seed import rng_state_dict
from fulmen.state import TrainerFn

if TYPE_CHECKING:  # trainer.py imports this module, so only the type checker may import it back
    from fulmen.trainer import Trainer


class CheckpointError(MisconfigurationException):
    """A checkpoint file is missing, damaged, or holds something unsafe to load."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)`, such that `path` is never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path | IO, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; damaged or unsafe files raise `CheckpointError`."""
    name = str(path) if isinstance(path, (str, Path)) else getattr(path, "name", "<file object>")
    if isinstance(path, (str, Path)) and not Path(path).is_file():
        raise CheckpointError(
            f"Checkpoint file not found. Received: {name}. Fix: check the path, or use ckpt_path='last'."
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refused to load {name}: it contains objects other than tensors and plain data, which could "
            f"run code when loaded ({str(err).splitlines()[0][:200]}). "
            "Fix: load only checkpoints you trust; re-save it with plain data (fulmen always does)."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint {name} is truncated or corrupted and cannot be read "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}). "
            "Fix: resume from an earlier checkpoint (ckpt_path='last' picks the newest intact one)."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{name} does not hold a checkpoint dict. Received: {type(checkpoint).__name__}. "
            "Fix: pass a file written by Trainer.save_checkpoint or ModelCheckpoint."
        )
    return checkpoint


# --- a trainer's checkpoint dict, and restoring a trainer from one ------------------------
def checkpoint_dict(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """The dict `Trainer.save_checkpoint` writes; `weights_only` leaves out what only resuming needs."""
    module, s = trainer.lightning_module, trainer.state
    checkpoint: dict[str, Any] = {
        "epoch": s.epoch,
        "global_step": s.global_step,
        "fulmen_version": __version__,
        "state_dict": module.state_dict(),
        "resume": s.state_dict(),
    }
    if trainer.state.fn == "fit" and trainer.train_dataloader is not None:
        # Exact resume: the random state now and at the start of the epoch (which decided its data
        # order), and a stateful loader's own position. Plain data and tensors only.
        checkpoint["resume"].update(
            rng=rng_state_dict(), epoch_start=trainer._epoch_start,
            loader=loader_position(trainer.train_dataloader),
        )
    if not weights_only:
        checkpoint["callbacks"] = {cb.state_key: cb.state_dict() for cb in trainer.callbacks}
        checkpoint["optimizer_states"] = [o.optimizer.state_dict() for o in trainer._optimizers]
        checkpoint["lr_schedulers"] = [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs]
        precision_state = trainer._precision.state_dict()
        if precision_state:
            checkpoint["MixedPrecision"] = precision_state
    if module.hparams:
        checkpoint["hparams_name"] = "kwargs"
        checkpoint["hyper_parameters"] = to_plain_hparams(module.hparams)
    dm = trainer.datamodule
    if dm is not None:
        if dm.hparams:
            checkpoint["datamodule_hparams_name"] = "kwargs"
            checkpoint["datamodule_hyper_parameters"] = to_plain_hparams(dm.hparams)
        dm_state = dm.state_dict()
        if dm_state:
            checkpoint[type(dm).__qualname__] = dm_state
    if not weights_only:
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, module, checkpoint)
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def resolve_ckpt_path(trainer: Trainer, fn: TrainerFn, ckpt_path: Any) -> str | None:
    """The file `ckpt_path` names: a path, "best" (the ModelCheckpoint's best) or "last" (the newest)."""
    if ckpt_path is None:
        return None
    if ckpt_path == "best":
        cb = trainer.checkpoint_callback
        best = getattr(cb, "best_model_path", "") if cb is not None else ""
        if not best:
            raise MisconfigurationException(
                'ckpt_path="best" needs a ModelCheckpoint that has saved a best model. '
                "Received: no best checkpoint. Fix: fit with a ModelCheckpoint(monitor=...), or pass a path."
            )
        return best
    if ckpt_path == "last":
        last = newest_checkpoint(trainer)
        if last is None:
            if fn == TrainerFn.FITTING:
                warn_once('ckpt_path="last": no checkpoint found for this run; starting from scratch.')
                return None
            raise MisconfigurationException(
                'ckpt_path="last" found no checkpoint. Received: ckpt_path="last". Fix: pass a checkpoint path.'
            )
        return last
    return str(ckpt_path)


def newest_checkpoint(trainer: Trainer) -> str | None:
    """The most recently written `.ckpt` of the trainer's ModelCheckpoints, or None."""
    candidates: list[Path] = []
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "last_model_path", ""):
            candidates.append(Path(cb.last_model_path))
        dirpath = cb.resolve_dirpath(trainer) if hasattr(cb, "resolve_dirpath") else None
        if dirpath is not None and Path(dirpath).is_dir():
            candidates.extend(Path(dirpath).glob("*.ckpt"))
    existing = [p for p in candidates if p.is_file()]
    return str(max(existing, key=lambda p: p.stat().st_mtime)) if existing else None


def restore_modules(trainer: Trainer, path: str) -> dict[str, Any]:
    """Load `path` into the module, datamodule and callbacks; return the checkpoint."""
    module = trainer.lightning_module
    checkpoint = load_checkpoint(path, map_location="cpu")
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    dm = trainer.datamodule
    if dm is not None and type(dm).__qualname__ in checkpoint:
        dm.load_state_dict(checkpoint[type(dm).__qualname__])
    callback_states = checkpoint.get("callbacks") or {}
    for cb in trainer.callbacks:
        cb.on_load_checkpoint(trainer, module, checkpoint)
        if cb.state_key in callback_states:
            cb.load_state_dict(callback_states[cb.state_key])
    return checkpoint


def restore_training_state(trainer: Trainer, checkpoint: dict[str, Any], path: str) -> None:
    """Optimizers, schedulers, precision and the resume point, once the optimizers exist."""
    if "optimizer_states" not in checkpoint:
        raise MisconfigurationException(
            f"{path} holds weights only (saved with save_weights_only=True), so training cannot resume from it. "
            "Received: no optimizer_states. Fix: load the weights with Model.load_from_checkpoint(path) and call "
            "fit without ckpt_path."
        )
    for opt, state in zip(trainer._optimizers, checkpoint["optimizer_states"]):
        opt.optimizer.load_state_dict(state)
    for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
        config.scheduler.load_state_dict(state)
    trainer._precision.load_state_dict(checkpoint.get("MixedPrecision", {}))
    s = trainer.state
    if "resume" in checkpoint:
        s.load_state_dict(checkpoint["resume"])
        trainer._resume = checkpoint["resume"]  # random and data-order state, applied at the epoch's start
    else:  # a checkpoint from another tool: assume it was saved at the end of its epoch
        s.epoch, s.global_step, s.epoch_finished = checkpoint.get("epoch", 0), checkpoint.get("global_step", 0), True
        s.log_step = s.global_step
    if s.epoch_finished:
        s.epoch, s.batches_done, s.epoch_finished = s.epoch + 1, 0, False
