"""`GradientAccumulationScheduler`: change `accumulate_grad_batches` by epoch, e.g. {0: 8, 4: 4, 8: 1}.

At the start of each training epoch it sets `trainer.accumulate_grad_batches` to the factor of the
latest scheduled epoch at or before the current one; the loop reads that attribute at every batch
(`fulmen.loop._window`), so the new factor applies from the epoch's first batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException, warn_once

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class GradientAccumulationScheduler(Callback):
    """Accumulate gradients over a number of batches that depends on the epoch.

    Args:
        scheduling: {epoch (0-based): factor}. Epochs before the first key accumulate 1 batch.

    Example:
        >>> import fulmen as pl
        >>> # 1 batch per step in epochs 0-3, 2 from epoch 4 on
        >>> trainer = pl.Trainer(callbacks=[GradientAccumulationScheduler(scheduling={4: 2})])
    """

    def __init__(self, scheduling: dict[int, int]) -> None:
        if not isinstance(scheduling, dict) or not scheduling:
            raise TypeError(
                "GradientAccumulationScheduler needs a non-empty {epoch: factor} dict. "
                f"Received: scheduling={scheduling!r}. Fix: e.g. scheduling={{0: 4, 5: 1}}."
            )
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in scheduling):
            raise MisconfigurationException(
                "GradientAccumulationScheduler epochs must be ints >= 0. "
                f"Received: epochs {list(scheduling)}. Fix: use 0-based epoch numbers as keys."
            )
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in scheduling.values()):
            raise MisconfigurationException(
                "GradientAccumulationScheduler factors must be ints >= 1. "
                f"Received: factors {list(scheduling.values())}. Fix: e.g. {{0: 4}}."
            )
        self.scheduling = {0: 1, **scheduling}
        self.epochs = sorted(self.scheduling)

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        return self.scheduling[max(e for e in self.epochs if e <= epoch)]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not pl_module.automatic_optimization:
            raise RuntimeError(
                "GradientAccumulationScheduler works under automatic optimization only. Received: "
                "automatic_optimization=False. Fix: drop the callback and accumulate in training_step."
            )
        if trainer.accumulate_grad_batches != 1 and trainer.accumulate_grad_batches != self.get_accumulate_grad_batches(
            trainer.current_epoch
        ):
            raise ValueError(
                "Both Trainer(accumulate_grad_batches=...) and GradientAccumulationScheduler set the accumulation. "
                f"Received: accumulate_grad_batches={trainer.accumulate_grad_batches}. Fix: remove one of them."
            )
        if self.going_to_accumulate_grad_batches() and (
            trainer._hooks.module_overrides("optimizer_step") or trainer._hooks.module_overrides("optimizer_zero_grad")
        ):
            warn_once("With gradient accumulation, the overridden optimizer_step/optimizer_zero_grad run once per "
                      "optimizer step, not once per batch.")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)
