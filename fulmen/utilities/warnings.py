"""Warning classes and helpers of Lightning's `utilities.warnings`.

`PossibleUserWarning` marks warnings that may be false positives (a heuristic about the user's
setup); `disable_possible_user_warnings()` silences them.
"""

from __future__ import annotations

import warnings

from fulmen.utilities.rank_zero import LightningDeprecationWarning, rank_zero_deprecation, rank_zero_warn


class PossibleUserWarning(UserWarning):
    """A warning about the user's setup that could be a false positive."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Ignore `PossibleUserWarning`s raised from modules whose name matches `module` (all when empty)."""
    warnings.filterwarnings("ignore", module=module, category=PossibleUserWarning)


__all__ = [
    "LightningDeprecationWarning", "PossibleUserWarning", "disable_possible_user_warnings",
    "rank_zero_deprecation", "rank_zero_warn",
]
