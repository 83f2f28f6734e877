"""Batch-size search: the largest batch size whose training steps fit in memory.

`scale_batch_size` runs inside a set-up `fit` (from `BatchSizeFinder.on_fit_start`, which
`Tuner.scale_batch_size` also uses). Each trial sets the model's (or datamodule's) `batch_size`,
rebuilds the training DataLoader from `train_dataloader()` and runs `steps_per_trial` real
training steps; an out-of-memory error ends the trial as "too big". Modes, as in Lightning:
"power" doubles until a trial fails; "binsearch" then bisects between the last success and the
first failure. Afterwards the whole training state is put back (`fulmen/tuner/snapshot.py`) and
the training data is rebuilt with the size found.

fulmen's own argument `max_memory_bytes` sets a memory budget that a trial must also fit in,
which makes the search usable (and testable) without a GPU. What counts as a trial's memory: on
CUDA, `torch.cuda.max_memory_allocated` during the trial; elsewhere, the largest over its steps
of the bytes of the batch plus the tensors autograd saves for backward (the activations, the part
that grows with the batch size).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import torch

from fulmen import dataloading
from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.tuner import snapshot
from fulmen.tuner.lr_finder import get_attr, set_attr

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

__all__ = ["is_oom_error", "scale_batch_size"]


def check_batch_size_search(trainer: Trainer) -> None:
    """What Lightning's batch-size search refuses: several processes (each would search on its own
    shard and find its own size)."""
    if trainer.strategy.distributed:
        raise MisconfigurationException(
            "The batch size search runs in one process; with several, each would find its own size. "
            f"Received: strategy={type(trainer.strategy).__name__} with world_size={trainer.world_size}. "
            "Fix: search with Trainer(devices=1), then train with the size found."
        )


def is_oom_error(exception: BaseException) -> bool:
    """Whether `exception` means the memory ran out (CUDA, cuDNN or the CPU allocator)."""
    if isinstance(exception, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    if not isinstance(exception, RuntimeError) or not exception.args:
        return False
    text = str(exception.args[0])
    return (
        "out of memory" in text
        or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in text
        or "DefaultCPUAllocator: can't allocate memory" in text
    )


class _MemoryBudgetExceeded(RuntimeError):
    """A trial that went over `max_memory_bytes`: handled exactly like a real out-of-memory error."""


def _free_memory(force: bool = False) -> None:
    """Free what a trial left behind. On CPU only after an out-of-memory error: a collection
    costs more than a small trial."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if force or cuda:
        gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


class _MemoryMeter(Callback):
    """Measures a trial's memory (see the module docstring) and ends it when over budget."""

    def __init__(self, budget: int | None, device: torch.device) -> None:
        self.budget, self.device = budget, device
        self.cuda = device.type == "cuda"
        self.peak = 0
        self._step_bytes = 0
        self._seen: set[tuple[int, int]] = set()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in self._seen:  # views of one storage count once
            self._seen.add(key)
            self._step_bytes += storage.nbytes()
        return tensor

    def hooks(self) -> Any:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._seen.clear()
        self._step_bytes = _tensor_bytes(batch)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        used = torch.cuda.max_memory_allocated(self.device) if self.cuda else self._step_bytes
        self.peak = max(self.peak, used)
        if self.budget is not None and used > self.budget:
            raise _MemoryBudgetExceeded(
                f"out of memory: a training step used {used} bytes, over max_memory_bytes={self.budget}"
            )


def _dataset_length(trainer: Trainer) -> int | None:
    try:
        return len(trainer.train_dataloader.dataset)
    except (AttributeError, TypeError):
        return None


def scale_batch_size(
    trainer: Trainer, model: LightningModule, mode: str = "power", steps_per_trial: int = 3, init_val: int = 2,
    max_trials: int = 25, batch_arg_name: str = "batch_size", margin: float = 0.05, max_val: int = 8192,
    max_memory_bytes: int | None = None,
) -> int | None:
    """Run the search inside a set-up `fit` (see the module docstring); return the size found,
    which is also set on the model (or datamodule) and used for the rest of the fit. Under
    `fast_dev_run` it is skipped (None), as in Lightning."""
    if mode not in ("power", "binsearch"):
        raise MisconfigurationException(
            f"scale_batch_size(mode=...) must be 'power' or 'binsearch'. Received: mode={mode!r}. Fix: mode='power'."
        )
    if not 0.0 <= margin < 1.0:
        raise MisconfigurationException(f"`margin` must be in [0, 1). Received: margin={margin!r}. Fix: e.g. 0.05.")
    check_batch_size_search(trainer)
    if trainer.fast_dev_run:
        warn_once("scale_batch_size is skipped under fast_dev_run. Fix: run the search without fast_dev_run.")
        return None
    if trainer.run_state.fit_data.get("train") is not None:
        raise MisconfigurationException(
            "The batch size search rebuilds the training DataLoader with each size, so it needs the data from "
            "train_dataloader(). Received: train_dataloaders passed to fit. Fix: define train_dataloader() on the "
            "model or datamodule using self.batch_size (or hparams.batch_size)."
        )
    datamodule = trainer.datamodule
    try:
        get_attr(model, batch_arg_name, datamodule)  # a clear error now when there is no such field
    except AttributeError as exc:  # Lightning raises a MisconfigurationException here (lr_find: AttributeError)
        raise MisconfigurationException(str(exc)) from None
    saved = snapshot.take(trainer)
    meter = _MemoryMeter(max_memory_bytes, trainer.device)
    try:
        set_attr(model, batch_arg_name, init_val, datamodule)
        _prepare_trials(trainer, model, meter)
        search = _power if mode == "power" else _binsearch
        new_size = search(trainer, model, batch_arg_name, steps_per_trial, init_val, max_trials, max_val, meter)
        if mode == "binsearch" and margin > 0:
            new_size = max(1, int(new_size * (1 - margin)))
    finally:
        snapshot.restore(trainer, saved)
        _free_memory()
    set_attr(model, batch_arg_name, new_size, datamodule)
    dataloading.reload_fit_dataloaders(trainer)  # the rest of the fit uses the size found
    return new_size


def _prepare_trials(trainer: Trainer, model: LightningModule, meter: _MemoryMeter) -> None:
    from fulmen.hooks import HookDispatch

    trainer.callbacks, trainer.loggers = [meter], []
    trainer.run_state.after_batch.clear()  # in place: the loop holds the list (snapshot.restore refills it)
    trainer.lr_scheduler_configs = []
    trainer._hooks = HookDispatch(trainer, model, trainer.callbacks)
    trainer.max_epochs, trainer.min_epochs, trainer.min_steps = -1, None, None
    trainer.run_state.val_enabled, trainer.run_state.resume, trainer.run_state.deadline = False, None, None
    trainer.reload_dataloaders_every_n_epochs = 0


def _trial(trainer: Trainer, steps: int, meter: _MemoryMeter) -> None:
    """`steps` training steps with the current batch size; raises on out-of-memory."""
    from fulmen import loop

    s = trainer.state
    dataloading.load_train_dataloader(trainer)
    s.batches_done, s.should_stop = 0, False
    trainer.max_steps = s.global_step + steps
    if meter.cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    with meter.hooks():
        while not loop._fit_done(trainer):
            loop.run_train_epoch(trainer)


def _try(trainer: Trainer, steps: int, meter: _MemoryMeter) -> bool:
    """Run a trial: True when it fits (on every process), False on out-of-memory; any other error propagates."""
    _free_memory()
    fits = True
    try:
        _trial(trainer, steps, meter)
    except BaseException as exc:
        if not is_oom_error(exc):
            raise
        trainer.run_state.in_batch = False
        del exc  # its traceback holds the failed step's tensors
        _free_memory(force=True)
        fits = False
    if trainer.world_size > 1:  # all processes take the same next size
        fits = trainer.strategy.reduce_boolean_decision(fits, all=True)
    return fits


def _next_size(trainer: Trainer, size: int, factor: float, max_val: int) -> tuple[int, bool]:
    """(the size to try next, whether it differs): doubling stops at the dataset's length and at max_val."""
    length = _dataset_length(trainer)
    if factor > 1 and length is not None and size >= length:
        return size, False
    new = min(max(1, int(size * factor)), max_val)
    return new, new != size


def _power(trainer: Trainer, model: Any, name: str, steps: int, size: int, max_trials: int, max_val: int,
           meter: _MemoryMeter) -> int:
    """Double while trials fit; on a failure halve, and stop when an earlier size fitted."""
    any_success = False
    for i in range(max_trials):
        if size >= max_val:
            break
        if _try(trainer, steps, meter):
            if i + 1 >= max_trials:
                break
            size, changed = _next_size(trainer, size, 2.0, max_val)
            if not changed:
                break
            any_success = True
        else:
            size, _ = _next_size(trainer, size, 0.5, max_val)
            if any_success:
                break
        set_attr(model, name, size, trainer.datamodule)
    return size


def _binsearch(trainer: Trainer, model: Any, name: str, steps: int, size: int, max_trials: int, max_val: int,
               meter: _MemoryMeter) -> int:
    """Double until a failure, then bisect between the largest success and the smallest failure."""
    low, high, count = 1, None, 0
    while True:
        if size >= max_val:
            break
        if _try(trainer, steps, meter):
            count += 1
            if count >= max_trials:
                break
            low = size
            if high is not None:
                if high - low <= 1:
                    break
                size, changed = (high + low) // 2, True
            else:
                size, changed = _next_size(trainer, size, 2.0, max_val)
            if not changed:
                break
        else:
            high = size
            size = max(1, (high + low) // 2)
            if high - low <= 1:
                set_attr(model, name, size, trainer.datamodule)
                break
        set_attr(model, name, size, trainer.datamodule)
    return size
