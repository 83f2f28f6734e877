"""The benchmark workloads, each written three ways: a raw PyTorch loop, fulmen, and Lightning.

Every function here runs one measurement and returns numbers; `bench/run.py` interleaves them
(raw, fulmen, Lightning, raw, fulmen, ...) so that machine noise hits all three alike, and
`bench/child.py` runs the ones that need a fresh process. The model code inside `training_step`
is the same for all three, so any difference is what the framework adds around it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

FRAMEWORKS = ("raw", "fulmen", "lightning")
STEPS, WARMUP, BATCH = 2000, 200, 64  # workloads a and b: per-step time over steps WARMUP..STEPS


def framework(name: str) -> Any:
    """The `pl` namespace of a framework: `fulmen` or `pytorch_lightning`."""
    if name == "lightning":
        # Lightning prints its tips through `logging` handlers bound at import: silence them.
        logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    return importlib.import_module("fulmen" if name == "fulmen" else "pytorch_lightning")


def tensorboard_logger(name: str, save_dir: str) -> Any:
    loggers = importlib.import_module("fulmen.loggers" if name == "fulmen" else "pytorch_lightning.loggers")
    return loggers.TensorBoardLogger(save_dir=save_dir)


@contextlib.contextmanager
def quiet() -> Any:
    """Send progress bars and prints to /dev/null: all three frameworks draw the same amount."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


# --------------------------------------------------------------------------------------------
# a, b: per-step time of a tiny MLP (32→64→10, batch 64)
# --------------------------------------------------------------------------------------------
def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))


def tiny_loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH * 200, 32, generator=g), torch.randint(0, 10, (BATCH * 200,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH)


class StepClock:
    """Marks the time when step WARMUP starts and when the last step starts."""

    def __init__(self, steps: int = STEPS, warmup: int = WARMUP):
        self.steps, self.warmup, self.count, self.marks = steps, warmup, 0, []

    def tick(self) -> None:
        if self.count in (self.warmup, self.steps - 1):
            self.marks.append(time.perf_counter())
        self.count += 1

    def ms_per_step(self) -> float:
        return (self.marks[1] - self.marks[0]) / (self.steps - 1 - self.warmup) * 1e3


def tiny_step_raw(log: bool, steps: int = STEPS) -> float:
    net, clock = tiny_mlp(), StepClock(steps)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    writer = None
    with tempfile.TemporaryDirectory() as tmp:
        if log:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(tmp)
        step, loader = 0, tiny_loader()
        while step < steps:
            for x, y in loader:
                clock.tick()
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if writer is not None and (step + 1) % 50 == 0:
                    writer.add_scalar("train_loss", loss.item(), step)
                step += 1
                if step >= steps:
                    break
        if writer is not None:
            writer.close()
    return clock.ms_per_step()


def tiny_step_framework(name: str, log: bool, steps: int = STEPS) -> float:
    pl, clock = framework(name), StepClock(steps)

    class TinyMLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_mlp()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            clock.tick()
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            if log:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    with tempfile.TemporaryDirectory() as tmp, quiet():
        trainer = pl.Trainer(
            max_steps=steps, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
            logger=tensorboard_logger(name, tmp) if log else False, default_root_dir=tmp, accelerator="cpu",
            devices=1,
        )
        trainer.fit(TinyMLP(), tiny_loader())
    return clock.ms_per_step()


def tiny_step(name: str, log: bool, steps: int = STEPS) -> float:
    return tiny_step_raw(log, steps) if name == "raw" else tiny_step_framework(name, log, steps)


# --------------------------------------------------------------------------------------------
# c, f: a small CNN on the digits data, a realistic run (progress bar, logger, checkpoints)
# --------------------------------------------------------------------------------------------
def digits_loaders() -> tuple[DataLoader, DataLoader]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=g)
    train, val = order[:1437], order[1437:]
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=32, shuffle=True, generator=g),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=128),
    )


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


DIGITS_EPOCHS = 10


def digits_raw(root: str, checkpoint: bool = True) -> float:
    """Seconds for the run: train with a tqdm bar and TensorBoard, validate, checkpoint each epoch."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    start = time.perf_counter()
    train, val = digits_loaders()
    net = small_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    writer, step = SummaryWriter(os.path.join(root, "raw")), 0
    for epoch in range(DIGITS_EPOCHS):
        net.train()
        for x, y in tqdm(train, desc=f"Epoch {epoch}"):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % 50 == 0:
                writer.add_scalar("train_loss", loss.item(), step)
            step += 1
        net.eval()
        total, count = torch.zeros(()), 0
        with torch.inference_mode():
            for x, y in tqdm(val, desc="Validation"):
                total += F.cross_entropy(net(x), y) * len(y)
                count += len(y)
        writer.add_scalar("val_loss", (total / count).item(), step)
        if checkpoint:
            torch.save({"state_dict": net.state_dict(), "optimizer": opt.state_dict()}, os.path.join(root, "raw.ckpt"))
    writer.close()
    return time.perf_counter() - start


def digits_framework(name: str, root: str, checkpoint: bool = True) -> float:
    pl = framework(name)
    start = time.perf_counter()
    train, val = digits_loaders()

    class DigitsCNN(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_cnn()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, prog_bar=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", F.cross_entropy(self.net(x), y), prog_bar=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    trainer = pl.Trainer(
        max_epochs=DIGITS_EPOCHS, default_root_dir=os.path.join(root, name), enable_model_summary=False,
        num_sanity_val_steps=0, accelerator="cpu", devices=1, enable_checkpointing=checkpoint,
    )
    trainer.fit(DigitsCNN(), train, val)
    return time.perf_counter() - start


def digits_run(name: str, checkpoint: bool = True) -> float:
    with tempfile.TemporaryDirectory() as tmp, quiet():
        return digits_raw(tmp, checkpoint) if name == "raw" else digits_framework(name, tmp, checkpoint)


# --------------------------------------------------------------------------------------------
# e: time from Trainer(...) to the first step, and a short fit's wall time
# --------------------------------------------------------------------------------------------
def first_step(name: str) -> dict[str, float]:
    """Seconds from the start of set-up to the first training step's start, and to the end of fit."""
    loader, marks = tiny_loader(), []
    steps = 100
    with tempfile.TemporaryDirectory() as tmp, quiet():
        start = time.perf_counter()
        if name == "raw":
            net = tiny_mlp()
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            for step, (x, y) in enumerate(loader):
                if step == 0:
                    marks.append(time.perf_counter())
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step + 1 == steps:
                    break
        else:
            pl = framework(name)

            class TinyMLP(pl.LightningModule):
                def __init__(self) -> None:
                    super().__init__()
                    self.net = tiny_mlp()

                def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                    if not marks:
                        marks.append(time.perf_counter())
                    x, y = batch
                    return F.cross_entropy(self.net(x), y)

                def configure_optimizers(self) -> Any:
                    return torch.optim.SGD(self.parameters(), lr=0.01)

            # Defaults, as a user would start: logger, checkpointing, progress bar, model summary.
            trainer = pl.Trainer(max_steps=steps, default_root_dir=tmp, accelerator="cpu", devices=1)
            trainer.fit(TinyMLP(), loader)
        end = time.perf_counter()
    return {"to_first_step_s": marks[0] - start, "short_fit_s": end - start}


# --------------------------------------------------------------------------------------------
# g: checkpoint save and load for a ~50 MB model
# --------------------------------------------------------------------------------------------
def big_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048))


def fitted_trainer(name: str, root: str) -> tuple[Any, Any]:
    """A trainer that took one step on the ~50 MB model (so optimizer state exists), and the module."""
    pl = framework(name)

    class Big(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = big_model()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, accelerator="cpu", devices=1,
    )
    with quiet():
        trainer.fit(Big(), DataLoader(TensorDataset(torch.randn(4, 2048)), batch_size=4))
    return trainer, trainer.lightning_module


def checkpoint_io(name: str, trainer: Any, root: str) -> dict[str, float]:
    """Save and load times and file size. "raw" = plain torch.save/torch.load of fulmen's dict;
    "raw+fsync" = the same plus fsync, i.e. what durability costs without fulmen.

    fulmen saves twice: with background landing (`background=True`, as with
    `ModelCheckpoint(background_landing=True)`: timed until the training loop may go on; the file
    is fsynced and renamed into place by a background thread, awaited untimed), and as by default
    (`save_durable_s`: timed until the file is on disk)."""
    path = os.path.join(root, f"{name}.ckpt")
    result: dict[str, float] = {}
    if name.startswith("raw"):
        checkpoint = trainer._checkpoint_dict()  # the same dict fulmen writes, built outside the timing
        start = time.perf_counter()
        torch.save(checkpoint, path)
        if name == "raw+fsync":  # the same durability as fulmen's atomic write: data on disk
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        result["save_s"] = time.perf_counter() - start
        start = time.perf_counter()
        torch.load(path, weights_only=True)
    elif name == "fulmen":
        from fulmen.checkpoint import load_checkpoint, wait_for_checkpoints

        start = time.perf_counter()
        trainer.save_checkpoint(path, background=True)
        result["save_s"] = time.perf_counter() - start
        wait_for_checkpoints()
        os.remove(path)
        start = time.perf_counter()
        trainer.save_checkpoint(path)
        result["save_durable_s"] = time.perf_counter() - start
        start = time.perf_counter()
        load_checkpoint(path)
    else:
        start = time.perf_counter()
        trainer.save_checkpoint(path)
        result["save_s"] = time.perf_counter() - start
        start = time.perf_counter()
        trainer.strategy.load_checkpoint(path)
    result["load_s"] = time.perf_counter() - start
    result["size_mb"] = Path(path).stat().st_size / 2**20
    os.remove(path)
    return result


def lightning_available() -> bool:
    try:
        importlib.import_module("pytorch_lightning")
    except ImportError:
        return False
    return True
