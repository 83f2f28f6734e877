"""`LightningCLI`: Lightning's config-driven command line, built on jsonargparse.

    # train.py
    from fulmen.cli import LightningCLI
    LightningCLI(MyModel, MyDataModule)

    $ python train.py fit --config config.yaml --trainer.max_epochs=5 --model.lr=1e-3
    $ python train.py fit --print_config            # the complete configuration, then exit
    $ fulmen fit --config config.yaml               # the same parser, classes named in the config

jsonargparse turns the signatures of `Trainer.__init__`, the module's and the datamodule's
`__init__` (and of the fit/validate/test/predict methods) into the options `--trainer.*`,
`--model.*`, `--data.*` and `--ckpt_path`, reads YAML configs of the same shape (nested
`class_path`/`init_args`, several `--config` merged in order, environment variables with
`default_env=True`), type-checks every value and builds the objects. This module adds what
Lightning adds on top: the subcommands, the Lightning classes as argument groups, the optimizer
and scheduler groups with an automatic `configure_optimizers`, seeding, and saving the config
into the run's log directory (`SaveConfigCallback`).

jsonargparse is the optional extra `fulmen[cli]`; it is imported by this module only, which
`import fulmen` never loads. Without it the type aliases below still import, and building a
parser says which extra to install.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from functools import cache, partial, update_wrapper
from pathlib import Path
from types import MethodType
from typing import Any, Optional, Union

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from fulmen.__about__ import __version__
from fulmen.arguments import closest_name
from fulmen.callbacks.callback import Callback
from fulmen.datamodule import LightningDataModule
from fulmen.errors import MisconfigurationException
from fulmen.hooks import is_overridden
from fulmen.module import LightningModule
from fulmen.seed import seed_everything
from fulmen.trainer import Trainer
from fulmen.utilities.rank_zero import rank_zero_warn

try:
    import jsonargparse
    from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, class_from_function
except ImportError:  # the `cli` extra is not installed: the names below still import
    jsonargparse = None
    ArgumentParser = object
    Namespace = dict
else:
    # torch's classes report module paths they cannot be imported from (torch.optim.adam.Adam is
    # fine, but e.g. torch._C names are not); jsonargparse then falls back to their public paths.
    jsonargparse.register_unresolvable_import_paths(torch)

__all__ = [
    "ArgsType", "FulmenCLI", "LRSchedulerCallable", "LRSchedulerTypeTuple", "LightningArgumentParser", "LightningCLI",
    "OptimizerCallable", "ReduceLROnPlateau", "SaveConfigCallback", "cli_lightning_logo", "instantiate_class",
]


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau with the `monitor` it reads, so that a config alone can set it up
    (`--lr_scheduler=ReduceLROnPlateau --lr_scheduler.monitor=val_loss`)."""

    def __init__(self, optimizer: Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


# The schedulers `--lr_scheduler` accepts. torch's own ReduceLROnPlateau is left out on purpose:
# without a monitor the Trainer could not step it.
LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]

# For type hints in user code, as in Lightning.
ArgsType = Optional[Union[list[str], dict[str, Any], Namespace]]
OptimizerCallable = Callable[[Iterable], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], Union[LRScheduler, ReduceLROnPlateau]]

_AUTOMATIC = "AUTOMATIC"


def _require_jsonargparse() -> None:
    if jsonargparse is None:
        raise ModuleNotFoundError(
            "LightningCLI is built on jsonargparse, which is not installed. "
            "Fix: pip install 'fulmen[cli]' (or pip install 'jsonargparse[signatures]')."
        )
    _load_short_names()


@cache  # once per process: every parser (one per subcommand) asks
def _load_short_names() -> None:
    """Import every built-in callback and logger. jsonargparse resolves a short class name
    (`--trainer.callbacks+=EarlyStopping`, `logger: {class_path: CSVLogger}`) among the loaded
    subclasses of the expected type, and fulmen's packages load their classes lazily."""
    import fulmen.callbacks
    import fulmen.loggers  # noqa: F401 (imports all its loggers)

    for name in fulmen.callbacks.__all__:
        getattr(fulmen.callbacks, name)


class LightningArgumentParser(ArgumentParser):
    """jsonargparse's `ArgumentParser`, with argument groups for the Lightning classes, optimizers
    and schedulers. Environment variables are named `PL_<KEY>` (`PL_FIT__TRAINER__MAX_EPOCHS`)
    and read when `default_env=True`."""

    def __init__(
        self, *args: Any, description: str = "Lightning Trainer command line tool", env_prefix: str = "PL",
        default_env: bool = False, **kwargs: Any,
    ) -> None:
        _require_jsonargparse()
        super().__init__(*args, description=description, env_prefix=env_prefix, default_env=default_env, **kwargs)
        self.callback_keys: list[str] = []  # groups holding a callback the Trainer gets
        # Which groups are optimizers and schedulers, and what each links to ("AUTOMATIC": the
        # CLI writes configure_optimizers).
        self._optimizers: dict[str, tuple[type | tuple[type, ...], str]] = {}
        self._lr_schedulers: dict[str, tuple[type | tuple[type, ...], str]] = {}

    def add_lightning_class_args(
        self, lightning_class: Any, nested_key: str, subclass_mode: bool = False, required: bool = True
    ) -> list[str]:
        """Add the `__init__` arguments of a Trainer, LightningModule, LightningDataModule or Callback
        class (or of a function returning one) under `nested_key`. With `subclass_mode` the config
        names the class (`class_path`/`init_args`), any subclass of the given one."""
        if callable(lightning_class) and not isinstance(lightning_class, type):
            lightning_class = class_from_function(lightning_class)
        bases = (Trainer, LightningModule, LightningDataModule, Callback)
        if not (isinstance(lightning_class, type) and issubclass(lightning_class, bases)):
            raise MisconfigurationException(
                f"add_lightning_class_args takes a Lightning class. Received: {lightning_class!r}. Fix: pass a "
                "subclass of Trainer, LightningModule, LightningDataModule or Callback, or a function returning one."
            )
        if issubclass(lightning_class, Callback):
            self.callback_keys.append(nested_key)
        if subclass_mode:
            return self.add_subclass_arguments(lightning_class, nested_key, fail_untyped=False, required=required)
        # The Trainer is built by the CLI itself, after the callbacks are added to its arguments.
        return self.add_class_arguments(
            lightning_class, nested_key, fail_untyped=False, instantiate=not issubclass(lightning_class, Trainer),
            sub_configs=True,
        )

    def add_optimizer_args(
        self, optimizer_class: type | tuple[type, ...] = (Optimizer,), nested_key: str = "optimizer",
        link_to: str = _AUTOMATIC,
    ) -> None:
        """An optimizer group: one class, or (a tuple) any subclass named in the config. Its
        `params` are left out: they are the model's. `link_to` a module argument instead of
        "AUTOMATIC" to inject it (e.g. into an `OptimizerCallable` argument)."""
        self._add_optimization_group(optimizer_class, Optimizer, nested_key, link_to, "params", self._optimizers)

    def add_lr_scheduler_args(
        self, lr_scheduler_class: type | tuple[type, ...] = LRSchedulerTypeTuple, nested_key: str = "lr_scheduler",
        link_to: str = _AUTOMATIC,
    ) -> None:
        """A learning-rate scheduler group, as `add_optimizer_args` (its `optimizer` is left out)."""
        self._add_optimization_group(
            lr_scheduler_class, LRSchedulerTypeTuple, nested_key, link_to, "optimizer", self._lr_schedulers
        )

    def _add_optimization_group(
        self, classes: type | tuple[type, ...], base: type | tuple[type, ...], nested_key: str, link_to: str,
        skip: str, register: dict[str, tuple[type | tuple[type, ...], str]],
    ) -> None:
        for cls in classes if isinstance(classes, tuple) else (classes,):
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise MisconfigurationException(
                    f"The {nested_key!r} group takes subclasses of {_names(base)}. Received: {cls!r}. "
                    f"Fix: pass e.g. {_names(base).split(' or ')[0]} or a tuple of such classes."
                )
        options: dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": {skip}}
        if isinstance(classes, tuple):
            self.add_subclass_arguments(classes, nested_key, **options)
        else:
            self.add_class_arguments(classes, nested_key, sub_configs=True, **options)
        register[nested_key] = (classes, link_to)

    def error(self, message: str, ex: Exception | None = None) -> Any:
        """jsonargparse's message, plus the nearest known option or class when one is misspelt."""
        # A subcommand's error reaches the main parser with the subcommand's parser attached.
        parser = getattr(ex, "subcommand_parser", None) or self
        message += _did_you_mean(message, parser)
        return super().error(message, ex) if ex is not None else super().error(message)


def _did_you_mean(message: str, parser: Any) -> str:
    """"\nDid you mean --trainer.max_epochs?" for an unknown option, "\nDid you mean EarlyStopping?"
    for a class name that is not one of the expected type's loaded subclasses; "" otherwise."""
    actions = [a for a in getattr(parser, "_actions", []) if getattr(a, "option_strings", None)]
    if "unrecognized arguments" in message:
        known = [s.lstrip("-") for a in actions for s in a.option_strings]
        for name in re.findall(r"--([\w.]+)", message):
            close = None if name in known else closest_name(name, known)
            if close:
                return f"\nDid you mean --{close}?"
        return ""
    key = re.search(r'Parser key "([\w.]+)"', message)
    given = re.search(r"Given value: ([\w.]+)\s*$", message)
    if not (key and given):
        return ""
    action = next((a for a in actions if a.dest == key.group(1)), None)
    typehint = getattr(action, "_typehint", None)
    if typehint is None:
        return ""
    from jsonargparse._typehints import get_all_subclass_paths

    try:
        paths = get_all_subclass_paths(typehint)
    except Exception:  # noqa: BLE001 (a suggestion is a bonus; the message stands without one)
        return ""
    value = given.group(1)
    # A short name is compared with short names, a dotted path with full paths.
    names = paths if "." in value else [p.rpartition(".")[2] for p in paths]
    close = closest_name(value, names)
    return f"\nDid you mean {close}?" if close and close != value else ""


def _names(classes: type | tuple[type, ...]) -> str:
    return " or ".join(c.__name__ for c in (classes if isinstance(classes, tuple) else (classes,)))


class SaveConfigCallback(Callback):
    """Write the parsed configuration as `config.yaml` into the run's log directory when it sets up.

    A `config.yaml` already there stops the run (it belongs to an earlier run) unless
    `overwrite=True`, as in Lightning. One exception: a run that resumed from `ckpt_path="last"`
    into the same log directory (fulmen's autoresume) keeps the file when it holds the same
    configuration (a random `seed_everything` aside), since it is the same run.

    Args:
        parser: the parser that read `config` (it writes the file).
        config: the configuration to save.
        config_filename: the file's name in the log directory.
        overwrite: replace an existing file.
        multifile: keep the structure of several input config files.
        save_to_log_dir: False to save only in an overridden `save_config` (e.g. to a logger).
    """

    def __init__(
        self, parser: LightningArgumentParser, config: Namespace, config_filename: str = "config.yaml",
        overwrite: bool = False, multifile: bool = False, save_to_log_dir: bool = True,
    ) -> None:
        self.parser, self.config, self.config_filename = parser, config, config_filename
        self.overwrite, self.multifile, self.save_to_log_dir = overwrite, multifile, save_to_log_dir
        self.already_saved = False
        if not save_to_log_dir and not is_overridden("save_config", self, SaveConfigCallback):
            raise ValueError(
                "SaveConfigCallback(save_to_log_dir=False) saves nothing unless a subclass implements save_config. "
                "Received: save_to_log_dir=False without a save_config override. Fix: override save_config, or pass "
                "LightningCLI(save_config_callback=None) to save no config."
            )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            log_dir = trainer.log_dir
            path = os.path.join(log_dir, self.config_filename)
            verdict = self._existing_file_verdict(trainer, path) if trainer.is_global_zero else None
            verdict = trainer.strategy.broadcast(verdict)
            if verdict == "refuse":
                raise RuntimeError(
                    f"{type(self).__name__} expected {path} to NOT exist: it holds the config of an earlier run, "
                    "and writing over it would lose it. Fix: delete it, use another log directory, "
                    "set LightningCLI(save_config_callback=None) to save no config, or "
                    'LightningCLI(save_config_kwargs={"overwrite": True}) to replace it.'
                )
            if trainer.is_global_zero and verdict != "keep":
                os.makedirs(log_dir, exist_ok=True)  # no logger has written into it yet
                self.parser.save(self.config, path, skip_unset=False, overwrite=self.overwrite, multifile=self.multifile)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def _existing_file_verdict(self, trainer: Trainer, path: str) -> str | None:
        """None: write the file; "keep": the same run's file is there; "refuse": another run's is."""
        if self.overwrite or not os.path.isfile(path):
            return None
        logger = trainer.logger
        if trainer.ckpt_path is not None and getattr(logger, "_resume_step", None) is not None:
            import yaml

            with open(path, encoding="utf-8") as f:
                saved = yaml.safe_load(f) or {}
            current = yaml.safe_load(self.parser.dump(self.config, skip_unset=False)) or {}
            saved.pop("seed_everything", None), current.pop("seed_everything", None)
            if saved == current:
                return "keep"
        return "refuse"

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Override to save the config somewhere else too (runs on rank 0 only, so no collectives here)."""


class LightningCLI:
    """Build the model, the datamodule and the Trainer from the command line and config files, then
    run the subcommand (fit, validate, test or predict).

    Args:
        model_class: the LightningModule class (or a function returning one); None: any, named in
            the config (`model.class_path`).
        datamodule_class: the LightningDataModule class; None: any or none, named in the config.
        save_config_callback: the callback that saves the config; None to save nothing.
        save_config_kwargs: its arguments, e.g. `{"overwrite": True}`.
        trainer_class: the Trainer class (or a function returning one).
        trainer_defaults: Trainer arguments used unless the config or the command line sets them.
        seed_everything_default: the `--seed_everything` default: an int, True (a random seed,
            recorded in the saved config) or False (no seeding).
        parser_kwargs: arguments of the parsers, e.g. `{"default_env": True}`, or per subcommand
            (`{"fit": {"default_config_files": ["fit.yaml"]}}`).
        parser_class: the parser class.
        subclass_mode_model: accept any subclass of `model_class`, named in the config.
        subclass_mode_data: the same for `datamodule_class`.
        args: the arguments instead of `sys.argv[1:]`: a list of strings, or a dict (or Namespace)
            shaped like a config.
        run: parse a subcommand and run it; with False there is no subcommand, and the caller uses
            `cli.trainer`, `cli.model` and `cli.datamodule`.
        auto_configure_optimizers: add `--optimizer`/`--lr_scheduler`, and write the model's
            `configure_optimizers` when the config names an optimizer.
        load_from_checkpoint_support: with `--ckpt_path`, read the model's hyperparameters from it.
    """

    def __init__(
        self,
        model_class: type[LightningModule] | Callable[..., LightningModule] | None = None,
        datamodule_class: type[LightningDataModule] | Callable[..., LightningDataModule] | None = None,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: type[Trainer] | Callable[..., Trainer] = Trainer,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = True,
        parser_kwargs: dict[str, Any] | dict[str, dict[str, Any]] | None = None,
        parser_class: type[LightningArgumentParser] = LightningArgumentParser,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: ArgsType = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
        load_from_checkpoint_support: bool = True,
    ) -> None:
        _require_jsonargparse()
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = trainer_defaults or {}
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.parser_class = parser_class
        self.auto_configure_optimizers = auto_configure_optimizers
        # Without a class, any module (datamodule) can be named in the config.
        self.model_class, self.datamodule_class = model_class, datamodule_class
        self._model_class = model_class or LightningModule
        self._datamodule_class = datamodule_class or LightningDataModule
        self.subclass_mode_model = model_class is None or subclass_mode_model
        self.subclass_mode_data = datamodule_class is None or subclass_mode_data

        main_kwargs, subcommand_kwargs = self._split_parser_kwargs(self.parser_kwargs)
        self.setup_parser(run, main_kwargs, subcommand_kwargs)
        self.parse_arguments(self.parser, args)
        if load_from_checkpoint_support:
            self._hparams_from_checkpoint()
        self.subcommand: str | None = self.config["subcommand"] if run else None
        self._set_seed()
        self.before_instantiate_classes()
        self.instantiate_classes()
        self.after_instantiate_classes()
        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # --- the parsers ---------------------------------------------------------------------------
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """The subcommands, each with the Trainer method arguments the CLI fills in itself."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def _split_parser_kwargs(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        names = self.subcommands().keys()
        return ({k: v for k, v in kwargs.items() if k not in names}, {k: v for k, v in kwargs.items() if k in names})

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """A new parser with `-c/--config`."""
        kwargs.setdefault("dump_header", [f"fulmen=={__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=ActionConfigFile,
                            help="Path to a configuration file in json or yaml format.")
        return parser

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any], subcommand_kwargs: dict[str, Any]) -> None:
        """The main parser, with one sub-parser per subcommand (or, with `run=False`, the arguments directly)."""
        self.parser = self.init_parser(**main_kwargs)
        if not add_subcommands:
            self._add_arguments(self.parser)
            return
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        self._subcommand_method_arguments: dict[str, list[str]] = {}
        subcommands = self.parser.add_subcommands()
        trainer_class = self.trainer_class if isinstance(self.trainer_class, type) else class_from_function(self.trainer_class)
        for name, skip in self.subcommands().items():
            method = getattr(trainer_class, name)
            description = _first_line(method)
            kwargs = dict(subcommand_kwargs.get(name, {}))
            kwargs.setdefault("description", description)
            parser = self.init_parser(**kwargs)
            self._add_arguments(parser)
            # The method's own arguments (ckpt_path, verbose, ...), as top-level options.
            self._subcommand_method_arguments[name] = parser.add_method_arguments(trainer_class, name, skip=set(skip))
            self._subcommand_parsers[name] = parser
            subcommands.add_subcommand(name, parser, help=description)

    def _add_arguments(self, parser: LightningArgumentParser) -> None:
        self.add_default_arguments_to_parser(parser)
        self.add_core_arguments_to_parser(parser)
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:  # unless add_arguments_to_parser added its own
                parser.add_optimizer_args((Optimizer,))
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        self.link_optimizers_and_lr_schedulers(parser)

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """`--seed_everything`."""
        parser.add_argument(
            "--seed_everything", type=Union[bool, int], default=self.seed_everything_default,
            help="Set to an int to run seed_everything with this value before classes instantiation."
                 "Set to True to use a random seed.",
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The `trainer`, `model` and `data` groups."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        # Without a datamodule class the data group is optional: the module may have its own loaders.
        parser.add_lightning_class_args(
            self._datamodule_class, "data", subclass_mode=self.subclass_mode_data,
            required=self.datamodule_class is not None,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Override to add arguments or `parser.link_arguments(...)` (called for each subcommand's parser)."""

    @staticmethod
    def link_optimizers_and_lr_schedulers(parser: LightningArgumentParser) -> None:
        """Link each optimizer and scheduler group that names a `link_to` target to it."""
        for key, (classes, link_to) in {**parser._optimizers, **parser._lr_schedulers}.items():
            if link_to == _AUTOMATIC:
                continue
            if isinstance(classes, tuple):  # the config names the class: pass its class_path on
                parser.link_arguments(key, link_to)
            else:
                parser.link_arguments(key, link_to, compute_fn=partial(_with_class_path, classes))

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse `args` (default: the command line) into `self.config`."""
        if args is not None and len(sys.argv) > 1:
            rank_zero_warn(
                "LightningCLI got both args= and command-line arguments; args= is meant to replace the command line, "
                f"and the command line is ignored. Received: sys.argv[1:]={sys.argv[1:]}, args={args}.",
                stacklevel=6,  # the line that built the LightningCLI
            )
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    def _hparams_from_checkpoint(self) -> None:
        """With `--ckpt_path FILE`, the model's hyperparameters saved in it fill the model group."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        from fulmen.checkpoint import load_checkpoint

        hparams = dict(load_checkpoint(ckpt_path, map_location="cpu").get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        elif self.subclass_mode_model and getattr(self.config[subcommand].get("model"), "class_path", None):
            # fulmen records no _class_path: the saved arguments are those of the class the config names
            hparams = {"class_path": self.config[subcommand]["model"]["class_path"], "init_args": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"The hyperparameters saved in {ckpt_path} do not fit the model's arguments.\n")
            raise

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if seed is False:
            return
        seed = seed_everything(None if seed is True else seed, workers=True)
        # The seed drawn is recorded, so that the saved config reproduces the run.
        (self.config[self.subcommand] if self.subcommand else self.config)["seed_everything"] = seed

    # --- building and running --------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        """Override to run code after parsing, before the classes are built."""

    def instantiate_classes(self) -> None:
        """Build the datamodule, the model (with its configure_optimizers) and the Trainer."""
        self.config_init = self.parser.instantiate(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()

    def after_instantiate_classes(self) -> None:
        """Override to run code after the classes are built."""

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer from its config group (and `kwargs`), with the callbacks of callback groups,
        `trainer_defaults["callbacks"]` and the SaveConfigCallback added."""
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(config, extra)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        if "callbacks" not in inspect.signature(self.trainer_class).parameters and "callbacks" not in config:
            rank_zero_warn(f"{self.trainer_class.__qualname__} takes no `callbacks`, so the CLI's callbacks are not added.")
            return self.trainer_class(**config)
        given = config.get("callbacks")
        config["callbacks"] = [] if given is None else list(given) if isinstance(given, list) else [given]
        config["callbacks"] += callbacks
        default = self.trainer_defaults.get("callbacks")
        if default is not None:
            config["callbacks"] += default if isinstance(default, list) else [default]
        if self.save_config_callback and not config.get("fast_dev_run", False):
            config["callbacks"].append(self.save_config_callback(
                self._parser(self.subcommand), self.config.get(str(self.subcommand), self.config),
                **self.save_config_kwargs,
            ))
        return self.trainer_class(**config)

    @staticmethod
    def configure_optimizers(
        lightning_module: LightningModule, optimizer: Optimizer, lr_scheduler: LRSchedulerTypeUnion | None = None
    ) -> Any:
        """What the model's `configure_optimizers` returns when the config names the optimizer;
        override to change it."""
        if lr_scheduler is None:
            return optimizer
        if isinstance(lr_scheduler, ReduceLROnPlateau):
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "monitor": lr_scheduler.monitor}}
        return [optimizer], [lr_scheduler]

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """When the config names an optimizer (and maybe a scheduler) of an "AUTOMATIC" group,
        replace the model's configure_optimizers with one that builds them."""
        if not self.auto_configure_optimizers:
            return
        parser = self._parser(subcommand)
        optimizers = _automatic_keys(parser._optimizers, Optimizer)
        schedulers = _automatic_keys(parser._lr_schedulers, LRSchedulerTypeTuple)
        if not optimizers:
            return
        if len(optimizers) > 1 or len(schedulers) > 1:
            raise MisconfigurationException(
                "LightningCLI writes configure_optimizers for one optimizer and at most one scheduler group. "
                f"Received: automatic groups {optimizers + schedulers}. Fix: pass link_to= for the others and "
                "write configure_optimizers yourself."
            )
        optimizer_init = self._group_init(parser._optimizers, optimizers[0])
        if not optimizer_init:
            return  # the group was added automatically and the config names no optimizer
        scheduler_init = self._group_init(parser._lr_schedulers, schedulers[0]) if schedulers else None
        if is_overridden("configure_optimizers", self.model, LightningModule):
            rank_zero_warn(
                f"`{type(self.model).__name__}.configure_optimizers` will be overridden by "
                f"`{type(self).__name__}.configure_optimizers`."
            )
        optimizer = instantiate_class(self.model.parameters(), optimizer_init)
        scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
        method = partial(self.configure_optimizers, optimizer=optimizer, lr_scheduler=scheduler)
        update_wrapper(method, self.configure_optimizers)  # its name and docstring, for a reader inspecting the model
        self.model.configure_optimizers = MethodType(method, self.model)

    def _group_init(self, register: dict[str, Any], key: str) -> dict[str, Any] | None:
        init = self._get(self.config_init, key)
        classes = register[key][0]
        return init if isinstance(classes, tuple) else _with_class_path(classes, init)

    def _run_subcommand(self, subcommand: str) -> None:
        """`before_<subcommand>()`, the subcommand (a method of this class of that name, or the
        Trainer's), then `after_<subcommand>()`."""
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        fn = getattr(self, subcommand, getattr(self.trainer, subcommand))
        fn(**self._prepare_subcommand_kwargs(subcommand))
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = {k: v for k, v in self.config_init[subcommand].items() if k in self._subcommand_method_arguments[subcommand]}
        kwargs["model"] = self.model
        if self.datamodule is not None:
            kwargs["datamodule"] = self.datamodule
        return kwargs

    def _parser(self, subcommand: str | None) -> LightningArgumentParser:
        return self.parser if subcommand is None else self._subcommand_parsers[subcommand]

    def _get(self, config: Namespace, key: str, default: Any = None) -> Any:
        """`config[key]`, inside the subcommand's part when there is one."""
        return config.get(str(self.subcommand), config).get(key, default)


FulmenCLI = LightningCLI  # fulmen's earlier name


def _automatic_keys(register: dict[str, tuple[type | tuple[type, ...], str]], base: type | tuple[type, ...]) -> list[str]:
    keys = []
    for key, (classes, link_to) in register.items():
        classes = classes if isinstance(classes, tuple) else (classes,)
        if link_to == _AUTOMATIC and any(issubclass(c, base) for c in classes):
            keys.append(key)
    return keys


def _with_class_path(cls: type, init_args: Any = None) -> dict[str, Any]:
    """A group of one fixed class holds only its arguments; give them the class's path."""
    if isinstance(init_args, Namespace):
        init_args = init_args.as_dict()
    return {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": init_args or {}}


def instantiate_class(args: Any, init: dict[str, Any]) -> Any:
    """Build `init["class_path"]` with the positional `args` (one value or a tuple) and `init["init_args"]`."""
    import importlib

    module_name, _, class_name = init["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(*(args if isinstance(args, tuple) else (args,)), **init.get("init_args", {}))


def _first_line(obj: Any) -> str | None:
    doc = inspect.getdoc(obj)
    return doc.strip().splitlines()[0] if doc else None


LIGHTNING_LOGO = r"""
    ___       __
   / _/_ __  / /_ _  ___ ___
  / _/ // / / /  ' \/ -_) _ \
 /_/ \_,_/ /_/_/_/_/\__/_//_/
"""


def cli_lightning_logo() -> None:
    """Print the logo Lightning's CLI prints (fulmen's line in its place)."""
    print(LIGHTNING_LOGO)
