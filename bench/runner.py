"""The drop-in runner's cost: what `fulmen run` adds to a program's start-up, side by side.

    python bench/runner.py               # 15 interleaved repeats of each; ~1 minute on 2 cores
    python bench/runner.py --repeats 5

Rows (median wall time of a whole process, start to exit):
  empty script        python empty.py  |  fulmen run empty.py  |  python -m fulmen run empty.py
  import Lightning    python -c "import pytorch_lightning" (the real one)  |  the same under the alias,
                      which imports fulmen's Trainer instead
The target (issue 12): the runner adds at most 50 ms to start-up. Runs are interleaved so that
noise on a shared machine hits every variant alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULMEN_BIN = Path(sys.executable).with_name("fulmen")


def _time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("FULMEN_ALIAS", "PYTHONPATH")}
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.py"
        empty.write_text("")
        lightning = Path(tmp) / "import_lightning.py"
        lightning.write_text("import pytorch_lightning as pl\npl.Trainer\n")
        variants = {
            "python empty.py": [sys.executable, str(empty)],
            "fulmen run empty.py": [str(FULMEN_BIN), "run", str(empty)],
            "python -m fulmen run empty.py": [sys.executable, "-m", "fulmen", "run", str(empty)],
            "import pytorch_lightning (real)": [sys.executable, str(lightning)],
            "import pytorch_lightning (fulmen run)": [str(FULMEN_BIN), "run", str(lightning)],
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, command in variants.items():
                times[name].append(_time(command, env))
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median["python empty.py"]
    print(f"{'variant':40s} {'median s':>9s} {'vs python':>10s}   ({args.repeats} repeats, interleaved)")
    for name, value in median.items():
        print(f"{name:40s} {value:9.3f} {1000 * (value - base):+8.0f} ms")
    added = 1000 * (median["fulmen run empty.py"] - base)
    print(f"\nfulmen run adds {added:.0f} ms to start-up (target <= 50 ms: {'met' if added <= 50 else 'NOT met'}); "
          f"importing Lightning's names under the alias: {median['import pytorch_lightning (fulmen run)']:.2f} s "
          f"vs the real pytorch_lightning {median['import pytorch_lightning (real)']:.2f} s")


if __name__ == "__main__":
    main()
