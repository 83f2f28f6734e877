"""Which device to run on: parsing `accelerator` and `devices`, and what "auto" means.

"auto" picks CUDA when available, then MPS, then CPU. `setup_hardware` puts the Trainer's hardware
arguments together: this process's device, and the strategy that runs one process or several.
"""

from __future__ import annotations

from typing import Any

import torch

from fulmen.arguments import check_bool, check_int
from fulmen.errors import MisconfigurationException
from fulmen.strategies import Strategy, parse_strategy
from fulmen.strategies.environment import processes_per_node, slurm_detected, torchrun_detected

_ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _available(accelerator: str) -> int:
    """How many devices of this kind exist here."""
    if accelerator == "cuda":
        return torch.cuda.device_count()
    if accelerator == "mps":
        return 1 if _mps_available() else 0
    return 1  # one CPU "device" per process; more processes come from a strategy


def parse_accelerator(accelerator: Any) -> str:
    name = accelerator.lower() if isinstance(accelerator, str) else accelerator
    if name not in _ACCELERATORS:
        raise MisconfigurationException(
            f"Unknown accelerator. Received: accelerator={accelerator!r}. Fix: use one of {list(_ACCELERATORS)}."
        )
    if name == "gpu":
        name = "cuda"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name != "cpu" and _available(name) == 0:
        raise MisconfigurationException(
            f"accelerator={accelerator!r} was requested but no {name.upper()} device is available on this machine. "
            "Received: 0 devices. Fix: use accelerator='auto' or 'cpu'."
        )
    return name


def parse_devices(devices: Any, accelerator: str) -> list[int]:
    """Device indices for this machine; `devices` is "auto", an int, a list, or a string like "0,1"."""
    available = _available(accelerator)
    given = devices  # for the error messages: `devices` is rewritten below
    if devices == "auto" or devices == -1 or devices == "-1":
        return list(range(available)) if accelerator == "cuda" else [0]
    if isinstance(devices, str):
        try:
            devices = [int(d) for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
        except ValueError:
            devices = None  # falls through to the error below
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        indices = list(range(devices))
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, int) for d in devices):
        indices = list(devices)
    else:
        raise MisconfigurationException(
            f"`devices` must be a positive int, a list of device indices, or 'auto'. Received: devices={given!r}. "
            "Fix: e.g. devices=1, devices=[0], devices='auto'."
        )
    if accelerator != "cpu" and max(indices) >= available:
        raise MisconfigurationException(
            f"Asked for {accelerator} devices {indices}, but this machine has {available}. "
            f"Received: devices={given!r}. Fix: use at most {available} device(s), or devices='auto'."
        )
    return indices


def device_for(accelerator: str, index: int) -> torch.device:
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cuda", index)


def setup_hardware(
    accelerator: Any, strategy: Any, devices: Any, num_nodes: Any, sync_batchnorm: Any,
) -> tuple[str, list[int], Strategy, torch.device]:
    """(accelerator name, device indices, strategy, this process's device) for the Trainer's arguments."""
    accelerator = parse_accelerator(accelerator)
    if devices == "auto" and (torchrun_detected() or slurm_detected()):
        devices = processes_per_node()  # a launcher started the processes: one device each
    device_ids = parse_devices(devices, accelerator)
    check_int("num_nodes", num_nodes, 1)
    chosen = parse_strategy(strategy, len(device_ids) * num_nodes)
    if not chosen.distributed and (len(device_ids) > 1 or num_nodes > 1):
        raise MisconfigurationException(
            f"strategy={strategy!r} runs one process on one device, but {len(device_ids)} device(s) on "
            f"{num_nodes} node(s) were requested. Received: devices={devices!r}, num_nodes={num_nodes!r}. "
            "Fix: use strategy='ddp' (or 'auto') for several devices, or devices=1."
        )
    chosen.configure(accelerator, device_ids, num_nodes)
    device = device_for(accelerator, chosen.root_device_index(device_ids))
    chosen.root_device = device
    check_bool("sync_batchnorm", sync_batchnorm)
    if sync_batchnorm and chosen.distributed and accelerator == "cpu":
        raise MisconfigurationException(
            "sync_batchnorm=True needs GPUs: torch.nn.SyncBatchNorm does not run on CPU. Received: "
            "sync_batchnorm=True with accelerator='cpu'. Fix: drop sync_batchnorm on CPU, or use accelerator='gpu'."
        )
    return accelerator, device_ids, chosen, device
