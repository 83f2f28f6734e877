"""fulmen vs a raw PyTorch loop vs Lightning, side by side, in one run.

    python bench/run.py                 # all workloads, 7 interleaved repeats (a, b: 14); ~9 minutes on 2 cores
    python bench/run.py --repeats 3 --only a,b
    python bench/bytecodes.py           # fulmen's Python bytecodes per step: deterministic
    python bench/instructions.py        # machine instructions per step vs raw, by valgrind: deterministic

Runs are interleaved (raw, fulmen, Lightning, raw, ...) so that noise on a shared machine hits
all three alike. Prints a table of medians and ratios against the targets, and writes
`bench/results/results.json` and `bench/results/chart.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

# metric key → (workload letter, description, unit, target as (kind, value))
#   ("ratio", r): fulmen / raw <= r;  ("delta", d): fulmen - raw <= d;  ("abs", a): fulmen <= a
METRICS: dict[str, tuple[str, str, str, tuple[str, float]]] = {
    "step_ms_log": ("a", "tiny MLP step, self.log every step", "ms", ("ratio", 1.05)),
    "step_ms": ("b", "tiny MLP step, no logging", "ms", ("ratio", 1.03)),
    # c as the issue words it (progress bar and logger on); then with Lightning's default per-epoch checkpoint.
    "digits_s": ("c", "small CNN on digits, 10 epochs, bar+logger", "s", ("ratio", 1.03)),
    "digits_ckpt_s": ("c", "  the same + a checkpoint every epoch", "s", ("none", None)),
    "import_s": ("d", "import after torch: time", "s", ("abs", 0.25)),
    "import_mib": ("d", "import after torch: memory", "MiB", ("abs", 20.0)),
    "to_first_step_s": ("e", "Trainer(...) to first step (defaults)", "s", ("delta", 0.2)),
    "short_fit_s": ("e", "short fit, 100 steps (defaults)", "s", ("delta", None)),
    "peak_rss_mib": ("f", "peak RSS of the digits run", "MiB", ("ratio", 1.05)),
    "save_s": ("g", "ckpt save ~50 MB, background landing", "s", ("ratio", 1.10)),
    "save_durable_s": ("g", "  default: on disk at return (raw: +fsync)", "s", ("ratio", 1.10)),
    "load_s": ("g", "checkpoint load, ~50 MB model", "s", ("ratio", 1.10)),
    "size_mb": ("g", "checkpoint file size", "MB", ("none", None)),
}


def child(what: str, name: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE / "child.py"), what, name], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def interleave(names: list[str], repeats: int, measure: Callable[[str], dict[str, float]],
               samples: dict[str, dict[str, list[float]]]) -> None:
    for _ in range(repeats):
        for name in names:
            for key, value in measure(name).items():
                samples.setdefault(key, {}).setdefault(name, []).append(value)


def collect(names: list[str], repeats: int, only: set[str]) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {}
    torch.set_num_threads(1)
    plan: list[tuple[str, Callable[[str], dict[str, float]]]] = [
        ("a", lambda n: {"step_ms_log": workloads.tiny_step(n, log=True)}),
        ("b", lambda n: {"step_ms": workloads.tiny_step(n, log=False)}),
        ("c", lambda n: {"digits_s": workloads.digits_run(n, False), "digits_ckpt_s": workloads.digits_run(n)}),
        ("d", lambda n: child("import", n)),
        ("e", lambda n: child("first_step", n)),
        ("f", lambda n: child("peak_rss", n)),
    ]
    for letter, measure in plan:
        if letter in only:
            started = time.perf_counter()
            if letter in "abc":
                for name in names:  # one untimed run each: first-call costs (lazy imports, caches)
                    measure(name)
            # a and b take seconds: twice the repeats, as their few-percent gaps are the size of the noise.
            interleave(names, 2 * repeats if letter in "ab" else repeats, measure, samples)
            print(f"  workload {letter}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if "g" in only:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            trainers = {n: workloads.fitted_trainer("fulmen" if n == "raw" else n, tmp)[0] for n in names}
            trainers["raw+fsync"] = trainers["raw"]

            def measure(n: str) -> dict[str, float]:
                result = workloads.checkpoint_io(n, trainers[n], tmp)
                if n == "raw+fsync":  # reported as the "raw" column of its own row
                    return {"save_durable_s": result["save_s"]}
                return result

            interleave(names + ["raw+fsync"], repeats, measure, samples)
            samples["save_durable_s"]["raw"] = samples["save_durable_s"].pop("raw+fsync")
        print(f"  workload g: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return samples


def summarize(samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    for key, (letter, description, unit, (kind, target)) in METRICS.items():
        if key not in samples:
            continue
        medians = {name: statistics.median(values) for name, values in samples[key].items()}
        raw, ful, lit = medians.get("raw"), medians.get("fulmen"), medians.get("lightning")
        row: dict[str, Any] = {"workload": letter, "metric": key, "description": description, "unit": unit,
                               "median": medians, "samples": samples[key]}
        if raw:
            row["fulmen_over_raw"] = ful / raw
            if lit is not None:
                row["lightning_over_raw"] = lit / raw
        if kind == "ratio":
            row["target"], row["met"] = f"fulmen/raw <= {target}", ful / raw <= target
        elif kind == "delta" and target is not None:
            row["target"], row["met"] = f"fulmen - raw <= {target} {unit}", ful - raw <= target
        elif kind == "abs":
            row["target"], row["met"] = f"fulmen <= {target} {unit}", ful <= target
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'':2} {'metric':48} {'raw':>9} {'fulmen':>9} {'Lightning':>10} {'ful/raw':>8} {'Lit/raw':>8}  target"
    print(header)
    print("-" * (len(header) + 16))
    for r in rows:
        m = r["median"]
        cells = [f"{m[n]:9.4g}" if n in m else f"{'-':>9}" for n in ("raw", "fulmen")]
        lit = f"{m['lightning']:10.4g}" if "lightning" in m else f"{'-':>10}"
        fr = f"{r['fulmen_over_raw']:8.3f}" if "fulmen_over_raw" in r else f"{'-':>8}"
        lr = f"{r['lightning_over_raw']:8.2f}" if "lightning_over_raw" in r else f"{'-':>8}"
        met = "" if "met" not in r else ("  met" if r["met"] else "  MISSED")
        desc = f"{r['description']} [{r['unit']}]"
        print(f"{r['workload']:2} {desc:48} {cells[0]} {cells[1]} {lit} {fr} {lr}  {r.get('target', '')}{met}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Imports (d) have no raw counterpart to divide by; they are in the table only.
    ratio_rows = [r for r in rows if "fulmen_over_raw" in r and r["workload"] != "d"]
    labels = [f"{r['workload']}: {r['metric']}" for r in ratio_rows]
    y = range(len(ratio_rows))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ratio_rows) + 1.5))
    ax.barh([i + 0.2 for i in y], [r["fulmen_over_raw"] for r in ratio_rows], height=0.4, label="fulmen / raw")
    ax.barh([i - 0.2 for i in y], [r.get("lightning_over_raw", 0) for r in ratio_rows], height=0.4,
            label="Lightning / raw")
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, r in zip(y, ratio_rows):
        kind, target = METRICS[r["metric"]][3]
        if kind == "ratio":
            ax.plot([target], [i + 0.2], marker="|", markersize=14, color="red")
    ax.set_yticks(list(y), labels)
    ax.set_xlabel("median time or memory relative to a raw PyTorch loop (lower is better; red: fulmen's target)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats per workload (default 7)")
    parser.add_argument("--only", default="a,b,c,d,e,f,g", help="comma-separated workload letters")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for results.json and chart.png")
    args = parser.parse_args()
    names = ["raw", "fulmen"] + (["lightning"] if workloads.lightning_available() else [])
    if "lightning" not in names:
        print("pytorch-lightning is not installed (pip install -e '.[bench]'): comparing raw and fulmen only.")
    print(f"fulmen vs raw PyTorch vs Lightning: {args.repeats} interleaved repeats, 1 torch thread, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
          file=sys.stderr)
    rows = summarize(collect(names, args.repeats, set(args.only.split(","))))
    print_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "repeats": args.repeats}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    plot(rows, out / "chart.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'chart.png'}")


if __name__ == "__main__":
    main()
