"""`ModelPruning`: prune weights during training with `torch.nn.utils.prune` (Lightning's arguments).

At the end of each training epoch (or of each validation run, with `prune_on_train_epoch_end=False`)
`amount` of the selected parameters are pruned: masked to zero through torch's pruning
re-parametrisation (`weight = weight_orig * weight_mask`). By default the pruning is global over all
selected parameters (`use_global_unstructured`) and, as in the lottery-ticket hypothesis, the
surviving weights are reset to their values from the start of training. With
`make_pruning_permanent` (default) checkpoints hold the pruned weights under their plain names and
the masks are folded into the weights when training ends.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from copy import deepcopy
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

log = logging.getLogger(__name__)

# torch.nn.utils.prune's functions by name, and its method classes (for global pruning).
_FUNCTIONS = ("ln_structured", "l1_unstructured", "random_structured", "random_unstructured")
_METHODS = {
    "ln_structured": "LnStructured", "l1_unstructured": "L1Unstructured",
    "random_structured": "RandomStructured", "random_unstructured": "RandomUnstructured",
}


def _prune() -> Any:
    """torch.nn.utils.prune, imported on first use (it adds ~10 ms to `import fulmen` otherwise)."""
    from torch.nn.utils import prune

    return prune


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class ModelPruning(Callback):
    """Prune the model's parameters while it trains.

    Args:
        pruning_fn: "l1_unstructured", "random_unstructured", "ln_structured", "random_structured", or a
            `torch.nn.utils.prune.BasePruningMethod` subclass (with global pruning), or a function
            `fn(module, name, amount)` (without).
        parameters_to_prune: `[(module, "weight"), ...]`; empty: every weight/bias of the model.
        parameter_names: "weight" and/or "bias", used when `parameters_to_prune` is empty.
        use_global_unstructured: rank all selected parameters together (unstructured methods only).
        amount: fraction (float) or count (int) to prune, or `fn(epoch) -> amount`.
        apply_pruning: bool or `fn(epoch) -> bool`.
        make_pruning_permanent: fold masks into the weights at the end and in checkpoints.
        use_lottery_ticket_hypothesis: bool or `fn(epoch) -> bool`: reset the kept weights to their initial values.
        resample_parameters: with the lottery ticket, draw fresh initial values instead.
        pruning_dim, pruning_norm: for the structured methods.
        verbose: 0 quiet, 1 overall sparsity, 2 also per parameter (to the `fulmen` logger).
        prune_on_train_epoch_end: prune after the training epoch (True) or after validation (False).

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[ModelPruning("l1_unstructured", amount=0.5)])
    """

    PARAMETER_NAMES = ("weight", "bias")

    def __init__(self, pruning_fn: Callable | str, parameters_to_prune: Sequence[tuple[nn.Module, str]] = (),
                 parameter_names: list[str] | None = None, use_global_unstructured: bool = True,
                 amount: int | float | Callable[[int], int | float] = 0.5,
                 apply_pruning: bool | Callable[[int], bool] = True, make_pruning_permanent: bool = True,
                 use_lottery_ticket_hypothesis: bool | Callable[[int], bool] = True,
                 resample_parameters: bool = False, pruning_dim: int | None = None, pruning_norm: int | None = None,
                 verbose: int = 0, prune_on_train_epoch_end: bool = True) -> None:
        self._use_global_unstructured = use_global_unstructured
        self._parameters_to_prune = list(parameters_to_prune)
        self._use_lottery_ticket_hypothesis = use_lottery_ticket_hypothesis
        self._resample_parameters = resample_parameters
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._parameter_names = parameter_names or list(self.PARAMETER_NAMES)
        self._original_layers: dict[int, dict[str, Any]] | None = None
        _check_parameter_names(self._parameter_names, self.PARAMETER_NAMES)
        pruning_fn, self._global_kwargs = _resolve_pruning_fn(
            pruning_fn, use_global_unstructured, pruning_dim, pruning_norm
        )
        if not (isinstance(amount, (int, float)) or callable(amount)):
            raise MisconfigurationException(f"amount must be an int, a float or fn(epoch). Received: amount={amount!r}.")
        if verbose not in (0, 1, 2):
            raise MisconfigurationException(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}.")
        self.pruning_fn = pruning_fn
        self.amount = amount
        self._apply_pruning = apply_pruning
        self._make_pruning_permanent = make_pruning_permanent
        self._verbose = verbose

    def filter_parameters_to_prune(self, parameters_to_prune: Sequence[tuple[nn.Module, str]] = ()) -> list:
        """Override to choose which `(module, name)` pairs are pruned."""
        return list(parameters_to_prune)

    # --- hooks ----------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        params = self.sanitize_parameters_to_prune(pl_module, self._parameters_to_prune, self._parameter_names)
        self._parameters_to_prune = self.filter_parameters_to_prune(params)
        if self._use_lottery_ticket_hypothesis:
            # Copies of the layers as they start, to reset the kept weights to after pruning.
            self._original_layers = {}
            for i, (module, name) in enumerate(self._parameters_to_prune):
                entry = self._original_layers.setdefault(id(module), {"data": deepcopy(module), "names": []})
                entry["names"].append((i, name))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._prune_on_train_epoch_end:
            self._run_pruning(pl_module.current_epoch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and not self._prune_on_train_epoch_end:
            self._run_pruning(pl_module.current_epoch)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._make_pruning_permanent:
            self.make_pruning_permanent(pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._make_pruning_permanent:
            checkpoint["state_dict"] = self._permanent_state_dict(pl_module)

    # --- pruning --------------------------------------------------------------------------------
    def _run_pruning(self, epoch: int) -> None:
        do = self._apply_pruning(epoch) if callable(self._apply_pruning) else self._apply_pruning
        amount = self.amount(epoch) if callable(self.amount) else self.amount
        if not do or not amount:
            return
        self.apply_pruning(amount)
        lottery = self._use_lottery_ticket_hypothesis
        if lottery(epoch) if callable(lottery) else lottery:
            self.apply_lottery_ticket_hypothesis()

    def apply_pruning(self, amount: int | float) -> None:
        before = [self._pruned_stats(m, n) for m, n in self._parameters_to_prune] if self._verbose else []
        if self._use_global_unstructured:
            kwargs = {**self._global_kwargs, "amount": amount}
            accepted = set(inspect.signature(self.pruning_fn).parameters) - {"self"}
            _prune().global_unstructured(self._parameters_to_prune, pruning_method=self.pruning_fn,
                                      **{k: v for k, v in kwargs.items() if k in accepted})
        else:
            for module, name in self._parameters_to_prune:
                self.pruning_fn(module, name=name, amount=amount)
        if self._verbose:
            after = [self._pruned_stats(m, n) for m, n in self._parameters_to_prune]
            total = sum(t for _, t in after)
            log.info(f"Pruned {sum(z for z, _ in before)}/{total} -> {sum(z for z, _ in after)}/{total} "
                     f"parameters (amount={amount}).")
            if self._verbose == 2:
                for (module, name), (z0, t0), (z1, _) in zip(self._parameters_to_prune, before, after):
                    log.info(f"  {type(module).__name__}.{name}: {z0}/{t0} -> {z1}/{t0}")

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Reset the surviving weights to their values at the start (or to fresh values with resample_parameters)."""
        assert self._original_layers is not None
        for entry in self._original_layers.values():
            source = entry["data"]
            if self._resample_parameters and callable(getattr(source, "reset_parameters", None)):
                source = deepcopy(source)
                source.reset_parameters()
            for i, name in entry["names"]:
                module, _ = self._parameters_to_prune[i]
                dst = getattr(module, f"{name}_orig", None)
                dst = getattr(module, name) if dst is None else dst
                src = getattr(source, name)
                if isinstance(dst, torch.Tensor) and isinstance(src, torch.Tensor):
                    # A copy: sharing storage would let training overwrite the initial values kept here.
                    dst.data = src.data.to(dst.device, copy=True)

    @staticmethod
    def _pruned_stats(module: nn.Module, name: str) -> tuple[int, int]:
        mask = getattr(module, f"{name}_mask", None)
        return (0, 1) if mask is None else (int((mask == 0).sum()), mask.numel())

    def make_pruning_permanent(self, module: nn.Module) -> None:
        """Fold the masks into the weights and remove torch's pruning hooks."""
        for _, m in module.named_modules():
            for key in list(m._forward_pre_hooks):
                hook = m._forward_pre_hooks[key]
                if isinstance(hook, _prune().BasePruningMethod):
                    hook.remove(m)
                    del m._forward_pre_hooks[key]

    @staticmethod
    def _permanent_state_dict(pl_module: LightningModule) -> dict[str, Any]:
        state = pl_module.state_dict()
        for name in {k[: -len("_mask")] for k in state if k.endswith("_mask")}:
            orig, mask = state.pop(f"{name}_orig"), state.pop(f"{name}_mask")
            state[name] = mask.to(orig.dtype) * orig
        return {k: v.cpu() for k, v in state.items()}

    @staticmethod
    def sanitize_parameters_to_prune(pl_module: LightningModule, parameters_to_prune: Sequence = (),
                                     parameter_names: Sequence[str] = ()) -> list[tuple[nn.Module, str]]:
        names = list(parameter_names) or list(ModelPruning.PARAMETER_NAMES)
        modules = [m for m in pl_module.modules() if not isinstance(m, _CONTAINERS)]
        if not parameters_to_prune:
            return [(m, p) for p in names for m in modules if isinstance(getattr(m, p, None), nn.Parameter)]
        if not all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in parameters_to_prune):
            raise MisconfigurationException(
                "parameters_to_prune must be a list of (module, parameter_name) pairs. "
                f"Received: {parameters_to_prune!r}. Fix: e.g. [(model.fc1, 'weight')]."
            )
        missing = [(type(m).__name__, p) for m, p in parameters_to_prune
                   if not any(m is x for x in modules) or getattr(m, p, None) is None]
        if missing:
            raise MisconfigurationException(
                f"Some parameters_to_prune are not in the model. Received: {missing}. "
                "Fix: pass submodules of the LightningModule and existing parameter names."
            )
        return [tuple(pair) for pair in parameters_to_prune]


def _check_parameter_names(names: list[str], known: tuple[str, ...]) -> None:
    for name in names:
        if name not in known:
            raise MisconfigurationException(
                f"ModelPruning prunes 'weight' or 'bias'. Received: parameter_names containing {name!r}."
            )


def _resolve_pruning_fn(
    pruning_fn: Callable | str, use_global_unstructured: bool, pruning_dim: int | None, pruning_norm: int | None
) -> tuple[Any, dict[str, Any]]:
    """The pruning method to call and, for global pruning by name, the keyword arguments of its
    class (`dim`, `n`): a name becomes torch's function (local pruning) or its method class (global)."""
    global_kwargs: dict[str, Any] = {}
    if isinstance(pruning_fn, str):
        name = pruning_fn.lower()
        if name not in _FUNCTIONS:
            raise MisconfigurationException(
                f"ModelPruning got an unknown pruning_fn. Received: pruning_fn={pruning_fn!r}. "
                f"Fix: use one of {sorted(_FUNCTIONS)} or a BasePruningMethod subclass."
            )
        kwargs: dict[str, Any] = {}
        if name.endswith("_structured"):
            if pruning_dim is None:
                raise MisconfigurationException(f"pruning_fn={name!r} needs pruning_dim. Received: pruning_dim=None.")
            if name == "ln_structured":
                if pruning_norm is None:
                    raise MisconfigurationException("pruning_fn='ln_structured' needs pruning_norm. "
                                                    "Received: pruning_norm=None.")
                kwargs["n"] = pruning_norm
            kwargs["dim"] = pruning_dim
        if use_global_unstructured:
            global_kwargs = kwargs
            pruning_fn = getattr(_prune(), _METHODS[name])
        else:
            pruning_fn = partial(getattr(_prune(), name), **kwargs)
    elif inspect.isclass(pruning_fn) and issubclass(pruning_fn, _prune().BasePruningMethod):
        if not use_global_unstructured:
            raise MisconfigurationException(
                "A BasePruningMethod class works with use_global_unstructured=True only. "
                "Received: use_global_unstructured=False. Fix: pass a function fn(module, name, amount) instead."
            )
    elif not callable(pruning_fn) or use_global_unstructured:
        raise MisconfigurationException(
            f"pruning_fn must be one of {sorted(_FUNCTIONS)} or a BasePruningMethod subclass (the class, not an "
            f"instance). Received: pruning_fn={pruning_fn!r}."
        )
    if use_global_unstructured and getattr(pruning_fn, "PRUNING_TYPE", None) != "unstructured":
        raise MisconfigurationException(
            "Global pruning ranks single weights, so it needs an unstructured method. "
            f"Received: pruning_fn={pruning_fn!r} with use_global_unstructured=True. "
            "Fix: use an *_unstructured method or use_global_unstructured=False."
        )
    return pruning_fn, global_kwargs
