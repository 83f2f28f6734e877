"""Builders shared by the test files (pytest puts tests/ on sys.path: `from helpers import ...`)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.strategies.environment import free_port


def quiet_trainer(tmp_path: Path | None = None, **overrides) -> pl.Trainer:
    """A CPU Trainer with no logger, checkpoints, progress bar or model summary, rooted in
    `tmp_path` (when given). `overrides` replace any of these settings or add others."""
    options = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu",
    )
    if tmp_path is not None:
        options["default_root_dir"] = tmp_path
    options.update(overrides)
    return pl.Trainer(**options)


def random_regression(n: int = 16, seed: int = 0, features: int = 3) -> TensorDataset:
    """`n` random pairs (x of `features` values, y of one value) drawn from a generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, features, generator=g), torch.randn(n, 1, generator=g))


# --- a real TensorBoard server -----------------------------------------------------------------


def get_json(url: str, body: dict | None = None):
    """GET `url` (POST `body` as JSON when given) and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    # TensorBoard refuses POSTs without this header (its CSRF guard).
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


@contextlib.contextmanager
def tensorboard_server(logdir: Path, wait_for_tag: str, run: str = "version_0", *, log_file: Path) -> Iterator[str]:
    """Run `python -m tensorboard.main` on `logdir` (its output goes to `log_file`) and yield its
    base URL once the scalar `wait_for_tag` of `run` is listed; the server is killed on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--load_fast=false"]  # fmt: skip
    with open(log_file, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        # The server loads event files in a background thread: wait until the tag is listed.
        deadline = time.monotonic() + 60
        tags: dict = {}
        while wait_for_tag not in tags.get(run, {}):
            assert server.poll() is None, f"tensorboard exited early:\n{log_file.read_text()}"
            assert time.monotonic() < deadline, f"tensorboard did not list the run in 60 s:\n{log_file.read_text()}"
            try:
                tags = get_json(f"{base}/data/plugin/scalars/tags")
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        yield base
    finally:
        server.kill()
        server.wait(timeout=10)


# --- optimization tests: a noisy linear target, seeded shuffles, weight comparisons --------------


def linear_regression(n: int = 40, seed: int = 0) -> TensorDataset:
    """`n` pairs (x of 4 values, y = x @ [1, -2, 0.5, 3] plus 0.1 noise) drawn from a generator seeded
    with `seed`. With `seeded_loader`'s default batch size, 40 samples make 10 batches per epoch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def seeded_loader(dataset: TensorDataset | None = None, batch_size: int = 4, seed: int = 1) -> DataLoader:
    """A shuffled loader (of `linear_regression()` by default) whose order depends only on `seed`:
    two such loaders yield the same batches."""
    dataset = dataset if dataset is not None else linear_regression()
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def assert_same_weights(fulmen_net: torch.nn.Module, raw_net: torch.nn.Module) -> None:
    """Every parameter of `fulmen_net` equals the matching one of `raw_net` bit for bit."""
    pairs = list(zip(fulmen_net.named_parameters(), raw_net.parameters()))
    assert len(pairs) == len(list(raw_net.parameters())) > 0
    for (name, p), q in pairs:
        assert torch.equal(p, q), f"parameter {name} differs from the raw loop by {(p - q).abs().max().item():.3g}"


def assert_weights_changed(net: torch.nn.Module, initial: torch.nn.Module) -> None:
    """At least one parameter of `net` differs from `initial`'s: something trained."""
    assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), initial.parameters())), "nothing trained"


# --- loop tests: a module that counts what ran ----------------------------------------------------


def regression_loader(n: int = 16, batch_size: int = 4, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A loader of `random_regression(n, seed)` (3 features, one target)."""
    return DataLoader(random_regression(n, seed), batch_size=batch_size, shuffle=shuffle)


class CountingModel(pl.LightningModule):
    """Counts every step per stage and remembers when each validation run started."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.counts: Counter[str] = Counter()
        self.val_run_steps: list[int] = []  # global_step at each (non-sanity) validation run
        self.val_run_epochs: list[int] = []
        self.train_batches: list[tuple[int, int]] = []  # (epoch, batch_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        self.counts["train"] += 1
        self.train_batches.append((self.current_epoch, batch_idx))
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def on_validation_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.counts["val_runs"] += 1
            self.val_run_steps.append(self.global_step)
            self.val_run_epochs.append(self.current_epoch)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["sanity" if self.trainer.sanity_checking else "val"] += 1
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["test"] += 1
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self.counts["predict"] += 1
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


# --- callback tests: a small regressor on a sum target --------------------------------------------


class SmallRegressor(pl.LightningModule):
    """Regression on 4 features (a linear layer, or `hidden` units with optional batch norm);
    `make_optim(params)` builds what configure_optimizers returns (SGD lr=0.05 by default)."""

    def __init__(self, make_optim=None, hidden: int = 0, batch_norm: bool = False):
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Linear(4, hidden or 1)]
        if batch_norm:
            layers.append(torch.nn.BatchNorm1d(hidden))
        if hidden:
            layers += [torch.nn.ReLU(), torch.nn.Linear(hidden, 1)]
        self.net = torch.nn.Sequential(*layers)
        self.make_optim = make_optim or (lambda params: torch.optim.SGD(params, lr=0.05))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return self.make_optim(self.parameters())


def sum_loader(n: int = 32, batch_size: int = 4, seed: int = 0) -> DataLoader:
    """An unshuffled loader of `n` random 4-feature rows whose target is the row's sum."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)
