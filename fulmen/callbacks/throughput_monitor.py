"""`ThroughputMonitor`: batches/s, samples/s (items/s, FLOP/s) for training, validation, test and predict.

As in Lightning 2.x: the callback keeps running totals per stage (time, batches, samples, and items
when `length_fn` is given) and rates over the last `window_size` updates. FLOP/s needs the FLOPs of
one batch, read from the module's `flops_per_batch` attribute (e.g. from `torch.utils.flop_counter`);
MFU needs `available_flops` (the device's peak), which `get_available_flops` looks up for the common
data-center GPUs when it is not given. Metrics are named "<stage>/<metric>", e.g.
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
from fulmen.loop import is_accumulating, should_update_logs

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


def _now() -> float:
    return time.perf_counter()


# Peak dense (no sparsity) tensor FLOP/s of one GPU, in TFLOP/s, from NVIDIA's datasheets. "tf32" is
# float32 matmuls on tensor cores, what float32 runs at once torch.set_float32_matmul_precision is not
# "highest". The H200 computes as the H100 SXM (its datasheet's larger figures count sparsity).
_GPU_TFLOPS: dict[str, dict[str, float]] = {
    "h200": {"float64": 33.5, "float32": 66.9, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4, "int8": 1978.9},
    "h100 sxm": {"float64": 33.5, "float32": 66.9, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4, "int8": 1978.9},
    "h100 pcie": {"float64": 25.6, "float32": 51.2, "tf32": 378, "bfloat16": 756, "float16": 756, "int8": 1513},
    "a100": {"float64": 9.7, "float32": 19.5, "tf32": 156, "bfloat16": 312, "float16": 312, "int8": 624},
    "a10g": {"float32": 31.2, "tf32": 62.5, "bfloat16": 125, "float16": 125, "int8": 250},
    "l40": {"float32": 90.5, "tf32": 90.5, "bfloat16": 181, "float16": 181, "int8": 362},
    "l4": {"float32": 30.3, "tf32": 60, "bfloat16": 121, "float16": 121, "int8": 242},
    "t4": {"float32": 8.1, "float16": 65, "int8": 130},
    "v100 sxm": {"float64": 7.8, "float32": 15.7, "float16": 125},
    "v100 pcie": {"float64": 7, "float32": 14, "float16": 112},
}
_PRECISION_DTYPES = {"64-true": torch.float64, "32-true": torch.float32, "16-mixed": torch.float16,
                     "16-true": torch.float16, "bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16}


def _chip(device_name: str) -> str | None:
    """The `_GPU_TFLOPS` key for a CUDA device name such as "NVIDIA H100 80GB HBM3"."""
    name = device_name.lower()
    if "h200" in name:
        return "h200"
    if "h100" in name:
        # The SXM part reports HBM3 memory; the PCIe one "PCIe" (or HBM2e). NVL is not in the table.
        return "h100 sxm" if "hbm3" in name or "sxm" in name else "h100 pcie" if "pcie" in name or "hbm2e" in name \
            else None
    if "v100" in name:
        return "v100 sxm" if "sxm" in name else "v100 pcie" if "pcie" in name and "v100s" not in name else None
    for chip in ("a100", "a10g", "l40", "l4", "t4"):
        if chip in name and not (chip == "l40" and "l40s" in name):
            return chip
    return None


def get_available_flops(device: torch.device, dtype: torch.dtype | str) -> int | None:
    """One device's theoretical peak FLOP/s for `dtype` (e.g. torch.bfloat16), or None where unknown.

    Known: the data-center GPUs in `_GPU_TFLOPS` (H200, H100, A100, A10G, L40, L4, T4, V100); None
    without a warning on CPU and MPS, and with one for another GPU or a dtype the chip lacks. An
    optimistic bound (large matmuls only), meant as the denominator of MFU.

    >>> get_available_flops(torch.device("cpu"), torch.float32) is None
    True
    """
    if device.type != "cuda":
        return None
    device_name = torch.cuda.get_device_name(device)
    chip = _chip(device_name)
    if chip is None:
        warn_once(f"The peak FLOP/s of this GPU are not known to fulmen, so MFU is not reported. "
                  f"Received: device name {device_name!r}. Fix: pass available_flops= (FLOP/s of one device).")
        return None
    key = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if key == "float32" and torch.get_float32_matmul_precision() != "highest" and "tf32" in _GPU_TFLOPS[chip]:
        key = "tf32"
    if key not in _GPU_TFLOPS[chip]:
        warn_once(f"{device_name!r} has no published peak for this dtype. Received: dtype={dtype}. "
                  "Fix: pass available_flops= (FLOP/s of one device) to get MFU.")
        return None
    return int(_GPU_TFLOPS[chip][key] * 1e12)


class Throughput:
    """Running totals and windowed rates: `update(time=, batches=, samples=, lengths=, flops=)`, then `compute()`.

    `time`, `batches`, `samples` and `lengths` are this device's totals since the start, and must grow
    with every update; `flops` is the count of the latest batch on one device. Rates are computed once
    `window_size` updates have been seen: per device ("device/samples_per_sec", ...) and, with
    `world_size` > 1, for the whole run ("samples_per_sec", ...: the device rate times `world_size`,
    assuming every device works alike). `available_flops` is one device's peak, for "device/mfu".

    >>> t = Throughput(window_size=2)
    >>> t.update(time=1.0, batches=1, samples=8); t.update(time=3.0, batches=2, samples=16)
    >>> t.compute()["device/samples_per_sec"]
    4.0
    """

    def __init__(self, available_flops: float | None = None, world_size: int = 1, window_size: int = 100,
                 separator: str = "/") -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"Throughput needs world_size >= 1 (the number of devices). Received: "
                             f"world_size={world_size!r}. Fix: pass trainer.world_size.")
        if window_size < 2:
            raise ValueError(f"Throughput needs window_size >= 2 to measure a rate. Received: window_size={window_size}.")
        self.available_flops = available_flops
        self.world_size = world_size
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
        if lengths is not None and lengths < samples:
            raise ValueError(f"Expected lengths ({lengths}) >= samples ({samples}): check length_fn.")
        if lengths is not None and len(self._lengths) != len(self._samples):
            raise RuntimeError(
                f"Throughput got `lengths` in some updates but not others ({len(self._lengths)} of "
                f"{len(self._samples)} so far). Fix: pass lengths in every update, or in none."
            )
        # A total that does not grow is a caller's bug (a reset clock, a counter per batch instead of
        # a running total), and would divide by zero below.
        for name, window, value in (("time", self._time, time), ("batches", self._batches, batches),
                                    ("samples", self._samples, samples), ("lengths", self._lengths, lengths)):
            if value is not None and window and window[-1] >= value:
                raise ValueError(f"Expected `{name}` to increase with every update (it is a running total). "
                                 f"Received: {name}={value} after {window[-1]}.")
        self._time.append(time)
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            self._lengths.append(lengths)
        if flops is not None:
            self._flops.append(flops * self.world_size)  # the whole run's work

    def compute(self) -> dict[str, float]:
        sep = self.separator
        run_wide = self.world_size > 1
        out: dict[str, float] = {"time": self._time[-1], "batches": self._batches[-1], "samples": self._samples[-1]}
        if self._lengths:
            out["lengths"] = self._lengths[-1]
        if len(self._time) == self._time.maxlen:
            elapsed = self._time[-1] - self._time[0]
            rates = {"batches_per_sec": (self._batches[-1] - self._batches[0]) / elapsed,
                     "samples_per_sec": (self._samples[-1] - self._samples[0]) / elapsed}
            if len(self._lengths) == self._lengths.maxlen:
                rates["items_per_sec"] = (self._lengths[-1] - self._lengths[0]) / elapsed
            for name, rate in rates.items():
                out[f"device{sep}{name}"] = rate
                if run_wide:
                    out[name] = rate * self.world_size
        if len(self._flops) == self._flops.maxlen:
            # The window's first entry is the work done before its first time stamp: not counted.
            flops_per_sec = (sum(self._flops) - self._flops[0]) / (self._time[-1] - self._time[0])
            if run_wide:
                out["flops_per_sec"] = flops_per_sec
            device_flops = flops_per_sec / self.world_size
            out[f"device{sep}flops_per_sec"] = device_flops
            if self.available_flops:
                out[f"device{sep}mfu"] = device_flops / self.available_flops
        return out

    def reset(self) -> None:
        for window in (self._time, self._batches, self._samples, self._lengths, self._flops):
            window.clear()


class ThroughputMonitor(Callback):
    """Measure and log throughput.

    Args:
        batch_size_fn: samples in a batch, e.g. `lambda batch: batch[0].size(0)`.
        length_fn: items in a batch (e.g. tokens), for items/s.
        **kwargs: `window_size` (default 100), `separator` ("/"), `available_flops` (one device's peak FLOP/s,
            for MFU; looked up with `get_available_flops` when not given).

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
        self._run_kwargs: dict[str, Any] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Decided per run (the device may differ between runs); a value the user gave wins.
        self._run_kwargs = {"world_size": trainer.world_size}
        if "available_flops" not in self.kwargs:
            dtype = _PRECISION_DTYPES.get(trainer.precision, torch.float32)
            self._run_kwargs["available_flops"] = get_available_flops(trainer.device, dtype)
        self._throughputs.clear()

    def _start(self, stage: str) -> None:
        if stage not in self._throughputs:
            self._throughputs[stage] = Throughput(**self._run_kwargs, **self.kwargs)
        throughput = self._throughputs[stage]
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
        self._update(trainer, pl_module, batch, "train")
        s = trainer.state
        # As Lightning: once the optimizer stepped, when the step is due for logging (or training stops).
        if should_update_logs(trainer) and not is_accumulating(trainer):
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
