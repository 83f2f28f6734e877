"""Measurements that need a fresh Python process; prints one JSON line.

    python bench/child.py import fulmen|lightning|raw   # d: import time and memory on top of torch
    python bench/child.py first_step fulmen|lightning|raw   # e: set-up to first step, short fit
    python bench/child.py peak_rss fulmen|lightning|raw     # f: peak resident memory of a digits run
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(what: str, name: str) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    if what == "import":
        before_s, before_mib = time.perf_counter(), rss_mib()
        if name == "fulmen":
            import fulmen  # noqa: F401
        elif name == "lightning":
            import pytorch_lightning  # noqa: F401
        return {"import_s": time.perf_counter() - before_s, "import_mib": rss_mib() - before_mib}

    import workloads

    if name != "raw":
        workloads.framework(name)  # imports are measured by "import", not here
    if what == "first_step":
        return workloads.first_step(name)
    if what == "peak_rss":
        workloads.digits_run(name)
        return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    raise SystemExit(f"unknown measurement {what!r}; expected import, first_step or peak_rss")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
