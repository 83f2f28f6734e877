"""fulmen: a lightweight training loop over PyTorch with the PyTorch Lightning 2.x API.

    import fulmen as pl
    trainer = pl.Trainer(max_epochs=10)
    trainer.fit(model, train_loader, val_loader)

The names below load on first use, so `import fulmen` alone imports nothing heavy (not even
torch): the `fulmen` command and the drop-in runner (`fulmen run`, `fulmen.alias`) start in
milliseconds. `pl.utilities`, `pl.strategies` and fulmen's other subpackages load the same way.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from fulmen.__about__ import __version__

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and IDEs
    from fulmen import callbacks, loggers
    from fulmen.callbacks.callback import Callback
    from fulmen.datamodule import LightningDataModule
    from fulmen.module import LightningModule
    from fulmen.seed import seed_everything
    from fulmen.trainer import Trainer

_LAZY_NAMES = {
    "Callback": "fulmen.callbacks.callback",
    "LightningDataModule": "fulmen.datamodule",
    "LightningModule": "fulmen.module",
    "Trainer": "fulmen.trainer",
    "seed_everything": "fulmen.seed",
}

__all__ = [
    "Callback",
    "LightningDataModule",
    "LightningModule",
    "Trainer",
    "__version__",
    "callbacks",
    "loggers",
    "seed_everything",
]


def __getattr__(name: str) -> Any:
    """`fulmen.Trainer` and the other public names, and `fulmen.<subpackage>`, imported on first use."""
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise  # a submodule that exists failed to import something else
            raise AttributeError(f"module 'fulmen' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'fulmen' has no attribute {name!r}")
    setattr(sys.modules[__name__], name, value)  # later reads are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
