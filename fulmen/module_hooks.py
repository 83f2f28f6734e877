"""The hooks a `LightningModule` and a `LightningDataModule` can override, with their defaults
(Lightning's `core.hooks`).

Three groups, as in Lightning: `ModelHooks` (the loops' events: fit/stage/epoch/batch start and
end, around backward and the optimizer step, the eval/train switches around evaluation),
`DataHooks` (preparing data, the dataloaders, moving a batch to the device) and `CheckpointHooks`
(reading and changing the checkpoint dict). `LightningModule` has all three; `LightningDataModule`
has `DataHooks`. Most defaults do nothing: the Trainer calls a loop hook only when someone overrides
it (`fulmen.hooks.HookDispatch` finds out once, at setup), so a no-op default costs nothing per batch.

Example:
    >>> import torch
    >>> DataHooks().transfer_batch_to_device({"x": torch.ones(2)}, torch.device("cpu"), 0)["x"].device
    device(type='cpu')
"""

from __future__ import annotations

from typing import Any

import torch

from fulmen.errors import MisconfigurationException


class ModelHooks:
    """The loops' events. Each default does nothing, except the eval/train/zero-grad switches."""

    # --- a whole run and its stages ------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Fit begins (after setup and configure_model, before the sanity check)."""

    def on_fit_end(self) -> None:
        """Fit is over."""

    def on_train_start(self) -> None:
        """Training begins, after the sanity check."""

    def on_train_end(self) -> None:
        """Training is over, before on_fit_end."""

    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...

    # --- batches -------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """Before training_step. Returning -1 skips the rest of the epoch."""

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the optimizer step of this batch; `outputs` is what training_step returned."""

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...

    # --- switching modes around evaluation -----------------------------------------------------
    def on_validation_model_zero_grad(self) -> None:
        """Before validation inside fit: free the gradients, so validation has their memory."""
        self.zero_grad(set_to_none=True)  # type: ignore[attr-defined]

    def on_validation_model_eval(self) -> None:
        """Validation begins: eval mode (dropout off, batch norm uses its running statistics)."""
        self.eval()  # type: ignore[attr-defined]

    def on_validation_model_train(self) -> None:
        """Validation is over. The Trainer has already put each submodule back in the mode it had."""

    def on_test_model_eval(self) -> None:
        self.eval()  # type: ignore[attr-defined]

    def on_test_model_train(self) -> None:
        """Testing is over. The Trainer has already put each submodule back in the mode it had."""

    def on_predict_model_eval(self) -> None:
        self.eval()  # type: ignore[attr-defined]

    # --- epochs --------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None: ...

    def on_train_epoch_end(self) -> None:
        """After the epoch's last batch (and, unless validation runs mid-epoch, after its validation)."""

    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...

    # --- around backward and the optimizer step ------------------------------------------------
    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """After the optimizer step, before the gradients are zeroed."""

    def on_before_backward(self, loss: torch.Tensor) -> None: ...

    def on_after_backward(self) -> None:
        """After backward, before the optimizer step: the place to inspect gradients."""

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Before the optimizer step, after gradient unscaling (mixed precision), before clipping."""

    # --- building the model ----------------------------------------------------------------------
    def configure_sharded_model(self) -> None:
        """Deprecated in Lightning: use `configure_model`."""

    def configure_model(self) -> None:
        """Create layers late, inside the strategy's and precision's context (called at every
        fit/validate/test/predict, so it must do nothing when the layers already exist)."""


class DataHooks:
    """Preparing data, the dataloaders, and moving a batch to the device."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # True: prepare_data runs on local rank 0 of every node; False: only on global rank 0.
        self.prepare_data_per_node: bool = True
        self.allow_zero_length_dataloader_with_multiple_devices: bool = False

    def prepare_data(self) -> None:
        """Download or write data: called in one process per node, before setup. Do not set state here."""

    def setup(self, stage: str) -> None:
        """Build what depends on the stage ('fit', 'validate', 'test' or 'predict'), in every process."""

    def teardown(self, stage: str) -> None:
        """Release what setup built."""

    def train_dataloader(self) -> Any:
        """The training data: a DataLoader, or a collection of them."""
        raise MisconfigurationException(_no_loader(self, "train_dataloader"))

    def test_dataloader(self) -> Any:
        raise MisconfigurationException(_no_loader(self, "test_dataloader"))

    def val_dataloader(self) -> Any:
        raise MisconfigurationException(_no_loader(self, "val_dataloader"))

    def predict_dataloader(self) -> Any:
        raise MisconfigurationException(_no_loader(self, "predict_dataloader"))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move `batch` (tensors, anything with `.to`, nested in lists, tuples, dicts, dataclasses) to `device`.

        Override for a batch type fulmen cannot see into; call super() for the rest.
        """
        from fulmen.data import move_to_device

        return move_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change the batch before it is moved to the device (e.g. CPU-side augmentation)."""
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change the batch once it is on the device (e.g. GPU-side augmentation)."""
        return batch


class CheckpointHooks:
    """Reading and changing the checkpoint dict."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read what on_save_checkpoint added, before the weights are loaded."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add to or change the checkpoint dict before it is written."""


def _no_loader(owner: object, method: str) -> str:
    return (
        f"`{method}` must be implemented to be used with the Trainer: {type(owner).__name__}.{method}() was "
        f"called but is not defined. Received: the default {method}. "
        f"Fix: define `def {method}(self): return DataLoader(...)`, or pass the data to the Trainer method."
    )
