"""`BaseFinetuning` and `BackboneFinetuning`: freeze part of a model, then unfreeze it during training.

`freeze_before_training` runs in `setup`, before `configure_optimizers`, so an optimizer built over
`filter(lambda p: p.requires_grad, ...)` starts without the frozen parameters. `finetune_function`
runs at the start of every training epoch; it unfreezes modules and adds their parameters to the
optimizer as a new parameter group (`unfreeze_and_add_param_group`).

The parameter groups that exist at each epoch start are remembered by parameter name and stored in
checkpoints. On resume they are put back on the fresh optimizer before its saved state is loaded
(the saved state has the added groups, the fresh optimizer does not yet).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import Module, ModuleDict
from torch.nn.modules.batchnorm import _BatchNorm

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException, warn_once

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

log = logging.getLogger(__name__)

Modules = Module | Iterable[Any]


def multiplicative(epoch: int) -> float:
    return 2.0


class BaseFinetuning(Callback):
    """Base class for freeze/unfreeze schedules: override `freeze_before_training` and `finetune_function`.

    Example:
        >>> class UnfreezeAt(BaseFinetuning):
        ...     def __init__(self, epoch=10):
        ...         super().__init__()
        ...         self.epoch = epoch
        ...     def freeze_before_training(self, pl_module):
        ...         self.freeze(pl_module.feature_extractor)
        ...     def finetune_function(self, pl_module, current_epoch, optimizer):
        ...         if current_epoch == self.epoch:
        ...             self.unfreeze_and_add_param_group(pl_module.feature_extractor, optimizer, train_bn=True)
    """

    def __init__(self) -> None:
        # {optimizer index: [param group with "params" as parameter names]}
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False

    # --- what subclasses override -----------------------------------------------------------
    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Freeze modules before the optimizer is created."""
        raise NotImplementedError(f"{type(self).__name__} must implement freeze_before_training(pl_module).")

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Unfreeze modules (and add their parameters to `optimizer`) at the start of `epoch`."""
        raise NotImplementedError(f"{type(self).__name__} must implement finetune_function(pl_module, epoch, optimizer).")

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def flatten_modules(modules: Modules) -> list[Module]:
        """The leaf modules (and modules holding parameters themselves) of a module or nested iterable of them."""
        if isinstance(modules, ModuleDict):
            modules = modules.values()
        if isinstance(modules, Iterable):
            found: list[Module] = []
            for m in modules:
                found.extend(BaseFinetuning.flatten_modules(m))
            candidates: Iterable[Module] = found
        else:
            candidates = modules.modules()
        return [m for m in candidates if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(modules: Modules, train_bn: bool = True, requires_grad: bool = True) -> Generator:
        """The parameters of `modules` whose requires_grad equals `requires_grad` (BatchNorm's skipped unless train_bn)."""
        for mod in BaseFinetuning.flatten_modules(modules):
            if isinstance(mod, _BatchNorm) and not train_bn:
                continue
            for param in mod.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        for mod in BaseFinetuning.flatten_modules(modules):
            if isinstance(mod, _BatchNorm):
                mod.track_running_stats = True
            for param in mod.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: Module) -> None:
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Set requires_grad=False on `modules`' parameters; BatchNorm layers stay trainable when `train_bn`."""
        for mod in BaseFinetuning.flatten_modules(modules):
            if isinstance(mod, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(mod)
            else:
                BaseFinetuning.freeze_module(mod)

    @staticmethod
    def filter_on_optimizer(optimizer: torch.optim.Optimizer, params: Iterable) -> list:
        """`params` minus those already in one of `optimizer`'s groups (compared by identity)."""
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = list(params)
        kept = [p for p in params if id(p) not in present]
        if len(kept) != len(params):
            warn_once(
                "Some parameters to unfreeze are already in the optimizer and are skipped. Fix: build the optimizer "
                "over filter(lambda p: p.requires_grad, self.parameters()) so frozen parameters are left out."
            )
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(modules: Modules, optimizer: torch.optim.Optimizer, lr: float | None = None,
                                     initial_denom_lr: float = 10.0, train_bn: bool = True) -> None:
        """Unfreeze `modules` and add their parameters to `optimizer` as one new group, with learning
        rate `lr`, or the first group's lr divided by `initial_denom_lr` when `lr` is None."""
        BaseFinetuning.make_trainable(modules)
        group_lr = optimizer.param_groups[0]["lr"] / initial_denom_lr if lr is None else float(lr)
        params = BaseFinetuning.filter_on_optimizer(
            optimizer, BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True)
        )
        if params:
            optimizer.add_param_group({"params": params, "lr": group_lr})

    # --- hooks --------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.freeze_before_training(pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            before = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, opt_idx, before, optimizer.param_groups)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._before_optimizer_restore(trainer)  # when the checkpoint had no optimizer state to load

    def _before_optimizer_restore(self, trainer: Trainer) -> None:
        """Put the stored parameter groups back on the fresh optimizers (fulmen.checkpoint calls this
        before loading the saved optimizer states, which Lightning does after on_fit_start)."""
        if not self._restarting:
            return
        self._restarting = False
        by_name = dict(trainer.lightning_module.named_parameters())
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            groups = self._internal_optimizer_metadata.get(opt_idx)
            if groups:
                optimizer.param_groups = [{**g, "params": [by_name[n] for n in g["params"]]} for g in groups]
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        p.requires_grad = True

    def _store(self, pl_module: LightningModule, opt_idx: int, before: int, groups: list[dict[str, Any]]) -> None:
        names = {p: n for n, p in pl_module.named_parameters()}

        def by_name(gs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[p] for p in g["params"]]}
                    for g in gs]

        if opt_idx not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[opt_idx] = by_name(groups)
        elif before != len(groups):
            self._internal_optimizer_metadata[opt_idx].extend(by_name(groups[before:]))

    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restarting = True
        self._internal_optimizer_metadata = state_dict.get("internal_optimizer_metadata", state_dict)


class BackboneFinetuning(BaseFinetuning):
    """Train the head first; unfreeze `pl_module.backbone` at `unfreeze_backbone_at_epoch`.

    At that epoch the backbone joins the optimizer as a new parameter group with learning rate
    `backbone_initial_lr`, or the current lr × `backbone_initial_ratio_lr`. At every later epoch its lr
    is multiplied by `lambda_func(epoch + 1)`, capped at the head's lr when `should_align`.

    Example:
        >>> import fulmen as pl
        >>> # the module has a `backbone` submodule; configure_optimizers optimizes only trainable params
        >>> trainer = pl.Trainer(callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=5)])
    """

    def __init__(self, unfreeze_backbone_at_epoch: int = 10, lambda_func: Callable = multiplicative,
                 backbone_initial_ratio_lr: float = 10e-2, backbone_initial_lr: float | None = None,
                 should_align: bool = True, initial_denom_lr: float = 10.0, train_bn: bool = True,
                 verbose: bool = False, rounding: int = 12) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict["previous_backbone_lr"]
        super().load_state_dict(state_dict)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not isinstance(getattr(pl_module, "backbone", None), Module):
            raise MisconfigurationException(
                f"BackboneFinetuning freezes `pl_module.backbone`, but {type(pl_module).__name__} has no nn.Module "
                "attribute named backbone. Received: backbone="
                f"{type(getattr(pl_module, 'backbone', None)).__name__}. Fix: keep the pretrained part in self.backbone."
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=self.train_bn)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        current_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            initial = (self.backbone_initial_lr if self.backbone_initial_lr is not None
                       else current_lr * self.backbone_initial_ratio_lr)
            self.previous_backbone_lr = initial
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, initial, train_bn=self.train_bn,
                                              initial_denom_lr=self.initial_denom_lr)
            backbone_lr = initial
        elif epoch > self.unfreeze_backbone_at_epoch:
            assert self.previous_backbone_lr is not None
            backbone_lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and backbone_lr > current_lr:
                backbone_lr = current_lr
            optimizer.param_groups[-1]["lr"] = backbone_lr
            self.previous_backbone_lr = backbone_lr
        else:
            return
        if self.verbose:
            log.info(f"Current lr: {round(current_lr, self.rounding)}, "
                     f"Backbone lr: {round(backbone_lr, self.rounding)}")
