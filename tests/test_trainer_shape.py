"""The shape of fulmen/trainer.py that issue 15 asks for, kept: under 600 lines, no function body over
60 lines, no function-level imports (every import at the top, so the module's dependencies read in
one place), and the Trainer's checked arguments as the attributes `TrainerSettings` names."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import fulmen as pl
from fulmen.arguments import TrainerSettings
from fulmen.trainer_properties import TrainerProperties

TRAINER = Path(__file__).resolve().parents[1] / "fulmen" / "trainer.py"


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_trainer_py_is_under_600_lines():
    assert len(TRAINER.read_text().splitlines()) < 600


def test_no_trainer_function_body_is_over_60_lines():
    long = {}
    for fn in _functions(ast.parse(TRAINER.read_text())):
        body = fn.end_lineno - fn.body[0].lineno + 1  # the signature (Trainer's 44 arguments) not counted
        if body > 60:
            long[fn.name] = body
    assert long == {}


def test_trainer_py_has_no_function_level_imports():
    lazy = [
        f"{fn.name}: {ast.unparse(node)}"
        for fn in _functions(ast.parse(TRAINER.read_text()))
        for node in ast.walk(fn)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert lazy == []


def test_every_setting_is_the_trainer_attribute_of_its_name(tmp_path):
    trainer = pl.Trainer(
        fast_dev_run=2, gradient_clip_algorithm="Value", num_sanity_val_steps=-1, max_time="00:01:00:00",
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False,
    )
    assert isinstance(trainer, TrainerProperties)
    names = [f.name for f in dataclasses.fields(TrainerSettings)]
    assert {"max_epochs", "limit_val_batches", "gradient_clip_algorithm", "preemption_signals"} <= set(names)
    for name in names:
        assert name in vars(trainer), name
    # fast_dev_run overrides the limits and the sanity check; the values are normalised.
    assert (trainer.max_steps, trainer.max_epochs, trainer.limit_val_batches, trainer.num_sanity_val_steps) == (2, 1, 2, 0)
    assert trainer.gradient_clip_algorithm == "value" and trainer.max_time == 3600.0
    assert trainer.default_root_dir == str(tmp_path)
