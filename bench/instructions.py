"""Machine instructions per training step, fulmen vs a raw loop, counted by valgrind: no noise.

Wall-clock medians on a shared 2-core machine move by 1-2% between runs, as much as the gap
this measures for workload b (the tiny MLP step without logging). `valgrind --tool=callgrind`
counts every instruction the process executes, the same on every run. Each framework runs the
step twice, for SHORT and LONG steps, in fresh processes; the difference divided by LONG - SHORT
is the cost of one step with start-up, imports and set-up cancelled out.

    python bench/instructions.py          # needs valgrind (apt install valgrind); ~4 minutes

Lightning is left out: under valgrind its import alone takes minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHORT, LONG = 210, 1210  # workloads.WARMUP is 200: the step clock needs more steps than that


def child(name: str, steps: int) -> None:
    """Run workload b for `steps` steps (in the process valgrind watches)."""
    import torch

    sys.path.insert(0, str(HERE))
    import workloads

    import fulmen  # noqa: F401  imported by both, so that the import cancels out

    torch.set_num_threads(1)
    workloads.tiny_step(name, log=False, steps=steps)


def instructions(name: str, steps: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, name, str(steps)],
        capture_output=True, text=True, check=True,
        # Idle OpenBLAS/OpenMP threads spin a varying number of instructions: none are needed here.
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "FULMEN_DOCTOR": "0"},
    ).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt install valgrind (or brew install valgrind)")
    runs = [(name, steps) for name in ("raw", "fulmen") for steps in (SHORT, LONG)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # valgrind is single-threaded: two at a time
        counts = dict(zip(runs, pool.map(lambda run: instructions(*run), runs)))
    per_step = {name: (counts[(name, LONG)] - counts[(name, SHORT)]) / (LONG - SHORT) for name in ("raw", "fulmen")}
    print("instructions per step, workload b (tiny MLP, no logging), counted by callgrind:")
    print(f"  raw    {per_step['raw']:12,.0f}")
    print(f"  fulmen {per_step['fulmen']:12,.0f}   fulmen/raw {per_step['fulmen'] / per_step['raw']:.4f}")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        child(sys.argv[1], int(sys.argv[2]))
    else:
        main()
