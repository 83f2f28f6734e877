"""The digits example (examples/digits/) end to end: the script as a user runs it, and the full
run's accuracy. These pin the public workflow: fit with callbacks, test the best checkpoint,
TensorBoard files on disk, load_from_checkpoint.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("tensorboard")

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "digits"
# Generic top-level names: another example may have its own model.py, so tests must not leak them.
EXAMPLE_MODULES = ("train", "model", "data")


@pytest.fixture
def digits(monkeypatch: pytest.MonkeyPatch):
    """The example's train module, imported from its folder and forgotten afterwards."""
    saved = {name: sys.modules.pop(name) for name in EXAMPLE_MODULES if name in sys.modules}
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    # seed_everything writes these; setting them first makes monkeypatch remove them afterwards.
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    monkeypatch.setenv("PL_SEED_WORKERS", "0")
    yield importlib.import_module("train")
    for name in EXAMPLE_MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def test_fast_run_writes_logs_and_a_loadable_best_checkpoint(tmp_path: Path, digits) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "train.py"), "--fast", "--root-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    accuracy = re.search(r"^test_acc: (\S+)$", proc.stdout, re.MULTILINE)
    assert accuracy is not None, proc.stdout
    accuracy = float(accuracy.group(1))
    assert 0.9 <= accuracy <= 1.0

    version_dir = tmp_path / "lightning_logs" / "version_0"
    assert list(version_dir.glob("events.out.tfevents.*")), sorted(p.name for p in version_dir.iterdir())
    assert f"tensorboard --logdir {tmp_path / 'lightning_logs'}" in proc.stdout

    best = re.search(r"^best checkpoint: (.+)$", proc.stdout, re.MULTILINE)
    assert best is not None, proc.stdout
    best_path = Path(best.group(1))
    assert best_path.suffix == ".ckpt" and best_path.is_file()
    assert best_path.parent == version_dir / "checkpoints"

    # Rebuilt from the checkpoint's hyperparameters alone, it is the model that was tested.
    model = digits.DigitsClassifier.load_from_checkpoint(best_path).eval()
    assert dict(model.hparams) == dict(digits.DigitsClassifier().hparams)
    dm = digits.DigitsDataModule()
    dm.setup("test")
    x, y = dm.test_set.tensors
    with torch.no_grad():
        reloaded_accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    assert reloaded_accuracy == pytest.approx(accuracy, abs=1e-4)


def test_full_run_reaches_95_percent_test_accuracy(tmp_path: Path, digits) -> None:
    # The full run, in process: a few seconds on two CPU cores, since EarlyStopping ends it
    # after ~20-30 epochs of 20 small batches. One thread, as train.py's main() uses: with more,
    # this tiny model runs several times slower when other tests share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = digits.run(root_dir=tmp_path, seed=42)
    finally:
        torch.set_num_threads(threads)
    assert result["test_acc"] >= digits.MIN_TEST_ACCURACY
    assert Path(result["best_model_path"]).is_file()
    assert result["log_dir"] == str(tmp_path / "lightning_logs" / "version_0")
