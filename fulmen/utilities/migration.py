"""Lightning's `utilities.migration`: `migrate_checkpoint` (bring a checkpoint dict to the current
format) and `pl_legacy_patch` (names old pickled checkpoints refer to, while unpickling them).

fulmen reads Lightning 2.x checkpoints as they are, so for those `migrate_checkpoint` only stamps
the version. A checkpoint written by Lightning 1.x keeps its weights, optimizer states and the
top-level `epoch`/`global_step` fulmen resumes from, but its `loops` entry has the 1.x layout: it is
dropped (fulmen then resumes from the top-level counters), as is the apex AMP state that 2.0 removed.
Migrations are recorded by the version that introduced them, as Lightning reports them.
"""

from __future__ import annotations

import re
import sys
import threading
import types
from typing import Any

from fulmen.surface import LIGHTNING_API_VERSION
from fulmen.utilities.rank_zero import rank_zero_warn
from fulmen.utilities.warnings import PossibleUserWarning

_VERSION_KEY = "pytorch-lightning_version"
_LEGACY_KEY = "legacy_pytorch-lightning_version"


def _version_tuple(version: str) -> tuple[int, int, int]:
    """(1, 9, 5) for "1.9.5", "1.9.5rc1" or "1.9.5.post0": enough to order Lightning releases."""
    found = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version.strip())
    if found is None:
        raise ValueError(f"Not a Lightning version. Received: {_VERSION_KEY}={version!r}. Fix: e.g. '2.1.0'.")
    major, minor, patch = (int(g or 0) for g in found.groups())
    return major, minor, patch


def _drop_apex_amp_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    if "amp_scaling_state" in checkpoint:
        rank_zero_warn("This checkpoint holds apex AMP state, which Lightning 2.0 removed; it is ignored.")
        del checkpoint["amp_scaling_state"]
    return checkpoint


def _drop_legacy_loop_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    # The 1.x loop layout (optimizer and dataloader sub-loops) is not what fulmen reads; without it
    # a resume starts from the top-level epoch and global_step.
    checkpoint.pop("loops", None)
    return checkpoint


_MIGRATIONS = {"2.0.0": [_drop_apex_amp_state, _drop_legacy_loop_state]}


def migrate_checkpoint(checkpoint: dict[str, Any],
                       target_version: str | None = None) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(the checkpoint, the migrations applied: {version: [function names]}), changed in place.

    A checkpoint without Lightning's version key (fulmen's own) is returned as it is; one from a
    newer Lightning than fulmen implements warns and is returned as it is. `target_version` applies
    only the migrations up to that version. Afterwards the checkpoint carries the version fulmen
    implements, and the one it was written with under "legacy_pytorch-lightning_version".

    >>> ckpt, applied = migrate_checkpoint({"pytorch-lightning_version": "1.9.0", "loops": {}, "epoch": 3})
    >>> applied, "loops" in ckpt, ckpt["legacy_pytorch-lightning_version"]
    ({'2.0.0': ['_drop_apex_amp_state', '_drop_legacy_loop_state']}, False, '1.9.0')
    """
    version = checkpoint.get(_VERSION_KEY)
    if version is None:
        return checkpoint, {}
    if _version_tuple(version) > _version_tuple(LIGHTNING_API_VERSION):
        rank_zero_warn(
            f"This checkpoint was written by Lightning {version}, newer than the {LIGHTNING_API_VERSION} whose "
            "format fulmen reads; it is loaded as it is.",
            category=PossibleUserWarning,
        )
        return checkpoint, {}
    applied: dict[str, list[str]] = {}
    for since, functions in _MIGRATIONS.items():
        wanted = target_version is None or _version_tuple(since) <= _version_tuple(target_version)
        if wanted and _version_tuple(version) < _version_tuple(since):
            for function in functions:
                checkpoint = function(checkpoint)
            applied[since] = [f.__name__ for f in functions]
    if version != LIGHTNING_API_VERSION:
        checkpoint.setdefault(_LEGACY_KEY, version)
    checkpoint[_VERSION_KEY] = LIGHTNING_API_VERSION
    return checkpoint, applied


def _gpus_arg_default(x: Any) -> Any:
    """What Lightning < 1.2.8 pickled as the `gpus` argument's parser: the identity."""
    return x


class pl_legacy_patch:  # noqa: N801 (Lightning's name)
    """While active, the names that checkpoints pickled by old Lightning versions refer to exist:
    `pytorch_lightning.utilities.argparse_utils._gpus_arg_default` (Lightning < 1.2.8) and
    `utilities.enums._FaultTolerantMode` (removed in 2.0), the latter on fulmen's `utilities.enums`,
    which `pytorch_lightning.utilities.enums` is under the alias.

        with pl_legacy_patch():
            checkpoint = torch.load("old.ckpt", weights_only=False)

    One thread at a time; everything is removed again on exit.
    """

    _lock = threading.Lock()

    def __enter__(self) -> pl_legacy_patch:
        from fulmen.utilities import enums
        from fulmen.utilities.enums import LightningEnum

        self._lock.acquire()
        self._added: list[str] = []
        # A module of its own: it was removed in Lightning 1.4, so nothing else can own the name.
        name = "pytorch_lightning.utilities.argparse_utils"
        if name not in sys.modules:
            module = types.ModuleType(name)
            module._gpus_arg_default = _gpus_arg_default
            sys.modules[name] = module
            self._added.append(name)

        class _FaultTolerantMode(LightningEnum):
            DISABLED = "disabled"
            AUTOMATIC = "automatic"
            MANUAL = "manual"

        _FaultTolerantMode.__module__ = enums.__name__
        self._had_mode = hasattr(enums, "_FaultTolerantMode")
        if not self._had_mode:
            enums._FaultTolerantMode = _FaultTolerantMode
        return self

    def __exit__(self, *exc: Any) -> None:
        from fulmen.utilities import enums

        try:
            for name in self._added:
                sys.modules.pop(name, None)
            if not self._had_mode and hasattr(enums, "_FaultTolerantMode"):
                del enums._FaultTolerantMode
        finally:
            self._lock.release()


__all__ = ["migrate_checkpoint", "pl_legacy_patch"]
