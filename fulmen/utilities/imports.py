"""Availability and version flags real Lightning code reads (`_TORCH_GREATER_EQUAL_2_x`,
`_TORCHVISION_AVAILABLE`, ...), and the helpers behind them: `package_available`, `module_available`,
`compare_version`, `RequirementCache`.

Flags about optional packages are `RequirementCache`s: they look nothing up until read as a bool.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import operator
import platform
import sys
from collections.abc import Callable
from functools import lru_cache


@lru_cache
def package_available(package_name: str) -> bool:
    """Whether a top-level package can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(package_name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


@lru_cache
def module_available(module_path: str) -> bool:
    """Whether `module_path` (dotted) imports; its package is looked up first, so a missing one costs nothing."""
    if not package_available(module_path.split(".")[0]):
        return False
    try:
        importlib.import_module(module_path)
    except ImportError:
        return False
    return True


def _installed_version(package: str) -> str | None:
    module = sys.modules.get(package)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def compare_version(package: str, op: Callable, version: str, use_base_version: bool = False) -> bool:
    """`op(installed version of package, version)`; False when the package is not installed.

    Example:
        >>> compare_version("torch", operator.ge, "1.0")
        True
    """
    from packaging.version import InvalidVersion, Version  # packaging comes with tensorboard

    installed = _installed_version(package)
    if installed is None:
        return False
    try:
        parsed = Version(installed)
    except InvalidVersion:
        return False
    if use_base_version:
        parsed = Version(parsed.base_version)
    return op(parsed, Version(version))


class RequirementCache:
    """A bool that says whether a requirement (`"rich>=10.2"`) is installed, or a module imports;
    checked the first time it is read. `str()` says why not, with the pip command to fix it.

    Example:
        >>> bool(RequirementCache("torch>=1.0")), bool(RequirementCache("surely_not_installed_pkg"))
        (True, False)
    """

    def __init__(self, requirement: str | None = None, module: str | None = None) -> None:
        if not (requirement or module):
            raise ValueError(
                "RequirementCache needs something to check. Received: requirement=None, module=None. "
                'Fix: e.g. RequirementCache("rich>=10") or RequirementCache(module="rich.progress").'
            )
        self.requirement = requirement
        self.module = module
        self._available: bool | None = None
        self.message = ""

    def _check(self) -> bool:
        if self._available is not None:
            return self._available
        available = True
        if self.requirement:
            available = self._requirement_met()
        if available and self.module:
            available = module_available(self.module)
            self.message = (
                f"Module {self.module!r} available" if available
                else f"Module not found: {self.module!r}. HINT: Try running `pip install -U {self.module}`"
            )
        self._available = available
        return available

    def _requirement_met(self) -> bool:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.version import InvalidVersion, Version

        assert self.requirement is not None
        try:
            req = Requirement(self.requirement)
            met = req.specifier.contains(Version(importlib.metadata.version(req.name)), prereleases=True)
        except (importlib.metadata.PackageNotFoundError, InvalidVersion, InvalidRequirement):
            met = False
            # Without a version bound, a module that imports under the requirement's name counts
            # (metadata lookups fail for some source installs).
            if not any(c in self.requirement for c in "=<>") and self.module is None:
                met = module_available(self.requirement)
        self.message = (
            f"Requirement {self.requirement!r} met" if met
            else f"Requirement {self.requirement!r} not met. HINT: Try running `pip install -U {self.requirement!r}`"
        )
        return met

    def __bool__(self) -> bool:
        return self._check()

    def __str__(self) -> str:
        self._check()
        return self.message

    def __repr__(self) -> str:
        return str(self)


def _torch_at_least(version: str) -> bool:
    return compare_version("torch", operator.ge, version)


_IS_WINDOWS = platform.system() == "Windows"
_IS_INTERACTIVE = hasattr(sys, "ps1") or bool(sys.flags.interactive)
_PYTHON_GREATER_EQUAL_3_10_0 = sys.version_info >= (3, 10)
_PYTHON_GREATER_EQUAL_3_11_0 = sys.version_info >= (3, 11)

# 2.0 and 2.1 are flags of earlier Lightning 2.x releases that code still reads.
_TORCH_GREATER_EQUAL_2_0 = _torch_at_least("2.0.0")
_TORCH_GREATER_EQUAL_2_1 = _torch_at_least("2.1.0")
_TORCH_GREATER_EQUAL_2_2 = _torch_at_least("2.2.0")
_TORCH_GREATER_EQUAL_2_3 = _torch_at_least("2.3.0")
_TORCH_GREATER_EQUAL_2_4 = _torch_at_least("2.4.0")
_TORCH_GREATER_EQUAL_2_4_1 = _torch_at_least("2.4.1")
_TORCH_GREATER_EQUAL_2_5 = _torch_at_least("2.5.0")
_TORCH_GREATER_EQUAL_2_6 = _torch_at_least("2.6.0")
_TORCH_GREATER_EQUAL_2_8 = _torch_at_least("2.8.0")
_TORCH_EQUAL_2_4_0 = compare_version("torch", operator.eq, "2.4.0")
_TORCH_LESS_EQUAL_2_6 = compare_version("torch", operator.le, "2.6.0")
_TORCH_EQUAL_2_8 = RequirementCache("torch>=2.8.0,<2.9.0")
_TORCH_EQUAL_2_9 = RequirementCache("torch>=2.9.0,<2.10.0")

_NUMPY_AVAILABLE = RequirementCache("numpy")
_OMEGACONF_AVAILABLE = package_available("omegaconf")
_TORCHVISION_AVAILABLE = RequirementCache("torchvision")
_RICH_AVAILABLE = RequirementCache("rich>=10.2.2")
_TORCHMETRICS_GREATER_EQUAL_0_8_0 = RequirementCache("torchmetrics>=0.8.0")
_TORCHMETRICS_GREATER_EQUAL_0_9_1 = RequirementCache("torchmetrics>=0.9.1")
_TORCHMETRICS_GREATER_EQUAL_0_11 = RequirementCache("torchmetrics>=0.11.0")
_TORCHMETRICS_GREATER_EQUAL_1_0_0 = RequirementCache("torchmetrics>=1.0.0")

__all__ = ["RequirementCache", "compare_version", "module_available", "package_available"]
