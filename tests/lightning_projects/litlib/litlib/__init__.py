"""litlib: reusable Lightning building blocks (models, a data module, callbacks)."""

import pytorch_lightning as pl
from packaging.version import Version

_PL_GREATER_EQUAL_2_0 = Version(pl.__version__) >= Version("2.0.0")
if not _PL_GREATER_EQUAL_2_0:
    raise ImportError(f"litlib needs pytorch-lightning>=2.0, found {pl.__version__}")

from litlib.callbacks import EpochCounter, GradNormLogger  # noqa: E402
from litlib.data import RandomDataModule  # noqa: E402
from litlib.models import LitAutoEncoder  # noqa: E402

__all__ = ["EpochCounter", "GradNormLogger", "LitAutoEncoder", "RandomDataModule"]
