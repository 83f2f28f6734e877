"""Builders shared by the test files (pytest puts tests/ on sys.path: `from helpers import ...`)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

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
