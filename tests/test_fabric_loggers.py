"""fulmen.fabric.loggers: Fabric's TensorBoardLogger and CSVLogger write files that their own readers
read back (TensorBoard's EventAccumulator, csv.DictReader, PyYAML), in Lightning Fabric's layout, and
the same bytes / scalars as Lightning Fabric 2.6.6's loggers given the same calls."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from fulmen.fabric.loggers import CSVLogger, Logger, TensorBoardLogger
from fulmen.loggers.logger import DummyExperiment
from fulmen.utilities.rank_zero import rank_zero_only


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(log_dir)
    accumulator.Reload()
    return accumulator


def _scalars(log_dir):
    accumulator = _events(log_dir)
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def _csv_rows(path):
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def test_tensorboard_layout_scalars_and_hparams_read_back(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="exp", prefix="train", sub_dir="tb")
    assert isinstance(logger, Logger)
    assert logger.root_dir == str(tmp_path)  # Fabric's root_dir: the directory passed, not root/name
    assert logger.log_dir == os.path.join(tmp_path, "exp", "version_0", "tb")
    logger.log_hyperparams({"lr": 0.1, "optim": {"name": "adam"}, "layers": [4, 2]})
    logger.log_metrics({"loss": torch.tensor(0.5), "acc": 0.25}, step=3)
    logger.log_metrics({"loss": 0.125}, step=4)
    logger.finalize("success")

    assert _scalars(logger.log_dir) == {
        "train-hp_metric": [(0, -1.0)],
        "train-loss": [(3, 0.5), (4, 0.125)],
        "train-acc": [(3, 0.25)],
    }
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = _events(logger.log_dir).PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
               for key, value in session.session_start_info.hparams.items()}
    assert hparams == {"lr": 0.1, "optim/name": "adam", "layers": "[4, 2]"}
    assert os.listdir(logger.log_dir)[0].startswith("events.out.tfevents")
    assert len(os.listdir(logger.log_dir)) == 1  # as Lightning Fabric's: no hparams.yaml beside the events


def test_versions_increment_and_explicit_versions(tmp_path):
    first = TensorBoardLogger(tmp_path)
    first.log_metrics({"x": 1.0}, step=0)
    first.finalize("success")
    second = CSVLogger(tmp_path)  # both loggers count the same version_N directories
    second.log_metrics({"x": 1.0}, step=0)
    second.finalize("success")
    assert (first.version, second.version) == (0, 1)
    assert CSVLogger(tmp_path).version == 2
    assert TensorBoardLogger(tmp_path, version="run_a").log_dir == os.path.join(tmp_path, "lightning_logs", "run_a")
    assert CSVLogger(tmp_path, version=7).log_dir == os.path.join(tmp_path, "lightning_logs", "version_7")
    assert CSVLogger(tmp_path, name=None).log_dir == os.path.join(tmp_path, "version_0")
    assert CSVLogger(tmp_path, name="").name == ""


def test_csv_metrics_flush_cadence_and_hparams_yaml(tmp_path):
    logger = CSVLogger(str(tmp_path), name="exp", prefix="val", flush_logs_every_n_steps=2)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"loss": 1.0}, step=0)
    assert not os.path.exists(path)  # buffered
    logger.log_metrics({"loss": torch.tensor(0.75), "acc": 0.5}, step=1)
    assert _csv_rows(path) == (["step", "val-acc", "val-loss"],
                               [{"step": "0", "val-acc": "", "val-loss": "1.0"},
                                {"step": "1", "val-acc": "0.5", "val-loss": "0.75"}])
    logger.log_metrics({"loss": 0.5}, step=2)
    logger.log_hyperparams({"lr": 0.01, "net": {"width": 8}})  # beyond Lightning Fabric, which raises here
    logger.finalize("success")
    assert [row["val-loss"] for row in _csv_rows(path)[1]] == ["1.0", "0.75", "0.5"]
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as file:
        assert yaml.safe_load(file) == {"lr": 0.01, "net": {"width": 8}}


def test_other_ranks_write_nothing(tmp_path):
    rank_zero_only.rank = 1  # conftest puts it back to 0
    for logger in (TensorBoardLogger(tmp_path), CSVLogger(tmp_path)):
        assert isinstance(logger.experiment, DummyExperiment)
        logger.log_hyperparams({"lr": 0.1})
        logger.log_metrics({"loss": 1.0}, step=0)
        logger.save()
        logger.finalize("success")
    assert os.listdir(tmp_path) == []


def test_bad_arguments_say_what_to_pass(tmp_path):
    with pytest.raises(TypeError, match=r"TensorBoardLogger\(root_dir=...\) must be a directory path. Received: root_dir=3"):
        TensorBoardLogger(3)
    with pytest.raises(TypeError, match=r"CSVLogger\(root_dir=...\) must be a directory path. Received: root_dir=None"):
        CSVLogger(None)
    with pytest.raises(ValueError, match=r"flush_logs_every_n_steps=0"):
        CSVLogger(tmp_path, flush_logs_every_n_steps=0)
    with pytest.raises(ValueError, match=r"can only log scalars. Received: 'w' = tensor of shape \(2,\)"):
        TensorBoardLogger(tmp_path).log_metrics({"w": torch.ones(2)}, step=0)


_CALLS = """
import json, os, sys, torch
kind, root = sys.argv[1], sys.argv[2]
if kind == "lightning":
    from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
else:
    from fulmen.fabric.loggers import CSVLogger, TensorBoardLogger
dirs = {}
for cls in (CSVLogger, TensorBoardLogger):
    for run in range(2):
        logger = cls(root, name="exp", prefix="p" if run else "", **({"flush_logs_every_n_steps": 3} if cls is CSVLogger else {}))
        if cls is TensorBoardLogger:
            logger.log_hyperparams({"lr": 0.1, "opt": {"b": [1, 2]}})
        for step in range(5):
            metrics = {"loss": torch.tensor(1.0 / (step + 1))}
            if step % 2:
                metrics["acc"] = step / 10
            logger.log_metrics(metrics, step=step)
        logger.finalize("success")
        dirs[f"{cls.__name__}{run}"] = [os.path.relpath(logger.log_dir, root), logger.root_dir == root, logger.version]
print(json.dumps(dirs))
"""


def test_same_files_as_lightning_fabric_for_the_same_calls(tmp_path):
    out = {}
    for kind in ("lightning", "fulmen"):
        root = tmp_path / kind
        done = subprocess.run([sys.executable, "-c", _CALLS, kind, str(root)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["fulmen"] == out["lightning"] == {
        "CSVLogger0": ["exp/version_0", True, 0], "CSVLogger1": ["exp/version_1", True, 1],
        "TensorBoardLogger0": ["exp/version_2", True, 2], "TensorBoardLogger1": ["exp/version_3", True, 3],
    }
    for version in ("version_0", "version_1"):
        texts = [(tmp_path / kind / "exp" / version / "metrics.csv").read_text() for kind in ("lightning", "fulmen")]
        assert texts[0] == texts[1]
    for version in ("version_2", "version_3"):
        scalars = [_scalars(str(tmp_path / kind / "exp" / version)) for kind in ("lightning", "fulmen")]
        assert scalars[0] == scalars[1] and len(scalars[1]) == 3


def test_log_graph_takes_a_module_from_fabric_setup(tmp_path):
    from fulmen.fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=1)
    model = fabric.setup_module(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()))
    logger = TensorBoardLogger(tmp_path)
    with pytest.warns(UserWarning, match="no example input"):
        logger.log_graph(model)  # nothing to trace with: warns, writes nothing
    logger.log_graph(model, torch.randn(1, 3))
    logger.finalize("success")
    graph = _events(logger.log_dir).Graph()
    assert any(node.op.startswith("aten::linear") for node in graph.node)


def test_importing_the_loggers_imports_no_tensorboard():
    code = ("import sys, fulmen.fabric.loggers\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'tensorboardX')"
            " or m.startswith('torch.utils.tensorboard')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
