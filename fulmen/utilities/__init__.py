"""Lightning's utilities at fulmen paths: one package serves `lightning.pytorch.utilities`,
`pytorch_lightning.utilities`, `lightning.fabric.utilities` and `lightning_fabric.utilities`.

| module | what it holds |
|---|---|
| `rank_zero` | `rank_zero_only` (with `.rank`), `rank_zero_info/warn/debug/deprecation`, `WarningCache` |
| `types` | the annotation names: `STEP_OUTPUT`, `OptimizerLRScheduler`, `_PATH`, `_DEVICE`, ... |
| `exceptions`, `warnings` | `MisconfigurationException` (fulmen's own class), `PossibleUserWarning`, ... |
| `apply_func` | `apply_to_collection(s)`, `move_data_to_device`, `convert_to_tensors` |
| `parsing`, `model_helpers` | `AttributeDict`, `get_init_args`, `lightning_getattr`, `is_overridden` |
| `model_summary`, `grads`, `memory` | `ModelSummary`, `summarize`, `grad_norm`, `is_oom_error`, ... |
| `seed`, `data`, `enums`, `imports` | `seed_everything`, `isolate_rng`, `extract_batch_size`, `LightningEnum`, flags |
| `cloud_io`, `distributed` | `_load`, `get_filesystem`, `_atomic_save`; `sync_ddp_if_available`, ... |
| `combined_loader` | `CombinedLoader` |

The names Lightning's `utilities/__init__` exports are loaded on first access (module `__getattr__`),
so `import fulmen.utilities` imports none of these modules.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the submodule that defines it
_EXPORTS = {
    "AttributeDict": "parsing",
    "CombinedLoader": "combined_loader",
    "GradClipAlgorithmType": "enums",
    "LightningEnum": "enums",
    "disable_possible_user_warnings": "warnings",
    "grad_norm": "grads",
    "is_picklable": "parsing",
    "find_shared_parameters": "model_helpers",
    "is_shared_filesystem": "distributed",
    "measure_flops": "model_summary",
    "move_data_to_device": "apply_func",
    "rank_zero_deprecation": "rank_zero",
    "rank_zero_info": "rank_zero",
    "rank_zero_only": "rank_zero",
    "rank_zero_warn": "rank_zero",
    "set_shared_parameters": "model_helpers",
    "suggested_max_num_workers": "data",
}
# `fulmen.utilities.rank_zero` etc. without importing them first, as Lightning's eager imports allow.
_SUBMODULES = {
    "apply_func", "cloud_io", "combined_loader", "data", "distributed", "enums", "exceptions", "grads",
    "imports", "memory", "model_helpers", "model_summary", "parsing", "rank_zero", "seed", "types", "warnings",
}
_EPSILONS = {"FLOAT16_EPSILON": "float16", "FLOAT32_EPSILON": "float32", "FLOAT64_EPSILON": "float64"}

__all__ = sorted([*_EXPORTS, *_EPSILONS])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import system sets the attribute
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name in _EPSILONS:
        import torch

        value = torch.finfo(getattr(torch, _EPSILONS[name])).eps
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
