"""`fulmen report RUN_DIR`: one self-contained HTML page describing a training run.

It reads what fulmen writes into a run directory (`lightning_logs/version_N`): the metrics from
CSVLogger's `metrics.csv` or, without it, TensorBoardLogger's event files; the hyperparameters
from `hparams.yaml`; and the checkpoints in `checkpoints/` with their scores (ModelCheckpoint's
`best_k_models`, stored in each checkpoint's "callbacks" state). The page holds the training and
validation curves, the learning rate, final values, hyperparameters, checkpoints and run time.
Plots are PNGs embedded as base64, so the file opens from disk, offline, with no server.

    fulmen report lightning_logs/version_3              # writes lightning_logs/version_3/report.html
    fulmen report lightning_logs -o run.html            # the newest version_N under it

Plots need matplotlib (`pip install 'fulmen[report]'`), imported only when a report is made.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import html
import io
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunData", "main", "read_run", "write_report"]

# Fixed colours: train curves blue, validation red (the Chromium test looks for these pixels).
TRAIN_COLOR, VAL_COLOR, OTHER_COLOR, LR_COLOR = "#1f5fbf", "#d62728", "#2ca02c", "#9467bd"
_SPLIT = re.compile(r"^(train|training|val|valid|validation|test|predict)[_/-]|[_/-](train|val|valid|test)$", re.I)
_LR = re.compile(r"(^|[_/-])(lr|learning[_-]?rate)($|[_/-])", re.I)
_SKIP = {"epoch", "step", "hp_metric"}


@dataclass
class RunData:
    """Everything the report shows, read from one run directory."""

    run_dir: Path
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name -> [(step, value)]
    metrics_source: str = ""
    hparams: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    monitor: str | None = None
    run_time_s: float | None = None
    run_time_source: str = ""


class ReportError(RuntimeError):
    """The run directory cannot be reported on (the message says why and what to do)."""


# --- reading a run --------------------------------------------------------------------------------


def find_run_dir(path: str | Path) -> Path:
    """`path` itself when it holds a run, else its newest `version_N` below (lightning_logs/ or the root dir)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"Run directory not found. Received: {path}. Fix: pass lightning_logs/version_N.")
    if _has_run_files(path):
        return path
    versions = [p for p in path.glob("version_*") if p.is_dir()] + [p for p in path.glob("*/version_*") if p.is_dir()]
    versions = [p for p in versions if _has_run_files(p)]
    if not versions:
        raise ReportError(f"No run found in {path}: no metrics.csv, TensorBoard events or checkpoints. "
                          "Fix: pass the version_N directory a logger wrote (trainer.log_dir).")
    number = lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else -1  # noqa: E731
    return max(versions, key=lambda p: (p.stat().st_mtime, number(p)))


def _has_run_files(path: Path) -> bool:
    return any((path / name).exists() for name in ("metrics.csv", "hparams.yaml", "checkpoints")) or any(
        path.glob("events.out.tfevents.*"))


def read_run(path: str | Path) -> RunData:
    """Read metrics, hyperparameters, checkpoints and run time from a run directory."""
    run = RunData(find_run_dir(path))
    if (run.run_dir / "metrics.csv").is_file():
        run.metrics, run.metrics_source = _read_csv(run.run_dir / "metrics.csv"), "metrics.csv (CSVLogger)"
    events = sorted(run.run_dir.glob("events.out.tfevents.*"))
    if events:
        scalars, first, last = _read_events(run.run_dir)
        if not run.metrics:
            run.metrics, run.metrics_source = scalars, "TensorBoard event files"
        if first is not None and last is not None and last > first:
            run.run_time_s, run.run_time_source = last - first, "TensorBoard event times"
    if (run.run_dir / "hparams.yaml").is_file():
        from fulmen.saving import _yaml_data

        # Lenient: a file Lightning wrote may tag a value as a Python object (a class, a path);
        # the report shows such a value as its tag instead of refusing the whole run.
        run.hparams = _yaml_data((run.run_dir / "hparams.yaml").read_text(encoding="utf-8"), lenient=True) or {}
    _read_checkpoints(run)
    if run.run_time_s is None:
        times = [p.stat().st_mtime for p in run.run_dir.rglob("*") if p.is_file()]
        if len(times) > 1:
            run.run_time_s, run.run_time_source = max(times) - min(times), "file times (approximate)"
    return run


def _read_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    metrics: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = row.get("step") or ""
            if not step.strip():
                continue
            for name, cell in row.items():
                if name in _SKIP or name is None or cell in (None, ""):
                    continue
                try:
                    metrics.setdefault(name, []).append((int(float(step)), float(cell)))
                except ValueError:
                    continue  # a non-numeric cell: not a curve
    return metrics


def _read_events(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], float | None, float | None]:
    """Scalars of the event files directly in `run_dir`, and the first and last event times."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    metrics, times = {}, []
    for tag in accumulator.Tags().get("scalars", []):
        if tag in _SKIP:
            continue
        events = accumulator.Scalars(tag)
        metrics[tag] = [(int(e.step), float(e.value)) for e in events]
        times += [e.wall_time for e in events]
    return metrics, (min(times) if times else None), (max(times) if times else None)


def _read_checkpoints(run: RunData) -> None:
    """Each checkpoint's epoch, step and size; scores from ModelCheckpoint's best_k_models."""
    from fulmen.checkpoint import CheckpointError, load_checkpoint

    files = sorted((run.run_dir / "checkpoints").glob("*.ckpt")) if (run.run_dir / "checkpoints").is_dir() else []
    scores: dict[str, float] = {}
    newest_step, best_name, timer = -1, None, None
    for path in files:
        row: dict[str, Any] = {"file": path.name, "size_mb": path.stat().st_size / 2**20, "score": None}
        try:
            checkpoint = load_checkpoint(path, map_location="cpu")
        except CheckpointError as err:
            row["error"] = str(err).split(". ")[0]
            run.checkpoints.append(row)
            continue
        row["epoch"], row["step"] = checkpoint.get("epoch"), checkpoint.get("global_step")
        for key, state in (checkpoint.get("callbacks") or {}).items():
            if not isinstance(state, dict):
                continue
            if "best_k_models" in state and (row["step"] or 0) >= newest_step:  # the newest list is complete
                newest_step = row["step"] or 0
                scores = {Path(p).name: _number(v) for p, v in state["best_k_models"].items()}
                best_name = Path(state.get("best_model_path") or "").name or None
                run.monitor = state.get("monitor")
            if key.startswith("Timer") and isinstance(state.get("time_elapsed"), dict):
                timer = state["time_elapsed"]
        run.checkpoints.append(row)
    for row in run.checkpoints:
        row["score"] = scores.get(row["file"])
        if row["score"] is None and run.monitor:  # a file no longer in top-k: its name may still say it
            found = re.search(re.escape(run.monitor) + r"=([-+0-9.eE]+?)(?:-|\.ckpt$)", row["file"])
            row["score"] = float(found.group(1)) if found else None
        row["best"] = row["file"] == best_name
    if timer and timer.get("train"):
        run.run_time_s, run.run_time_source = float(timer["train"]), "Timer callback (training time)"


def _number(value: Any) -> float | None:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None


# --- plots ----------------------------------------------------------------------------------------


def _stem(name: str) -> str:
    """'train_loss_epoch', 'val/loss' -> 'loss': curves with one stem share a plot."""
    stem = re.sub(r"[_/-](step|epoch)$", "", name)
    return _SPLIT.sub("", stem) or stem


def _color(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith(("val", "valid")) or "/val" in lowered or lowered.endswith("val"):
        return VAL_COLOR
    if lowered.startswith("train") or lowered.endswith("train"):
        return TRAIN_COLOR
    return OTHER_COLOR


def _figures(run: RunData) -> list[tuple[str, str]]:
    """(title, base64 PNG) per plot: one per metric stem with train/val together, then learning rate."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ModuleNotFoundError(
            f"fulmen report needs the matplotlib package for its plots ({err}). Fix: pip install 'fulmen[report]'."
        ) from err
    curves = run.metrics
    groups: dict[str, list[str]] = {}
    for name in sorted(curves):
        groups.setdefault("learning rate" if _LR.search(name) else _stem(name), []).append(name)
    # a plot needs one line: single points (a test metric, a one-epoch value) join a plot that has
    # one, and are otherwise only in the table of final values
    groups = {t: names for t, names in groups.items() if any(len(curves[n]) >= 2 for n in names)}
    order = sorted(groups, key=lambda g: (g == "learning rate", "loss" not in g, g))
    figures = []
    for title in order:
        figure = Figure(figsize=(7.5, 3.6), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for i, name in enumerate(groups[title]):
            steps, values = zip(*curves[name])
            color = LR_COLOR if title == "learning rate" else _color(name)
            style = "-" if len(steps) > 20 else "-o"
            axes.plot(steps, values, style, color=color, linewidth=2.2, markersize=4, label=name,
                      alpha=1.0 if i == 0 or color != _color(groups[title][0]) else 0.65)
        axes.set_xlabel("step")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8)
        if title == "learning rate" and all(v > 0 for n in groups[title] for _, v in curves[n]):
            values = [v for n in groups[title] for _, v in curves[n]]
            if max(values) / min(values) > 50:
                axes.set_yscale("log")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        figures.append((title, base64.b64encode(buffer.getvalue()).decode("ascii")))
    return figures


# --- the page -------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 24px auto; max-width: 1000px;
       color: #1b1f24; background: #ffffff; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.meta { color: #57606a; font-size: 13px; } table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; } th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tr.best td { background: #eaf5ea; font-weight: 600; }
.plots img { display: block; max-width: 100%; margin: 10px 0; border: 1px solid #eee; }
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _flat(params: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(params, dict):
        return [item for k, v in params.items() for item in _flat(v, f"{prefix}{k}.")]
    return [(prefix[:-1], params)]


def _duration(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds))) if seconds >= 60 else f"{seconds:.1f} s"


def _epoch(index: int) -> str:
    """An epoch as the checkpoints store it, Lightning's index from 0, with its ordinal: '6 (the 7th)'."""
    n = index + 1
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{index} (from 0: the {n}{suffix})"


def render_html(run: RunData, title: str | None = None) -> str:
    """The report page as one HTML string (plots included)."""
    esc = html.escape
    title = title or f"Run report: {run.run_dir.parent.name}/{run.run_dir.name}"
    steps = max((s for v in run.metrics.values() for s, _ in v), default=None)
    epochs = max((c.get("epoch") or 0 for c in run.checkpoints if c.get("epoch") is not None), default=None)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p class='meta'>Run directory: {esc(str(run.run_dir))}<br>Report written "
             f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by fulmen report. Metrics from "
             f"{esc(run.metrics_source or 'nowhere (none logged)')}.</p>", "<h2>Summary</h2><table>"]
    summary = [("run time", f"{_duration(run.run_time_s)} ({run.run_time_source})" if run.run_time_s else "unknown"),
               ("last logged step", steps), ("last checkpoint's epoch", None if epochs is None else _epoch(epochs)),
               ("checkpoints", len(run.checkpoints)), ("monitored metric", run.monitor)]
    parts += [f"<tr><th>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in summary if v is not None]
    parts.append("</table>")

    figures = _figures(run)
    parts.append("<h2>Curves</h2><div class='plots'>")
    parts += [f"<img alt='{esc(t)}' title='{esc(t)}' src='data:image/png;base64,{b64}'>" for t, b64 in figures]
    if not figures:
        parts.append("<p>No metric was logged more than once.</p>")
    parts.append("</div>")

    if run.metrics:
        parts.append("<h2>Final values</h2><table><tr><th>metric</th><th>last</th><th>min</th><th>max</th>"
                     "<th>at step</th><th>points</th></tr>")
        for name in sorted(run.metrics):
            values = [v for _, v in run.metrics[name]]
            parts.append(f"<tr><td>{esc(name)}</td>" + "".join(f"<td class='num'>{_fmt(x)}</td>" for x in (
                values[-1], min(values), max(values), run.metrics[name][-1][0], len(values))) + "</tr>")
        parts.append("</table>")

    parts.append("<h2>Hyperparameters</h2>")
    flat = _flat(run.hparams)
    parts.append("<table><tr><th>name</th><th>value</th></tr>" + "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(_fmt(v))}</td></tr>" for k, v in flat) + "</table>" if flat
        else "<p>None saved (hparams.yaml missing or empty).</p>")

    parts.append("<h2>Checkpoints</h2>")
    if run.checkpoints:
        score = esc(run.monitor or "score")
        parts.append(f"<table><tr><th>file</th><th>epoch (from 0)</th><th>step</th><th>{score}</th>"
                     "<th>size (MB)</th></tr>")
        for c in run.checkpoints:
            note = " (best)" if c.get("best") else f" ({esc(c['error'])})" if c.get("error") else ""
            parts.append(f"<tr class='{'best' if c.get('best') else ''}'><td>{esc(c['file'])}{note}</td>"
                         f"<td class='num'>{_fmt(c.get('epoch', ''))}</td>"
                         f"<td class='num'>{_fmt(c.get('step', ''))}</td>"
                         f"<td class='num'>{'' if c['score'] is None else _fmt(c['score'])}</td>"
                         f"<td class='num'>{c['size_mb']:.2f}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No checkpoints in this run directory.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: str | Path, output: str | Path | None = None, title: str | None = None) -> Path:
    """Read the run and write its report (default: `report.html` in the run directory); return the path."""
    run = read_run(run_dir)
    path = Path(output) if output is not None else run.run_dir / "report.html"
    page = render_html(run, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """`fulmen report RUN_DIR [-o FILE] [--title TEXT]`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="fulmen report", description="Write a self-contained HTML report of a run.")
    parser.add_argument("run_dir", help="lightning_logs/version_N (or a folder above it: its newest run)")
    parser.add_argument("-o", "--output", help="the HTML file (default: RUN_DIR/report.html)")
    parser.add_argument("--title", help="the page title")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.output, args.title)
    except ReportError as err:
        print(f"fulmen report: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # matplotlib: not in the README's `[examples]` set-up
        from fulmen.commands import command_as_typed

        fix = command_as_typed("pip", "install", "fulmen[report]")
        print(f"fulmen report: {str(err).split(' Fix:')[0]} Fix: {fix}", file=sys.stderr)
        return 2
    print(f"Report written to {path}")
    return 0
