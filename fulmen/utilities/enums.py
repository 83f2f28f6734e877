"""Lightning's string enums: `LightningEnum` (a str enum equal to its value in any letter case) and
`GradClipAlgorithmType`.
"""

from __future__ import annotations

import warnings
from enum import Enum
from typing import Literal


class LightningEnum(str, Enum):
    """A str enum that compares (and hashes) case-insensitively with its value.

    Example:
        >>> class Mode(LightningEnum):
        ...     FAST = "fast"
        >>> Mode.FAST == "FAST", Mode.from_str("fast") is Mode.FAST
        (True, True)
    """

    @classmethod
    def from_str(cls, value: str, source: Literal["key", "value", "any"] = "key") -> LightningEnum:
        """The member whose name (`source="key"`), value (`"value"`) or either (`"any"`, names first)
        matches `value`; names match in any case."""
        if source in ("key", "any"):
            for name in cls.__members__:
                if name.lower() == value.lower():
                    return cls[name]
        if source in ("value", "any"):
            for name, member in cls.__members__.items():
                if member == value:
                    return cls[name]
        raise ValueError(f"Invalid match: expected one of {cls._allowed_matches(source)}, but got {value}.")

    @classmethod
    def try_from_str(cls, value: str, source: Literal["key", "value", "any"] = "key") -> LightningEnum | None:
        """`from_str`, or a warning and None when nothing matches."""
        try:
            return cls.from_str(value, source)
        except ValueError:
            warnings.warn(
                UserWarning(f"Invalid string: expected one of {cls._allowed_matches(source)}, but got {value}."),
                stacklevel=2,
            )
        return None

    @classmethod
    def _allowed_matches(cls, source: str) -> list[str]:
        keys = list(cls.__members__)
        values = [member.value for member in cls.__members__.values()]
        return {"key": keys, "value": values}.get(source, keys + values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Enum):
            other = other.value
        return self.value.lower() == str(other).lower()

    def __hash__(self) -> int:
        # Defining __eq__ drops the inherited hash; hash like the lower-case value so that
        # members equal to each other (and in sets and dict keys) hash alike.
        return hash(self.value.lower())


class GradClipAlgorithmType(LightningEnum):
    """How `gradient_clip_algorithm` clips: by the total norm ("norm") or each value ("value")."""

    VALUE = "value"
    NORM = "norm"

    @staticmethod
    def supported_type(val: str) -> bool:
        return any(x.value == val for x in GradClipAlgorithmType)

    @staticmethod
    def supported_types() -> list[str]:
        return [x.value for x in GradClipAlgorithmType]


__all__ = ["GradClipAlgorithmType", "LightningEnum"]
