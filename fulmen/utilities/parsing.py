"""Lightning's `utilities.parsing`: the attribute dict of `hparams`, collecting `__init__` arguments from
stack frames, picklability checks, and reading/writing a field wherever a model keeps it (on the model,
in its `hparams`, or on the Trainer's datamodule).

`AttributeDict` is fulmen's own (`fulmen.hparams.AttributeDict`), the class of `self.hparams`.
"""

from __future__ import annotations

import inspect
import pickle
import types
from collections.abc import MutableMapping, Sequence
from typing import Any

from fulmen.hparams import AttributeDict
from fulmen.utilities.rank_zero import rank_zero_warn


def is_picklable(obj: object) -> bool:
    """Whether `pickle.dumps(obj)` succeeds.

    Example:
        >>> is_picklable([1, "a"]), is_picklable(lambda: 0)
        (True, False)
    """
    try:
        pickle.dumps(obj)
    except (pickle.PickleError, AttributeError, RuntimeError, TypeError):
        return False
    return True


def clean_namespace(hparams: MutableMapping) -> None:
    """Drop (with a warning) every entry of `hparams` that cannot be pickled."""
    for key in [k for k, v in hparams.items() if not is_picklable(v)]:
        rank_zero_warn(
            f"Attribute {key!r} removed from hparams because it cannot be pickled. "
            f"Fix: self.save_hyperparameters(ignore=[{key!r}]) silences this."
        )
        del hparams[key]


def parse_class_init_keys(cls: type) -> tuple[str, str | None, str | None]:
    """The names `cls.__init__` gives to self, *args and **kwargs (None when absent).

    Example:
        >>> class Model:
        ...     def __init__(this, hparams, *extra, lr=0.1, **rest): ...
        >>> parse_class_init_keys(Model)
        ('this', 'extra', 'rest')
    """
    params = list(inspect.signature(cls.__init__).parameters.values())  # type: ignore[misc]
    var_args = next((p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    var_kwargs = next((p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    return params[0].name, var_args, var_kwargs


def _get_init_args(frame: types.FrameType) -> tuple[Any, dict[str, Any]]:
    """(self, the named arguments with **kwargs merged in) of the `__init__` running in `frame`.

    As in Lightning, only an `__init__` that refers to `__class__` (any `super()` call does) counts:
    that is how the frame's class is known.
    """
    local_vars = frame.f_locals
    if "__class__" not in local_vars or frame.f_code.co_name != "__init__":
        return None, {}
    cls = local_vars["__class__"]
    self_name, args_name, kwargs_name = parse_class_init_keys(cls)
    collected = {name: local_vars[name] for name in inspect.signature(cls.__init__).parameters if name in local_vars}
    if kwargs_name:
        collected.update(collected.get(kwargs_name) or {})
    excluded = {self_name, args_name, kwargs_name, "__class__", "frame", "frame_args"}
    return local_vars.get(self_name), {k: v for k, v in collected.items() if k not in excluded}


def get_init_args(frame: types.FrameType) -> dict[str, Any]:
    """The arguments of the `__init__` running in `frame` (empty when `frame` is not such an `__init__`)."""
    return _get_init_args(frame)[1]


def collect_init_args(
    frame: types.FrameType, path_args: list[dict[str, Any]], inside: bool = False, classes: tuple[type, ...] = ()
) -> list[dict[str, Any]]:
    """Append to `path_args` the arguments of each `__init__` up the stack from `frame`, innermost
    (the base class) first, and return it; the last entry belongs to the most derived class.

    With `classes`, only the `__init__`s of instances of those classes count. Collection starts at the
    first such frame and stops at the first frame after it that is not one.
    """
    while isinstance(frame.f_back, types.FrameType):
        instance, args = _get_init_args(frame)
        if "__class__" in frame.f_locals and (not classes or isinstance(instance, classes)):
            path_args.append(args)
            inside = True
        elif inside:
            break
        frame = frame.f_back
    return path_args


def save_hyperparameters(
    obj: Any,
    *args: Any,
    ignore: Sequence[str] | str | None = None,
    frame: types.FrameType | None = None,
    given_hparams: dict[str, Any] | None = None,
) -> None:
    """The function form of `obj.save_hyperparameters(*args, ignore=...)`, for a module or datamodule;
    `frame` defaults to the caller's, `given_hparams` replaces the arguments collected from it."""
    if len(args) == 1 and not isinstance(args[0], str) and not args[0]:
        return  # an empty container: nothing to save
    if frame is None:
        frame = inspect.currentframe().f_back  # type: ignore[union-attr]
    ignored = [ignore] if isinstance(ignore, str) else [name for name in (ignore or []) if isinstance(name, str)]
    if given_hparams is not None:
        names = [a for a in args if isinstance(a, str)] or list(given_hparams)
        obj.save_hyperparameters({k: given_hparams[k] for k in names if k in given_hparams}, ignore=ignored)
        return
    obj.save_hyperparameters(*args, ignore=ignored, frame=frame)


# --- a field wherever the model keeps it ----------------------------------------------------------
def _attr_holders(model: Any, attribute: str) -> list[Any]:
    """What holds `attribute`, in Lightning's order: the model, its hparams, the datamodule, its hparams."""
    holders: list[Any] = []
    if hasattr(model, attribute):
        holders.append(model)
    if hasattr(model, "hparams") and attribute in model.hparams:
        holders.append(model.hparams)
    trainer = getattr(model, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None:
        if hasattr(datamodule, attribute):
            holders.append(datamodule)
        if hasattr(datamodule, "hparams") and attribute in datamodule.hparams:
            holders.append(datamodule.hparams)
    return holders


def _missing(attribute: str) -> AttributeError:
    return AttributeError(
        f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the datamodule. "
        f"Received: attribute={attribute!r}. Fix: set self.{attribute} in the model (or save it as a hyperparameter)."
    )


def lightning_hasattr(model: Any, attribute: str) -> bool:
    """Whether the model, its hparams or the datamodule holds `attribute`."""
    return bool(_attr_holders(model, attribute))


def lightning_getattr(model: Any, attribute: str) -> Any:
    """`attribute` from the last of its holders (the datamodule's wins over the model's, as in Lightning)."""
    holders = _attr_holders(model, attribute)
    if not holders:
        raise _missing(attribute)
    holder = holders[-1]
    return holder[attribute] if isinstance(holder, dict) else getattr(holder, attribute)


def lightning_setattr(model: Any, attribute: str, value: Any) -> None:
    """Set `attribute` to `value` in every holder of it."""
    holders = _attr_holders(model, attribute)
    if not holders:
        raise _missing(attribute)
    for holder in holders:
        if isinstance(holder, dict):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)


__all__ = [
    "AttributeDict", "clean_namespace", "collect_init_args", "get_init_args", "is_picklable",
    "lightning_getattr", "lightning_hasattr", "lightning_setattr", "parse_class_init_keys",
    "save_hyperparameters",
]
