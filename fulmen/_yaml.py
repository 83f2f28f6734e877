"""A tiny YAML writer and reader for plain data, so `hparams.yaml` needs no PyYAML.

`dump_yaml` owns the file format of `hparams.yaml`: block-style mappings and sequences whose
scalars are written in JSON form. JSON scalars are valid YAML, so any YAML reader (PyYAML,
ruamel, Lightning's `load_hparams_from_yaml`) loads the file back to the same data.
`load_yaml` uses PyYAML when it is installed and otherwise parses the subset `dump_yaml` writes.

Example:
    >>> text = dump_yaml({"lr": 0.01, "layers": [64, 32], "optim": {"name": "adam"}})
    >>> print(text, end="")
    lr: 0.01
    layers:
      - 64
      - 32
    optim:
      name: "adam"
    >>> load_yaml(text) == {"lr": 0.01, "layers": [64, 32], "optim": {"name": "adam"}}
    True
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["dump_yaml", "load_yaml"]

_INDENT = "  "

# Keys matching this are written bare (`lr: 0.1`), everything else as a JSON string. The
# words below are excluded because YAML 1.1 readers turn them into booleans or null.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[./-][A-Za-z0-9_]+)*\Z")
_RESERVED_WORDS = {"yes", "no", "on", "off", "true", "false", "null", "y", "n"}

# json.dumps(ensure_ascii=False) leaves these characters raw, but YAML readers either reject
# them (C0/C1 controls, DEL, U+FFFE/U+FFFF, lone surrogates) or read them as line breaks
# (U+0085, U+2028, U+2029). `\uXXXX` means the same character in JSON and in YAML.
_NOT_YAML_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029]")


def dump_yaml(data: dict[str, Any]) -> str:
    """Return `data` (a dict of plain data) as block-style YAML text ending in a newline.

    Plain data is dicts with `str` keys, lists, tuples, `str`, `int`, `float`, `bool` and `None`.
    Convert anything else first (for hyperparameters, `fulmen.loggers.base._to_plain` does it).
    """
    if not isinstance(data, dict):
        raise TypeError(
            f"dump_yaml expects a dict at the top level. Received: {type(data).__name__}. "
            "Fix: wrap the value, e.g. dump_yaml({'value': data})."
        )
    if not data:
        return "{}\n"
    return "\n".join(_block_lines(data, path="")) + "\n"


def load_yaml(text: str) -> Any:
    """Parse YAML text: with PyYAML's `safe_load` if installed, else the subset `dump_yaml` writes."""
    try:
        import yaml
    except ImportError:
        return _parse_subset(text)
    return yaml.safe_load(text)


# --- writing ------------------------------------------------------------------------------


def _block_lines(value: dict | list | tuple, path: str) -> list[str]:
    """Lines (unindented) for a non-empty dict or list; nested blocks are indented by the caller."""
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{_key(key, path)}:"
            if _is_block(item):
                lines.append(head)
                lines.extend(_INDENT + line for line in _block_lines(item, f"{path}.{key}"))
            else:
                lines.append(f"{head} {_scalar(item, f'{path}.{key}')}")
        return lines
    for index, item in enumerate(value):
        if _is_block(item):
            # The nested block starts on the dash line and its other lines align under it.
            first, *rest = _block_lines(item, f"{path}[{index}]")
            lines.append(f"- {first}")
            lines.extend(_INDENT + line for line in rest)
        else:
            lines.append(f"- {_scalar(item, f'{path}[{index}]')}")
    return lines


def _is_block(value: Any) -> bool:
    # Empty containers are written inline as `{}` / `[]`, which is both JSON and YAML.
    return isinstance(value, (dict, list, tuple)) and len(value) > 0


def _key(key: Any, path: str) -> str:
    if not isinstance(key, str):
        raise TypeError(
            f"dump_yaml supports only str keys. Received: key {key!r} of type {type(key).__name__} "
            f"at {path or 'the top level'}. Fix: convert the keys to str before dumping."
        )
    if _PLAIN_KEY.match(key) and key.lower() not in _RESERVED_WORDS:
        return key
    return _json_string(key)


def _scalar(value: Any, path: str) -> str:
    if value is None or isinstance(value, (bool, int)):
        return json.dumps(value)  # null / true / false / 123
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    raise TypeError(
        f"dump_yaml supports plain data only (dict, list, str, int, float, bool, None). "
        f"Received: {type(value).__name__} at {path.lstrip('.')!r}. Fix: convert it first, e.g. with str()."
    )


def _float(value: float) -> str:
    # JSON has no NaN/Infinity; these are YAML's own spellings of them.
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    # YAML 1.1 readers (PyYAML) only read `1e+20` as a float when it has a dot: `1.0e+20`.
    if "e" in text and "." not in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _json_string(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    return _NOT_YAML_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


# --- reading (only used when PyYAML is missing) ----------------------------------------------


def _parse_subset(text: str) -> Any:
    """Parse block mappings/sequences with JSON (or YAML-special float) scalars, as written above."""
    lines = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        lines.append((len(raw) - len(raw.lstrip(" ")), stripped))
    if not lines:
        return None
    if len(lines) == 1 and not _is_sequence_item(lines[0][1]) and _split_key(lines[0][1]) is None:
        return _parse_scalar(lines[0][1])  # a document that is a single scalar, e.g. `{}`
    value, end = _parse_node(lines, 0, lines[0][0])
    if end != len(lines):
        indent, content = lines[end]
        raise ValueError(
            f"Could not parse YAML: unexpected line {content!r} at indent {indent}. "
            "This reader understands only the block-style subset that fulmen writes. "
            "Fix: install PyYAML (pip install pyyaml) to read general YAML."
        )
    return value


def _parse_node(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    """Parse the block starting at line `i` whose lines sit at `indent`; return (value, next line)."""
    if _is_sequence_item(lines[i][1]):
        return _parse_sequence(lines, i, indent)
    return _parse_mapping(lines, i, indent)


def _is_sequence_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _parse_sequence(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[list, int]:
    items = []
    while i < len(lines) and lines[i][0] == indent and _is_sequence_item(lines[i][1]):
        rest = lines[i][1][1:]
        if not rest.strip():
            value, i = _parse_nested(lines, i + 1, indent)
        else:
            # `- a: 1` opens a block whose column is where `a` starts; re-read that line there.
            column = indent + 1 + (len(rest) - len(rest.lstrip(" ")))
            lines[i] = (column, rest.strip())
            if _is_sequence_item(lines[i][1]) or _split_key(lines[i][1]) is not None:
                value, i = _parse_node(lines, i, column)
            else:
                value, i = _parse_scalar(lines[i][1]), i + 1
        items.append(value)
    return items, i


def _parse_mapping(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[dict, int]:
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent and not _is_sequence_item(lines[i][1]):
        split = _split_key(lines[i][1])
        if split is None:
            raise ValueError(
                f"Could not parse YAML: expected 'key: value', received {lines[i][1]!r}. "
                "Fix: install PyYAML (pip install pyyaml) to read general YAML."
            )
        key, rest = split
        if rest:
            mapping[key], i = _parse_scalar(rest), i + 1
        else:
            mapping[key], i = _parse_nested(lines, i + 1, indent, allow_same_indent_sequence=True)
    return mapping, i


def _parse_nested(
    lines: list[tuple[int, str]], i: int, indent: int, allow_same_indent_sequence: bool = False
) -> tuple[Any, int]:
    """The value after `key:` or `-` with nothing on its line: a deeper block, or null."""
    if i < len(lines):
        next_indent, content = lines[i]
        if next_indent > indent:
            return _parse_node(lines, i, next_indent)
        # YAML lets a mapping's sequence value sit at the key's own indent (PyYAML writes it so).
        if allow_same_indent_sequence and next_indent == indent and _is_sequence_item(content):
            return _parse_sequence(lines, i, indent)
    return None, i


def _split_key(content: str) -> tuple[str, str] | None:
    """Split `key: rest` into (key, rest); None when the line is not a mapping entry."""
    if content.startswith('"'):
        try:
            key, end = json.JSONDecoder().raw_decode(content)
        except json.JSONDecodeError:
            return None
        tail = content[end:]
        if not isinstance(key, str) or not (tail == ":" or tail.startswith(": ")):
            return None
        return key, tail[1:].strip()
    if content.startswith(("{", "[")):
        return None  # an inline JSON container, not a key
    match = re.match(r"([^\s:][^:]*?):(?:\s+(.*))?\Z", content)
    if match is None:
        return None
    return match.group(1), (match.group(2) or "").strip()


_YAML_SPECIALS = {
    ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
    ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
    "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
    "~": None, "Null": None, "NULL": None, "True": True, "TRUE": True, "False": False, "FALSE": False,
}  # fmt: skip


def _parse_scalar(text: str) -> Any:
    if text in _YAML_SPECIALS:
        return _YAML_SPECIALS[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    # A hand-edited file may hold bare words (`optimizer: adam`); YAML reads those as strings.
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text
