"""`WeightAveraging` and `EMAWeightAveraging`: keep an averaged copy of the model during training.

Lightning 2.6's API over `torch.optim.swa_utils.AveragedModel`: the average is updated after every
optimizer step (and, when `should_update` says so, at epoch ends); its weights are swapped into the
module for each validation run and copied into it when training ends. Checkpoints hold the averaged
weights under "state_dict" (so a checkpoint loads as the averaged model) and the current ones under
"current_model_state", from which a resumed fit continues.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fulmen.callbacks.callback import Callback
from fulmen.errors import warn_once

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


@contextlib.contextmanager
def _detached(pl_module: LightningModule) -> Iterator[None]:
    """AveragedModel deep-copies the module: leave the Trainer (loaders, loggers) out of the copy."""
    trainer, pl_module._trainer = pl_module._trainer, None
    try:
        yield
    finally:
        pl_module._trainer = trainer


class WeightAveraging(Callback):
    """Average the weights during training (equal weights by default: SWA; pass avg_fn/multi_avg_fn to change).

    Args:
        device: where the averaged copy lives (None: the module's device).
        use_buffers: also average buffers such as batch-norm statistics (default True, unlike AveragedModel).
        **kwargs: passed to `AveragedModel`, e.g. `avg_fn` or `multi_avg_fn`.

    Override `should_update(step_idx=None, epoch_idx=None)` to choose when to update (default: after every step).

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[WeightAveraging()])
    """

    def __init__(self, device: torch.device | str | int | None = None, use_buffers: bool = True, **kwargs: Any) -> None:
        self._device = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: AveragedModel | None = None
        self._latest_update_step = 0
        self._latest_update_epoch = -1

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Whether to update after optimizer step `step_idx` / epoch `epoch_idx` (0-based; one is None)."""
        return step_idx is not None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # The Trainer calls configure_model after the callbacks' setup; call it first so the copy has every layer.
        from fulmen.module import LightningModule as _Base

        if type(pl_module).configure_model is not _Base.configure_model:
            warn_once("WeightAveraging calls configure_model before copying the model; sharded layers are not supported.")
            pl_module.configure_model()
        with _detached(pl_module):
            self._average_model = AveragedModel(
                model=pl_module, device=self._device or pl_module.device, use_buffers=self._use_buffers, **self._kwargs
            )

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step_idx = trainer.global_step - 1
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > self._latest_update_epoch and self.should_update(epoch_idx=trainer.current_epoch):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = trainer.current_epoch

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            for average, current in self._pairs(pl_module):
                current.data.copy_(average.data)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def _pairs(self, pl_module: LightningModule) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        assert self._average_model is not None
        average = self._average_model.module
        return zip(itertools.chain(average.parameters(), average.buffers()),
                   itertools.chain(pl_module.parameters(), pl_module.buffers()))

    def _swap_models(self, pl_module: LightningModule) -> None:
        for average, current in self._pairs(pl_module):
            tmp = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(tmp)

    # --- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            return  # outside fit: the module's own weights (the average, once fit has ended) are saved
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
        checkpoint["averaging_state"] = {k: v for k, v in state.items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            return
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            state = {f"module.{k}": v for k, v in checkpoint["state_dict"].items()}
            self._average_model.load_state_dict({**state, **checkpoint["averaging_state"]})
            pl_module.load_state_dict(checkpoint["current_model_state"])  # the module continues from its own weights
        else:
            warn_once("The checkpoint was not written with WeightAveraging: the average starts from its weights.")
            self._average_model.module.load_state_dict(checkpoint["state_dict"], strict=False)


class EMAWeightAveraging(WeightAveraging):
    """Exponential moving average of the weights: `ema = decay * ema + (1 - decay) * current`.

    Args:
        decay: the EMA decay.
        update_every_n_steps: update after every n-th optimizer step (step index divisible by n).
        update_starting_at_step: first step index to update at (None: from the start).
        update_starting_at_epoch: when set, also update at the end of each epoch from this one on.

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[EMAWeightAveraging(decay=0.999)])
    """

    def __init__(self, device: torch.device | str | int | None = None, use_buffers: bool = True, decay: float = 0.999,
                 update_every_n_steps: int = 1, update_starting_at_step: int | None = None,
                 update_starting_at_epoch: int | None = None, **kwargs: Any) -> None:
        super().__init__(device=device, use_buffers=use_buffers, multi_avg_fn=get_ema_multi_avg_fn(decay), **kwargs)
        self.decay = decay
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is not None and (self.update_starting_at_step is None or step_idx >= self.update_starting_at_step) \
                and self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0:
            return True
        return epoch_idx is not None and self.update_starting_at_epoch is not None \
            and epoch_idx >= self.update_starting_at_epoch
