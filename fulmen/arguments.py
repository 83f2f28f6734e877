"""Checks for the Trainer's arguments, each failing with a message that names the argument, what
was received and the fix (the Trainer validates everything before the first step), and the
`PL_TRAINER_*` environment variables that give the Trainer's defaults.

`check_trainer_arguments` turns the arguments of `Trainer.__init__` into `TrainerSettings`, the
checked and normalised values the Trainer keeps as its attributes; `check_int`, `check_bool` and
`parse_max_time` are the building blocks, also used by the callbacks and the accelerators."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import os
from ast import literal_eval
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable, TypeVar

from fulmen.callbacks.callback import Callback
from fulmen.data import check_limit, note_one_or_all
from fulmen.datamodule import LightningDataModule
from fulmen.errors import MisconfigurationException
from fulmen.hooks import is_overridden
from fulmen.module import LightningModule
from fulmen.utilities.enums import GradClipAlgorithmType

_F = TypeVar("_F", bound=Callable[..., Any])


def env_defaults(cls: type, prefix: str = "PL") -> dict[str, Any]:
    """The arguments of `cls` given by environment variables `PL_<CLASS>_<ARGUMENT>` (as Lightning
    reads them: `PL_TRAINER_MAX_EPOCHS=3`), each value a Python literal when it parses as one
    (`3`, `True`, `[0, 1]`), else the string itself (`PL_TRAINER_ACCELERATOR=cpu`). Empty ones are unset."""
    found = {}
    for name in inspect.signature(cls).parameters:
        raw = os.environ.get(f"{prefix}_{cls.__name__.upper()}_{name.upper()}")
        if not raw:
            continue
        try:
            found[name] = literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            found[name] = raw
    return found


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt `name` (difflib's measure), or None when none is close."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """" (did you mean X?)" for the known name closest to a misspelt `name`, else "".

    Example:
        >>> did_you_mean("max_epoch", ["max_epochs", "min_epochs", "max_steps"])
        ' (did you mean max_epochs?)'
    """
    close = closest_name(name, known)
    return f" (did you mean {close}?)" if close else ""


def defaults_from_env(init: _F) -> _F:
    """Wrap `__init__` so that `PL_<CLASS>_*` environment variables fill the arguments not passed;
    an argument passed explicitly wins, as in Lightning. The class is the instance's own (a
    subclass `MyTrainer` reads `PL_MYTRAINER_*`). A misspelt argument is a TypeError that names
    the closest real one (`Trainer(max_epoch=3)`: "did you mean max_epochs?")."""
    parameters = inspect.signature(init).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    @functools.wraps(init)
    def init_with_env_defaults(self: Any, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if args:  # positional arguments of a subclass's __init__, by name
            kwargs.update(zip(inspect.signature(cls).parameters, args))
        unknown = [] if takes_any else [name for name in kwargs if name not in parameters]
        if unknown:
            name, owner = unknown[0], init.__qualname__.split(".")[0]
            close = closest_name(name, [p for p in parameters if p != "self"])
            raise TypeError(
                f"{owner}.__init__() got an unexpected keyword argument {name!r}"
                f"{f' (did you mean {close}?)' if close else ''}. Received: {name}={kwargs[name]!r}. Fix: "
                + (f"{close}={kwargs[name]!r}." if close else f"use one of the arguments help({owner}) lists.")
            )
        init(self, **{**env_defaults(cls), **kwargs})

    return init_with_env_defaults  # type: ignore[return-value]


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False, fix: str = "") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        if isinstance(value, int) and not isinstance(value, bool):  # an int, out of range: the special values help
            fix = fix or f"e.g. {name}={max(minimum, 1)}"
        else:  # the wrong type: the fix is the conversion, e.g. a string read from a config or the command line
            fix = f"pass an int, e.g. {name}={_as_int(value, max(minimum, 1))}" + (f" ({fix})" if fix else "")
        raise MisconfigurationException(
            f"`{name}` must be an int >= {minimum}{' or None' if allow_none else ''}. "
            f"Received: {name}={value!r}. Fix: {fix}."
        )


def _as_int(value: Any, fallback: int) -> int:
    """The int a wrong-typed `value` stands for ('3' -> 3, 3.0 -> 3), else `fallback`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return fallback
    return int(number) if number.is_integer() else fallback


def check_bool(name: str, value: Any, allow_none: bool = False) -> None:
    if not isinstance(value, bool) and not (allow_none and value is None):
        raise MisconfigurationException(
            f"`{name}` must be True or False{' (or None for the default)' if allow_none else ''}. "
            f"Received: {name}={value!r}. Fix: e.g. {name}=True."
        )


def parse_max_time(max_time: Any, name: str = "max_time") -> float | None:
    """Seconds from "DD:HH:MM:SS", a timedelta, or a dict of timedelta keywords (None stays None);
    `name` is the argument named in the error (Trainer's `max_time`, Timer's `duration`)."""
    if max_time is None:
        return None
    try:
        if isinstance(max_time, str):
            days, hours, minutes, seconds = (int(p) for p in max_time.strip().split(":"))
            max_time = dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        elif isinstance(max_time, dict):
            max_time = dt.timedelta(**max_time)
        if isinstance(max_time, dt.timedelta):
            return max_time.total_seconds()
    except (ValueError, TypeError):
        pass
    raise MisconfigurationException(
        f"`{name}` must be 'DD:HH:MM:SS', a datetime.timedelta or a dict like {{'hours': 1}}. "
        f"Received: {name}={max_time!r}. Fix: e.g. {name}='00:12:00:00' for twelve hours."
    )


# --- the Trainer's arguments ------------------------------------------------------------------


@dataclass(frozen=True)
class TrainerSettings:
    """The Trainer's arguments after checking, in the form the Trainer keeps them: each field is
    the Trainer attribute of the same name (`trainer.max_epochs`, ...), with Lightning's
    normalisation (`num_sanity_val_steps=-1` is inf, `max_time` is seconds, `fast_dev_run` and
    `barebones` have already overridden what they override). Built by `check_trainer_arguments`."""

    barebones: bool
    sync_batchnorm: bool
    fast_dev_run: int | bool
    max_epochs: int | None  # None until fit resolves it (Trainer._resolve_fit_limits), as Lightning shows it
    min_epochs: int | None
    max_steps: int
    min_steps: int | None
    max_time: float | None
    limit_train_batches: int | float
    limit_val_batches: int | float
    limit_test_batches: int | float
    limit_predict_batches: int | float
    overfit_batches: int | float
    val_check_interval: int | float
    check_val_every_n_epoch: int | None
    num_sanity_val_steps: int | float
    log_every_n_steps: int
    reload_dataloaders_every_n_epochs: int
    accumulate_grad_batches: int
    gradient_clip_val: int | float | None
    gradient_clip_algorithm: GradClipAlgorithmType | None  # None when not given; clipping is then by norm
    deterministic: bool | str | None
    benchmark: bool | None
    inference_mode: bool
    detect_anomaly: bool
    use_distributed_sampler: bool
    enable_autolog_hparams: bool
    default_root_dir: str
    preemption_signals: tuple[int, ...]

    def items(self) -> list[tuple[str, Any]]:
        """(attribute name, value) for every setting, in the order above."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def check_trainer_arguments(given: Mapping[str, Any]) -> TrainerSettings:
    """Check the Trainer's arguments (`given`: every argument of `Trainer.__init__` by name) and
    return them normalised. Hardware, precision, profiler, callbacks and loggers are checked where
    they are built. Each wrong argument raises a MisconfigurationException that names it."""
    barebones = given["barebones"]
    check_bool("barebones", barebones)
    if barebones:
        check_barebones(given)
    if given["model_registry"] is not None:
        raise MisconfigurationException(
            "Uploading to Lightning's model registry is not supported by fulmen. "
            f"Received: model_registry={given['model_registry']!r}. Fix: drop model_registry and upload the "
            "checkpoint files yourself."
        )
    fast_dev_run = given["fast_dev_run"]
    fast_dev_batches = int(fast_dev_run) if isinstance(fast_dev_run, bool) else fast_dev_run
    check_int("fast_dev_run", fast_dev_batches, 0, fix="use True, False or a number of batches")
    for name, minimum, allow_none, fix in (
        ("max_epochs", -1, True, "use -1 for no limit"), ("min_epochs", 0, True, ""),
        ("max_steps", -1, False, "use -1 for no limit"), ("min_steps", 0, True, ""),
    ):
        check_int(name, given[name], minimum, allow_none=allow_none, fix=fix)
    settings: dict[str, Any] = {name: given[name] for name in ("max_epochs", "min_epochs", "max_steps", "min_steps")}
    settings.update(
        barebones=barebones, sync_batchnorm=given["sync_batchnorm"],
        # As in Lightning, the attribute shows what was passed, with 1 shown as True.
        fast_dev_run=True if fast_dev_batches == 1 else fast_dev_run,
        max_time=parse_max_time(given["max_time"]),
    )
    settings.update(_check_data_and_validation(given, barebones))
    settings.update(_check_optimization(given))
    settings.update(_check_debugging(given))
    if fast_dev_batches:  # a few batches of everything, nothing written (the logger is turned off by the Trainer)
        n = fast_dev_batches
        settings.update(max_steps=n, max_epochs=1, num_sanity_val_steps=0, val_check_interval=1.0,
                        check_val_every_n_epoch=1)
        settings.update((f"limit_{stage}_batches", n) for stage in ("train", "val", "test", "predict"))
    return TrainerSettings(**settings)


def check_barebones(given: Mapping[str, Any]) -> None:
    """`barebones=True` turns off everything that costs speed; an argument asking for one of those
    features is a contradiction, named in the error (Lightning's list, in its order)."""
    wanted = {
        "enable_checkpointing": bool(given["enable_checkpointing"]),
        "logger": given["logger"] is not None and given["logger"] is not False,
        "enable_progress_bar": bool(given["enable_progress_bar"]),
        "log_every_n_steps": given["log_every_n_steps"] not in (None, 0),
        "enable_model_summary": bool(given["enable_model_summary"]),
        "num_sanity_val_steps": given["num_sanity_val_steps"] not in (None, 0),
        "fast_dev_run": given["fast_dev_run"] is not False and given["fast_dev_run"] != 0,
        "detect_anomaly": bool(given["detect_anomaly"]),
        "profiler": given["profiler"] is not None,
    }
    for name, asked in wanted.items():
        if asked:
            raise MisconfigurationException(
                f"Trainer(barebones=True) turns off everything that may cost speed, which {name} would turn on. "
                f"Received: barebones=True, {name}={given[name]!r}. Fix: drop {name}, or drop barebones=True."
            )


def _check_data_and_validation(given: Mapping[str, Any], barebones: bool) -> dict[str, Any]:
    """How much data each stage reads, how often fit validates and logs."""
    found = {name: check_limit(name, given[name]) for name in (
        "limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches",
    )}
    if found["overfit_batches"]:
        found["limit_train_batches"] = found["limit_val_batches"] = found["overfit_batches"]
    val_check_interval = given["val_check_interval"]
    note_one_or_all("val_check_interval", val_check_interval)
    if val_check_interval is None:
        val_check_interval = 1.0
    if isinstance(val_check_interval, bool) or not isinstance(val_check_interval, (int, float)) or (
        isinstance(val_check_interval, float) and not 0.0 < val_check_interval <= 1.0
    ) or val_check_interval <= 0:
        raise MisconfigurationException(
            "`val_check_interval` must be a float in (0, 1] (fraction of an epoch) or an int number of "
            f"batches. Received: val_check_interval={val_check_interval!r}. Fix: e.g. 0.25 or 100."
        )
    check_int("check_val_every_n_epoch", given["check_val_every_n_epoch"], 1, allow_none=True)
    # Under barebones no sanity check runs, and log_every_n_steps keeps its default: nothing is written.
    num_sanity_val_steps = 0 if barebones else given["num_sanity_val_steps"]
    num_sanity_val_steps = 2 if num_sanity_val_steps is None else num_sanity_val_steps
    check_int("num_sanity_val_steps", num_sanity_val_steps, -1, fix="use -1 for all batches, 0 to skip")
    log_every_n_steps = None if barebones else given["log_every_n_steps"]
    log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
    check_int("log_every_n_steps", log_every_n_steps, 1)
    check_int("reload_dataloaders_every_n_epochs", given["reload_dataloaders_every_n_epochs"], 0)
    return found | {
        "val_check_interval": val_check_interval,
        "check_val_every_n_epoch": given["check_val_every_n_epoch"],
        "num_sanity_val_steps": float("inf") if num_sanity_val_steps == -1 else num_sanity_val_steps,
        "log_every_n_steps": log_every_n_steps,
        "reload_dataloaders_every_n_epochs": given["reload_dataloaders_every_n_epochs"],
    }


def _check_optimization(given: Mapping[str, Any]) -> dict[str, Any]:
    """Gradient accumulation and clipping."""
    check_int("accumulate_grad_batches", given["accumulate_grad_batches"], 1)
    clip_val, algorithm = given["gradient_clip_val"], given["gradient_clip_algorithm"]
    if clip_val is not None and (isinstance(clip_val, bool) or not isinstance(clip_val, (int, float)) or clip_val < 0):
        raise MisconfigurationException(
            f"`gradient_clip_val` must be a number >= 0. Received: gradient_clip_val={clip_val!r}. "
            "Fix: e.g. gradient_clip_val=1.0."
        )
    if algorithm is not None and (not isinstance(algorithm, str) or algorithm.lower() not in ("norm", "value")):
        raise MisconfigurationException(
            f"`gradient_clip_algorithm` must be 'norm' or 'value'. "
            f"Received: gradient_clip_algorithm={algorithm!r}. Fix: use 'norm' (default) or 'value'."
        )
    return {
        "accumulate_grad_batches": given["accumulate_grad_batches"],
        "gradient_clip_val": clip_val,
        "gradient_clip_algorithm": None if algorithm is None else GradClipAlgorithmType(algorithm.lower()),
    }


def _check_debugging(given: Mapping[str, Any]) -> dict[str, Any]:
    """Reproducibility, debugging, the flags, where files go and fulmen's preemption signals."""
    deterministic = given["deterministic"]
    if deterministic not in (None, True, False, "warn"):
        raise MisconfigurationException(
            f"`deterministic` must be True, False, 'warn' or None. Received: deterministic={deterministic!r}. "
            "Fix: deterministic=True."
        )
    for name, allow_none in (
        ("benchmark", True), ("inference_mode", False), ("detect_anomaly", False), ("use_distributed_sampler", False),
        ("enable_checkpointing", True), ("enable_progress_bar", True), ("enable_model_summary", True),
        ("enable_autolog_hparams", False),
    ):
        check_bool(name, given[name], allow_none)
    root = given["default_root_dir"]
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise MisconfigurationException(
            f"`default_root_dir` must be a directory path. Received: default_root_dir={root!r}. "
            "Fix: e.g. default_root_dir='runs/' (None: the current directory)."
        )
    # fulmen's own argument (not in Lightning): the signals that mean "save and stop" during fit.
    signals = tuple(given["preemption_signals"] or ())
    if not all(isinstance(sig, int) and not isinstance(sig, bool) for sig in signals):
        raise MisconfigurationException(
            "`preemption_signals` must be signal numbers, e.g. (signal.SIGTERM, signal.SIGUSR1). "
            f"Received: preemption_signals={given['preemption_signals']!r}. "
            "Fix: pass signal.Signals values, or None to turn it off."
        )
    return {
        "deterministic": deterministic,
        **{name: given[name] for name in ("benchmark", "inference_mode", "detect_anomaly", "use_distributed_sampler",
                                          "enable_autolog_hparams")},
        "default_root_dir": os.fspath(root) if root is not None else os.getcwd(),
        "preemption_signals": signals,
    }


# --- what fit/validate/test/predict and the Trainer's callbacks/logger arguments receive ----------


def check_callback_items(callbacks: Any) -> list[Callback]:
    """`callbacks` as a list (one Callback, a list of them, or None), each item a fulmen Callback."""
    given = [] if callbacks is None else [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
    for i, cb in enumerate(given):
        if not isinstance(cb, Callback):
            raise MisconfigurationException(
                f"Every item of `callbacks` must be a fulmen Callback. Received: callbacks[{i}] of type "
                f"{type(cb).__name__}. Fix: subclass fulmen.Callback."
            )
    return given


def check_logger(logger: Any) -> list[Any] | None:
    """The loggers `logger` asks for: [] for False, None for the default (None or True), else the list."""
    if logger is False:
        return []
    if logger is None or logger is True:
        return None
    if isinstance(logger, (str, bytes)):
        raise MisconfigurationException(
            "`logger` must be True, False, a Logger or a list of Loggers, not a name. "
            f"Received: logger={logger!r}. Fix: e.g. logger=TensorBoardLogger('logs/') or CSVLogger('logs/')."
        )
    loggers = list(logger) if isinstance(logger, Iterable) else [logger]
    for i, lg in enumerate(loggers):
        if not callable(getattr(lg, "log_metrics", None)):
            raise MisconfigurationException(
                f"`logger` must be True, False, a Logger or a list of Loggers. Received: logger[{i}] of type "
                f"{type(lg).__name__}. Fix: e.g. logger=TensorBoardLogger('logs/')."
            )
    return loggers


def model_or_attached(model: LightningModule | None, attached: LightningModule | None, fn: str) -> LightningModule:
    """The model `trainer.<fn>()` runs: the one passed, else the one the Trainer last ran."""
    if model is not None:
        return model
    if attached is None:
        raise MisconfigurationException(
            f"trainer.{fn}() was called without a model and no model was fitted before. "
            f"Received: model=None. Fix: trainer.{fn}(model, dataloaders)."
        )
    return attached


def check_model_and_datamodule(model: Any, datamodule: Any) -> None:
    if not isinstance(model, LightningModule):
        raise MisconfigurationException(
            f"The model must be a fulmen.LightningModule. Received: {type(model).__name__}. "
            "Fix: subclass fulmen.LightningModule (import fulmen as pl; class Model(pl.LightningModule))."
        )
    if "_trainer" not in model.__dict__:
        raise MisconfigurationException(
            f"{type(model).__name__}.__init__ did not call super().__init__(). "
            "Received: a module without LightningModule state. Fix: make `super().__init__()` the first "
            "line of __init__. (fulmen doctor code FM401)"
        )
    if datamodule is not None and not isinstance(datamodule, LightningDataModule):
        raise MisconfigurationException(
            f"`datamodule` must be a fulmen.LightningDataModule. Received: {type(datamodule).__name__}. "
            "Fix: subclass fulmen.LightningDataModule, or pass dataloaders directly."
        )


def check_fit_model(model: LightningModule, gradient_clip_val: Any, accumulate_grad_batches: int) -> None:
    """What fit needs of the module, and the Trainer arguments that manual optimization leaves to it."""
    if not is_overridden("training_step", model, LightningModule):
        raise MisconfigurationException(
            f"{type(model).__name__} has no training_step, so fit has nothing to run. "
            "Received: no training_step override. Fix: define `def training_step(self, batch, batch_idx)` "
            "returning the loss."
        )
    if model.automatic_optimization and not is_overridden("configure_optimizers", model, LightningModule):
        raise MisconfigurationException(
            f"{type(model).__name__} has no configure_optimizers, which automatic optimization needs. "
            "Received: no configure_optimizers override. Fix: define `def configure_optimizers(self): "
            "return torch.optim.Adam(self.parameters(), lr=1e-3)`."
        )
    if not model.automatic_optimization and gradient_clip_val:
        raise MisconfigurationException(
            "gradient_clip_val is applied by automatic optimization; under manual optimization clip yourself. "
            f"Received: gradient_clip_val={gradient_clip_val!r} with automatic_optimization=False. "
            "Fix: call self.clip_gradients(opt, gradient_clip_val=...) before opt.step() in training_step."
        )
    if not model.automatic_optimization and accumulate_grad_batches != 1:
        raise MisconfigurationException(
            "accumulate_grad_batches is applied by automatic optimization; under manual optimization "
            f"accumulate yourself. Received: accumulate_grad_batches={accumulate_grad_batches}. "
            "Fix: step the optimizer every N batches in training_step."
        )
