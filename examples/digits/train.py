"""The digits example's execution script: seed, build the model and data, fit, test the best
checkpoint, and say where the logs and checkpoints went.

    python examples/digits/train.py                 # full run, exits 1 if test accuracy < 0.95
    python examples/digits/train.py --fast          # a few epochs, no progress bar (for tests)

It is also importable: `run(...)` returns the numbers and paths instead of printing only.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

import fulmen as pl
from fulmen.callbacks import EarlyStopping, ModelCheckpoint
from fulmen.commands import command_as_typed

HERE = Path(__file__).resolve().parent
# `python examples/digits/train.py` puts this folder on sys.path, but importing train.py from
# elsewhere (tests, a notebook) does not; model.py and data.py must be found either way.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from data import DigitsDataModule  # noqa: E402
from model import DigitsClassifier  # noqa: E402

MIN_TEST_ACCURACY = 0.95
FAST_MAX_EPOCHS = 8
# Beside the example rather than in the cwd; every run lands in runs/lightning_logs/, which
# the repository's .gitignore already covers.
DEFAULT_ROOT_DIR = HERE / "runs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train an MLP on scikit-learn's 8x8 digits with fulmen.")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help=f"epochs at most; EarlyStopping may end sooner (default 60, or {FAST_MAX_EPOCHS} with --fast)")
    parser.add_argument("--root-dir", type=Path, default=DEFAULT_ROOT_DIR,
                        help="where lightning_logs/ (TensorBoard events, checkpoints) are written (default: %(default)s)")
    parser.add_argument("--fast", action="store_true",
                        help="a short run for tests: few epochs, no progress bar, no accuracy threshold")
    parser.add_argument("--seed", type=int, default=42, help="seed for weights, shuffling and dropout")
    return parser.parse_args(argv)


def run(*, max_epochs: int | None = None, root_dir: str | Path = DEFAULT_ROOT_DIR, fast: bool = False,
        seed: int = 42) -> dict[str, Any]:
    """Fit, then test the best checkpoint; return test accuracy, log dir and best checkpoint path."""
    pl.seed_everything(seed, workers=True)
    if max_epochs is None:
        max_epochs = FAST_MAX_EPOCHS if fast else 60

    model = DigitsClassifier()
    datamodule = DigitsDataModule(batch_size=64)
    checkpoint = ModelCheckpoint(monitor="val_acc", mode="max", filename="{epoch}-{val_acc:.4f}")
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=6), checkpoint],
        default_root_dir=str(root_dir),
        log_every_n_steps=10,  # an epoch is 20 steps; the default 50 would leave sparse curves
        enable_progress_bar=not fast,
        enable_model_summary=not fast,
    )
    trainer.fit(model, datamodule=datamodule)
    # Test the best epoch by val_acc, not the last one trained.
    results = trainer.test(ckpt_path="best", datamodule=datamodule, verbose=not fast)
    return {
        "test_acc": results[0]["test_acc"],
        "log_dir": trainer.log_dir,
        "best_model_path": checkpoint.best_model_path,
        "epochs": trainer.current_epoch,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The layers are 64x128: too small for intra-op threads to pay off, and on a busy machine
    # torch's spinning worker threads made a full run 3-4x slower (12 s -> 40 s measured).
    torch.set_num_threads(1)
    result = run(max_epochs=args.max_epochs, root_dir=args.root_dir, fast=args.fast, seed=args.seed)
    print(f"test_acc: {result['test_acc']:.4f}")
    print(f"TensorBoard logs: {result['log_dir']}")
    # As it runs when typed here: with the README's set-up that is .venv/bin/tensorboard.
    print(f"  view them with: {command_as_typed('tensorboard', '--logdir', str(Path(args.root_dir) / 'lightning_logs'))}")
    if importlib.util.find_spec("matplotlib") is not None:  # `fulmen report` draws its plots with it
        print(f"  or as one page: {command_as_typed('fulmen', 'report', result['log_dir'])}")
    print(f"best checkpoint: {result['best_model_path']}")
    if not args.fast and result["test_acc"] < MIN_TEST_ACCURACY:
        print(f"FAILED: test accuracy {result['test_acc']:.4f} is below {MIN_TEST_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
