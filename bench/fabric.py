"""The cost of Fabric: one small training loop as raw PyTorch, on fulmen's Fabric and on Lightning Fabric.

    python bench/fabric.py [--repeats 5] [--steps 1500]

The loop is the same in all three (the MLP of bench/ddp.py, batch 64, SGD, a shuffled DataLoader,
CPU, one process, one thread); the Fabric versions are the raw loop with Fabric's five changed lines
(`Fabric(...)`, `setup`, `setup_dataloaders`, `fabric.backward`). Each measurement is a fresh
process running this file in worker mode, and the runs are interleaved (raw, fulmen, Lightning,
raw, ...) so that machine noise hits all three alike. A worker times the start of every step after
WARMUP; the table shows the median over repeats of the median time of one step, and the ratios to
raw (target: fulmen/raw <= 1.02, issue 17). The worker also hashes its final weights: fulmen's must
be bit-identical to raw's. Results: bench/results/fabric.json.

Lightning Fabric here is the `lightning_fabric` 2.6.6 package (`lightning_fabric.Fabric`):
`lightning==2.6.6` is not installed, and its `lightning.fabric` is this same package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRAMEWORKS = ("raw", "fulmen", "lightning")
WARMUP, BATCH = 100, 64
RESULTS = Path(__file__).parent / "results"


# --- worker: one fresh process per measurement ----------------------------------------------------
def worker(framework: str, steps: int, out: str) -> None:
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    marks: list[float] = []

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(BATCH * 100, 32, generator=g), torch.randint(0, 10, (BATCH * 100,), generator=g))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(data, batch_size=BATCH, shuffle=True)

    if framework == "raw":
        backward = torch.Tensor.backward
    else:
        if framework == "fulmen":
            from fulmen.fabric import Fabric
        else:
            import logging

            logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
            from lightning_fabric import Fabric
        fabric = Fabric(accelerator="cpu", devices=1)
        model, optimizer = fabric.setup(model, optimizer)
        loader = fabric.setup_dataloaders(loader)
        backward = fabric.backward

    step = 0
    while step < steps:
        for x, y in loader:
            if step >= WARMUP:
                marks.append(time.perf_counter())  # the start of every step after the warm-up
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            backward(loss)
            optimizer.step()
            step += 1
            if step >= steps:
                break
    marks.append(time.perf_counter())

    digest = hashlib.sha256()
    for parameter in model.parameters():
        digest.update(parameter.detach().numpy().tobytes())
    # The median time of one step over the middle of the run: robust to the occasional slow step
    # a shared machine adds.
    step_times = [b - a for a, b in zip(marks, marks[1:])]
    Path(out).write_text(json.dumps({"median_step_ms": 1000 * statistics.median(step_times),
                                     "weights_sha256": digest.hexdigest()}))


# --- driver --------------------------------------------------------------------------------------
def measure(framework: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = {**os.environ, "FULMEN_DOCTOR": "0", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, __file__, "--worker", framework, "--steps", str(steps), "--out", out],
                              env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"the {framework} run failed:\n{proc.stderr[-3000:]}")
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--worker", choices=FRAMEWORKS)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.out)

    step_ms: dict[str, list[float]] = {name: [] for name in FRAMEWORKS}
    digests: dict[str, set[str]] = {name: set() for name in FRAMEWORKS}
    for _ in range(args.repeats):
        for name in FRAMEWORKS:
            result = measure(name, args.steps)
            step_ms[name].append(result["median_step_ms"])
            digests[name].add(result["weights_sha256"])
    median = {name: statistics.median(values) for name, values in step_ms.items()}
    ratio = median["fulmen"] / median["raw"]
    lightning_ratio = median["lightning"] / median["raw"]
    same_weights = digests["fulmen"] == digests["raw"] and len(digests["raw"]) == 1
    print(f"Fabric loop, CPU, 1 process, 1 thread, MLP 32-256-256-10, batch {BATCH}, {args.steps} steps, "
          f"{args.repeats} interleaved repeats")
    print("Lightning Fabric = lightning_fabric 2.6.6 (lightning==2.6.6 is not installed; its lightning.fabric "
          "is this package)")
    print(f"{'':10}{'raw':>10}{'fulmen':>10}{'Lightning':>11}{'ful/raw':>9}{'Lit/raw':>9}  target")
    print(f"{'step ms':10}{median['raw']:10.3f}{median['fulmen']:10.3f}{median['lightning']:11.3f}"
          f"{ratio:9.3f}{lightning_ratio:9.3f}  fulmen/raw <= 1.02  {'met' if ratio <= 1.02 else 'MISSED'}"
          "   (median time of one step, middle of the run)")
    print(f"final weights: fulmen {'bit-identical to' if same_weights else 'DIFFER from'} raw")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fabric.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "steps": args.steps, "batch": BATCH,
         "lightning": "lightning_fabric 2.6.6 (lightning==2.6.6 not installed)",
         "median_step_ms_samples": step_ms, "median_step_ms": median, "fulmen_over_raw": ratio,
         "lightning_over_raw": lightning_ratio, "fulmen_weights_equal_raw": same_weights},
        indent=2,
    ) + "\n")


if __name__ == "__main__":
    main()
