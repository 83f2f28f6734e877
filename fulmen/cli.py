"""The `fulmen` command and `FulmenCLI`, a config-driven command line like Lightning's LightningCLI.

    fulmen doctor PATH...                  static checks for common mistakes (fulmen.doctor)
    fulmen new NAME                        a ready project: model.py, data.py, train.py, config, test
    fulmen report RUN_DIR                  one self-contained HTML page with the run's curves (fulmen.report)
    fulmen fit --config cfg.yaml           fit|validate|test|predict the classes named in the config

In a training script:

    from fulmen.cli import FulmenCLI
    FulmenCLI(Model, DataModule)           # python train.py fit --trainer.max_epochs=5 --model.lr=1e-3

The arguments of `Model.__init__`, `DataModule.__init__` and `Trainer.__init__` become the options
`--model.*`, `--data.*` and `--trainer.*`; their annotations decide how a value is read (`1e-3` is a
float for a `float` argument and stays a string for a `str` one). `--config FILE` (repeatable) reads
YAML files in the same shape; later arguments override earlier ones. `--print_config` prints the
complete configuration and exits. The configuration is saved as `config.yaml` in the run's log
directory (`SaveConfigCallback`). No dependency beyond fulmen: YAML files are read with PyYAML when
it is installed (`pip install 'fulmen[cli]'`), else with fulmen's own reader of plain YAML.
This module is imported only by the `fulmen` command and by scripts that use `FulmenCLI`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import torch

from fulmen._yaml import _YAML_SPECIALS, dump_yaml, load_yaml
from fulmen.callbacks.callback import Callback
from fulmen.errors import CLIError
from fulmen.trainer import Trainer

__all__ = [
    "ArgsType", "FulmenCLI", "LRSchedulerCallable", "LightningCLI", "OptimizerCallable", "SaveConfigCallback",
    "cli_lightning_logo", "main", "new_project",
]

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# For `class_path: ModelCheckpoint`: short names are looked up in these modules.
_SHORT_NAME_MODULES = ("fulmen.callbacks", "fulmen.loggers", "fulmen", "torch.optim", "torch.optim.lr_scheduler")


class SaveConfigCallback(Callback):
    """Write the CLI's configuration to `config.yaml` in `trainer.log_dir` when the run sets up.

    An existing file is not overwritten (it belongs to another run) unless `overwrite=True`.
    """

    def __init__(self, config: dict[str, Any], config_filename: str = "config.yaml", overwrite: bool = False) -> None:
        self.config, self.config_filename, self.overwrite = config, config_filename, overwrite
        self.already_saved = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # on every rank: with several processes it is a broadcast from rank 0
        if getattr(trainer, "global_rank", 0) != 0:
            return
        path = Path(log_dir) / self.config_filename
        if path.exists() and not self.overwrite:
            raise RuntimeError(
                f"SaveConfigCallback would overwrite the config of another run. Received: {path} exists. Fix: use "
                "a new log directory (the default logger makes a new version_N per run), or pass "
                "FulmenCLI(save_config_kwargs={'overwrite': True})."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(self.config), encoding="utf-8")
        self.already_saved = True


# --- reading values against annotations -------------------------------------------------------


def _parse_raw(text: str) -> Any:
    """A command-line value: JSON (numbers, lists, true/false/null), YAML's special words, else the string."""
    if text in _YAML_SPECIALS:
        return _YAML_SPECIALS[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _annotations(fn: Any) -> dict[str, Any]:
    """Each parameter's annotation, resolved when possible (strings under `from __future__ import annotations`)."""
    hints: dict[str, Any] = {}
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})
    for name, param in inspect.signature(fn).parameters.items():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(namespace))  # noqa: S307 - the user's own annotation text
            except Exception:
                annotation = Any
        hints[name] = Any if annotation is inspect.Parameter.empty else annotation
    return hints


class _Raw(str):
    """A value typed on the command line, kept as text until its annotation is known: `1e-3` is
    the float 0.001 for a `float` argument and the text '1e-3' for a `str` one."""


def _coerce(value: Any, annotation: Any, option: str) -> Any:
    """`value` as `annotation` wants it, or a CLIError naming the option, the value and the fix."""
    raw = str(value) if isinstance(value, _Raw) else None
    if raw is not None:
        value = _parse_raw(raw)
    result = _try_coerce(value, annotation, raw)
    if result is _NO:
        raise CLIError(f"{option} expects {_type_name(annotation)}. Received: {value!r}. "
                       f"Fix: pass a value of that type, e.g. {option}=...")
    return result


_NO = object()


def _try_coerce(value: Any, annotation: Any, raw: str | None = None) -> Any:
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if isinstance(value, dict) and "class_path" in value:
        return value  # instantiated later
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for member in sorted(args, key=lambda a: a is str):  # str last: "5" is the int 5 for `int | str`
            result = _try_coerce(value, member, raw)
            if result is not _NO:
                return result
        return _NO
    if origin is typing.Literal:
        return value if value in args else _NO
    if annotation is type(None):
        return None if value is None else _NO
    if annotation is bool:
        return value if isinstance(value, bool) else _NO
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return _NO
        return _NO
    if annotation is str:
        if raw is not None:
            return raw
        return value if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else _NO
    if origin in (list, tuple, set) or annotation in (list, tuple, set):
        if not isinstance(value, (list, tuple)):
            return _NO
        member = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else Any
        items = [_try_coerce(v, member) for v in value]
        return _NO if any(i is _NO for i in items) else (origin or annotation)(items)
    if origin is dict or annotation is dict:
        return value if isinstance(value, dict) else _NO
    if isinstance(annotation, type) and issubclass(annotation, os.PathLike):  # kept as text: YAML-writable
        return raw if raw is not None else value if isinstance(value, str) else _NO
    return value  # a class or a type fulmen does not check: passed as given


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is None and hasattr(annotation, "__name__"):
        return annotation.__name__  # int, float, a class
    return str(annotation).replace("typing.", "")  # list[int], int | None, Literal['a', 'b']


def _plain(value: Any) -> Any:
    """A default value as YAML-writable plain data."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _import(path: str) -> Any:
    """`pkg.mod.Name`, or a short name found in fulmen's callbacks/loggers or torch.optim."""
    if "." in path:
        module, _, name = path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise CLIError(f"cannot import class_path {path!r} ({err}). Fix: give the full dotted path, "
                           "e.g. model.Classifier, and run from the folder that holds model.py.") from None
    for module in _SHORT_NAME_MODULES:
        found = getattr(importlib.import_module(module), path, None)
        if found is not None:
            return found
    raise CLIError(f"unknown class_path {path!r}. Fix: use a dotted path such as mypackage.MyCallback.")


def _check_init_args(cls: Any, init_args: dict[str, Any], class_path: str) -> None:
    """A CLIError for an init_args key `cls` does not take (before the TypeError it would raise)."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    for name in init_args:
        if name not in parameters:
            close = difflib.get_close_matches(name, list(parameters), n=1)
            raise CLIError(f"{class_path} has no argument {name!r}. Received: init_args: {sorted(init_args)}. Fix: "
                           f"one of {', '.join(parameters)}" + (f" (did you mean {close[0]}?)" if close else "") + ".")


def _instantiate(value: Any) -> Any:
    """Build `{class_path: ..., init_args: {...}}` values (also inside lists) into objects."""
    if isinstance(value, list):
        return [_instantiate(v) for v in value]
    if isinstance(value, dict) and "class_path" in value:
        cls = _import(value["class_path"])
        init_args = value.get("init_args") or {}
        if not isinstance(init_args, dict):
            raise CLIError(f"init_args of {value['class_path']} must be a mapping. Received: {init_args!r}. Fix: write "
                           "it as an indented block, or pip install 'fulmen[cli]' (PyYAML) for flow style {a: 1}.")
        if not callable(cls):
            raise CLIError(f"class_path {value['class_path']!r} is not a class. Received: {type(cls).__name__}. "
                           "Fix: name a class, e.g. fulmen.callbacks.EarlyStopping.")
        _check_init_args(cls, init_args, str(value["class_path"]))
        return cls(**{k: _instantiate(v) for k, v in init_args.items()})
    return value


# --- FulmenCLI --------------------------------------------------------------------------------


class FulmenCLI:
    """Build the model, data module and Trainer from config files and `--section.key=value`
    arguments, then run the subcommand, like Lightning's `LightningCLI`.

    Args:
        model_class: the LightningModule class; None to name it in the config (`model.class_path`).
        datamodule_class: the LightningDataModule class; None for a model that has its own
            dataloaders, or to name it in the config (`data.class_path`).
        save_config_callback: writes the config to the run's log dir; None to not save it.
        save_config_kwargs: passed to it, e.g. {"overwrite": True}.
        trainer_class: the Trainer class to build.
        trainer_defaults: Trainer arguments used unless the config or command line sets them.
        seed_everything_default: True (a random seed, recorded in the config), an int, or False.
        args: the arguments (default: sys.argv[1:]); a dict is taken as the parsed config.
        run: run the subcommand (the first argument); with False there is no subcommand and the
            caller uses `cli.trainer`, `cli.model` and `cli.datamodule` itself.

    Example (train.py):
        >>> cli = FulmenCLI(Model, DataModule)  # doctest: +SKIP
        $ python train.py fit --config config.yaml --trainer.max_epochs=5 --model.lr=1e-3
    """

    def __init__(
        self,
        model_class: type | None = None,
        datamodule_class: type | None = None,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: type = Trainer,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = True,
        args: list[str] | dict[str, Any] | None = None,
        run: bool = True,
        description: str | None = None,
    ) -> None:
        self.model_class, self.datamodule_class, self.trainer_class = model_class, datamodule_class, trainer_class
        self.description = description or (model_class.__doc__ or "").strip().split("\n")[0] or "Train a model."
        args = sys.argv[1:] if args is None else args
        self.subcommand: str | None = None
        if run and not isinstance(args, dict):
            if not args or args[0] in ("-h", "--help"):
                self._print_help()
                raise SystemExit(0 if args else 2)
            if args[0] not in SUBCOMMANDS:
                raise CLIError(f"the first argument must be a subcommand. Received: {args[0]!r}. "
                               f"Fix: one of {', '.join(SUBCOMMANDS)}, e.g. `fit --config config.yaml`.")
            self.subcommand, args = args[0], args[1:]
        self.config = self._defaults(trainer_defaults or {}, seed_everything_default)
        print_config = False
        if isinstance(args, dict):
            self._merge_tree(args, "")
        else:
            print_config = self._apply_args(list(args))
        self._finish_config()
        if print_config:
            sys.stdout.write(dump_yaml(self.config))
            raise SystemExit(0)
        self._instantiate_all(save_config_callback, save_config_kwargs or {})
        if self.subcommand is not None:
            self.result = self._run_subcommand()

    # --- the configuration ------------------------------------------------------------------
    def _section_fn(self, section: str) -> Any:
        if section == "trainer":
            return self.trainer_class.__init__
        cls = self.model_class if section == "model" else self.datamodule_class
        if cls is None:
            node = self.config.get(section)
            if isinstance(node, dict) and "class_path" in node:
                if not node["class_path"]:  # values given, no class to give them to
                    raise CLIError(
                        f"the config sets {section} arguments but names no {section} class. Received: "
                        f"{section}: {sorted(node['init_args'])} without class_path. Fix: add `class_path: "
                        f"module.Class` under {section}: (its arguments under `init_args:`), pass "
                        f"--{section}.class_path=module.Class, or run the project's own script (python train.py "
                        "fit --config ...), which names the classes itself.")
                cls = _import(node["class_path"])
        return None if cls is None else cls.__init__

    def _subclass_mode(self, section: str) -> bool:
        return (self.model_class if section == "model" else self.datamodule_class) is None

    def _defaults(self, trainer_defaults: dict[str, Any], seed: bool | int) -> dict[str, Any]:
        config: dict[str, Any] = {"seed_everything": seed}
        config["trainer"] = {name: _plain(p.default) for name, p in self._parameters(self.trainer_class.__init__)}
        # Objects among the defaults (callback instances) appear in the printed/saved config as text
        # and are passed to the Trainer as they are, unless the config or command line replaces them.
        self._trainer_objects = {k: v for k, v in trainer_defaults.items() if _plain(v) != v}
        config["trainer"].update({k: _plain(v) for k, v in trainer_defaults.items()})
        for section, cls in (("model", self.model_class), ("data", self.datamodule_class)):
            if cls is not None:
                config[section] = {name: None if p.default is inspect.Parameter.empty else _plain(p.default)
                                   for name, p in self._parameters(cls.__init__)}
        if self.subcommand is not None:
            config["ckpt_path"] = None
        return config

    @staticmethod
    def _parameters(fn: Any) -> list[tuple[str, inspect.Parameter]]:
        return [(n, p) for n, p in list(inspect.signature(fn).parameters.items())[1:]
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def _apply_args(self, args: list[str]) -> bool:
        """Apply `--key value`/`--key=value` arguments in order; return whether --print_config was given."""
        print_config = False
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-h", "--help"):
                self._print_help()
                raise SystemExit(0)
            if not arg.startswith("--") and arg != "-c":
                raise CLIError(f"unexpected argument {arg!r}. Fix: options look like --trainer.max_epochs=5.")
            key, has_value, value = arg.lstrip("-").partition("=")
            if key == "print_config":
                print_config = True
                i += 1
                continue
            if not has_value:
                if i + 1 >= len(args):
                    raise CLIError(f"{arg} needs a value. Fix: {arg}=VALUE or {arg} VALUE.")
                value, i = args[i + 1], i + 1
            i += 1
            if key in ("config", "c"):
                path = Path(value)
                if not path.is_file():
                    raise CLIError(f"config file not found. Received: --config {value}. Fix: check the path.")
                try:
                    loaded = load_yaml(path.read_text(encoding="utf-8")) or {}
                except Exception as err:  # PyYAML's YAMLError or the subset reader's ValueError
                    where = getattr(err, "problem_mark", None)
                    line = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
                    reason = getattr(err, "problem", None) or str(err).splitlines()[0]
                    raise CLIError(f"the config file is not valid YAML{line}: {reason}. Received: --config {value}. "
                                   "Fix: correct the YAML there (indent nested keys by two spaces).") from None
                if not isinstance(loaded, dict):
                    raise CLIError(f"a config file must hold a mapping. Received: {type(loaded).__name__} in {value}. "
                                   "Fix: write it as keys: trainer:, model:, data: (see --print_config).")
                if self.subcommand in loaded and isinstance(loaded[self.subcommand], dict):
                    loaded = loaded[self.subcommand]  # Lightning's layout with the subcommand as top key
                self._merge_tree(loaded, "")
            else:
                self._set(key, _Raw(value), f"--{key}")
        return print_config

    def _merge_tree(self, tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and dotted in ("trainer", "model", "data") and "class_path" not in value:
                self._merge_tree(value, dotted + ".")
            elif dotted in ("model", "data") and isinstance(value, dict):
                init_args = value.get("init_args") or {}
                if not isinstance(init_args, dict):
                    raise CLIError(f"{dotted}.init_args must be a mapping. Received: {init_args!r}. Fix: write it as "
                                   "an indented block, or pip install 'fulmen[cli]' (PyYAML) for flow style {a: 1}.")
                self._set(f"{dotted}.class_path", value["class_path"], dotted)
                self._merge_tree(init_args, dotted + ".init_args.")
            else:
                self._set(dotted, value, dotted)

    def _set(self, key: str, value: Any, option: str) -> None:
        section, _, name = key.partition(".")
        if section in ("seed_everything", "ckpt_path") and not name:
            self.config[section] = _parse_raw(value) if isinstance(value, _Raw) else value
            return
        if section not in ("trainer", "model", "data") or not name:
            raise CLIError(f"unknown option {option}. Fix: use --config, --print_config, --seed_everything, "
                           "--ckpt_path or --trainer.*, --model.*, --data.* options (see --help).")
        if section != "trainer" and not self._subclass_mode(section):
            if name == "class_path":  # a config written for `fulmen fit`: it must name this script's class
                self._check_fixed_class(section, value)
                return
            name = name.removeprefix("init_args.")
        if section != "trainer" and self._subclass_mode(section):
            node = self.config.setdefault(section, {"class_path": None, "init_args": {}})
            if name == "class_path":
                node["class_path"] = str(value)
            else:
                node["init_args"][name.removeprefix("init_args.")] = value
            return
        self.config.setdefault(section, {})[name] = value

    def _check_fixed_class(self, section: str, class_path: Any) -> None:
        fixed = self.model_class if section == "model" else self.datamodule_class
        named = _import(str(class_path))
        if named is not fixed:
            raise CLIError(
                f"{section}.class_path names another class than this script builds. Received: "
                f"class_path={class_path!r}; the script builds {fixed.__module__}.{fixed.__qualname__}. Fix: "
                f"name that class, drop class_path from {section}:, or run `fulmen fit --config ...`, which builds "
                "the classes a config names.")

    def _finish_config(self) -> None:
        """Check every option against the signature it goes to, and convert the values."""
        for section in ("trainer", "model", "data"):
            fn = self._section_fn(section)
            node = self.config.get(section)
            if node is None:
                continue
            if fn is None:
                raise CLIError(f"{section} options were given but there is no {section} class. Fix: pass the class "
                               f"to FulmenCLI, or name it with --{section}.class_path=module.Class.")
            values = node["init_args"] if self._subclass_mode(section) and section != "trainer" else node
            hints = _annotations(fn)
            known = dict(self._parameters(fn))
            for name in list(values):
                if name not in known:
                    close = difflib.get_close_matches(name, list(known), n=1)
                    raise CLIError(f"unknown option --{section}.{name}. Fix: one of {', '.join(sorted(known))}"
                                   + (f" (did you mean {close[0]}?)" if close else "") + ".")
                values[name] = _coerce(values[name], hints.get(name, Any), f"--{section}.{name}")
            if self._subclass_mode(section) and section != "trainer":  # fill in the class's defaults
                for name, param in known.items():
                    if name not in values and param.default is not inspect.Parameter.empty:
                        values[name] = _plain(param.default)
        seed = self.config.get("seed_everything")
        if not isinstance(seed, (bool, int)):
            raise CLIError(f"--seed_everything expects true, false or an int. Received: {seed!r}.")

    # --- building and running -------------------------------------------------------------------
    def _build(self, section: str, cls: type | None) -> Any:
        node = self.config.get(section)
        if node is None:
            return None
        if cls is None:
            cls, node = _import(node["class_path"]), node["init_args"]
        missing = [n for n, p in self._parameters(cls.__init__) if p.default is inspect.Parameter.empty
                   and node.get(n) is None]
        if missing:
            raise CLIError(f"{cls.__name__} needs {', '.join(missing)}. Received: no value. Fix: "
                           + " ".join(f"--{section}.{n}=..." for n in missing) + ", or set it in the config file.")
        return cls(**self._changed(cls.__init__, node))

    def _changed(self, fn: Any, values: dict[str, Any]) -> dict[str, Any]:
        """The arguments to pass: those not equal to the (plain form of the) default, so defaults
        that are not plain data (signal tuples, classes) reach the constructor unchanged."""
        defaults = {n: p.default for n, p in self._parameters(fn)}
        return {k: _instantiate(v) for k, v in values.items()
                if k not in defaults or defaults[k] is inspect.Parameter.empty or v != _plain(defaults[k])}

    def _instantiate_all(self, save_config_callback: Any, save_config_kwargs: dict[str, Any]) -> None:
        import fulmen

        seed = self.config["seed_everything"]
        if seed is not False:
            self.config["seed_everything"] = fulmen.seed_everything(None if seed is True else seed)
        self.model = self._build("model", self.model_class)
        self.datamodule = self._build("data", self.datamodule_class)
        trainer_kwargs = self._changed(self.trainer_class.__init__, self.config["trainer"])
        for name, original in self._trainer_objects.items():
            if self.config["trainer"].get(name) == _plain(original):
                trainer_kwargs[name] = original
        callbacks = trainer_kwargs.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if save_config_callback is not None and self.subcommand is not None:
            callbacks.append(save_config_callback(self.config, **save_config_kwargs))
        trainer_kwargs["callbacks"] = callbacks
        from fulmen.errors import MisconfigurationException

        try:
            self.trainer = self.trainer_class(**trainer_kwargs)
        except (MisconfigurationException, ValueError) as err:  # fulmen's own argument checks: say them as usage
            raise CLIError(f"the trainer options cannot work together: {err}") from None

    def _run_subcommand(self) -> Any:
        if self.model is None:
            raise CLIError("no model to run. Fix: pass the model class to FulmenCLI, or set model.class_path in "
                           "the config.")
        ckpt_path = self.config.get("ckpt_path")
        self._check_ckpt_path(ckpt_path)
        method = getattr(self.trainer, self.subcommand)
        return method(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)

    def _check_ckpt_path(self, ckpt_path: Any) -> None:
        """The --ckpt_path mistakes a new process can see before it builds anything on it."""
        if ckpt_path is None or not isinstance(ckpt_path, str):
            return
        if ckpt_path == "best" and self.subcommand != "fit":
            raise CLIError(f"--ckpt_path best means the best checkpoint of a fit in this same process; `"
                           f"{self.subcommand}` starts a new one. Received: --ckpt_path best. Fix: pass the "
                           "checkpoint file, e.g. --ckpt_path runs/lightning_logs/version_0/checkpoints/last.ckpt.")
        if ckpt_path not in ("best", "last", "hpc", "registry") and "://" not in ckpt_path \
                and not ckpt_path.startswith("registry:") and not Path(ckpt_path).exists():
            raise CLIError(f"checkpoint file not found. Received: --ckpt_path {ckpt_path}. Fix: check the path "
                           "(relative to the current folder), or use --ckpt_path last.")

    def _print_help(self) -> None:
        prog = Path(sys.argv[0]).name
        lines = [f"usage: {prog} {{{','.join(SUBCOMMANDS)}}} [--config FILE] [--print_config] "
                 "[--SECTION.KEY=VALUE ...]",
                 "", self.description, "", "options:",
                 "  --config FILE, -c FILE   YAML with trainer:, model:, data:, seed_everything:, ckpt_path: "
                 "(repeatable)",
                 "  --print_config           print the complete configuration and exit",
                 "  --seed_everything VALUE  true (random seed, recorded), false, or an int",
                 "  --ckpt_path PATH         checkpoint to resume from or evaluate (also 'best', 'last')"]
        for section in ("model", "data", "trainer"):
            fn = self._section_fn(section)
            if fn is None:
                lines += ["", f"{section}:", f"  --{section}.class_path=module.Class  and --{section}.ARG=VALUE"]
                continue
            hints = _annotations(fn)
            lines += ["", f"{section}:"]
            for name, param in self._parameters(fn):
                default = "required" if param.default is inspect.Parameter.empty else f"default: {param.default!r}"
                lines.append(f"  --{section}.{name} {_type_name(hints.get(name, Any))}  ({default})")
        print("\n".join(lines))


# --- `fulmen new` -------------------------------------------------------------------------------

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "project"


def new_project(name: str, parent: str | Path = ".") -> Path:
    """Create the folder `parent/name` from fulmen/templates/project and return its path."""
    if not name.isidentifier():
        raise CLIError(f"a project name must be a Python identifier. Received: {name!r}. Fix: e.g. "
                       f"{''.join(c if c.isalnum() else '_' for c in name).lstrip('0123456789') or 'my_project'}.")
    target = Path(parent) / name
    if target.exists() and any(target.iterdir()):
        raise CLIError(f"{target} already exists and is not empty. Fix: choose another name or folder.")
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(TEMPLATE_DIR.iterdir()):
        if source.is_file() and not source.name.startswith(("_", ".")):
            text = source.read_text(encoding="utf-8").replace("{{project_name}}", name)
            text = text.replace("{{activate_line}}\n", _activate_line(target))
            (target / source.name).write_text(text, encoding="utf-8")
    return target


def _activate_line(project: Path) -> str:
    """The README's first command when fulmen runs from a virtual environment that is not active:
    activating it makes `python`, `fulmen` and `tensorboard` below run as written."""
    from fulmen.commands import inactive_venv_bin

    bin_dir = inactive_venv_bin("python", project)
    if bin_dir is None:
        return ""
    command = f"source {os.path.join(bin_dir, 'activate')}"
    return f"{command:<66}# the environment fulmen is installed in\n"


# --- the `fulmen` command ------------------------------------------------------------------------

LIGHTNING_LOGO = r"""
    ___       __
   / _/_ __  / /_ _  ___ ___
  / _/ // / / /  ' \/ -_) _ \
 /_/ \_,_/ /_/_/_/_/\__/_//_/
"""


def cli_lightning_logo() -> None:
    """Lightning's `cli_lightning_logo()`: what its example scripts print first. fulmen prints its own name."""
    print(f"\n{LIGHTNING_LOGO}\n  fulmen: the Lightning API on a small loop\n")


# `lightning.pytorch.cli` names until LightningCLI itself lands (issue 14): FulmenCLI is fulmen's
# config-driven CLI, and the type aliases are what Lightning code annotates its arguments with.
LightningCLI = FulmenCLI
ArgsType = typing.Optional[typing.Union[list[str], dict[str, Any], argparse.Namespace]]
OptimizerCallable = typing.Callable[[typing.Iterable], torch.optim.Optimizer]
LRSchedulerCallable = typing.Callable[[torch.optim.Optimizer], Any]

from fulmen.commands import main  # noqa: E402  the `fulmen` command (kept here for `from fulmen.cli import main`)
