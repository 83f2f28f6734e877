"""Lightning's strategies that fulmen does not run: importable under their names, refusing to be built.

Lightning code that imports `DeepSpeedStrategy` or `XLAStrategy` (often only to test
`isinstance(trainer.strategy, ...)`) loads; building one, or naming one in `Trainer(strategy=...)`,
raises a `MisconfigurationException` that says what to use instead. `UNSUPPORTED_NAMES` holds the
error for each of Lightning's strategy names that fulmen does not accept.
"""

from __future__ import annotations

from typing import Any

from fulmen.errors import MisconfigurationException
from fulmen.strategies.ddp import DDPStrategy
from fulmen.strategies.single import SingleDeviceStrategy

_DEEPSPEED_FIX = "use 'ddp', or 'fsdp' (FSDPStrategy) to shard parameters, gradients and optimizer state as ZeRO-3 does"
_XLA_FIX = "fulmen runs on CUDA, MPS and CPU: use accelerator='cuda' with strategy='ddp' or 'fsdp'"


def _call_text(cls_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{cls_name}({', '.join(shown)})"


class _Refused:
    """Mixin: building the class raises, naming it and what it was given."""

    _what = ""
    _fix = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise MisconfigurationException(
            f"{type(self).__name__} is not supported by fulmen{self._what}. "
            f"Received: strategy={_call_text(type(self).__name__, args, kwargs)}. Fix: {self._fix}."
        )


class DeepSpeedStrategy(_Refused, DDPStrategy):
    """Lightning's DeepSpeed (ZeRO) strategy: not run by fulmen."""

    _fix = _DEEPSPEED_FIX


class XLAStrategy(_Refused, DDPStrategy):
    """Lightning's multi-TPU strategy: not run by fulmen."""

    _fix = _XLA_FIX


class SingleDeviceXLAStrategy(_Refused, SingleDeviceStrategy):
    """Lightning's one-TPU strategy: not run by fulmen."""

    _fix = _XLA_FIX


def _refusal(name: str, why: str, fix: str) -> str:
    return f"strategy={name!r} is not supported by fulmen{why}. Received: strategy={name!r}. Fix: {fix}."


def _unsupported_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for name in ("deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
                 "deepspeed_stage_3", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme"):
        names[name] = _refusal(name, " (DeepSpeed)", _DEEPSPEED_FIX)
    for name in ("xla", "xla_debug", "single_xla", "single_tpu", "xla_fsdp", "tpu_spawn"):
        names[name] = _refusal(name, " (XLA/TPU)", _XLA_FIX)
    for start in ("ddp_fork", "ddp_notebook"):
        for suffix in ("", "_find_unused_parameters_false", "_find_unused_parameters_true"):
            name = start + suffix
            names[name] = _refusal(
                name, " (fulmen does not fork processes: CUDA cannot be used in a forked process)",
                f"use 'ddp{suffix}' from a script, or 'ddp_spawn{suffix}'",
            )
    names["fsdp_cpu_offload"] = _refusal(
        "fsdp_cpu_offload", " (fulmen's FSDPStrategy does not offload to CPU)",
        "use strategy='fsdp', with fewer or smaller shard groups (FSDPStrategy(auto_wrap_policy=...)) to save memory",
    )
    return names


UNSUPPORTED_NAMES = _unsupported_names()
