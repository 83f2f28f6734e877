"""The gallery examples (examples/gan/, examples/sequence/) in their short mode, run as a user would
call them, with what each is meant to show asserted: the GAN moves its samples to the target
distribution under manual optimization; the GRU learns the task with a per-step one-cycle schedule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    """examples/<name>/train.py as a module with a unique name (each example has its own train.py)."""
    spec = importlib.util.spec_from_file_location(f"gallery_{name}_train", EXAMPLES / name / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


@pytest.fixture(autouse=True)
def _seed_env(monkeypatch):
    # seed_everything writes these; setting them first makes monkeypatch remove them afterwards.
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    monkeypatch.setenv("PL_SEED_WORKERS", "0")


def test_gan_moves_the_generated_distribution_to_the_target(tmp_path):
    gan = load("gan")
    out = gan.main(["--fast", "--root-dir", str(tmp_path)])
    start_gap, gap = abs(out["start_mean"] - gan.TARGET_MEAN), abs(out["mean"] - gan.TARGET_MEAN)
    assert start_gap > 3.0  # an untrained generator is far from N(4, 0.5)
    assert gap < 0.25 * start_gap and gap < 0.5
    assert 0.1 < out["std"] < 1.0  # a spread of values, not one point (no collapse)
    # manual optimization: both optimizers' steps count, as in Lightning (6 epochs of 64 batches)
    assert out["steps"] == 2 * 6 * 64
    assert not list(tmp_path.iterdir())  # --fast writes no logs or checkpoints


def test_sequence_model_learns_with_a_per_step_one_cycle_schedule(tmp_path):
    sequence = load("sequence")
    out = sequence.main(["--fast", "--root-dir", str(tmp_path)])
    assert out["val_mse"] < 0.05 * out["baseline_mse"]
    lrs, steps = out["lrs"], out["steps"]
    assert steps == 4 * 32 and len(lrs) == steps  # interval "step": one scheduler step per batch
    peak = lrs.index(max(lrs))
    assert abs(peak - 0.3 * steps) <= 2  # warm-up over the first 30% of the steps
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # rising
    assert all(a > b for a, b in zip(lrs[peak:-1], lrs[peak + 1:]))  # then annealing
    assert max(lrs) == pytest.approx(1e-2, rel=1e-3) and lrs[-1] < 1e-5
