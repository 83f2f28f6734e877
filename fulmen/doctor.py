"""`fulmen doctor`: static checks for the classic mistakes in LightningModule code.

The checks read the source with `ast` (nothing is imported or run), so they work on any file,
in CI, before a single batch is loaded. Each finding has a code (`FM101`...), a place
(`file:line`), a one-line message and the fix; docs/common_mistakes.md shows a before/after
example for every code. Severities: "error" (the run fails or trains wrongly), "warning"
(breaks on other hardware or wastes memory), "advice" (project layout and data loading).

    fulmen doctor model.py data.py          # or folders: every *.py below them
    python -m fulmen doctor src/ --strict   # advice fails the run too

Exit status: 0 when nothing at or above the failing severity was found, 1 otherwise, 2 for a
usage error. A line ending in `# noqa: FM101` is not reported for that code (`# noqa: FM1` for
the FM1xx group); on a `class` line the comment covers the whole class.

The rules themselves (the code table and the AST walk) are in fulmen.doctor_checks.
`check_at_fit` runs the same checks on the user's module and data module when `fit` starts
(errors and warnings only, as Python warnings; `FULMEN_DOCTOR=0` turns it off). The results
are cached per file, so a second fit in the same process does not parse again.
`explain_runtime_error` attaches the finding and its fix to a runtime error it explains (torch's
double backward after a `loss.backward()` in the step, a device error after `.cuda()`).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fulmen.doctor_checks import RULES, FileChecker, Finding

__all__ = ["RULES", "DoctorWarning", "Finding", "check_at_fit", "check_file", "check_paths", "check_source",
           "explain_runtime_error", "main"]

DOCS = "docs/common_mistakes.md"
_SEVERITY_RANK = {"advice": 0, "warning": 1, "error": 2}
_NOQA = re.compile(r"#\s*noqa:\s*([A-Z0-9, ]+)")


class DoctorWarning(UserWarning):
    """A `fulmen doctor` finding reported when `fit` starts."""


# --- entry points ---------------------------------------------------------------------------------


def _noqa_codes(line: str) -> list[str]:
    match = _NOQA.search(line)
    return [c.strip() for c in match.group(1).split(",") if c.strip()] if match else []


def _suppressed(finding: Finding, lines: list[str], class_spans: list[tuple[int, int]]) -> bool:
    """`# noqa: FM601` on the finding's line, or on the `class` line of a class holding it."""
    heads = [start for start, end in class_spans if start <= finding.line <= end] + [finding.line]
    return any(finding.code.startswith(code) for line in heads if 0 < line <= len(lines)
               for code in _noqa_codes(lines[line - 1]))


def _findings(tree: ast.Module, source: str, path: str) -> list[Finding]:
    lines = source.splitlines()
    spans = [(n.lineno, n.end_lineno or n.lineno) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    findings = {f for f in FileChecker(tree, path).run() if not _suppressed(f, lines, spans)}
    return sorted(findings, key=lambda f: (f.line, f.col, f.code))


def check_source(source: str, path: str = "<string>") -> list[Finding]:
    """The findings for the Python source `source` (reported as `path`), sorted by line.

    Example:
        >>> code = "import torch\\nclass M(LightningModule):\\n    def forward(self, x):\\n        return x.cuda()\\n"
        >>> [f.code for f in check_source(code)]
        ['FM101']
    """
    return _findings(ast.parse(source, filename=path), source, path)


def check_file(path: str | Path) -> list[Finding]:
    """The findings for one file (SyntaxError when it does not parse)."""
    path = Path(path)
    return check_source(path.read_text(encoding="utf-8"), str(path))


def _python_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Each file once, also when it is named twice (`fulmen doctor . model.py`: the folder holds it)."""
    skip = {"__pycache__", "node_modules", "build", "dist", "site-packages"}
    seen: set[Path] = set()
    for root in map(Path, paths):
        if root.is_file():
            found: Iterable[Path] = [root]
        else:
            found = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith(".") and not
                                     (Path(dirpath, d, "pyvenv.cfg").exists()))
                found += [Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                yield file


def check_paths(paths: Iterable[str | Path]) -> tuple[list[Finding], int]:
    """The findings for files and folders (every `*.py` below a folder), and how many files were read."""
    findings, count = [], 0
    for file in _python_files(paths):
        count += 1
        findings += check_file(file)
    return findings, count


def main(argv: list[str] | None = None) -> int:
    """`fulmen doctor PATH...`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="fulmen doctor", description="Check LightningModule code for common "
                                     f"mistakes (codes and examples: {DOCS}).")
    parser.add_argument("paths", nargs="+", help="files or folders (every *.py below them)")
    parser.add_argument("--strict", action="store_true", help="advice fails the run too (exit status 1)")
    parser.add_argument("--ignore", default="", help="comma-separated codes or prefixes not to report, e.g. FM6,FM501")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"fulmen doctor: no such file or folder. Received: {', '.join(missing)}. Fix: check the path.",
              file=sys.stderr)
        return 2
    ignored = tuple(c.strip() for c in args.ignore.split(",") if c.strip())
    try:
        findings, count = check_paths(args.paths)
    except SyntaxError as err:
        print(f"fulmen doctor: {err.filename}:{err.lineno}: cannot parse: {err.msg}. Fix: make the file valid "
              "Python first.", file=sys.stderr)
        return 2
    findings = [f for f in findings if not f.code.startswith(ignored or ("\0",))]
    if args.format == "json":
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        shown: set[str] = set()
        for finding in findings:
            # A fix already printed is not printed again: five findings of two kinds show two fixes.
            text = finding.format()
            if finding.fix in shown:
                text = text.split("\n    Fix: ")[0] + f"\n    Fix: as above ({finding.code})."
            shown.add(finding.fix)
            print(text)
        counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "advice")}
        summary = ", ".join(f"{n} {s}{'s' if n != 1 and s != 'advice' else ''}" for s, n in counts.items() if n)
        print(f"fulmen doctor: {len(findings)} finding{'s' if len(findings) != 1 else ''} in {count} "
              f"file{'s' if count != 1 else ''}" + (f" ({summary}); see {DOCS}" if findings else ""))
    threshold = 0 if args.strict else 1
    return int(any(_SEVERITY_RANK[f.severity] >= threshold for f in findings))


# --- at fit start ---------------------------------------------------------------------------------

_cache: dict[tuple[str, float], tuple[list[Finding], list[tuple[str, int, int]]]] = {}
_registry: dict[Any, Any] = {}  # the warnings module's memory: under the default filter, once per line per process


def _analysed(path: str) -> tuple[list[Finding], list[tuple[str, int, int]]]:
    """The findings of `path` and its classes' (name, first line, last line), parsed once per version."""
    key = (path, os.path.getmtime(path))
    if key not in _cache:
        source = Path(path).read_text(encoding="utf-8")
        tree = ast.parse(source, filename=path)
        findings = _findings(tree, source, path)
        spans = [(n.name, n.lineno, n.end_lineno or n.lineno) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        _cache[key] = (findings, spans)
    return _cache[key]


def _unwrapped(value: Any) -> Any:
    """The function under staticmethod/classmethod/functools.wraps layers."""
    value = getattr(value, "__func__", value)
    while hasattr(value, "__wrapped__"):
        value = value.__wrapped__
    return value


def _class_findings(cls: type) -> list[Finding]:
    """Errors and warnings inside the class statement of `cls`. The class is found by the first
    line of one of its functions (`co_firstlineno`), which costs nothing, unlike inspect.getsource."""
    prefix = f"{cls.__qualname__}."
    functions = [f for f in map(_unwrapped, vars(cls).values())
                 if hasattr(f, "__code__") and getattr(f, "__qualname__", "").startswith(prefix)]
    if not functions:  # no method written in the class body (or only decorated from elsewhere)
        return []
    code = functions[0].__code__
    path = code.co_filename
    try:
        if not os.path.isfile(path):
            return []  # defined in a REPL or exec'd: nothing to read
        findings, spans = _analysed(path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    inside = [(start, end) for name, start, end in spans
              if name == cls.__name__ and start <= code.co_firstlineno <= end]
    if not inside:
        return []
    start, end = max(inside)  # the innermost class of that name
    return [f for f in findings if start <= f.line <= end and f.severity != "advice"]


def _user_findings(*objects: Any) -> list[Finding]:
    """Errors and warnings in the classes of `objects` and their base classes, except the classes
    of fulmen, Lightning and torch themselves."""
    findings: list[Finding] = []
    for obj in objects:
        if obj is None:
            continue
        for cls in type(obj).__mro__:  # the user's class and the user's base classes
            if (cls.__module__ or "").split(".")[0] in ("fulmen", "pytorch_lightning", "lightning", "torch",
                                                         "builtins"):
                continue
            findings += [f for f in _class_findings(cls) if f not in findings]
    return findings


def check_at_fit(*objects: Any) -> list[Finding]:
    """Warn (DoctorWarning) about errors and warnings in the classes of `objects` (the module and
    data module given to fit). Classes from fulmen itself and from site-packages are skipped."""
    if os.environ.get("FULMEN_DOCTOR", "1").strip().lower() in ("0", "false", "off", "no"):
        return []
    findings = _user_findings(*objects)
    for finding in findings:  # attributed to the user's line, not to fulmen's call stack
        warnings.warn_explicit(f"fulmen doctor {finding.code} at {finding.path}:{finding.line}: {finding.message} "
                               f"Fix: {finding.fix} (See {DOCS}; turn these checks off with FULMEN_DOCTOR=0.)",
                               DoctorWarning, finding.path, finding.line, registry=_registry)
    return findings


# --- after a runtime error ------------------------------------------------------------------------

_DOUBLE_BACKWARD = "backward through the graph a second time"
# How a tensor on the wrong device fails: a mismatch inside an op, or a GPU asked for where there is none.
_DEVICE_ERRORS = ("on the same device", "on the expected device", "Torch not compiled with CUDA enabled",
                  "Found no NVIDIA driver", "No CUDA GPUs are available", "but expected device")
_RETAIN_GRAPH = "(Not retain_graph=True, which torch suggests: the gradients of the step would be added twice.)"


def explain_runtime_error(exc: BaseException, module: Any) -> list[str]:
    """Attach to `exc` (PEP 678 notes; in the message on Python 3.10) what fulmen doctor knows
    about it: torch's "backward through the graph a second time" under automatic optimization
    (a `loss.backward()` in the module, FM301), or a device error after a hard-coded device move
    (FM101/FM102/FM103). Returns the notes added (none when the error is not one of these).

    The checks read the module's source, once per file, also when `FULMEN_DOCTOR=0` silenced them
    at fit start: this runs only after a failure."""
    from fulmen.errors import add_note

    text = str(exc)
    double_backward = _DOUBLE_BACKWARD in text and getattr(module, "automatic_optimization", False)
    device = any(marker in text for marker in _DEVICE_ERRORS)
    if not (double_backward or device):
        return []
    findings = _user_findings(module)
    notes: list[str] = []
    if double_backward:
        calls = [f for f in findings if f.code == "FM301" and "backward" in f.message]
        kept = [f for f in findings if f.code == "FM403"]
        for finding in calls[:3] + kept[:2]:
            notes.append(f"fulmen doctor {finding.code} at {finding.path}:{finding.line}: {finding.message}")
        if calls or not kept:
            notes.append(
                "fulmen: under automatic optimization the Trainer runs backward on the loss that training_step "
                "returns; a backward call in the step itself uses the graph a second time. Fix: delete "
                "loss.backward() (and any optimizer.step()/zero_grad()) from training_step and return the loss, "
                "or set `self.automatic_optimization = False` and use self.manual_backward(loss). " + _RETAIN_GRAPH
            )
        else:
            notes.append(f"fulmen: a tensor kept from an earlier step still holds that step's graph. Fix: "
                         f"{kept[0].fix} {_RETAIN_GRAPH}")
    if device:
        moves = [f for f in findings if f.code in ("FM101", "FM102", "FM103")]
        for finding in moves[:3]:
            notes.append(f"fulmen doctor {finding.code} at {finding.path}:{finding.line}: {finding.message}")
        if moves:
            notes.append(f"fulmen: the Trainer puts the module and each batch on its device ({module.device}); a "
                         f"device chosen in the module's code is another one. Fix: {moves[0].fix}")
    for note in notes:
        add_note(exc, note)
    return notes
