"""A stand-in for the `lightning` package, so that the Fabric programs beside it run on the real
Lightning Fabric: `lightning==2.6.6` is not installed here, only `lightning_fabric==2.6.6` (the same
Fabric, published on its own). `lightning.fabric.X` *is* the module `lightning_fabric.X` (one copy,
so classes compare equal), and `lightning.Fabric` is `lightning_fabric.Fabric`.

tests/test_fabric_programs.py puts this folder on PYTHONPATH for the Lightning runs only.
"""

import importlib
import importlib.abc
import importlib.util
import sys

import lightning_fabric

_PREFIX = "lightning.fabric"


class _SameModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `lightning.fabric[.X]` with the already-importable `lightning_fabric[.X]`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _PREFIX or fullname.startswith(_PREFIX + "."):
            real = "lightning_fabric" + fullname[len(_PREFIX):]
            if importlib.util.find_spec(real) is None:
                return None
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return importlib.import_module("lightning_fabric" + spec.name[len(_PREFIX):])

    def exec_module(self, module):
        pass  # already executed under its own name


sys.meta_path.insert(0, _SameModule())

from lightning_fabric import Fabric, seed_everything  # noqa: E402

fabric = importlib.import_module(_PREFIX)
__version__ = lightning_fabric.__version__
__all__ = ["Fabric", "fabric", "seed_everything"]
