"""`fulmen new NAME`: the project it writes passes its own tests and trains from its train.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fulmen.commands import main
from fulmen.doctor import check_paths
from fulmen.template import TEMPLATE_DIR, new_project

FILES = ["README.md", "config.yaml", "data.py", "model.py", "test_project.py", "train.py"]


def test_new_project_passes_its_own_tests_and_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new", "demo_proj"]) == 0  # the `fulmen new demo_proj` command, in this process
    assert "Created demo_proj/" in capsys.readouterr().out
    project = tmp_path / "demo_proj"
    assert sorted(p.name for p in project.iterdir()) == FILES
    assert "# demo_proj" in (project / "README.md").read_text()
    assert "{{" not in "".join((project / name).read_text() for name in FILES)

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_project.py"],
                           cwd=project, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout

    train = subprocess.run([sys.executable, "train.py", "fit", "--config", "config.yaml", "--trainer.max_epochs=1",
                            "--data.num_samples=256", "--trainer.enable_progress_bar=false"],
                           cwd=project, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stdout + train.stderr
    run_dir = project / "runs" / "lightning_logs" / "version_0"  # config.yaml: default_root_dir: runs
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    # train.py runs LightningCLI in subclass mode: the saved config names the classes, as config.yaml does
    assert config["trainer"]["max_epochs"] == 1 and config["seed_everything"] == 42
    assert config["data"] == {"class_path": "data.SyntheticDataModule",
                              "init_args": {"num_samples": 256, "input_dim": 16, "num_classes": 3, "batch_size": 32,
                                            "num_workers": 0, "seed": 0}}
    assert config["model"]["class_path"] == "model.Classifier" and config["model"]["init_args"]["lr"] == 0.01
    # the synthetic classes overlap (issue 13): one epoch reaches about 0.85, not 1.000
    names = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in names and len(names) == 2, names
    score = float(re.fullmatch(r"epoch=0-val_acc=(\d\.\d{3})\.ckpt", (names - {"last.ckpt"}).pop()).group(1))
    assert 0.6 <= score < 0.95, names
    assert (run_dir / "hparams.yaml").is_file() and list(run_dir.glob("events.out.tfevents.*"))


def test_template_follows_the_best_practice():
    findings, files = check_paths([TEMPLATE_DIR])
    assert findings == [] and files == 4
    assert "Trainer(" not in (TEMPLATE_DIR / "model.py").read_text()
    assert "DataLoader(" not in (TEMPLATE_DIR / "model.py").read_text()


def test_new_refuses_bad_names_and_existing_projects(tmp_path, capsys):
    with pytest.raises(SystemExit):
        new_project("my-project", tmp_path)
    assert "must be a Python identifier. Received: 'my-project'. Fix: e.g. my_project." in capsys.readouterr().err
    new_project("taken", tmp_path)
    before = (tmp_path / "taken" / "model.py").read_text()
    with pytest.raises(SystemExit):
        new_project("taken", tmp_path)
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "model.py").read_text() == before
    assert main(["new"]) == 2


def test_templates_are_package_data():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"templates/project/*"' in pyproject
