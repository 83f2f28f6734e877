"""`DeviceStatsMonitor`: log device statistics around each batch.

On CUDA the statistics are `torch.cuda.memory_stats(device)` (allocated/reserved bytes, peaks,
allocation counts, ...). On CPU they are read from Linux's /proc without psutil: "cpu_vm_percent"
(memory in use), "cpu_swap_percent", "cpu_percent" (CPU busy time since the previous reading, all
cores) and "cpu_rss_bytes" (this process's resident memory, fulmen's addition). Where /proc does not
exist (macOS, Windows) CPU statistics are skipped with a warning.

Names are "DeviceStatsMonitor.<hook><separator><stat>", e.g.
"DeviceStatsMonitor.on_train_batch_start/cpu_vm_percent", logged at the steps `log_every_n_steps`
selects (evaluation: every n-th batch of the run), as in Lightning.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.loop import should_update_logs

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    return out


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


class _CpuStats:
    """CPU statistics from /proc; `cpu_percent` covers the time since the previous call."""

    def __init__(self) -> None:
        self._last = _cpu_times()

    def __call__(self) -> dict[str, float]:
        mem = _meminfo()
        total, available = mem["MemTotal"], mem.get("MemAvailable", mem.get("MemFree", 0))
        swap_total, swap_free = mem.get("SwapTotal", 0), mem.get("SwapFree", 0)
        busy, all_ = _cpu_times()
        d_busy, d_all = busy - self._last[0], all_ - self._last[1]
        self._last = (busy, all_)
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        return {
            "cpu_vm_percent": 100.0 * (total - available) / total,
            "cpu_percent": 100.0 * d_busy / d_all if d_all else 0.0,
            "cpu_swap_percent": 100.0 * (swap_total - swap_free) / swap_total if swap_total else 0.0,
            "cpu_rss_bytes": float(rss_pages * os.sysconf("SC_PAGE_SIZE")),
        }


def get_cpu_stats() -> dict[str, float]:
    """One reading of the CPU statistics (cpu_percent since boot)."""
    stats = _CpuStats()
    stats._last = (0, 0)
    return stats()


class DeviceStatsMonitor(Callback):
    """Log device statistics during training, validation and test.

    Args:
        cpu_stats: None: CPU statistics when training on CPU; True: also on a GPU run; False: never.

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[DeviceStatsMonitor()], log_every_n_steps=10)
    """

    def __init__(self, cpu_stats: bool | None = None) -> None:
        self._cpu_stats = cpu_stats
        self._cpu: _CpuStats | None = None
        self._counts: dict[str, int] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and not trainer.loggers:
            raise MisconfigurationException(
                "DeviceStatsMonitor logs to the Trainer's loggers, but it has none. Received: logger=False. "
                "Fix: give the Trainer a logger, or drop the callback."
            )
        wants_cpu = self._cpu_stats is True or (self._cpu_stats is None and trainer.device.type == "cpu")
        if wants_cpu:
            if os.path.exists("/proc/meminfo") and os.path.exists("/proc/stat"):
                self._cpu = _CpuStats()
            else:
                warn_once("DeviceStatsMonitor reads CPU statistics from /proc, which this system lacks; "
                          "they are not logged.")

    def _stats(self, trainer: Trainer) -> dict[str, float]:
        stats: dict[str, float] = {}
        device = trainer.device
        if device.type == "cuda":
            stats.update({k: float(v) for k, v in torch.cuda.memory_stats(device).items()})
        if self._cpu is not None:
            stats.update(self._cpu())
        return stats

    def _log(self, trainer: Trainer, hook: str, due: bool, step: int) -> None:
        if not due:
            return
        stats = self._stats(trainer)
        if not stats:
            return
        for logger in trainer.loggers:
            prefix = f"{type(self).__qualname__}.{hook}{getattr(logger, 'group_separator', '/')}"
            logger.log_metrics({prefix + k: v for k, v in stats.items()}, step=step)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._log(trainer, "on_train_batch_start", should_update_logs(trainer), trainer.state.log_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # The logging step has moved past this batch already; the stats belong to the batch's step.
        s = trainer.state
        self._log(trainer, "on_train_batch_end", should_update_logs(trainer), max(s.log_step - 1, 0))

    def _eval(self, trainer: Trainer, hook: str, batch_idx: int) -> None:
        if trainer.sanity_checking:
            return
        # As in Lightning: the batch counts as started once its start hook runs.
        self._log(trainer, hook, (batch_idx + 1) % trainer.log_every_n_steps == 0, trainer.state.log_step)

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._eval(trainer, "on_validation_batch_start", batch_idx)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval(trainer, "on_validation_batch_end", batch_idx)

    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self._eval(trainer, "on_test_batch_start", batch_idx)

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval(trainer, "on_test_batch_end", batch_idx)
