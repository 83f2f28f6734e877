"""Tests of {{project_name}}: run `python -m pytest` in this folder."""

from __future__ import annotations

from pathlib import Path

import torch

from data import SyntheticDataModule
from model import Classifier
from train import main

HERE = Path(__file__).resolve().parent


def test_model_maps_features_to_class_scores():
    model = Classifier(input_dim=16, num_classes=3)
    assert model(torch.zeros(5, 16)).shape == (5, 3)


def test_data_splits_are_fixed_and_disjoint():
    first, second = SyntheticDataModule(num_samples=200), SyntheticDataModule(num_samples=200)
    first.setup("fit")
    second.setup("fit")
    assert (len(first.train_set), len(first.val_set)) == (160, 40)
    assert torch.equal(first.train_set.tensors[0], second.train_set.tensors[0])


def test_short_training_run_learns_and_saves_its_config(tmp_path):
    cli = main(["fit", "--config", str(HERE / "config.yaml"), "--trainer.max_epochs=3",
                f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
                "--data.num_samples=512"])
    metrics = cli.trainer.callback_metrics
    assert metrics["val_acc"] > 0.7, metrics  # the classes overlap: about 0.85 is what can be had
    assert (Path(cli.trainer.log_dir) / "config.yaml").is_file()
    assert Path(cli.trainer.checkpoint_callback.best_model_path).is_file()


def test_project_has_no_fulmen_doctor_findings():
    from fulmen.doctor import check_paths

    findings, files = check_paths([HERE])
    assert [f.format() for f in findings] == [] and files >= 4
