"""Checkpoint files: the dict fulmen writes, crash-safe writing, safe reading, and restoring a run.

This module owns everything about a checkpoint: building the dict from a trainer
(`checkpoint_dict`), choosing which file a run resumes from (`resolve_ckpt_path`: a path,
"best" or "last", the newest checkpoint that reads back intact), writing and reading it
(`atomic_save`, `load_checkpoint`), and loading it back into a trainer (`restore_modules`, then
`restore_training_state` once the optimizers exist), also from a PyTorch Lightning checkpoint
(`foreign_resume_point`). The functions take the trainer as their first argument; `Trainer` only
calls them.

Writing goes to a temporary file in the same directory, is flushed and fsynced, then renamed
over the target with `os.replace` (atomic on POSIX), and the directory is fsynced: a crash at
any moment leaves either the old file or the new one under the name, never half a file. A
process killed mid-write leaves its temporary file (`stale_temp_files`), which ModelCheckpoint
removes when the next run sets up. While the file is written, the kernel is asked to start
writing it to disk chunk by chunk, so that the final fsync has little left to wait for.

With `atomic_save(background=True)` (`ModelCheckpoint(background_landing=True)`) the caller
waits only for the bytes to reach the temporary file; a background thread fsyncs it, renames it
into place and fsyncs the directory (the same steps, in the same order), then runs what had to
wait for the file to be in place (`after_landing`: deleting the checkpoint it displaces). Every save, load
and the end of a run first waits for those (`wait_for_checkpoints`), and a failure there is
raised, never dropped.

Reading always uses `torch.load(weights_only=True)`: a checkpoint is tensors and plain data, so
a file crafted to run code when unpickled is refused instead of executed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import pathlib
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from fulmen.__about__ import __version__
from fulmen._fs import temp_file_beside
from fulmen.dataloading import train_position
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.hparams import checkpoint_entries
from fulmen.loggers.base import _VersionedDirLogger
from fulmen.seed import rng_state_dict
from fulmen.state import TrainerFn
from fulmen.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:  # trainer.py imports this module, so only the type checker may import it back
    from fulmen.trainer import Trainer


class CheckpointError(MisconfigurationException):
    """A checkpoint file is missing, damaged, or holds something unsafe to load."""


def atomic_save(obj: Any, path: str | Path, background: bool = False) -> None:
    """`torch.save(obj, path)`, such that `path` is never left half-written.

    Returns once the file is on disk under `path`; with `background=True`, once its bytes are
    in a temporary file, which a background thread then moves into place (see the module doc).
    """
    wait_for_checkpoints()  # checkpoints land in the order they were saved
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f if background else _EarlyWriteback(f))
            f.flush()
            if background:
                _landing.submit(lambda: _land(tmp, path))
                return
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _land(tmp: str, path: Path) -> None:
    """The rest of a background save, on the landing thread: fsync, rename into place, fsync the directory."""
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(
            f"Saving checkpoint {path} failed while writing it to disk: {err}. The previous checkpoint under "
            "that name, if any, is intact. Fix: check free space and permissions of the checkpoint directory."
        ) from err
    _fsync_dir(path.parent)


class _Landing:
    """Checkpoints saved with `background=True` on their way into place: one thread runs their
    last steps and the actions queued after them, in order. After a failure nothing queued runs
    (e.g. no older checkpoint is deleted for a new one that did not land) until `wait` raises it."""

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start with nothing pending (also in a forked child: its parent's thread is not there)."""
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        if self._executor is None:  # joined at interpreter exit, so a landing is never cut short
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fulmen-checkpoint")
        self._futures.append(self._executor.submit(self._run, job))

    def _run(self, job: Callable[[], None]) -> None:
        if self._error is None:
            try:
                job()
            except BaseException as err:
                self._error = err

    @property
    def pending(self) -> bool:
        return any(not f.done() for f in self._futures)

    def wait(self) -> None:
        for future in self._futures:
            future.result()
        self._futures.clear()
        error, self._error = self._error, None
        if error is not None:
            raise error


_landing = _Landing()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_landing.forget)


def wait_for_checkpoints() -> None:
    """Block until every checkpoint saved in the background is in place; raise the error of one
    that could not be written (`CheckpointError`, naming the file)."""
    _landing.wait()


def after_landing(action: Callable[[], None]) -> None:
    """Run `action` once the checkpoints saved in the background are in place (now, if none is pending)."""
    if _landing.pending:
        _landing.submit(action)
    else:
        wait_for_checkpoints()  # raises an earlier failure instead of acting as if the file were there
        action()


class _EarlyWriteback:
    """A write-only file wrapper for `torch.save` that asks Linux to start writing each chunk to
    disk as soon as it is written (`sync_file_range`), so that disk writes overlap serialisation
    and the final fsync waits only for the last chunk. Elsewhere it passes writes through."""

    CHUNK = 4 << 20

    def __init__(self, f: IO[bytes]):
        self._f, self._start, self._written = f, 0, 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        for offset in range(0, len(view), self.CHUNK):
            self._written += self._f.write(view[offset : offset + self.CHUNK])
            if self._written - self._start >= self.CHUNK and _sync_file_range is not None:
                self._f.flush()
                _sync_file_range(self._f.fileno(), self._start, self._written - self._start, _SYNC_FILE_RANGE_WRITE)
                self._start = self._written
        return len(view)

    def flush(self) -> None:
        self._f.flush()


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return function


_SYNC_FILE_RANGE_WRITE = 2  # start writeback of dirty pages in the range; do not wait for it
_sync_file_range = _load_sync_file_range()


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


def stale_temp_files(directory: str | Path) -> list[Path]:
    """Temporary files `atomic_save` leaves behind when its process is killed mid-write
    (`.<name>.ckpt.<random>.tmp`); the files they were meant to replace are intact."""
    directory = Path(directory)
    return sorted(directory.glob(".*.ckpt.*.tmp")) if directory.is_dir() else []


def restore_replaced_sharded(directory: str | Path) -> None:
    """Finish what a sharded save killed mid-swap left: it moves the previous checkpoint directory
    aside as `.<name>.old` before moving the new one in. If `<name>` is missing, the old one is
    put back; otherwise the aside copy is deleted."""
    directory = Path(directory)
    for aside in directory.glob(".*.ckpt.old") if directory.is_dir() else []:
        target = aside.with_name(aside.name[1 : -len(".old")])
        if target.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, target)


# Classes that PyTorch Lightning checkpoints hold in their hyperparameters besides plain data, and
# what `torch.load(weights_only=True)` may build in their place. Each only stores values: building
# one runs no code of the file's choosing. Lightning's own AttributeDict (older versions pickle it)
# becomes a plain dict. Any other class is still refused.
_POSIX = os.name != "nt"
_SAFE_GLOBALS: list[tuple[Any, str]] = [
    (argparse.Namespace, "argparse.Namespace"),
    *[
        (cls, f"{module}.{name}")
        for module in ("pathlib", "pathlib._local")  # Python 3.13 pickles paths from pathlib._local
        for name, cls in (
            ("PosixPath", pathlib.Path if _POSIX else pathlib.PurePosixPath),
            ("WindowsPath", pathlib.PureWindowsPath if _POSIX else pathlib.Path),
            ("PurePosixPath", pathlib.PurePosixPath),
            ("PureWindowsPath", pathlib.PureWindowsPath),
        )
    ],
    *[
        (dict, f"{module}.AttributeDict")
        for module in (
            "lightning_fabric.utilities.data", "lightning.fabric.utilities.data",
            "pytorch_lightning.utilities.parsing", "lightning.pytorch.utilities.parsing",
        )
    ],
]


def _allow_safe_globals() -> contextlib.AbstractContextManager:
    # (class, name) pairs need torch >= 2.6; older versions load without the extra classes.
    major, minor = (int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    if (major, minor) < (2, 6):
        return contextlib.nullcontext()
    return torch.serialization.safe_globals(_SAFE_GLOBALS)


def load_checkpoint(path: str | Path | IO, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; damaged or unsafe files raise `CheckpointError`.

    Besides tensors and plain data, the few value-only classes PyTorch Lightning stores in
    hyperparameters load too (`argparse.Namespace`, `pathlib` paths, its AttributeDict as a dict).
    """
    wait_for_checkpoints()  # one this process is still writing may be the one asked for
    name = str(path) if isinstance(path, (str, Path)) else getattr(path, "name", "<file object>")
    if isinstance(path, (str, Path)) and (Path(path) / SHARDED_META).is_file():
        return _load_sharded(Path(path), map_location)
    if isinstance(path, (str, Path)) and not Path(path).is_file():
        raise CheckpointError(
            f"Checkpoint file not found. Received: {name}. Fix: check the path, or use ckpt_path='last'."
        )
    if isinstance(path, (str, Path)) and not _looks_saved_by_torch(Path(path)):
        raise CheckpointError(
            f"{name} is not a checkpoint: torch.save did not write it (it is neither a zip archive nor a pickle). "
            "Received: a file of another kind (text, an image, ...). Fix: pass the .ckpt file a Trainer or "
            "ModelCheckpoint saved."
        )
    try:
        with _allow_safe_globals():
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))  # the class or function torch refused
        what = (f"{found.group(1)}, which is not a tensor or plain data," if found
                else "objects other than tensors and plain data,")
        raise CheckpointError(
            f"Refused to load {name}: it holds {what} and unpickling that could run code. Received: a file "
            "that torch.load(weights_only=True) does not accept. Fix: load only checkpoints you trust, and "
            "re-save the hyperparameters as plain data (fulmen always saves them so)."
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


def _looks_saved_by_torch(path: Path) -> bool:
    """Whether the file starts as torch.save's output does: a zip archive, or (the legacy format) a
    pickle's protocol marker. An empty file is left to torch.load, which calls it truncated."""
    with open(path, "rb") as f:
        head = f.read(4)
    return not head or head.startswith((b"PK\x03\x04", b"\x80"))


SHARDED_META = "meta.pt"  # in a sharded checkpoint directory (FSDPStrategy): all but the sharded tensors


def _load_sharded(path: Path, map_location: Any) -> dict[str, Any]:
    """A sharded checkpoint directory as one checkpoint dict with whole tensors, whatever number of
    processes wrote it: meta.pt plus the tensors torch.distributed.checkpoint gathers from the shards."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    checkpoint = load_checkpoint(path / SHARDED_META, map_location)
    with tempfile.TemporaryDirectory() as tmp:
        whole = os.path.join(tmp, "whole.pt")
        dcp_to_torch_save(str(path), whole)
        checkpoint.update(load_checkpoint(whole, map_location))
    return checkpoint


# --- optimizer state: by parameter index (torch's format) <-> by parameter name ---------------
def parameter_names(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each of the optimizer's parameters, in the optimizer's order."""
    names = {id(p): name for name, p in module.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state_by_index(state: dict[str, Any], module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """torch.distributed.checkpoint keys optimizer state by parameter name; torch.optim by index.
    State already keyed by index is returned as it is (and then the optimizer may also hold
    parameters that are not the module's)."""
    if not any(isinstance(k, str) for k in state["state"]) and not any(
        isinstance(p, str) for g in state["param_groups"] for p in g["params"]
    ):
        return state
    index = {name: i for i, name in enumerate(parameter_names(module, optimizer))}
    return {
        "state": {index[k]: v for k, v in state["state"].items()},
        "param_groups": [{**g, "params": [index[p] for p in g["params"]]} for g in state["param_groups"]],
    }


def optimizer_state_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    if all(isinstance(k, str) for k in state["state"]) and all(
        isinstance(p, str) for g in state["param_groups"] for p in g["params"]
    ):
        return state
    return {
        "state": {names[int(k)]: v for k, v in state["state"].items()},
        "param_groups": [{**g, "params": [names[int(p)] for p in g["params"]]} for g in state["param_groups"]],
    }


# --- a trainer's checkpoint dict, and restoring a trainer from one ------------------------
def checkpoint_dict(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """The dict `Trainer.save_checkpoint` writes; `weights_only` leaves out what only resuming needs."""
    module, s, strategy = trainer.lightning_module, trainer.state, trainer.strategy
    checkpoint: dict[str, Any] = {
        "epoch": s.epoch,
        "global_step": s.global_step,
        "fulmen_version": __version__,
        "state_dict": strategy.model_state_dict(module),
        "resume": {**s.state_dict(), "run": run_record(trainer)},
    }
    if trainer.state.fn == "fit" and trainer.train_dataloader is not None:
        # Exact resume: the random state now and at the start of the epoch (which decided its data
        # order), and a stateful loader's own position (or, for several loaders, each one's). Plain data and tensors only.
        checkpoint["resume"].update(
            rng=rng_state_dict(), epoch_start=trainer.run_state.epoch_start, loader=train_position(trainer),
        )
        if strategy.distributed and not strategy.failing:  # every rank's random state, for a per-rank exact resume
            resume = checkpoint["resume"]
            checkpoint["resume"]["ranks"] = strategy.all_gather_object(
                {"rng": resume["rng"], "epoch_start": trainer.run_state.epoch_start, "loader": resume["loader"]}
            )
    if not weights_only:
        checkpoint["callbacks"] = {cb.state_key: cb.state_dict() for cb in trainer.callbacks}
        checkpoint["optimizer_states"] = [strategy.optimizer_state_dict(module, o.optimizer) for o in trainer._optimizers]
        checkpoint["lr_schedulers"] = [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs]
        precision_state = trainer._precision.state_dict()
        if precision_state:
            checkpoint["MixedPrecision"] = precision_state
    checkpoint.update(checkpoint_entries(module))  # hyperparameters, exact (see fulmen.hparams.to_checkpoint)
    dm = trainer.datamodule
    if dm is not None:
        checkpoint.update(checkpoint_entries(dm))
        dm_state = dm.state_dict()
        if dm_state:
            checkpoint[type(dm).__qualname__] = dm_state
    if not weights_only:
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, module, checkpoint)
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def resolve_ckpt_path(trainer: Trainer, fn: TrainerFn, ckpt_path: Any) -> tuple[str | None, dict[str, Any] | None]:
    """The file `ckpt_path` names: a path, "best" (the ModelCheckpoint's best) or "last" (the newest
    intact one), and, for "last", the checkpoint already read from it (None: not read yet)."""
    if ckpt_path is None:
        return None, None
    wait_for_checkpoints()  # "last" looks at the files on disk
    if ckpt_path == "best":
        cb = trainer.checkpoint_callback
        best = getattr(cb, "best_model_path", "") if cb is not None else ""
        if not best:
            raise MisconfigurationException(
                'ckpt_path="best" needs a ModelCheckpoint that has saved a best model. '
                "Received: no best checkpoint. Fix: fit with a ModelCheckpoint(monitor=...), or pass a path."
            )
        return best, None
    if ckpt_path == "last":
        module = class_path(trainer.lightning_module)
        candidates = checkpoint_candidates(trainer)
        found = newest_intact_checkpoint(candidates, module)
        if found is None:
            what = f"no intact checkpoint of {module} among the {len(candidates)} found" if candidates else "no checkpoint found"
            if fn == TrainerFn.FITTING:
                warn_once(f'ckpt_path="last": {what} for this run; starting from scratch.')
                return None, None
            raise MisconfigurationException(
                f'ckpt_path="last" found {what}. Received: ckpt_path="last". Fix: pass a checkpoint path.'
            )
        if fn == TrainerFn.FITTING:
            continue_logs(trainer, *found)
        return found
    return str(ckpt_path), None


# --- "last": which run is this one, and where are its checkpoints --------------------------
# `fit(ckpt_path="last")` resumes the newest intact checkpoint of *this run*, and the resumed run
# logs on in the same log directory. A run is identified by where its checkpoints go and what it
# trains: the ModelCheckpoints' `dirpath`, or without one the first logger's `save_dir/name`
# (from `default_root_dir`) in any of its `version_N` folders; and the LightningModule's class.
# So running the same command again resumes it, while another script sharing the folder with
# another module starts its own run.
def run_record(trainer: Trainer) -> dict[str, Any]:
    """What identifies the run in its checkpoints: the module's class and each versioned logger's
    directory and version."""
    return {
        "module": class_path(trainer.lightning_module),
        "loggers": [[os.path.abspath(lg.root_dir), lg.version] for lg in trainer.loggers if isinstance(lg, _VersionedDirLogger)],
    }


def class_path(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def checkpoint_dir(trainer: Trainer) -> str:
    """Where the run's checkpoints go: the ModelCheckpoint's directory, or `<default_root_dir>/checkpoints`."""
    callback = trainer.checkpoint_callback
    return callback.resolve_dirpath(trainer) if callback is not None else os.path.join(trainer.default_root_dir, "checkpoints")


def checkpoint_candidates(trainer: Trainer) -> list[Path]:
    """The `.ckpt` files of the trainer's ModelCheckpoints (or of its checkpoint directory), newest first."""
    candidates: set[Path] = set()
    if not trainer.checkpoint_callbacks and Path(checkpoint_dir(trainer)).is_dir():  # e.g. only a preemption save
        candidates.update(Path(checkpoint_dir(trainer)).glob("*.ckpt"))
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "last_model_path", ""):
            candidates.add(Path(cb.last_model_path))
        for dirpath in _checkpoint_dirs(trainer, cb):
            if Path(dirpath).is_dir():
                candidates.update(Path(dirpath).glob("*.ckpt"))
    existing = [p for p in candidates if p.is_file()]
    # A `last.ckpt` link shares its target's mtime (stat follows the link): prefer the link, as Lightning reports it.
    return sorted(existing, key=lambda p: (p.stat().st_mtime_ns, p.is_symlink(), p.name), reverse=True)


def _checkpoint_dirs(trainer: Trainer, callback: Any) -> list[str]:
    """Where `callback` saves, or saved in an earlier run of the same command: without a `dirpath`
    it saves into the first logger's log directory, and before this run's version is decided
    (looking must not decide it) that may be any of the `version_N` folders."""
    if not hasattr(callback, "resolve_dirpath"):
        return []
    logger = trainer.loggers[0] if trainer.loggers else None
    if getattr(callback, "dirpath", None) is None and isinstance(logger, _VersionedDirLogger) and logger._version is None:
        return [os.path.join(logger.log_dir_of(v), "checkpoints") for v in logger.existing_versions()]
    return [callback.resolve_dirpath(trainer)]


def newest_intact_checkpoint(candidates: list[Path], module: str | None = None) -> tuple[str, dict[str, Any]] | None:
    """The first of `candidates` that reads back whole (with its contents) and, when `module` is
    given, was saved by a module of that class (a checkpoint fulmen did not write is taken as
    it is). A damaged one is skipped with a warning that names it and says why (e.g. a file
    truncated by a full disk)."""
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path, map_location="cpu")
        except CheckpointError as err:
            reason = str(err).split(" Fix: ")[0]
            warn_once(f'ckpt_path="last" skips {path}: {reason} Falling back to the next newest checkpoint.')
            continue
        saved_by = ((checkpoint.get("resume") or {}).get("run") or {}).get("module")
        if module is None or saved_by in (None, module):
            return str(path), checkpoint
    return None


def continue_logs(trainer: Trainer, path: str, checkpoint: dict[str, Any]) -> None:
    """Point the loggers at the version folders the checkpoint's run logged into, from its resume
    step on (see `_VersionedDirLogger.continue_at`). A logger whose version the user chose keeps
    it, and continues only when it is that same folder."""
    record = (checkpoint.get("resume") or {}).get("run") or {}
    versions = {root: version for root, version in record.get("loggers", [])}
    resume_point = checkpoint.get("resume") or foreign_resume_point(checkpoint)
    step = int(resume_point.get("log_step", checkpoint.get("global_step", 0)))
    for i, logger in enumerate(trainer.loggers):
        if not isinstance(logger, _VersionedDirLogger):
            continue
        version = versions.get(os.path.abspath(logger.root_dir))
        if version is None and i == 0 and not record:  # e.g. Lightning's: the folder it lies in tells
            version = _version_holding(logger, path)
        if version is None:
            continue
        if logger._version is None:
            logger._version = version
        if logger.version == version:
            logger.continue_at(step)


def _version_holding(logger: _VersionedDirLogger, path: str) -> int | None:
    """The N of the `version_N` folder of `logger` that `path` lies in, if any."""
    path = os.path.abspath(path)
    for version in logger.existing_versions():
        if path.startswith(os.path.abspath(logger.log_dir_of(version)) + os.sep):
            return version
    return None


def restore_modules(trainer: Trainer, path: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load `path` (or its already read `checkpoint`) into the module, datamodule and callbacks; return it."""
    module = trainer.lightning_module
    if checkpoint is None:
        checkpoint = trainer.strategy.load_checkpoint(path)  # through a CheckpointIO plugin, if one was given
    module.on_load_checkpoint(checkpoint)
    trainer.strategy.load_model_state_dict(module, checkpoint["state_dict"], strict=module.strict_loading)
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
    for cb in trainer.callbacks:  # e.g. BaseFinetuning re-adds the param groups the saved states have
        if hasattr(cb, "_before_optimizer_restore"):
            cb._before_optimizer_restore(trainer)
    for opt, state in zip(trainer._optimizers, checkpoint["optimizer_states"]):
        trainer.strategy.load_optimizer_state_dict(trainer.lightning_module, opt.optimizer, state)
    for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
        config.scheduler.load_state_dict(state)
    trainer._precision.load_state_dict(checkpoint.get("MixedPrecision", {}))
    s = trainer.state
    if "resume" in checkpoint:
        s.load_state_dict(checkpoint["resume"])
        resume = dict(checkpoint["resume"])
        ranks = resume.pop("ranks", None)
        if ranks is not None and len(ranks) == trainer.world_size:  # each rank resumes its own random state
            resume.update(ranks[trainer.global_rank])
        trainer.run_state.resume = resume  # random and data-order state, applied at the epoch's start
    else:  # a checkpoint from PyTorch Lightning or another tool
        s.load_state_dict(foreign_resume_point(checkpoint))
    if s.epoch_finished:
        s.epoch, s.batches_done, s.epoch_finished = s.epoch + 1, 0, False
    # As in Lightning: resuming past max_epochs is a mistake, not a fit that trains nothing
    # (equal is fine: that run simply finished).
    if trainer.max_epochs not in (-1, None) and s.epoch > trainer.max_epochs:
        raise MisconfigurationException(
            f"You restored a checkpoint with current_epoch={s.epoch}, but you have set "
            f"Trainer(max_epochs={trainer.max_epochs}). Received: ckpt_path={path!r}. "
            f"Fix: set max_epochs to at least {s.epoch}, or fit without ckpt_path."
        )
    rank_zero_info(f"Resumed from {path} at epoch {s.epoch}, step {s.global_step}.")


def foreign_resume_point(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The resume point (`TrainerState.state_dict()` keys) of a checkpoint fulmen did not write.

    PyTorch Lightning records its loops' progress counters under "loops". Its end-of-epoch
    checkpoints (ModelCheckpoint's default) have the epoch's end processed: training continues
    at the next epoch. A checkpoint from inside an epoch (`every_n_train_steps`, validation
    mid-epoch) continues that epoch after the last batch it trained on; the batches before are
    skipped by index, as for fulmen's own checkpoints. (Lightning itself would restart the
    epoch's data from its first batch.) Lightning does not store the data order or random
    state, so with shuffling the rest of the epoch is not the one the original run would have
    seen. Without "loops", the checkpoint is taken to be from the end of its epoch.
    """
    epoch, step = checkpoint.get("epoch", 0), checkpoint.get("global_step", 0)
    end_of_epoch = {"epoch": epoch, "global_step": step, "batches_done": 0, "epoch_finished": True, "log_step": step}
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    try:
        epochs = fit["epoch_progress"]["current"]
        batches = fit["epoch_loop.batch_progress"]
        stepped = int(fit["epoch_loop.state_dict"].get("_batches_that_stepped", step))
        done, total = int(batches["current"]["processed"]), int(batches["total"]["processed"])
        epoch_ended = epochs["processed"] > epochs["completed"]
    except (KeyError, TypeError, AttributeError, ValueError):
        return end_of_epoch
    if epoch_ended:
        return {**end_of_epoch, "batches_total": total, "log_step": stepped}
    # Saved after a batch, before Lightning counted it among the batches that stepped (it counts
    # them once validation is done): the loggers' next step is one further.
    return {"epoch": epoch, "global_step": step, "batches_done": done, "batches_total": total,
            "epoch_finished": False, "log_step": stepped + 1 if done else stepped}
