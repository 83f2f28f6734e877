"""Python bytecodes that fulmen itself executes per training step: a noise-free measure of overhead.

Wall-clock ratios on a shared machine move by a percent or two from run to run; this count does
not move at all. It traces every bytecode run in a frame of a `fulmen/` file during two fits that
differ only in their number of steps, so set-up and teardown cancel out, and prints the count per
step for a few configurations.

    python bench/bytecodes.py

(`tests/test_hot_path.py` keeps the plain step under a budget with the same counter.)
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl

FULMEN_DIR = str(Path(pl.__file__).resolve().parent) + os.sep


def count_fulmen_bytecodes(run: Callable[[], Any]) -> int:
    """The number of bytecodes executed in fulmen's own frames while `run()` runs."""
    count = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if not frame.f_code.co_filename.startswith(FULMEN_DIR):
            return None  # no per-line or per-opcode events for other code
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        run()
    finally:
        sys.settrace(None)
    return count


class TinyMLP(pl.LightningModule):
    def __init__(self, log: bool = False) -> None:
        super().__init__()
        self.net, self.log_loss = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)), log

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if self.log_loss:
            self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def per_step(trainer_kwargs: dict[str, Any], log: bool = False, short: int = 100, long: int = 300) -> float:
    """fulmen bytecodes per training step (difference of a `long` and a `short` fit, 50-batch epochs)."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64 * 50, 32, generator=g), torch.randint(0, 10, (64 * 50,), generator=g))

    def fit(steps: int) -> Callable[[], None]:
        def run() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                kwargs = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                          "enable_model_summary": False, **trainer_kwargs}
                trainer = pl.Trainer(max_steps=steps, default_root_dir=tmp, accelerator="cpu", devices=1, **kwargs)
                trainer.fit(TinyMLP(log), DataLoader(data, batch_size=64))
        return run

    fit(1)()  # untraced: fulmen's modules load on first use, and their import must not count as a step's work
    return (count_fulmen_bytecodes(fit(long)) - count_fulmen_bytecodes(fit(short))) / (long - short)


CONFIGS: dict[str, tuple[dict[str, Any], bool]] = {
    "plain (workload b)": ({}, False),
    "self.log every step + TensorBoard (workload a)": ({"logger": True}, True),
    "Trainer defaults: logger, checkpoints, progress bar": (
        {"logger": True, "enable_checkpointing": True, "enable_progress_bar": True}, True),
}


def main() -> None:
    os.environ.setdefault("FULMEN_DOCTOR", "0")
    print("fulmen bytecodes per training step (deterministic; 50 batches per epoch, epoch work included)")
    for name, (kwargs, log) in CONFIGS.items():
        with open(os.devnull, "w") as null:
            stdout, stderr = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = null
            try:
                n = per_step(kwargs, log)
            finally:
                sys.stdout, sys.stderr = stdout, stderr
        print(f"  {name:55s} {n:7.1f}")


if __name__ == "__main__":
    main()
