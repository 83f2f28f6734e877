"""Lightning's precision plugins, on fulmen's one precision implementation (`fulmen.precision`).

Each plugin *is* a `fulmen.precision.Precision` with its precision fixed by its class, so the
Trainer runs a plugin passed in `Trainer(plugins=[...])` exactly as it runs `Trainer(precision=...)`,
and a subclass that overrides `convert_module`, `convert_input`, `forward_context` or
`optimizer_step` has its override called. Which plugin means which precision:

- `Precision()`: "32-true"; `DoublePrecision()`: "64-true";
- `HalfPrecision("16-true" | "bf16-true")`: the weights and inputs in that dtype;
- `MixedPrecision("16-mixed" | "bf16-mixed", device, scaler=None)`: autocast on `device`'s type,
  a GradScaler for "16-mixed" (the one given, or a new one);
- `FSDPPrecision(precision, scaler=None)`: any of the five under `strategy="fsdp"` (FSDP2 takes the
  same precision machinery as the other strategies).

>>> DoublePrecision().true_dtype
torch.float64
"""

from __future__ import annotations

from typing import Any

import torch

from fulmen.precision import Precision as _Engine
from fulmen.precision import parse_precision

__all__ = ["DoublePrecision", "FSDPPrecision", "HalfPrecision", "MixedPrecision", "Precision"]


def _choose(plugin: str, given: Any, allowed: tuple[str, ...]) -> str:
    """`given` in fulmen's spelling ("16" -> "16-mixed"), or a ValueError (Lightning's type here)."""
    name = parse_precision(given) if str(given) in ("16", "bf16", "32", "64") else given
    if name not in allowed:
        raise ValueError(
            f"{plugin} does not run this precision. Received: precision={given!r}. "
            f"Fix: use one of {list(allowed)}."
        )
    return name


def _check_scaler(plugin: str, precision: str, scaler: Any) -> None:
    if scaler is not None and precision != "16-mixed":
        raise ValueError(
            f"{plugin}(precision={precision!r}) does not scale the loss, so it takes no GradScaler. "
            f"Received: scaler={scaler!r}. Fix: drop scaler=, or use precision='16-mixed'."
        )


class Precision(_Engine):
    """Lightning's base precision plugin: full float32 ("32-true"). Subclass it to change how the
    module, the inputs or the optimizer step are treated."""

    _precision = "32-true"

    def __init__(self) -> None:
        # The device only matters for autocast and the GradScaler; the Trainer gives its own (`bind`).
        super().__init__(self._precision, torch.device("cpu"))
        self._own_device = False

    def bind(self, device: torch.device) -> Precision:
        """This plugin, set up to run on the Trainer's `device` (unless the plugin names its own)."""
        if not self._own_device:
            self.device = device
            if self.precision == "16-mixed" and self._fresh_scaler:
                self.scaler = torch.amp.GradScaler(device.type)
        return self

    _fresh_scaler = False  # whether `scaler` was made here (and so may follow the Trainer's device)


class DoublePrecision(Precision):
    """float64 weights and inputs ("64-true")."""

    _precision = "64-true"


class HalfPrecision(Precision):
    """float16 or bfloat16 weights and inputs ("16-true", the default, or "bf16-true")."""

    def __init__(self, precision: str = "16-true") -> None:
        self._precision = _choose("HalfPrecision", precision, ("16-true", "bf16-true"))
        super().__init__()


class MixedPrecision(Precision):
    """float32 weights, the forward under `torch.autocast` on `device` ("16-mixed" or "bf16-mixed").

    >>> MixedPrecision("bf16-mixed", device="cpu").autocast_dtype
    torch.bfloat16
    """

    def __init__(self, precision: str, device: str, scaler: torch.amp.GradScaler | None = None) -> None:
        self._precision = _choose("MixedPrecision", precision, ("16-mixed", "bf16-mixed"))
        _check_scaler("MixedPrecision", self._precision, scaler)
        _Engine.__init__(self, self._precision, torch.device(device))
        self._own_device = True  # Lightning autocasts on the plugin's device, not the Trainer's
        if scaler is not None:
            self.scaler = scaler


class FSDPPrecision(Precision):
    """The precision of an FSDP run: any of "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"."""

    def __init__(self, precision: str, scaler: Any = None) -> None:
        self._precision = _choose(
            "FSDPPrecision", precision, ("32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"))
        _check_scaler("FSDPPrecision", self._precision, scaler)
        super().__init__()
        self._fresh_scaler = scaler is None
        if scaler is not None:
            self.scaler = scaler
