"""DDP on 2 CPU processes (gloo): steps per second of a raw PyTorch DDP loop, fulmen and Lightning.

    python bench/ddp.py [--repeats 7] [--steps 1500] [--before DIR] [--raw-vote]

Each measurement is one `torchrun --nproc_per_node=2` launch of this file in worker mode; the
launches are interleaved (raw, fulmen, Lightning, raw, ...) so that machine noise hits all three
alike. Rank 0 times steps WARMUP..STEPS of the same model, data and optimizer in all three, and
the table shows medians and fulmen/raw: steps/s over the middle of the run (target >= 0.97) and
the median time of one step there (issue 16's target: within 3%), and the CPU time of a step (all
threads of rank 0's process), which a machine shared with other work disturbs least.
`--before DIR` adds a fulmen column imported from DIR (e.g. a `git worktree` of an earlier commit),
interleaved with the others: a change's before and after in one run. `--raw-vote` adds the raw loop
with one small asynchronous all-reduce after every step (what fulmen's stop vote did until issue 16):
on a 2-core machine that loop is *faster* than the plain raw one, because a pending gloo operation
shortens DDP's own all-reduce waits; it shows why the earlier per-batch vote measured faster than raw.
Results: bench/results/ddp.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRAMEWORKS = ("raw", "fulmen", "lightning")
RAW_VOTE = "raw+vote"  # the raw loop plus one small asynchronous all-reduce per step (--raw-vote)
WARMUP, BATCH = 100, 64
RESULTS = Path(__file__).parent / "results"


# --- worker: runs inside each torchrun process ----------------------------------------------------
def worker(framework: str, steps: int, out: str) -> None:
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    marks: list[float] = []
    cpu: list[float] = []

    def tick(step: int) -> None:
        if step >= WARMUP:  # the start of every step after the warm-up
            marks.append(time.perf_counter())
            if step == WARMUP or step == steps - 1:
                cpu.append(time.process_time())

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(BATCH * 2 * 100, 32, generator=g), torch.randint(0, 10, (BATCH * 2 * 100,), generator=g))

    if framework in ("raw", RAW_VOTE):
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data import DistributedSampler

        dist.init_process_group("gloo")
        net = DistributedDataParallel(model())
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        sampler = DistributedSampler(data, shuffle=True, seed=0)
        loader = DataLoader(data, batch_size=BATCH, sampler=sampler)
        step, epoch, vote = 0, 0, None
        while step < steps:
            sampler.set_epoch(epoch)
            for x, y in loader:
                tick(step)
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if framework == RAW_VOTE:  # what fulmen's stop vote did after every batch until issue 16
                    if vote is not None:
                        vote.wait()
                    vote = dist.all_reduce(torch.zeros(3, dtype=torch.int64), op=dist.ReduceOp.MAX, async_op=True)
                step += 1
                if step >= steps:
                    break
            epoch += 1
        rank = dist.get_rank()
        # Free DDP (it holds the group), then close the group together while the interpreter is
        # whole: otherwise gloo can abort the process at exit.
        del net, opt
        dist.barrier()
        dist.destroy_process_group()
    else:
        import importlib
        import logging

        logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
        pl = importlib.import_module("fulmen" if framework == "fulmen" else "pytorch_lightning")

        class Net(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = model()
                self.step_count = 0

            def training_step(self, batch, batch_idx):
                tick(self.step_count)
                self.step_count += 1
                x, y = batch
                return F.cross_entropy(self.net(x), y)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.01)

        with tempfile.TemporaryDirectory() as tmp:
            trainer = pl.Trainer(
                accelerator="cpu", devices=2, strategy="ddp", max_steps=steps, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
            )
            trainer.fit(Net(), DataLoader(data, batch_size=BATCH, shuffle=True))
        rank = trainer.global_rank
    if rank == 0:
        # The middle of the run: steps/s over it, and the median time of one step (robust to the
        # occasional slow step a shared machine adds).
        step_times = [b - a for a, b in zip(marks, marks[1:])]
        Path(out).write_text(json.dumps({"steps_per_s": len(step_times) / (marks[-1] - marks[0]),
                                         "median_step_ms": 1000 * statistics.median(step_times),
                                         "cpu_step_ms": 1000 * (cpu[-1] - cpu[0]) / len(step_times)}))
    # Measured and written: skip the interpreter's teardown, where gloo's threads can still abort
    # a process now and then ("terminate called without an active exception"), failing the launch.
    sys.stdout.flush()
    os._exit(0)


# --- driver --------------------------------------------------------------------------------------
def measure(framework: str, steps: int, fulmen_from: str | None = None) -> dict[str, float]:
    from fulmen.strategies.environment import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = {**os.environ, "FULMEN_DOCTOR": "0", "OMP_NUM_THREADS": "1"}
        if fulmen_from:  # the earlier fulmen comes first on the path
            env["PYTHONPATH"] = os.pathsep.join([fulmen_from, env.get("PYTHONPATH", "")])
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
             __file__, "--worker", framework, "--steps", str(steps), "--out", out],
            env=env, capture_output=True, text=True, timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the {framework} run failed:\n{proc.stderr[-3000:]}")
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--before", help="also time the fulmen found in this directory (an earlier checkout)")
    parser.add_argument("--raw-vote", action="store_true",
                        help=f"also time {RAW_VOTE!r}: the raw loop plus a 3-integer async all-reduce per step")
    parser.add_argument("--worker", choices=(*FRAMEWORKS, RAW_VOTE))
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.out)

    columns = [(name, name, None) for name in FRAMEWORKS]  # (column, framework, fulmen_from)
    if args.before:
        columns.insert(1, ("before", "fulmen", os.path.abspath(args.before)))
    if args.raw_vote:
        columns.insert(1, (RAW_VOTE, RAW_VOTE, None))
    results: dict[str, dict[str, list[float]]] = {col: {"steps_per_s": [], "median_step_ms": [], "cpu_step_ms": []}
                                                  for col, _, _ in columns}
    for _ in range(args.repeats):
        for col, framework, fulmen_from in columns:
            for key, value in measure(framework, args.steps, fulmen_from).items():
                results[col][key].append(value)
    median = {col: {key: statistics.median(values) for key, values in r.items()} for col, r in results.items()}
    names = [col for col, _, _ in columns]
    print(f"DDP, 2 CPU processes (gloo), MLP 32-256-256-10, batch {BATCH} per process, {args.steps} steps, "
          f"{args.repeats} interleaved repeats" + (f"; before = fulmen from {args.before}" if args.before else ""))
    header = {"raw": "raw", RAW_VOTE: RAW_VOTE, "before": "before", "fulmen": "fulmen", "lightning": "Lightning"}
    short = {RAW_VOTE: "r+v", "before": "bef", "fulmen": "ful", "lightning": "Lit"}
    print(f"{'':16}" + "".join(f"{header[n]:>11}" for n in names) + "".join(f"{short[n] + '/raw':>9}" for n in names[1:]))
    rows = (("steps/s", "steps_per_s", ".1f"), ("step ms (median)", "median_step_ms", ".3f"), ("CPU ms/step", "cpu_step_ms", ".3f"))
    for label, key, fmt in rows:
        values = "".join(f"{median[n][key]:>11{fmt}}" for n in names)
        ratios = "".join(f"{median[n][key] / median['raw'][key]:9.3f}" for n in names[1:])
        print(f"{label:16}{values}{ratios}")
    time_ratio = median["fulmen"]["median_step_ms"] / median["raw"]["median_step_ms"]
    print(f"target: fulmen/raw median step time <= 1.03: {'met' if time_ratio <= 1.03 else 'MISSED'} ({time_ratio:.3f})")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ddp.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "steps": args.steps, "before": args.before,
         "samples": results, "medians": median, "fulmen_over_raw_step_time": time_ratio,
         "fulmen_over_raw_steps_per_s": median["fulmen"]["steps_per_s"] / median["raw"]["steps_per_s"]},
        indent=2,
    ))


if __name__ == "__main__":
    main()
