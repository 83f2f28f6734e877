"""Lightning's `plugins` package: cluster environments, precision plugins, checkpoint IO and layer
sync, which `Trainer(plugins=[...])` takes (sorted and checked by `fulmen.plugins.resolve`).

Importing one of Lightning's plugin names that fulmen does not have (DeepSpeed, XLA, bitsandbytes,
Transformer Engine) raises an ImportError that says what to do instead, rather than Python's bare
"cannot import name".
"""

from __future__ import annotations

from typing import Any

from fulmen.plugins.environments import (
    ClusterEnvironment, KubeflowEnvironment, LightningEnvironment, LSFEnvironment, MPIEnvironment, SLURMEnvironment,
    TorchElasticEnvironment, XLAEnvironment,
)
from fulmen.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO
from fulmen.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from fulmen.plugins.precision import DoublePrecision, FSDPPrecision, HalfPrecision, MixedPrecision, Precision
from fulmen.plugins.resolve import ResolvedPlugins, resolve_plugins

__all__ = [
    "AsyncCheckpointIO", "CheckpointIO", "ClusterEnvironment", "DoublePrecision", "FSDPPrecision", "HalfPrecision",
    "KubeflowEnvironment", "LSFEnvironment", "LayerSync", "LightningEnvironment", "MPIEnvironment", "MixedPrecision",
    "Precision", "ResolvedPlugins", "SLURMEnvironment", "TorchCheckpointIO", "TorchElasticEnvironment",
    "TorchSyncBatchNorm", "XLAEnvironment", "resolve_plugins",
]

# Lightning's plugin names fulmen does not provide -> what to do instead.
_NOT_PROVIDED = {
    "DeepSpeedPrecision": "DeepSpeed is not supported by fulmen: use strategy='fsdp' and Trainer(precision=...)",
    "XLAPrecision": "XLA (TPU) is not supported by fulmen: run on CUDA, MPS or CPU with Trainer(precision=...)",
    "BitsandbytesPrecision": "quantise the model's layers with bitsandbytes yourself in configure_model",
    "TransformerEnginePrecision": "convert the model's layers with transformer_engine yourself in configure_model",
    "XLACheckpointIO": "XLA (TPU) is not supported by fulmen: use TorchCheckpointIO (the default)",
}


def __getattr__(name: str) -> Any:
    if name in _NOT_PROVIDED:
        # ImportError, so `from ... import X` shows this text and `except ImportError` fallbacks still work.
        raise ImportError(
            f"{name} is not provided by fulmen. Received: plugins.{name}. Fix: {_NOT_PROVIDED[name]}."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
