"""`StochasticWeightAveraging` (SWA): average the weights of the last epochs, with torch.optim.swa_utils.

As in Lightning: from epoch `swa_start` (0-based: `swa_epoch_start - 1`, or `int(swa_epoch_start *
max_epochs) - 1` for a fraction) to the last epoch, the averaged weights are updated at the start of
each epoch, i.e. with the weights the previous epoch ended with, and an `SWALR` scheduler replaces
the module's scheduler. When training ran to `max_epochs`, the averaged weights are copied into the
module at the end of training.

Batch norm: the running statistics of the averaged weights are unknown, so they are recomputed at
the end with one forward pass over the training data (`training_step` under no_grad, batch norm
momentum None = a cumulative average), as `torch.optim.swa_utils.update_bn` does. (Lightning runs
an extra training epoch with backward skipped for this; the statistics are the same.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import SWALR

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.optim import LRSchedulerConfig

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

_AvgFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class StochasticWeightAveraging(Callback):
    """Average the weights over the final epochs of training.

    Args:
        swa_lrs: the SWA learning rate, one float for every parameter group or a list of floats.
        swa_epoch_start: 1-based epoch (int >= 1) or fraction of max_epochs (float in [0, 1]) to start at.
        annealing_epochs: epochs over which SWALR anneals each group's lr to its SWA lr.
        annealing_strategy: "cos" or "linear".
        avg_fn: `(averaged, current, n_averaged) -> new averaged`; default: the running mean.
        device: where the averaged weights live (None: the module's device).

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(max_epochs=20, callbacks=[StochasticWeightAveraging(swa_lrs=1e-2)])
    """

    def __init__(self, swa_lrs: float | list[float], swa_epoch_start: int | float = 0.8, annealing_epochs: int = 10,
                 annealing_strategy: str = "cos", avg_fn: _AvgFn | None = None,
                 device: torch.device | str | None = torch.device("cpu")) -> None:
        if (isinstance(swa_epoch_start, int) and swa_epoch_start < 1) or (
            isinstance(swa_epoch_start, float) and not 0 <= swa_epoch_start <= 1
        ):
            raise MisconfigurationException(
                "swa_epoch_start must be an int >= 1 (an epoch) or a float in [0, 1] (a fraction of max_epochs). "
                f"Received: swa_epoch_start={swa_epoch_start!r}. Fix: e.g. swa_epoch_start=0.8."
            )
        lrs = swa_lrs if isinstance(swa_lrs, list) else [swa_lrs]
        if not isinstance(swa_lrs, (float, list)) or not all(isinstance(lr, float) and lr > 0 for lr in lrs):
            raise MisconfigurationException(
                f"swa_lrs must be a positive float or a list of positive floats. Received: swa_lrs={swa_lrs!r}. "
                "Fix: e.g. swa_lrs=1e-2."
            )
        if annealing_strategy not in ("cos", "linear"):
            raise MisconfigurationException(
                f"annealing_strategy must be 'cos' or 'linear'. Received: annealing_strategy={annealing_strategy!r}."
            )
        if avg_fn is not None and not callable(avg_fn):
            raise MisconfigurationException(f"avg_fn must be callable. Received: avg_fn={avg_fn!r}.")
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn or self.avg_fn
        self._device = device
        self.n_averaged: Tensor | None = None
        self._average: list[Tensor] | None = None  # the averaged parameters, in pl_module.parameters() order
        self._initialized = False
        self._swa_scheduler: SWALR | None = None
        self._scheduler_state: dict[str, Any] | None = None
        self._init_n_averaged = 0
        self._latest_update_epoch = -1
        self._max_epochs = -1

    @property
    def swa_start(self) -> int:
        assert isinstance(self._swa_epoch_start, int)
        return max(self._swa_epoch_start - 1, 0)

    @property
    def swa_end(self) -> float:
        return float("inf") if self._max_epochs == -1 else self._max_epochs - 1

    @staticmethod
    def avg_fn(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        return averaged + (current - averaged) / (num_averaged + 1)

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: LightningModule) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules())

    # --- hooks ----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if len(trainer.optimizers) != 1 or len(trainer.lr_scheduler_configs) > 1:
            raise MisconfigurationException(
                "StochasticWeightAveraging works with one optimizer and at most one scheduler. Received: "
                f"{len(trainer.optimizers)} optimizers, {len(trainer.lr_scheduler_configs)} schedulers. "
                "Fix: return one optimizer (and scheduler) from configure_optimizers."
            )
        if isinstance(self._swa_epoch_start, float):
            if trainer.max_epochs == -1:
                raise MisconfigurationException(
                    "StochasticWeightAveraging(swa_epoch_start=<fraction>) needs max_epochs. Received: max_epochs=-1. "
                    "Fix: give swa_epoch_start as an epoch number."
                )
            self._swa_epoch_start = int(trainer.max_epochs * self._swa_epoch_start)
        self._max_epochs = trainer.max_epochs
        device = self._device or pl_module.device
        if self._average is None:
            self._average = [p.detach().clone().to(device) for p in pl_module.parameters()]
        if self._scheduler_state is not None:  # resumed after SWA began: SWALR comes back at the next epoch start
            trainer.lr_scheduler_configs.clear()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self._initialized and self.swa_start <= epoch <= self.swa_end:
            self._initialized = True
            self._install_scheduler(trainer)
            if self.n_averaged is None:
                self.n_averaged = torch.tensor(self._init_n_averaged, dtype=torch.long)
        if self.swa_start <= epoch <= self.swa_end and epoch > self._latest_update_epoch:
            assert self._average is not None and self.n_averaged is not None
            self.update_parameters(self._average, pl_module, self.n_averaged, self._avg_fn)
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Only a run that reached max_epochs gets the average (as in Lightning), or one without an epoch limit.
        if self._average is None or not (trainer.current_epoch - 1 == self.swa_end or self._max_epochs == -1):
            return
        self.transfer_weights(self._average, pl_module)
        if self.pl_module_contains_batch_norm(pl_module):
            self._update_batch_norm(trainer, pl_module)

    # --- the averaging ----------------------------------------------------------------------------
    def _install_scheduler(self, trainer: Trainer) -> None:
        optimizer = trainer.optimizers[0]
        if isinstance(self._swa_lrs, float):
            self._swa_lrs = [self._swa_lrs] * len(optimizer.param_groups)
        for lr, group in zip(self._swa_lrs, optimizer.param_groups):
            group["initial_lr"] = lr
        self._swa_scheduler = SWALR(
            optimizer, swa_lr=self._swa_lrs, anneal_epochs=self._annealing_epochs,
            anneal_strategy=self._annealing_strategy,
            last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1,
        )
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        config = LRSchedulerConfig(self._swa_scheduler)
        if trainer.lr_scheduler_configs:
            old = trainer.lr_scheduler_configs[0]
            if old.interval != "epoch" or old.frequency != 1:
                warn_once(f"StochasticWeightAveraging replaces the per-{old.interval} scheduler "
                          f"{type(old.scheduler).__name__} by SWALR, which steps every epoch.")
            trainer.lr_scheduler_configs[0] = config
        else:
            trainer.lr_scheduler_configs.append(config)

    @staticmethod
    def update_parameters(average: list[Tensor], model: nn.Module, n_averaged: Tensor, avg_fn: _AvgFn) -> None:
        for p_avg, p_model in zip(average, model.parameters()):
            current = p_model.detach().to(p_avg.device)
            p_avg.copy_(current if n_averaged == 0 else avg_fn(p_avg, current, n_averaged.to(p_avg.device)))
        n_averaged += 1

    @staticmethod
    def transfer_weights(average: list[Tensor], model: nn.Module) -> None:
        with torch.no_grad():
            for p_avg, p_model in zip(average, model.parameters()):
                p_model.copy_(p_avg.to(p_model.device))

    def _update_batch_norm(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Recompute batch-norm statistics for the averaged weights: one forward pass over the training data."""
        from fulmen.logging import Results

        norms = [m for m in pl_module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = {m: m.momentum for m in norms}
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over all batches
        modes = [(m, m.training) for m in pl_module.modules()]
        pl_module.train()
        limit = trainer.num_training_batches
        stop = None if limit == float("inf") else int(limit)
        # The batches training_step receives: with several training loaders, the CombinedLoader's
        # combined batches (trainer.train_dataloader is then the dict or list of loaders).
        combined = trainer._combined_loader
        if combined is not None:
            batches = ((batch, i) for batch, i, _ in combined)
        else:
            batches = ((batch, i) for i, batch in enumerate(trainer.train_dataloader))
        results, trainer.run_state.results = trainer.run_state.results, Results()  # whatever training_step logs is dropped
        try:
            with torch.no_grad():
                for batch, batch_idx in itertools.islice(batches, stop):
                    # the step as the loop calls it: the arguments it takes, autocast, the strategy's wrapper
                    trainer._training_step(trainer._to_device(batch, 0), batch_idx)
        finally:
            trainer.run_state.results = results
            for m, momentum in momenta.items():
                m.momentum = momentum
            for m, training in modes:
                m.training = training

    # --- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "n_averaged": 0 if self.n_averaged is None else int(self.n_averaged.item()),
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_state": None if self._swa_scheduler is None else self._swa_scheduler.state_dict(),
            "average_model_state": None if self._average is None else [p.detach().cpu() for p in self._average],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._init_n_averaged = state_dict["n_averaged"]
        self._latest_update_epoch = state_dict["latest_update_epoch"]
        self._scheduler_state = state_dict["scheduler_state"]
        if state_dict.get("average_model_state") is not None:
            self._average = [p.clone() for p in state_dict["average_model_state"]]
