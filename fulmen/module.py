"""`LightningModule`: where the user writes the math.

The user subclasses it with the model (`__init__`/`forward`), the steps (`training_step`, ...)
and `configure_optimizers`. Everything else here is a hook with a no-op default that the
Trainer calls at a documented point, or a helper the steps use (`self.log`, `self.optimizers()`,
`self.manual_backward`, `save_hyperparameters`, `load_from_checkpoint`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from torch import nn

from fulmen.errors import MisconfigurationException, warn_once
from fulmen.hparams import AttributeDict, HyperparametersMixin
from fulmen.logging import log_value

if TYPE_CHECKING:
    from fulmen.optim import LightningOptimizer
    from fulmen.trainer import Trainer


class LightningModule(HyperparametersMixin, nn.Module):
    """A `torch.nn.Module` that also says how to train, validate, test and predict.

    Example:
        >>> import torch, fulmen as pl
        >>> class Regressor(pl.LightningModule):
        ...     def __init__(self, lr=0.1):
        ...         super().__init__()
        ...         self.save_hyperparameters()
        ...         self.layer = torch.nn.Linear(3, 1)
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         loss = torch.nn.functional.mse_loss(self.layer(x), y)
        ...         self.log("train_loss", loss)
        ...         return loss
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Trainer | None = None
        self._automatic_optimization = True
        self._hparams: AttributeDict = AttributeDict()
        self._hparams_initial: AttributeDict = AttributeDict()
        self._log_hyperparams = True
        self._example_input_array: Any = None

    def __setattr__(self, name: str, value: Any) -> None:
        # torch's own message for this ("cannot assign module before Module.__init__() call")
        # does not say which class or what to do.
        if "_modules" not in self.__dict__ and isinstance(value, (nn.Module, nn.Parameter)):
            raise MisconfigurationException(
                f"{type(self).__name__}.__init__ assigned self.{name} before calling super().__init__(). "
                f"Received: self.{name} = {type(value).__name__}(...) with the module not initialised. "
                "Fix: make `super().__init__()` the first line of __init__. (fulmen doctor code FM401)"
            )
        super().__setattr__(name, value)

    # --- where the module is and what it is part of ------------------------------------------
    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError(
                f"{type(self).__name__} is not attached to a Trainer. "
                "Fix: call trainer.fit(model) (or validate/test/predict) first."
            )
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        self._trainer = trainer

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            return tensor.dtype
        return torch.get_default_dtype()

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer else 0

    @property
    def logger(self) -> Any:
        return self._trainer.logger if self._trainer else None

    @property
    def loggers(self) -> list[Any]:
        return self._trainer.loggers if self._trainer else []

    @property
    def automatic_optimization(self) -> bool:
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = value

    @property
    def example_input_array(self) -> Any:
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, value: Any) -> None:
        self._example_input_array = value

    # --- the user's part ---------------------------------------------------------------------
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """Compute and return the training loss (a tensor, or a dict with a 'loss' key)."""
        raise MisconfigurationException(
            f"{type(self).__name__} does not define training_step, so there is nothing to train. "
            "Fix: add `def training_step(self, batch, batch_idx): ... return loss`."
        )

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate one validation batch; log metrics with self.log."""

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate one test batch; log metrics with self.log."""

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Return the prediction for one batch. Default: `self(batch)`."""
        batch = kwargs.get("batch", args[0] if args else None)
        return self(batch)

    def configure_optimizers(self) -> Any:
        """Return an optimizer, a list, (optimizers, schedulers), or a dict; see fulmen.optim."""
        raise MisconfigurationException(
            f"{type(self).__name__} does not define configure_optimizers, which automatic optimization needs. "
            "Fix: add `def configure_optimizers(self): return torch.optim.Adam(self.parameters(), lr=1e-3)`."
        )

    def configure_callbacks(self) -> Any:
        """Callbacks this model always wants; they replace Trainer callbacks of the same type."""
        return []

    def configure_model(self) -> None:
        """Create layers lazily (called after setup, before optimizers are configured)."""

    # --- logging ------------------------------------------------------------------------------
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a scalar. In training_step the default is per step; elsewhere per epoch.

        Values stay on the device; loggers receive them every `log_every_n_steps` steps.
        """
        if self._trainer is None:
            warn_once("self.log() was called on a module not attached to a Trainer; the value is ignored.")
            return
        log_value(
            self._trainer, name, value, prog_bar=prog_bar, logger=logger, on_step=on_step,
            on_epoch=on_epoch, reduce_fx=reduce_fx, enable_graph=enable_graph, sync_dist=sync_dist,
            add_dataloader_idx=add_dataloader_idx, batch_size=batch_size,
        )

    def log_dict(self, dictionary: Mapping[str, Any], **kwargs: Any) -> None:
        """`self.log` for each item of `dictionary`, with the same options."""
        for name, value in dictionary.items():
            self.log(name, value, **kwargs)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` on the main process only, without breaking the progress bar."""
        trainer = self._trainer
        if trainer is not None and not trainer.is_global_zero:
            return
        bar = trainer.progress_bar_callback if trainer is not None else None
        if bar is not None and hasattr(bar, "print"):
            bar.print(*args, **kwargs)
        else:
            print(*args, **kwargs)

    # --- optimization --------------------------------------------------------------------------
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer(s) from configure_optimizers: one object, or a list when several."""
        opts = self.trainer._optimizers if use_pl_optimizer else [o.optimizer for o in self.trainer._optimizers]
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self) -> Any:
        """The scheduler(s) from configure_optimizers: None, one, or a list."""
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward under manual optimization; applies precision scaling. Use instead of loss.backward()."""
        if self._automatic_optimization:
            raise MisconfigurationException(
                "manual_backward is for manual optimization, but automatic_optimization is True. "
                "Fix: set `self.automatic_optimization = False` in __init__, or return the loss "
                "from training_step and let the Trainer call backward. (fulmen doctor code FM301)"
            )
        self.trainer._backward(loss, *args, **kwargs)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Called by the Trainer to run backward; override for custom behaviour."""
        loss.backward(*args, **kwargs)

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Let only `optimizer`'s parameters require grad (for alternating multi-optimizer updates)."""
        target = getattr(optimizer, "optimizer", optimizer)
        mine = {id(p) for group in target.param_groups for p in group["params"]}
        self._toggled_requires_grad = {}
        for opt in self.trainer._optimizers:
            for group in opt.optimizer.param_groups:
                for p in group["params"]:
                    if id(p) not in mine:
                        self._toggled_requires_grad.setdefault(p, p.requires_grad)
                        p.requires_grad = False

    def untoggle_optimizer(self, optimizer: Any) -> None:
        """Undo `toggle_optimizer`."""
        for p, requires_grad in getattr(self, "_toggled_requires_grad", {}).items():
            p.requires_grad = requires_grad
        self._toggled_requires_grad = {}

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: LightningOptimizer, optimizer_closure: Any = None
    ) -> None:
        """Step `optimizer`; the closure runs training_step, zero_grad and backward."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip gradients before the optimizer step; default uses the Trainer's settings."""
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def clip_gradients(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients of `optimizer`'s parameters by norm (default) or by value."""
        if not gradient_clip_val:
            return
        algorithm = gradient_clip_algorithm or "norm"
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        elif algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            raise MisconfigurationException(
                f"Unknown gradient_clip_algorithm. Received: gradient_clip_algorithm={algorithm!r}. "
                "Fix: use 'norm' or 'value'."
            )

    # --- freezing --------------------------------------------------------------------------------
    def freeze(self) -> LightningModule:
        """No gradients for any parameter, and eval mode."""
        for param in self.parameters():
            param.requires_grad = False
        return self.eval()

    def unfreeze(self) -> LightningModule:
        for param in self.parameters():
            param.requires_grad = True
        return self.train()

    # --- hyperparameters and checkpoints ------------------------------------------------------
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the module from a checkpoint's hyperparameters (overridden by `kwargs`) and load its weights.

        Example:
            >>> model = Regressor.load_from_checkpoint("best.ckpt", lr=0.01)  # doctest: +SKIP
        """
        from fulmen.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(checkpoint_path, map_location=map_location or "cpu")
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        if hparams_file is not None:
            from fulmen._yaml import load_yaml

            hparams.update(load_yaml(Path(hparams_file).read_text()) or {})
        hparams.update(kwargs)
        accepted = inspect.signature(cls.__init__).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        init_args = hparams if takes_kwargs else {k: v for k, v in hparams.items() if k in accepted}
        model = cls(**init_args)
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
            model.to(map_location)
        return model

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add to or change the checkpoint dict before it is written."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read from the checkpoint dict before the weights are loaded."""

    # --- data hooks --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download or write data once per node (before setup)."""

    def setup(self, stage: str) -> None:
        """Build what depends on the stage ('fit', 'validate', 'test', 'predict')."""

    def teardown(self, stage: str) -> None: ...

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        from fulmen.data import move_to_device

        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    # --- loop hooks (no-ops; the Trainer skips those not overridden) -----------------------------
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_before_backward(self, loss: torch.Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None: ...
    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None: ...
    def on_exception(self, exception: BaseException) -> None: ...

    def on_validation_model_eval(self) -> None:
        self.eval()

    def on_validation_model_train(self) -> None:
        """Called after validation; the Trainer restores each submodule's previous mode."""

    def on_validation_model_zero_grad(self) -> None:
        self.zero_grad(set_to_none=True)

    def on_test_model_eval(self) -> None:
        self.eval()

    def on_test_model_train(self) -> None:
        """Called after testing; the Trainer restores each submodule's previous mode."""

    def on_predict_model_eval(self) -> None:
        self.eval()
