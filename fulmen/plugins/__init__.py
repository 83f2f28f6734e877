"""Lightning's `plugins` package: the cluster environments now, the precision / checkpoint-IO /
layer-sync plugins later (issue 16).

Importing one of Lightning's plugin names that fulmen does not have yet raises an ImportError that
says which Trainer argument does the same job (`from fulmen.plugins import MixedPrecision` ->
"use Trainer(precision='16-mixed')"), instead of Python's bare "cannot import name".
"""

from __future__ import annotations

from typing import Any

from fulmen.plugins.environments import (
    ClusterEnvironment, KubeflowEnvironment, LightningEnvironment, LSFEnvironment, MPIEnvironment, SLURMEnvironment,
    TorchElasticEnvironment, XLAEnvironment,
)

__all__ = [
    "ClusterEnvironment", "KubeflowEnvironment", "LSFEnvironment", "LightningEnvironment", "MPIEnvironment",
    "SLURMEnvironment", "TorchElasticEnvironment", "XLAEnvironment",
]

_PRECISION = "use Trainer(precision=...): '32-true', '64-true', '16-mixed', 'bf16-mixed', '16-true' or 'bf16-true'"
_CHECKPOINT_IO = (
    "fulmen writes checkpoints itself (atomically, with torch.save); to change where or how, override "
    "ModelCheckpoint or LightningModule.on_save_checkpoint"
)
# Lightning's plugin names fulmen does not provide yet -> what to do instead.
_NOT_YET = {
    "Precision": _PRECISION,
    "MixedPrecision": "use Trainer(precision='16-mixed') or Trainer(precision='bf16-mixed')",
    "DoublePrecision": "use Trainer(precision='64-true')",
    "HalfPrecision": "use Trainer(precision='16-true') or Trainer(precision='bf16-true')",
    "FSDPPrecision": "use Trainer(strategy='fsdp', precision=...): fulmen's FSDPStrategy takes the Trainer's precision",
    "DeepSpeedPrecision": "DeepSpeed is not supported by fulmen: use strategy='fsdp' and Trainer(precision=...)",
    "XLAPrecision": "XLA (TPU) is not supported by fulmen: run on CUDA, MPS or CPU with Trainer(precision=...)",
    "BitsandbytesPrecision": "quantise the model's layers with bitsandbytes yourself in configure_model",
    "TransformerEnginePrecision": "convert the model's layers with transformer_engine yourself in configure_model",
    "CheckpointIO": _CHECKPOINT_IO,
    "TorchCheckpointIO": _CHECKPOINT_IO,
    "AsyncCheckpointIO": _CHECKPOINT_IO,
    "XLACheckpointIO": "XLA (TPU) is not supported by fulmen",
    "LayerSync": "use Trainer(sync_batchnorm=True)",
    "TorchSyncBatchNorm": "use Trainer(sync_batchnorm=True)",
}


def __getattr__(name: str) -> Any:
    if name in _NOT_YET:
        # ImportError, so `from ... import X` shows this text and `except ImportError` fallbacks still work.
        raise ImportError(
            f"{name} is not provided by fulmen yet (issue 16). Received: plugins.{name}. Fix: {_NOT_YET[name]}."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
