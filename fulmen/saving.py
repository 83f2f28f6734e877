"""Saving and loading hyperparameters and modules (Lightning's `core.saving`).

Hyperparameter files: `save_hparams_to_yaml` / `load_hparams_from_yaml`, and the older `tags.csv`
form (`save_hparams_to_tags_csv` / `load_hparams_from_tags_csv`). This module owns the one YAML
format of `hparams.yaml` (PyYAML, imported only when a file is written or read): `_hparams_yaml_text`
writes what `yaml.dump` writes for plain data (block style, sorted keys, tuples as `!!python/tuple`,
the one non-plain tag the reader accepts), and the loggers and `fulmen report` use it too.

Modules: `_load_from_checkpoint` is what `LightningModule.load_from_checkpoint` and
`LightningDataModule.load_from_checkpoint` run. It reads the file safely (`fulmen.checkpoint.load_checkpoint`,
weights_only), takes the stored hyperparameters (or `hparams_file`'s) with the caller's `kwargs`
on top, passes those `__init__` accepts to the class, and loads the weights (or the datamodule's
state) with Lightning's `strict` rules.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "hparams.yaml")
    >>> save_hparams_to_yaml(path, {"lr": 0.1, "sizes": (64, 32)})
    >>> load_hparams_from_yaml(path)
    {'lr': 0.1, 'sizes': (64, 32)}
"""

from __future__ import annotations

import ast
import contextlib
import csv
import dataclasses
import functools
import inspect
import warnings
from argparse import Namespace
from collections.abc import Mapping
from enum import Enum
from pathlib import Path, PurePath
from typing import IO, Any

import torch

from fulmen.hparams import CLASSES_SUFFIX, AttributeDict, from_checkpoint

# Where checkpoints of Lightning 0.7 kept the module's hyperparameters.
CHECKPOINT_PAST_HPARAMS_KEYS = ("hparams", "module_arguments")


# --- hyperparameter files ---------------------------------------------------------------------------
def _open(path: str | Path, mode: str, **kwargs: Any) -> IO:
    """A local file, or a remote one (`s3://...`) through fsspec when it is installed."""
    if "://" in str(path):
        import fsspec

        return fsspec.open(str(path), mode, **kwargs).open()
    return open(path, mode, **kwargs)  # noqa: SIM115 (the caller closes it)


def _exists(path: str | Path) -> bool:
    if "://" in str(path):
        import fsspec

        fs, _, paths = fsspec.get_fs_token_paths(str(path))
        return fs.exists(paths[0])
    return Path(path).exists()


@functools.lru_cache(maxsize=None)
def _yaml_classes() -> tuple[Any, Any, Any, Any]:
    """PyYAML's safe loader and dumper, extended for hyperparameters: (Loader, Dumper, LenientLoader, LenientDumper).

    Tuples are written and read as `!!python/tuple`, as `yaml.dump` and Lightning's reader do; no
    other Python tag is read, so a file cannot build objects. Where `yaml.dump` would write a
    Python object tag that no safe reader (Lightning's `full_load` included) loads back, the
    Dumper writes plain data instead: paths as text, Namespaces, dataclasses and other mappings
    as mappings, enums by name (as Lightning's `save_hparams_to_yaml` does), one-element tensors
    and NumPy scalars as numbers. Anything else is an error for `Dumper` and its `str()` for
    `LenientDumper` (what the loggers write, so a run's hparams.yaml never loses a key).
    `LenientLoader` (for `fulmen report`) reads an unknown tag as text instead of failing.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    class Dumper(yaml.SafeDumper):
        pass

    class LenientLoader(Loader):
        pass

    class LenientDumper(Dumper):
        pass

    tag = "tag:yaml.org,2002:python/tuple"
    Loader.add_constructor(tag, lambda loader, node: tuple(loader.construct_sequence(node)))
    Dumper.add_representer(tuple, lambda dumper, data: dumper.represent_sequence(tag, data))
    Dumper.add_multi_representer(PurePath, lambda dumper, data: dumper.represent_str(str(data)))
    Dumper.add_multi_representer(Enum, lambda dumper, data: dumper.represent_str(data.name))
    Dumper.add_representer(Namespace, lambda dumper, data: dumper.represent_dict(vars(data)))
    # `None` is PyYAML's key for "no representer matched the type or its bases".
    Dumper.add_representer(None, lambda dumper, data: _represent_other(dumper, data, lenient=False))
    LenientDumper.add_representer(None, lambda dumper, data: _represent_other(dumper, data, lenient=True))
    LenientLoader.add_constructor(None, _construct_unknown)
    return Loader, Dumper, LenientLoader, LenientDumper


def _represent_other(dumper: Any, value: Any, lenient: bool) -> Any:
    from fulmen.loggers.base import _python_number

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dumper.represent_dict({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):  # OrderedDict, AttributeDict, OmegaConf's DictConfig ...
        return dumper.represent_dict(dict(value))
    if isinstance(value, tuple):  # a namedtuple keeps its values, not its class
        return dumper.represent_data(tuple(value))
    if isinstance(value, list):
        return dumper.represent_list(list(value))
    number = _python_number(value)
    if number is not value:
        return dumper.represent_data(number)
    if lenient:
        return dumper.represent_str(str(value))
    return dumper.represent_undefined(value)  # raises RepresenterError


def _construct_unknown(loader: Any, node: Any) -> str:
    """A tagged value that LenientLoader does not build, as text: `!!python/name:torch.nn.ReLU`."""
    import yaml

    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return f"{tag} {value!r}" if value not in ("", [], {}) else tag


def _hparams_yaml_text(hparams: Mapping[str, Any], *, lenient: bool = True) -> str:
    """The text of an hparams.yaml for `hparams`: block style, keys sorted, as `yaml.dump` writes it.

    Example:
        >>> print(_hparams_yaml_text({"lr": 1e-3, "sizes": (64, 32), "name": "0.1"}), end="")
        lr: 0.001
        name: '0.1'
        sizes: !!python/tuple
        - 64
        - 32
    """
    import yaml

    dumper = _yaml_classes()[3 if lenient else 1]
    try:
        return yaml.dump(dict(hparams), Dumper=dumper)
    except TypeError:
        # Keys of different types cannot be sorted (e.g. 1 and "a"); keep their order instead.
        return yaml.dump(dict(hparams), Dumper=dumper, sort_keys=False)


def _yaml_data(stream: Any, *, lenient: bool = False) -> Any:
    """The data in YAML text or an open file, read with the loader above (lenient: unknown tags as text)."""
    import yaml

    return yaml.load(stream, Loader=_yaml_classes()[2 if lenient else 0])  # noqa: S506 (a safe loader plus tuples)


def load_hparams_from_yaml(config_yaml: str | Path, use_omegaconf: bool = True) -> dict[str, Any]:
    """The hyperparameters in a YAML file ({} with a warning when the file is missing).

    Plain YAML and tuples (`!!python/tuple`) are read; a file with other Python tags is an error.
    With `use_omegaconf` and omegaconf installed, they come back as a `DictConfig` when they can.
    """
    import yaml

    if not _exists(config_yaml):
        warnings.warn(f"Missing Tags: {config_yaml}.", RuntimeWarning, stacklevel=2)
        return {}
    with _open(config_yaml, "r", encoding="utf-8") as f:
        try:
            hparams = _yaml_data(f)
        except yaml.constructor.ConstructorError as err:
            raise ValueError(
                f"The hyperparameter file holds a tagged value that fulmen does not build (only plain YAML and "
                f"!!python/tuple are read, so a file cannot run code). Received: config_yaml={str(config_yaml)!r}: "
                f"{err.problem} {err.problem_mark}. Fix: replace the tagged value with plain data (e.g. a class "
                "by its import path as a string), or pass the hyperparameters as keyword arguments."
            ) from err
    if use_omegaconf:
        with contextlib.suppress(ImportError):
            from omegaconf import OmegaConf
            from omegaconf.errors import UnsupportedValueType, ValidationError

            with contextlib.suppress(UnsupportedValueType, ValidationError):
                return OmegaConf.create(hparams)  # type: ignore[return-value]
    return hparams


def save_hparams_to_yaml(config_yaml: str | Path, hparams: dict | Namespace, use_omegaconf: bool = True) -> None:
    """Write `hparams` (a dict or Namespace) to a YAML file whose folder exists.

    Values PyYAML cannot write safely are left out with a warning; paths are written as text and
    enums by name (see `_yaml_classes`). With `use_omegaconf` and omegaconf installed, OmegaConf
    writes it when it can.
    """
    import yaml

    folder = Path(config_yaml).parent if "://" not in str(config_yaml) else None
    if folder is not None and not folder.is_dir():
        raise RuntimeError(
            f"Cannot write hyperparameters into a folder that does not exist. Received: config_yaml={str(config_yaml)!r}. "
            f"Fix: create {str(folder)!r} first."
        )
    if isinstance(hparams, Namespace):
        hparams = vars(hparams)
    elif isinstance(hparams, AttributeDict):
        hparams = dict(hparams)
    if use_omegaconf:
        with contextlib.suppress(ImportError):
            from omegaconf import OmegaConf
            from omegaconf.errors import UnsupportedValueType, ValidationError

            with contextlib.suppress(UnsupportedValueType, ValidationError):
                text = OmegaConf.to_yaml(hparams, resolve=True)
                with _open(config_yaml, "w", encoding="utf-8") as f:
                    f.write(text)
                return
    if not isinstance(hparams, dict):
        raise TypeError(
            f"save_hparams_to_yaml expects a dict or Namespace. Received: hparams of type {type(hparams).__name__}. "
            "Fix: pass dict(hparams)."
        )
    allowed = {}
    for key, value in hparams.items():
        try:
            yaml.dump(value, Dumper=_yaml_classes()[1])
        except (TypeError, ValueError, yaml.representer.RepresenterError):
            warnings.warn(f"Skipping {key!r} parameter because it is not possible to safely dump to YAML.", stacklevel=2)
        else:
            allowed[key] = value
    text = _hparams_yaml_text(allowed, lenient=False)
    with _open(config_yaml, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def load_hparams_from_tags_csv(tags_csv: str | Path) -> dict[str, Any]:
    """The hyperparameters in a `key,value` CSV file, each value read as a Python literal when it is one."""
    if not _exists(tags_csv):
        warnings.warn(f"Missing Tags: {tags_csv}.", RuntimeWarning, stacklevel=2)
        return {}
    with _open(tags_csv, "r", newline="") as f:
        rows = list(csv.reader(f, delimiter=","))
    return {row[0]: convert(row[1]) for row in rows[1:]}


def save_hparams_to_tags_csv(tags_csv: str | Path, hparams: dict | Namespace) -> None:
    """Write `hparams` as a `key,value` CSV file (the format of Lightning's first versions)."""
    if "://" not in str(tags_csv) and not Path(tags_csv).parent.is_dir():
        raise RuntimeError(
            f"Cannot write hyperparameters into a folder that does not exist. Received: tags_csv={str(tags_csv)!r}. "
            f"Fix: create {str(Path(tags_csv).parent)!r} first."
        )
    if isinstance(hparams, Namespace):
        hparams = vars(hparams)
    with _open(tags_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["key", "value"])
        writer.writerow({"key": "key", "value": "value"})
        for key, value in hparams.items():
            writer.writerow({"key": key, "value": value})


def convert(val: str) -> Any:
    """`val` as the Python literal it spells (`"0.1"` -> 0.1, `"[1, 2]"` -> [1, 2]), else the text itself."""
    try:
        return ast.literal_eval(val)
    except (ValueError, SyntaxError):
        return val


def update_hparams(hparams: dict, updates: dict) -> None:
    """Merge `updates` into `hparams` in place, nested dicts key by key.

    Example:
        >>> hparams = {"optim": {"lr": 0.1, "momentum": 0.9}}
        >>> update_hparams(hparams, {"optim": {"lr": 0.01}, "epochs": 3})
        >>> hparams
        {'optim': {'lr': 0.01, 'momentum': 0.9}, 'epochs': 3}
    """
    for key, value in updates.items():
        if key in hparams and isinstance(value, dict) and isinstance(hparams[key], dict):
            update_hparams(hparams[key], value)
        else:
            hparams[key] = value


# --- building a module or datamodule from a checkpoint ------------------------------------------------
def _default_map_location(storage: Any, location: str) -> Any:
    """Keep each tensor on the device it was saved from, unless that kind of device is missing here."""
    if location.startswith("cuda") and not torch.cuda.is_available():
        return storage.cpu()
    if location.startswith("mps") and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return storage.cpu()
    if location.startswith("xla"):
        return storage.cpu()
    return None  # torch.load's own placement


def _load_from_checkpoint(
    cls: type,
    checkpoint_path: str | Path | IO,
    map_location: Any = None,
    hparams_file: str | Path | None = None,
    strict: bool | None = None,
    **kwargs: Any,
) -> Any:
    from fulmen.checkpoint import load_checkpoint
    from fulmen.datamodule import LightningDataModule

    checkpoint = load_checkpoint(checkpoint_path, map_location=map_location or _default_map_location)
    key = cls.CHECKPOINT_HYPER_PARAMS_KEY  # type: ignore[attr-defined]
    if hparams_file is not None:
        extension = str(hparams_file).rsplit(".", 1)[-1].lower()
        if extension == "csv":
            checkpoint[key] = load_hparams_from_tags_csv(hparams_file)
        elif extension in ("yml", "yaml"):
            checkpoint[key] = load_hparams_from_yaml(hparams_file)
        else:
            raise ValueError(
                f"hparams_file must be a .csv, .yml or .yaml file. Received: hparams_file={str(hparams_file)!r}. "
                "Fix: pass the logger's hparams.yaml, or leave hparams_file=None to use the checkpoint's."
            )
    checkpoint[key] = dict(checkpoint.get(key) or {})
    checkpoint[key].update(kwargs)
    if issubclass(cls, LightningDataModule):
        return _build(cls, checkpoint, kwargs)
    model = _build(cls, checkpoint, kwargs)
    _load_weights(model, checkpoint, strict, checkpoint_path)
    state_dict = checkpoint["state_dict"]
    if not state_dict:
        name = checkpoint_path if isinstance(checkpoint_path, (str, Path)) else getattr(checkpoint_path, "name", "<file>")
        warnings.warn(
            f"The state dict in {str(name)!r} contains no parameters: {cls.__name__} keeps the weights its "
            "__init__ made. Fix: check that the checkpoint was saved from a trained model.",
            stacklevel=3,
        )
        return model
    device = next((t.device for t in state_dict.values() if isinstance(t, torch.Tensor)), torch.device("cpu"))
    return model.to(device)


def _build(cls: type, checkpoint: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The object `cls(**hyperparameters)` builds, with what its `__init__` accepts; a datamodule's state loaded."""
    key, name_key = cls.CHECKPOINT_HYPER_PARAMS_KEY, cls.CHECKPOINT_HYPER_PARAMS_NAME  # type: ignore[attr-defined]
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    names = [n for i, (n, p) in enumerate(params.items()) if i > 0 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    loaded: dict[str, Any] = {}
    if key == "hyper_parameters":
        for old_key in CHECKPOINT_PAST_HPARAMS_KEYS:
            loaded.update(checkpoint.get(old_key) or {})
    loaded.update(from_checkpoint(checkpoint[key], checkpoint.get(key + CLASSES_SUFFIX)))
    if isinstance(checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_TYPE), str):  # type: ignore[attr-defined]
        loaded = AttributeDict(loaded)  # Lightning's note of an AttributeDict/OmegaConf container
    saved_as = checkpoint.get(name_key)
    init_kwargs: dict[str, Any] = {saved_as: loaded} if saved_as and saved_as in names else dict(loaded)
    init_kwargs.update(overrides)
    init_kwargs.pop("_instantiator", None)  # LightningCLI's note; fulmen builds the class directly
    if not takes_kwargs:
        init_kwargs = {k: v for k, v in init_kwargs.items() if k in names}
    obj = cls(**init_kwargs)
    if hasattr(obj, "load_state_dict") and not isinstance(obj, torch.nn.Module):  # a datamodule
        state_key = type(obj).__qualname__
        if state_key in checkpoint:
            obj.load_state_dict(checkpoint[state_key])
    return obj


def _load_weights(model: Any, checkpoint: dict[str, Any], strict: bool | None, path: Any) -> None:
    """`model.load_state_dict` with Lightning's `strict` rules: None follows `model.strict_loading`;
    a value that contradicts a `strict_loading` the model set itself is an error."""
    from fulmen.hooks import is_overridden
    from fulmen.module import LightningModule

    if model._strict_loading is not None and strict is not None and strict != model.strict_loading:
        raise ValueError(
            f"load_from_checkpoint(strict={strict!r}) is in conflict with {type(model).__name__}.strict_loading="
            f"{model.strict_loading!r}. Received: strict={strict!r}. Fix: set the same value for both of them, "
            "or leave strict=None to follow strict_loading."
        )
    strict = model.strict_loading if strict is None else strict
    if is_overridden("configure_model", model, LightningModule):
        model.configure_model()
    model.on_load_checkpoint(checkpoint)
    keys = model.load_state_dict(checkpoint["state_dict"], strict=strict)
    if not strict:
        if keys.missing_keys:
            warnings.warn(
                f"Found keys that are in the model state dict but not in the checkpoint: {keys.missing_keys}",
                stacklevel=4,
            )
        if keys.unexpected_keys:
            warnings.warn(
                f"Found keys that are not in the model state dict but in the checkpoint: {keys.unexpected_keys}",
                stacklevel=4,
            )


__all__ = [
    "CHECKPOINT_PAST_HPARAMS_KEYS", "convert", "load_hparams_from_tags_csv", "load_hparams_from_yaml",
    "save_hparams_to_tags_csv", "save_hparams_to_yaml", "update_hparams",
]
