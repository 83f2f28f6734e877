"""`ThroughputMonitor`: batches/s, samples/s (items/s, FLOP/s) for training, validation, test and predict.

As in Lightning 2.x: the callback keeps running totals per stage (time, batches, samples, and items
when `length_fn` is given) and rates over the last `window_size` updates. FLOP/s needs the FLOPs of
one batch, read from the module's `flops_per_batch` attribute (e.g. from `torch.utils.flop_counter`);
MFU needs `available_flops` (the device's peak). Metrics are named "<stage>/<metric>", e.g.
"train/samples", "train/device/samples_per_sec", "train/device/flops_per_sec", and go to the loggers
at the steps `log_every_n_steps` selects. Training time excludes the validation runs inside it.

Timing uses `time.perf_counter` (through `_now`, replaced by a fake clock in tests); on CUDA each
update first synchronizes, so that the time covers the work queued on the device.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.errors import warn_once

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


def _now() -> float:
    return time.perf_counter()


class Throughput:
    """Running totals and windowed rates: `update(time=, batches=, samples=, lengths=, flops=)`, then `compute()`.

    `time`, `batches`, `samples` and `lengths` are totals since the start; `flops` is the count of
    the latest batch. Rates are computed once `window_size` updates have been seen.
    """

    def __init__(self, available_flops: float | None = None, window_size: int = 100, separator: str = "/") -> None:
        if window_size < 2:
            raise ValueError(f"Throughput needs window_size >= 2 to measure a rate. Received: window_size={window_size}.")
        self.available_flops = available_flops
        self.separator = separator
        self._time: deque[float] = deque(maxlen=window_size)
        self._batches: deque[int] = deque(maxlen=window_size)
        self._samples: deque[int] = deque(maxlen=window_size)
        self._lengths: deque[int] = deque(maxlen=window_size)
        self._flops: deque[float] = deque(maxlen=window_size)

    def update(self, *, time: float, batches: int, samples: int, lengths: int | None = None,
               flops: float | None = None) -> None:
        if samples < batches:
            raise ValueError(f"Expected samples ({samples}) >= batches ({batches}): check batch_size_fn.")
        self._time.append(time)
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            self._lengths.append(lengths)
        if flops is not None:
            self._flops.append(flops)

    def compute(self) -> dict[str, float]:
        sep = self.separator
        out: dict[str, float] = {"time": self._time[-1], "batches": self._batches[-1], "samples": self._samples[-1]}
        if self._lengths:
            out["lengths"] = self._lengths[-1]
        full = len(self._time) == self._time.maxlen
        if full:
            elapsed = self._time[-1] - self._time[0]
            out[f"device{sep}batches_per_sec"] = (self._batches[-1] - self._batches[0]) / elapsed
            out[f"device{sep}samples_per_sec"] = (self._samples[-1] - self._samples[0]) / elapsed
            if len(self._lengths) == self._lengths.maxlen:
                out[f"device{sep}items_per_sec"] = (self._lengths[-1] - self._lengths[0]) / elapsed
        if len(self._flops) == self._flops.maxlen:
            # The window's first entry is the work done before its first time stamp: not counted.
            flops_per_sec = (sum(self._flops) - self._flops[0]) / (self._time[-1] - self._time[0])
            out[f"device{sep}flops_per_sec"] = flops_per_sec
            if self.available_flops:
                out[f"device{sep}mfu"] = flops_per_sec / self.available_flops
        return out

    def reset(self) -> None:
        for window in (self._time, self._batches, self._samples, self._lengths, self._flops):
            window.clear()


class ThroughputMonitor(Callback):
    """Measure and log throughput.

    Args:
        batch_size_fn: samples in a batch, e.g. `lambda batch: batch[0].size(0)`.
        length_fn: items in a batch (e.g. tokens), for items/s.
        **kwargs: `window_size` (default 100), `separator` ("/"), `available_flops` (peak FLOP/s, for MFU).

    Example:
        >>> import fulmen as pl
        >>> monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch[0].size(0), window_size=10)
        >>> trainer = pl.Trainer(callbacks=[monitor], log_every_n_steps=10)
    """

    def __init__(self, batch_size_fn: Callable[[Any], int], length_fn: Callable[[Any], int] | None = None,
                 **kwargs: Any) -> None:
        self.batch_size_fn = batch_size_fn
        self.length_fn = length_fn
        self.kwargs = kwargs
        self._throughputs: dict[str, Throughput] = {}
        self._t0s: dict[str, float] = {}
        self._samples: dict[str, int] = {}
        self._batches: dict[str, int] = {}
        self._lengths: dict[str, int] = {}
        self._val_started: float | None = None
        self._has_flops: bool | None = None

    def _start(self, stage: str) -> None:
        throughput = self._throughputs.setdefault(stage, Throughput(**self.kwargs))
        throughput.reset()
        self._samples[stage] = self._batches[stage] = self._lengths[stage] = 0
        self._t0s[stage] = _now()

    @torch.no_grad()
    def _update(self, trainer: Trainer, pl_module: LightningModule, batch: Any, stage: str) -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        elapsed = _now() - self._t0s[stage]
        if self._has_flops is None:
            self._has_flops = hasattr(pl_module, "flops_per_batch")
            if not self._has_flops:
                warn_once(f"ThroughputMonitor reports FLOP/s only when {type(pl_module).__name__} has a "
                          "`flops_per_batch` attribute (FLOPs of one batch, e.g. from torch.utils.flop_counter).")
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        if self.length_fn is not None:
            self._lengths[stage] += self.length_fn(batch)
        self._throughputs[stage].update(
            time=elapsed, batches=self._batches[stage], samples=self._samples[stage],
            lengths=None if self.length_fn is None else self._lengths[stage],
            flops=pl_module.flops_per_batch if self._has_flops else None,
        )

    def _log(self, trainer: Trainer, stage: str, step: int) -> None:
        throughput = self._throughputs[stage]
        metrics = {f"{stage}{throughput.separator}{k}": v for k, v in throughput.compute().items()}
        trainer._log_metrics(metrics, step=step)

    # --- training ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("train")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        from fulmen.loop import _accumulating

        self._update(trainer, pl_module, batch, "train")
        s = trainer.state
        # As Lightning: once the optimizer stepped, when the step is due for logging (or training stops).
        if trainer._log_due or (s.should_stop and not _accumulating(trainer)):
            self._log(trainer, "train", max(s.log_step - 1, 0))

    # --- evaluation -------------------------------------------------------------------------------
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_started = _now()
            self._start("validate")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._eval_batch(trainer, pl_module, batch, "validate")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Validation inside fit does not count as training time: move the training clock's origin on.
        if not trainer.sanity_checking and self._val_started is not None and "train" in self._t0s:
            self._t0s["train"] += _now() - self._val_started
        self._val_started = None

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test")

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch(trainer, pl_module, batch, "test")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("predict")

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch(trainer, pl_module, batch, "predict")

    def _eval_batch(self, trainer: Trainer, pl_module: LightningModule, batch: Any, stage: str) -> None:
        self._update(trainer, pl_module, batch, stage)
        done = self._batches[stage]
        if done % trainer.log_every_n_steps == 0:
            self._log(trainer, stage, done)
