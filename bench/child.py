"""Measurements that need a fresh Python process; prints one JSON line.

    python bench/child.py import fulmen|lightning|raw   # d: import time and memory on top of torch
    python bench/child.py first_step fulmen|lightning|raw   # e: set-up to first step, short fit
    python bench/child.py peak_rss fulmen|lightning|raw     # f: peak resident memory of a digits run
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def peak_rss_mib() -> float:
    """VmHWM: this process's peak resident memory. (getrusage's ru_maxrss would include the
    parent's memory inherited at fork, which is the benchmark driver's, not this run's.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(what: str, name: str) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    if what == "import":
        before_s, before_mib = time.perf_counter(), rss_mib()
        if name == "fulmen":
            import fulmen

            fulmen.Trainer  # noqa: B018  the public names load on first use: measure what a user pays
        elif name == "lightning":
            import pytorch_lightning  # noqa: F401
        return {"import_s": time.perf_counter() - before_s, "import_mib": rss_mib() - before_mib}

    import workloads

    # torch imports parts of itself lazily on the first optimizer step: pay that before measuring.
    param = torch.zeros(1, requires_grad=True)
    param.sum().backward()
    torch.optim.SGD([param], lr=0.1).step()
    if name != "raw":
        workloads.framework(name)  # imports are measured by "import", not here
    if what == "first_step":
        return workloads.first_step(name)
    if what == "peak_rss":
        workloads.digits_run(name)
        return {"peak_rss_mib": peak_rss_mib()}
    raise SystemExit(f"unknown measurement {what!r}; expected import, first_step or peak_rss")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
