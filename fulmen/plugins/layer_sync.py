"""Lightning's layer-sync plugins: what a multi-process run does to the module's layers so that
their statistics are shared by all processes (`Trainer(sync_batchnorm=True)` is `TorchSyncBatchNorm`).

The parallel strategies call `apply(module)` once before wrapping the module for training, and
never for one process, as Lightning does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["LayerSync", "TorchSyncBatchNorm"]


class LayerSync(ABC):
    """Turns a module's layers into their synchronised form and back."""

    @abstractmethod
    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module with its layers synchronised across processes."""

    @abstractmethod
    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module with its synchronised layers made ordinary again."""


class TorchSyncBatchNorm(LayerSync):
    """Every BatchNorm layer becomes `torch.nn.SyncBatchNorm` (statistics over the global batch; GPUs only)."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        converted = model
        if isinstance(model, torch.nn.SyncBatchNorm):
            converted = _BatchNormAnyDim(
                model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
            if model.affine:
                with torch.no_grad():
                    converted.weight, converted.bias = model.weight, model.bias
            converted.running_mean, converted.running_var = model.running_mean, model.running_var
            converted.num_batches_tracked = model.num_batches_tracked
        for name, child in model.named_children():
            converted.add_module(name, self.revert(child))
        return converted


class _BatchNormAnyDim(torch.nn.modules.batchnorm._BatchNorm):
    """A plain BatchNorm for inputs of any rank: SyncBatchNorm does not record which of 1d/2d/3d it replaced."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        return
