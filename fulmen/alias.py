"""The drop-in runner's import alias: `lightning`, `lightning.pytorch`, `pytorch_lightning`,
`lightning.fabric` and `lightning_fabric` resolve to fulmen, so a Lightning project runs on fulmen
without editing a line.

Three ways to turn it on (it is never on unless asked):

    fulmen run train.py --max_epochs 3      # a script (or `fulmen run -m package.module ...`)
    pytest -p fulmen.alias                  # a project's own test suite
    import fulmen.alias; fulmen.alias.install()   # a notebook, or the top of a conftest.py

What stands at each Lightning path is listed in `fulmen.surface.TABLE`; this file is only the
import machinery. Processes the program starts (DDP copies, torchrun children, spawned DataLoader
workers, a scheduler's workers) get the alias too: `install()` puts fulmen's start-up hook
directory (`fulmen/_alias_boot/`, one `sitecustomize.py`) first on `PYTHONPATH` and sets
`FULMEN_ALIAS=1`, which that hook reads when a new interpreter starts. Without the variable the hook
is not on the path and costs nothing.

This module imports only the standard library: importing it, and starting a process with the
alias on, loads neither torch nor fulmen until a Lightning name is first imported.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
from typing import Any

from fulmen import surface

ENV_VAR = "FULMEN_ALIAS"
BOOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_alias_boot")

# Lightning's distributions, for code that asks importlib.metadata (or lightning_utilities'
# RequirementCache) whether Lightning is installed and which version.
_DISTRIBUTIONS = {"lightning": "lightning", "pytorch-lightning": "pytorch_lightning",
                  "pytorch_lightning": "pytorch_lightning", "lightning-fabric": "lightning_fabric",
                  "lightning_fabric": "lightning_fabric"}


class AliasError(ImportError):
    """The alias cannot be turned on (the real Lightning is already imported)."""


def _resolve(target: str) -> Any:
    """`"fulmen.a.b"` -> that module; `"fulmen.a.b:Name"` -> the object `Name` in it."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


class SurfaceModule(types.ModuleType):
    """A Lightning package or gathering module under the alias: its names come from fulmen on first
    use (see `fulmen.surface`), its children are the table's paths below it."""

    def __init__(self, name: str, key: str) -> None:
        super().__init__(name)
        self.__fulmen_key__ = key
        target = surface.TABLE[key]
        self.__fulmen_names__ = {"*": target} if isinstance(target, str) else dict(target)
        if key in ("", "pytorch", "fabric"):
            self.__version__ = surface.LIGHTNING_API_VERSION

    def _children(self) -> list[str]:
        prefix = f"{self.__fulmen_key__}." if self.__fulmen_key__ else ""
        return sorted({k[len(prefix):].split(".")[0] for k in surface.TABLE
                       if k.startswith(prefix) and k != self.__fulmen_key__})

    def _public_of(self, module_target: str) -> list[str]:
        module = _resolve(module_target)
        names = getattr(module, "__all__", None)
        return list(names) if names is not None else [n for n in vars(module) if not n.startswith("_")]

    def __getattr__(self, name: str) -> Any:
        names = self.__fulmen_names__
        if name in names:
            value = _resolve(names[name])
        elif name in self._children():
            value = importlib.import_module(f"{self.__name__}.{name}")
        elif "*" in names and not (name.startswith("__") and name.endswith("__")):
            try:
                value = getattr(_resolve(names["*"]), name)
            except AttributeError:
                raise AttributeError(self._missing(name)) from None
        else:
            raise AttributeError(self._missing(name))
        setattr(self, name, value)
        return value

    def _missing(self, name: str) -> str:
        planned = surface.PLANNED.get(f"{self.__fulmen_key__}.{name}")
        return (f"module {self.__name__!r} has no attribute {name!r}: "
                + (planned or f"fulmen does not provide this part of Lightning's API. Received: {self.__name__}.{name}. "
                   "Fix: see README, 'Run your Lightning project on fulmen', for what is provided."))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # By name, as pickle treats a module: cloudpickle (Ray, Dask, multiprocessing's spawn) meets
        # `pl` among a function's globals and sends the function to a process that has the alias too.
        return importlib.import_module, (self.__name__,)

    def __dir__(self) -> list[str]:
        names = set(self.__fulmen_names__) - {"*"}
        if "*" in self.__fulmen_names__:
            names |= set(self._public_of(self.__fulmen_names__["*"]))
        return sorted(names | set(self._children()) | set(vars(self)))

    @property
    def __all__(self) -> list[str]:  # `from lightning.pytorch.callbacks import *`
        names = [n for n in self.__fulmen_names__ if n != "*"]
        if "*" in self.__fulmen_names__:
            names += self._public_of(self.__fulmen_names__["*"])
        return sorted(set(names))


def _distribution(name: str) -> Any:
    """What `importlib.metadata.version("lightning")` finds under the alias: the API version fulmen
    implements (a real Lightning installation beside fulmen is not what runs). Built on first use:
    importlib.metadata costs ~13 ms to import, more than the rest of the runner's start-up."""
    import importlib.metadata

    class LightningAPIDistribution(importlib.metadata.Distribution):
        def read_text(self, filename: str) -> str | None:
            if filename in ("METADATA", "PKG-INFO"):
                return f"Metadata-Version: 2.1\nName: {name}\nVersion: {surface.LIGHTNING_API_VERSION}\n"
            return None

        def locate_file(self, path: Any) -> Any:
            return path

    return LightningAPIDistribution()


class LightningFinder:
    """First on `sys.meta_path`: answers every import under Lightning's names from `fulmen.surface`,
    so the real Lightning, even when installed, is never the one imported. (A meta path finder and
    its loader by their methods; importlib.abc is not imported, to keep start-up short.)"""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        key = surface.lightning_path(fullname)
        if key is None:
            return None
        if key not in surface.TABLE:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} under fulmen's Lightning alias: fulmen provides Lightning's "
                "public API, not this module (Lightning internals such as trainer.connectors and the loop "
                f"classes are out of scope). Received: import {fullname}. Fix: import the public name (see README, 'Run your Lightning "
                "project on fulmen'), or run this project on Lightning itself.",
                name=fullname,
            )
        return importlib.machinery.ModuleSpec(fullname, self, is_package=surface.has_children(key))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return SurfaceModule(spec.name, surface.lightning_path(spec.name))

    def exec_module(self, module: types.ModuleType) -> None:
        key = module.__fulmen_key__
        target = surface.TABLE[key]
        if isinstance(target, str) and not surface.has_children(key):
            # A leaf: the fulmen module object itself stands at the Lightning path (the import
            # system returns what sys.modules holds after exec_module), so patching
            # `lightning.pytorch.trainer.trainer.X` patches fulmen's module.
            sys.modules[module.__name__] = _resolve(target)

    def find_distributions(self, context: Any = None) -> Any:
        name = (getattr(context, "name", None) or "").lower()
        return iter([_distribution(name)]) if name in _DISTRIBUTIONS else iter(())


def _real_lightning_imported() -> str | None:
    """The name of a real Lightning module already imported in this process, if any."""
    for name, module in list(sys.modules.items()):
        root = name.partition(".")[0]
        if root in surface.ROOTS and module is not None and not _is_ours(module):
            return name
    return None


def _is_ours(module: Any) -> bool:
    return isinstance(module, SurfaceModule) or getattr(module, "__name__", "").startswith("fulmen")


def is_installed() -> bool:
    """Whether the alias is active in this process."""
    return any(isinstance(finder, LightningFinder) for finder in sys.meta_path)


def install(children: bool = True) -> None:
    """Turn the alias on in this process (idempotent); with `children`, also in every Python
    process it starts. Raises `AliasError` if the real Lightning is already imported here."""
    if not is_installed():
        real = _real_lightning_imported()
        if real is not None:
            origin = getattr(sys.modules[real], "__file__", None) or "?"
            raise AliasError(
                f"fulmen's Lightning alias cannot be turned on: the real Lightning is already imported "
                f"({real} from {origin}), and two Lightning implementations in one process would mix their "
                "classes. Fix: turn the alias on before anything imports Lightning: run the program with "
                "`fulmen run script.py`, the tests with `pytest -p fulmen.alias`, or call "
                "fulmen.alias.install() first in the notebook or conftest.py."
            )
        sys.meta_path.insert(0, LightningFinder())
    if children:
        os.environ[ENV_VAR] = "1"
        entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if BOOT_DIR not in entries:
            os.environ["PYTHONPATH"] = os.pathsep.join([BOOT_DIR, *entries])


def uninstall() -> None:
    """Turn the alias off: remove the finder, the Lightning names it imported and the variables
    that pass it to child processes (for tests and notebooks; fulmen's own modules stay)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, LightningFinder)]
    for name in [n for n in sys.modules if surface.lightning_path(n) is not None]:
        del sys.modules[name]
    os.environ.pop(ENV_VAR, None)
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOT_DIR]
    if entries:
        os.environ["PYTHONPATH"] = os.pathsep.join(entries)
    else:
        os.environ.pop("PYTHONPATH", None)


# --- the pytest plugin: `pytest -p fulmen.alias` ------------------------------------------------
def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    """Before pytest imports the project's conftest.py files and tests."""
    install()


def pytest_report_header(config: Any) -> str:
    return f"fulmen alias: lightning / pytorch_lightning -> fulmen (Lightning API {surface.LIGHTNING_API_VERSION})"


# --- the runner: `fulmen run SCRIPT|-m MODULE [ARGS...]` ----------------------------------------
RUN_USAGE = """usage: fulmen run SCRIPT [ARGS...]
       fulmen run -m MODULE [ARGS...]

Runs a Python program with `lightning`, `lightning.pytorch`, `pytorch_lightning`, `lightning.fabric`
and `lightning_fabric` resolving to fulmen, in this process and in every Python process it starts.
SCRIPT may be a file or a Python command of this environment or on PATH
(`fulmen run torchrun --nproc-per-node 2 train.py`).
"""


def run(argv: list[str]) -> int:
    """`fulmen run`: replace this process by `python SCRIPT ARGS` (or `python -m MODULE ARGS`) with
    the alias on, so the program starts exactly as it would under Python itself (its own __main__,
    sys.argv and sys.path) and fulmen's start-up hook turns the alias on before it runs."""
    if not argv or argv[0] in ("-h", "--help") or argv == ["-m"]:
        print(RUN_USAGE, end="", file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    if argv[0] == "-m":
        command = [sys.executable, "-m", *argv[1:]]
    else:
        script = argv[0]
        if not os.path.exists(script):
            import shutil

            # The environment's own commands first (torchrun beside this python), then PATH.
            search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
            found = shutil.which(script, path=search)
            if found is None:
                print(f"fulmen run: no such file or command: {script!r}. Received: SCRIPT={script!r}. "
                      "Fix: give the path of a Python script, `-m MODULE`, or a Python command on PATH.",
                      file=sys.stderr)
                return 2
            script = found
        command = [sys.executable, script, *argv[1:]]
    real = _real_lightning_imported()
    if real is not None:  # only when run() is called from inside a program that imported Lightning
        raise AliasError(f"fulmen run: the real Lightning is already imported in this process. Received: {real} in "
                         "sys.modules. Fix: call fulmen.alias.run() before anything imports Lightning.")
    install()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
    return 0  # not reached
