"""GPU benchmark: fulmen vs a raw PyTorch loop vs Lightning on one CUDA device, bf16-mixed.

    bash bench/gpu.sh          # on a machine with a GPU; about 3 minutes

Workloads (interleaved raw, fulmen, Lightning; medians of per-step time over steps 50..N):
    a. a wider MLP (1024→4096→4096→10, batch 512) with self.log every step
    b. the same without logging
    c. a ResNet-style CNN (4 residual blocks, 64 channels) on 3×32×32 images, batch 256
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

WARMUP = 50


def wide_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 4096), nn.GELU(), nn.Linear(4096, 10))


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def resnet_ish() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        *[Block(64) for _ in range(4)], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def loader(shape: tuple[int, ...], n: int, batch: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch, shuffle=True, pin_memory=True, drop_last=True)


class Clock:
    def __init__(self, steps: int) -> None:
        self.steps, self.count, self.marks = steps, 0, []

    def tick(self) -> None:
        if self.count in (WARMUP, self.steps - 1):
            torch.cuda.synchronize()  # only at the two marks: the steps in between run unsynchronised
            self.marks.append(time.perf_counter())
        self.count += 1

    def ms(self) -> float:
        return (self.marks[1] - self.marks[0]) / (self.steps - 1 - WARMUP) * 1e3


def run_raw(make: Callable[[], nn.Module], data: DataLoader, steps: int, log: bool) -> float:
    torch.manual_seed(0)
    net, clock, step = make().cuda(), Clock(steps), 0
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    writer = None
    if log:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(tempfile.mkdtemp())
    while step < steps:
        for x, y in data:
            clock.tick()
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if writer is not None and (step + 1) % 50 == 0:
                writer.add_scalar("train_loss", loss.item(), step)
            step += 1
            if step >= steps:
                break
    return clock.ms()


def run_framework(name: str, make: Callable[[], nn.Module], data: DataLoader, steps: int, log: bool) -> float:
    pl = importlib.import_module("fulmen" if name == "fulmen" else "pytorch_lightning")
    loggers = importlib.import_module("fulmen.loggers" if name == "fulmen" else "pytorch_lightning.loggers")
    clock = Clock(steps)

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = make()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            clock.tick()
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            if log:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    root = tempfile.mkdtemp()
    trainer = pl.Trainer(
        accelerator="cuda", devices=1, precision="bf16-mixed", max_steps=steps, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, default_root_dir=root,
        logger=loggers.TensorBoardLogger(root) if log else False,
    )
    trainer.fit(Model(), data)
    return clock.ms()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA device.")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    workloads = {
        "a: wide MLP, bf16, self.log each step": (wide_mlp, loader((1024,), 512 * 64, 512), True),
        "b: wide MLP, bf16, no logging": (wide_mlp, loader((1024,), 512 * 64, 512), False),
        "c: ResNet-style CNN, bf16": (resnet_ish, loader((3, 32, 32), 256 * 40, 256), False),
    }
    names = ["raw", "fulmen", "lightning"]
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {args.repeats} interleaved repeats, "
          f"{args.steps} steps, ms/step median over steps {WARMUP}..{args.steps}")
    print(f"{'workload':40} {'raw':>8} {'fulmen':>8} {'Lightning':>10} {'ful/raw':>8} {'Lit/raw':>8}")
    for title, (make, data, log) in workloads.items():
        times: dict[str, list[float]] = {n: [] for n in names}
        for repeat in range(args.repeats + 1):  # the first round warms up cuDNN and the allocator
            for n in names:
                ms = run_raw(make, data, args.steps, log) if n == "raw" else run_framework(n, make, data, args.steps, log)
                if repeat:
                    times[n].append(ms)
        med = {n: statistics.median(v) for n, v in times.items()}
        print(f"{title:40} {med['raw']:8.3f} {med['fulmen']:8.3f} {med['lightning']:10.3f} "
              f"{med['fulmen'] / med['raw']:8.3f} {med['lightning'] / med['raw']:8.3f}")


if __name__ == "__main__":
    main()
