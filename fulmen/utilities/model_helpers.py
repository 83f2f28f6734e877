"""Model helpers: `is_overridden` (whether an object's class replaces a method of the Lightning base
class it derives from) and parameter tying (`find_shared_parameters` / `set_shared_parameters`, Lightning's
`utilities.parameter_tying`), e.g. to re-tie weights after moving a model to a device that broke the tie,
and `get_torchvision_model` (a torchvision model by name).
"""

from __future__ import annotations

from functools import partial
from typing import Any
from unittest.mock import Mock

from torch import nn


def _unwrap(attr: Any) -> Any:
    if hasattr(attr, "__wrapped__"):  # functools.wraps, @contextmanager
        attr = attr.__wrapped__
    if isinstance(attr, Mock):  # Mock(wraps=method)
        return attr._mock_wraps
    if isinstance(attr, partial):
        return attr.func
    return attr


def is_overridden(method_name: str, instance: object | None = None, parent: type | None = None) -> bool:
    """True when `instance` implements `method_name` with other code than `parent` does.

    `parent` defaults to LightningModule, LightningDataModule or Callback, whichever `instance` is.
    Decorated methods (functools.wraps), `Mock(wraps=...)` and `functools.partial` are seen through.

    Example:
        >>> import fulmen as pl
        >>> class Model(pl.LightningModule):
        ...     def training_step(self, batch): ...
        >>> is_overridden("training_step", Model()), is_overridden("validation_step", Model())
        (True, False)
    """
    if instance is None:  # e.g. trainer.lightning_module before a model is attached
        return False
    if parent is None:
        from fulmen.callbacks.callback import Callback
        from fulmen.datamodule import LightningDataModule
        from fulmen.module import LightningModule

        parent = next((base for base in (LightningModule, LightningDataModule, Callback) if isinstance(instance, base)), None)
        if parent is None:
            raise ValueError(
                f"is_overridden cannot tell which base class to compare with. Received: instance of "
                f"{type(instance).__name__}. Fix: pass parent=<the base class that defines {method_name!r}>."
            )
    attr = _unwrap(getattr(instance, method_name, None))
    if attr is None:
        return False
    parent_attr = getattr(parent, method_name, None)
    if parent_attr is None:
        raise ValueError(
            f"{parent.__name__} defines no method {method_name!r}. Received: method_name={method_name!r}. "
            "Fix: check the spelling, or pass the parent class that defines it."
        )
    if hasattr(parent_attr, "__wrapped__"):
        parent_attr = parent_attr.__wrapped__
    return getattr(attr, "__code__", attr) != getattr(parent_attr, "__code__", parent_attr)


def find_shared_parameters(module: nn.Module) -> list[list[str]]:
    """The groups of names under which the same parameter object is registered more than once.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> net[1].weight = net[0].weight
        >>> find_shared_parameters(net)
        [['0.weight', '1.weight']]
    """
    names: dict[nn.Parameter, list[str]] = {}
    # named_parameters() would hide the duplicates; walk the registrations instead.
    for prefix, submodule in module.named_modules(remove_duplicate=False):
        for name, param in submodule._parameters.items():
            if param is not None:
                full = f"{prefix}.{name}" if prefix else name
                if full not in names.setdefault(param, []):
                    names[param].append(full)
    return [group for group in names.values() if len(group) > 1]


def set_shared_parameters(module: nn.Module, shared_params: list[list[str]]) -> nn.Module:
    """Tie again each group of names (as `find_shared_parameters` returned them) to its first parameter."""
    for group in shared_params:
        shared = module.get_parameter(group[0])
        for path in group[1:]:
            owner_path, _, name = path.rpartition(".")
            setattr(module.get_submodule(owner_path), name, shared)
    return module


__all__ = ["find_shared_parameters", "is_overridden", "set_shared_parameters"]


def get_torchvision_model(model_name: str, **kwargs: Any) -> nn.Module:
    """A torchvision model by name (`get_torchvision_model("resnet18", weights=None)`), built with
    `kwargs`. Needs torchvision, which fulmen does not install."""
    try:
        from torchvision import models
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"get_torchvision_model needs the `torchvision` package, which is not installed. "
            f"Received: model_name={model_name!r}. Fix: pip install torchvision."
        ) from None
    if hasattr(models, "get_model"):  # torchvision >= 0.14
        return models.get_model(model_name, **kwargs)
    return getattr(models, model_name)(**kwargs)
