"""`fulmen report`: what it reads from a real run (CSV and TensorBoard logs, hparams, checkpoints and
their scores), that the page is self-contained, and that it renders in headless Chromium with the
curves visible (the screenshot is not blank and has the curves' colours)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen import report
from fulmen.callbacks import ModelCheckpoint
from fulmen.loggers import CSVLogger, TensorBoardLogger

EPOCHS, STEPS_PER_EPOCH = 4, 6


class Regressor(pl.LightningModule):
    def __init__(self, lr: float = 0.2, hidden: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        loss = F.mse_loss(self.net(batch[0]), batch[1])
        self.log("train_loss", loss)
        self.log("lr-SGD", self.trainer.optimizers[0].param_groups[0]["lr"])  # LearningRateMonitor's name
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.mse_loss(self.net(batch[0]), batch[1]))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real fit logging to TensorBoard and CSV in the same version directory."""
    root = tmp_path_factory.mktemp("report")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(48, 1, generator=g))
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    loggers = [TensorBoardLogger(root, name="exp", version=0), CSVLogger(root, name="exp", version=0)]
    trainer = pl.Trainer(max_epochs=EPOCHS, logger=loggers, callbacks=[checkpoint], log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=root)
    torch.manual_seed(0)
    trainer.fit(Regressor(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=16))
    return trainer, checkpoint, Path(trainer.log_dir)


def test_reads_metrics_hparams_checkpoints_and_run_time(run):
    trainer, checkpoint, run_dir = run
    data = report.read_run(run_dir)
    assert data.run_dir == run_dir and data.metrics_source == "metrics.csv (CSVLogger)"
    assert [s for s, _ in data.metrics["train_loss"]] == list(range(EPOCHS * STEPS_PER_EPOCH))
    assert len(data.metrics["val_loss"]) == EPOCHS
    assert data.metrics["val_loss"][-1][1] == pytest.approx(float(trainer.callback_metrics["val_loss"]), rel=1e-6)
    assert [v for _, v in data.metrics["lr-SGD"]][::STEPS_PER_EPOCH] == pytest.approx([0.2, 0.1, 0.05, 0.025])
    assert data.hparams == {"lr": 0.2, "hidden": 8}
    assert data.monitor == "val_loss"
    rows = {row["file"]: row for row in data.checkpoints}
    top_k = {Path(p).name: float(v) for p, v in checkpoint.best_k_models.items()}
    assert set(rows) == set(top_k) | {"last.ckpt"} and len(top_k) == 2
    for name, score in top_k.items():
        assert rows[name]["score"] == pytest.approx(score)
    assert [n for n, r in rows.items() if r["best"]] == [Path(checkpoint.best_model_path).name]
    assert rows["last.ckpt"]["epoch"] == EPOCHS - 1 and rows["last.ckpt"]["step"] == EPOCHS * STEPS_PER_EPOCH
    assert data.run_time_source == "TensorBoard event times" and 0 < data.run_time_s < 600


def test_tensorboard_events_alone_give_the_same_curves(run, tmp_path):
    _, _, run_dir = run
    copy = tmp_path / "lightning_logs" / "version_7"
    shutil.copytree(run_dir, copy)
    (copy / "metrics.csv").unlink()
    from_events = report.read_run(tmp_path)  # a folder above: its newest version_N
    from_csv = report.read_run(run_dir)
    assert from_events.run_dir == copy and from_events.metrics_source == "TensorBoard event files"
    for name in ("train_loss", "val_loss", "lr-SGD"):
        steps, values = zip(*from_events.metrics[name])
        csv_steps, csv_values = zip(*from_csv.metrics[name])
        assert steps == csv_steps and values == pytest.approx(csv_values, rel=1e-6)


def test_page_is_self_contained(run, tmp_path):
    _, checkpoint, run_dir = run
    path = report.write_report(run_dir, tmp_path / "page.html", title="Regression run")
    page = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:)""", page)  # nothing fetched from anywhere
    assert "<script" not in page and "http://" not in page and "https://" not in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2  # loss (train and val together) and learning rate
    assert all(base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n" for b64 in images)
    assert re.findall(r"<img alt='([^']+)'", page) == ["loss", "learning rate"]
    assert "<h1>Regression run</h1>" in page and "<td>hidden</td><td>8</td>" in page
    assert f"{Path(checkpoint.best_model_path).name} (best)" in page and "last.ckpt" in page


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("Chromium is needed to check that the report renders. Fix: sudo bash scripts/ensure_chromium.sh "
                "(CI's .ci/run calls it).")


def test_report_renders_in_headless_chromium_with_curves(run, tmp_path):
    from PIL import Image

    _, _, run_dir = run
    page = report.write_report(run_dir, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400",
               f"--screenshot={shot}", page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 1400)
    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    non_white = int((pixels.sum(axis=1) < 720).sum())
    assert non_white > 0.03 * len(pixels)  # not a blank page

    def near(hex_color: str, tolerance: int = 40) -> int:
        target = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - target) <= tolerance).all(axis=1).sum())

    # the curves are drawn in fixed colours: train blue, validation red, learning rate purple
    assert near(report.TRAIN_COLOR) > 400
    assert near(report.VAL_COLOR) > 200
    assert near(report.LR_COLOR) > 200


def test_errors_and_the_missing_plot_package(tmp_path, monkeypatch, run, capsys):
    assert report.main([str(tmp_path / "nowhere")]) == 2
    assert "Run directory not found. Received:" in capsys.readouterr().err
    assert report.main([str(tmp_path)]) == 2
    assert "No run found in" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fulmen\[report\]'"):
        report.write_report(run[2], tmp_path / "x.html")
