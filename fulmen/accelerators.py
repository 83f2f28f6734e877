"""Which device to run on: parsing `accelerator` and `devices`, and what "auto" means.

"auto" picks CUDA when available, then MPS, then CPU. This file decides the device of the
one process that runs here; several processes (DDP/FSDP) are the strategies' business.
"""

from __future__ import annotations

from typing import Any

import torch

from fulmen.errors import MisconfigurationException

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
