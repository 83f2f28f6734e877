"""Tests for `fulmen.loggers`: the files on disk, read back with real readers.

TensorBoard event files are read with TensorBoard's own `EventAccumulator`, CSV files with the
`csv` module, YAML with PyYAML; one test starts a real TensorBoard server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import enum
import json
import os
import pickle
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fulmen.loggers import CSVLogger, Logger, TensorBoardLogger
from fulmen.loggers.base import _flatten_dict, _next_version, _sanitize_params, _to_plain
from fulmen.saving import load_hparams_from_yaml

from helpers import get_json, tensorboard_server

REPO_ROOT = Path(__file__).resolve().parents[1]


def _events(log_dir: str) -> EventAccumulator:
    # size_guidance 0 = keep every event, so exact steps can be asserted.
    accumulator = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0, "graph": 0})
    accumulator.Reload()
    return accumulator


def _scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def _hparams_plugin(accumulator: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    try:
        content = accumulator.PluginTagToContent("hparams")
    except KeyError:  # no event in the file carried hparams plugin data
        return {}
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}


def _read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


# --- hyperparameter helpers -------------------------------------------------------------------


@dataclasses.dataclass
class OptimConfig:
    name: str = "sgd"
    momentum: float = 0.9


def test_flatten_and_sanitize_params_for_tensorboard():
    params = {
        "optim": OptimConfig(),
        "data": argparse.Namespace(batch_size=32, root="/data"),
        "layers": [64, 32],
        "heads": [{"dim": 8}, {"dim": 16}],
        "act": torch.nn.ReLU,
        "seed": torch.tensor(7),
        "dropout": None,
    }
    flat = _flatten_dict(params)
    assert list(flat) == [
        "optim/name", "optim/momentum", "data/batch_size", "data/root", "layers",
        "heads/0/dim", "heads/1/dim", "act", "seed", "dropout",
    ]  # fmt: skip
    assert _sanitize_params(flat) == {
        "optim/name": "sgd",
        "optim/momentum": 0.9,
        "data/batch_size": 32,
        "data/root": "/data",
        "layers": "[64, 32]",
        "heads/0/dim": 8,
        "heads/1/dim": 16,
        "act": "<class 'torch.nn.modules.activation.ReLU'>",
        "seed": 7,
        "dropout": "None",
    }


class Mode(enum.Enum):
    EVAL = "eval"


def test_to_plain_keeps_nesting_and_stringifies_the_rest():
    plain = _to_plain(
        {"optim": OptimConfig(), "sizes": (3, 4), "w": torch.ones(2), "n": torch.tensor(2.5), 5: Path("x"),
         "mode": Mode.EVAL}
    )  # fmt: skip
    assert plain == {
        "optim": {"name": "sgd", "momentum": 0.9}, "sizes": [3, 4], "w": "tensor([1., 1.])", "n": 2.5, "5": "x",
        "mode": "eval",
    }  # fmt: skip


# --- Logger base --------------------------------------------------------------------------------


def test_logger_base_requires_the_abstract_api_and_defaults_the_rest():
    class Incomplete(Logger):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()

    class Recording(Logger):
        name, version = "rec", 0

        def __init__(self):
            self.calls = []

        def log_metrics(self, metrics, step=None):
            self.calls.append(("metrics", metrics, step))

        def log_hyperparams(self, params, *args, **kwargs):
            self.calls.append(("hparams", params))

        def save(self):
            self.calls.append(("save",))

    logger = Recording()
    assert (logger.root_dir, logger.log_dir, logger.save_dir, logger.experiment) == (None, None, None, None)
    assert logger.group_separator == "/"
    logger.log_graph(torch.nn.Linear(1, 1))
    logger.after_save_checkpoint(object())
    logger.finalize("success")  # the default finalize saves
    assert logger.calls == [("save",)]


# --- version directories --------------------------------------------------------------------


@pytest.mark.parametrize("logger_cls", [TensorBoardLogger, CSVLogger])
def test_version_is_the_next_free_number_on_disk(tmp_path, logger_cls):
    root = tmp_path / "exp"
    (root / "version_0").mkdir(parents=True)
    (root / "version_3").mkdir()
    (root / "version_9").write_text("a file, not a run")
    (root / "version_x").mkdir()
    (root / "other_12").mkdir()

    logger = logger_cls(tmp_path, name="exp")
    assert logger.version == 4
    assert not (root / "version_4").exists()  # nothing is written until something is logged
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert (root / "version_4").is_dir()
    assert logger.log_dir == str(root / "version_4")
    assert logger.root_dir == str(root)
    assert logger.save_dir == str(tmp_path)

    following = logger_cls(tmp_path, name="exp")
    assert following.version == 5
    assert logger.version == 4  # resolved once, kept for the whole run


def test_next_version_of_missing_directory_is_zero(tmp_path):
    assert _next_version(str(tmp_path / "missing")) == 0


@pytest.mark.parametrize("logger_cls", [TensorBoardLogger, CSVLogger])
def test_explicit_version_and_no_name_level(tmp_path, logger_cls):
    assert logger_cls(tmp_path, name="exp", version=7).log_dir == str(tmp_path / "exp" / "version_7")
    assert logger_cls(tmp_path, name="exp", version="baseline").log_dir == str(tmp_path / "exp" / "baseline")
    for name in ("", None):
        logger = logger_cls(tmp_path, name=name)
        assert logger.name == ""
        assert logger.log_dir == str(tmp_path / "version_0")
    with pytest.raises(TypeError, match=r"Received: version=1\.5"):
        logger_cls(tmp_path, version=1.5)


def test_tensorboard_sub_dir(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="exp", version=1, sub_dir="train")
    assert logger.log_dir == str(tmp_path / "exp" / "version_1" / "train")


# --- TensorBoardLogger --------------------------------------------------------------------------


def test_tensorboard_scalars_read_back_with_exact_steps_and_values(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.5, "epoch": 0}, step=0)
    logger.log_metrics({"loss": torch.tensor(0.75)}, step=10)
    logger.log_metrics({"loss": torch.tensor(0.25, dtype=torch.float64), "epoch": torch.tensor(1)}, step=20)
    logger.finalize("success")

    events = _events(logger.log_dir)
    # Values chosen to be exact in float32, the type TensorBoard stores.
    assert _scalars(events, "loss") == [(0, 1.5), (10, 0.75), (20, 0.25)]
    assert _scalars(events, "epoch") == [(0, 0.0), (20, 1.0)]


def test_tensorboard_prefix_is_joined_with_a_dash(tmp_path):
    logger = TensorBoardLogger(tmp_path, prefix="fold1", default_hp_metric=True)
    logger.log_metrics({"val/loss": 0.5}, step=3)
    logger.log_hyperparams({"lr": 0.5})
    logger.finalize("success")
    events = _events(logger.log_dir)
    assert sorted(events.Tags()["scalars"]) == ["fold1-hp_metric", "fold1-val/loss"]
    assert _scalars(events, "fold1-val/loss") == [(3, 0.5)]
    # The HPARAMS tab looks for the metric under the name it was written with.
    experiment = _hparams_plugin(events)["_hparams_/experiment"].experiment
    assert [info.name.tag for info in experiment.metric_infos] == ["fold1-hp_metric"]


def test_tensorboard_dict_value_is_written_with_add_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": {"train": 0.5, "val": 0.75}}, step=2)
    logger.finalize("success")
    # add_scalars writes one run per key, in a subdirectory named after tag and key.
    assert _scalars(_events(os.path.join(logger.log_dir, "loss_train")), "loss") == [(2, 0.5)]
    assert _scalars(_events(os.path.join(logger.log_dir, "loss_val")), "loss") == [(2, 0.75)]


def test_tensorboard_rejects_values_that_are_not_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(ValueError, match=r"'loss' = tensor of shape \(3,\)"):
        logger.log_metrics({"loss": torch.ones(3)}, step=0)
    with pytest.raises(ValueError, match=r"'name' = 'x' \(str\)"):
        logger.log_metrics({"name": "x"}, step=0)
    logger.finalize("failed")


def test_tensorboard_hparams_reach_the_hparams_plugin(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.01, "optim": {"name": "adam"}, "layers": [64, 32], "seed": 3})
    logger.finalize("success")

    events = _events(logger.log_dir)
    plugin = _hparams_plugin(events)
    assert set(plugin) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    experiment = plugin["_hparams_/experiment"].experiment
    assert sorted(info.name for info in experiment.hparam_infos) == ["layers", "lr", "optim/name", "seed"]
    assert [info.name.tag for info in experiment.metric_infos] == ["hp_metric"]
    start = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert start["lr"].number_value == 0.01
    assert start["seed"].number_value == 3
    assert start["optim/name"].string_value == "adam"
    assert start["layers"].string_value == "[64, 32]"
    assert _scalars(events, "hp_metric") == [(0, -1.0)]


def test_tensorboard_hparams_without_default_metric_write_only_the_yaml(tmp_path):
    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    logger.log_hyperparams({"lr": 0.01})
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.finalize("success")
    events = _events(logger.log_dir)
    assert events.Tags()["scalars"] == ["loss"]
    assert _hparams_plugin(events) == {}
    assert yaml.safe_load(Path(logger.log_dir, "hparams.yaml").read_text()) == {"lr": 0.01}


def test_tensorboard_explicit_hp_metric_value(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.01}, metrics=0.125, step=4)
    logger.finalize("success")
    assert _scalars(_events(logger.log_dir), "hp_metric") == [(4, 0.125)]


def test_tensorboard_hparams_yaml_round_trip(tmp_path):
    params = argparse.Namespace(
        lr=0.001, optim={"name": "adamw", "betas": (0.9, 0.999)}, tags=["a", "b"], act=torch.nn.GELU
    )
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams(params)
    logger.log_hyperparams({"batch_size": 64})  # merged into the same file
    logger.save()
    expected = {
        "lr": 0.001,
        "optim": {"name": "adamw", "betas": (0.9, 0.999)},  # a tuple, written as yaml.dump does (!!python/tuple)
        "tags": ["a", "b"],
        "act": "<class 'torch.nn.modules.activation.GELU'>",
        "batch_size": 64,
    }
    path = Path(logger.log_dir, "hparams.yaml")
    assert "betas: !!python/tuple\n" in path.read_text()
    assert load_hparams_from_yaml(path) == expected
    logger.finalize("success")
    logger.finalize("success")  # idempotent: the writer is already closed


def test_tensorboard_save_does_not_create_a_run_directory(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.save()
    logger.finalize("success")
    assert list(tmp_path.iterdir()) == []


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.example_input_array = torch.zeros(1, 4)

    def forward(self, x):
        return self.layer(x).relu()


def test_tensorboard_log_graph(tmp_path):
    TensorBoardLogger(tmp_path, version="off").log_graph(TinyNet())  # log_graph=False: a no-op
    assert not (tmp_path / "lightning_logs" / "off").exists()

    logger = TensorBoardLogger(tmp_path, version="on", log_graph=True)
    logger.log_graph(TinyNet())
    logger.finalize("success")
    graph = _events(logger.log_dir).Graph()
    assert any(node.op == "aten::linear" for node in graph.node)

    model = TinyNet()
    model.example_input_array = None
    with pytest.warns(UserWarning, match="no example input"):
        TensorBoardLogger(tmp_path, log_graph=True).log_graph(model)


def test_tensorboard_logger_pickles_without_its_writer(tmp_path):
    logger = TensorBoardLogger(tmp_path, version=0)
    logger.log_metrics({"loss": 0.5}, step=0)
    assert logger._experiment is not None
    copy = pickle.loads(pickle.dumps(logger))
    assert copy._experiment is None
    assert copy.log_dir == logger.log_dir
    logger.finalize("success")
    copy.log_metrics({"loss": 0.25}, step=1)  # the copy opens its own writer in the same run
    copy.finalize("success")
    assert _scalars(_events(logger.log_dir), "loss") == [(0, 0.5), (1, 0.25)]


# --- CSVLogger ----------------------------------------------------------------------------------


def test_csv_rows_per_call_with_step_column_and_prefix(tmp_path):
    logger = CSVLogger(tmp_path, prefix="cv")
    logger.log_metrics({"loss": 1.5, "acc": torch.tensor(0.25)}, step=0)
    logger.log_metrics({"loss": torch.tensor(0.5)}, step=1)
    logger.finalize("success")
    header, rows = _read_csv(os.path.join(logger.log_dir, "metrics.csv"))
    assert header == ["cv-acc", "cv-loss", "step"]
    assert rows == [{"cv-acc": "0.25", "cv-loss": "1.5", "step": "0"}, {"cv-acc": "", "cv-loss": "0.5", "step": "1"}]


def test_csv_rewrites_the_header_when_a_new_key_appears(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=2)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"train_loss": 0.5}, step=0)
    logger.log_metrics({"train_loss": 0.25}, step=1)  # step 1 = 2 steps: flush
    header, rows = _read_csv(path)
    assert header == ["step", "train_loss"]
    assert rows == [{"step": "0", "train_loss": "0.5"}, {"step": "1", "train_loss": "0.25"}]

    logger.log_metrics({"val_loss": 0.75, "train_loss": 0.125}, step=3)  # step 3 >= 1 + 2: flush
    header, rows = _read_csv(path)
    assert header == ["step", "train_loss", "val_loss"]
    assert rows == [
        {"step": "0", "train_loss": "0.5", "val_loss": ""},
        {"step": "1", "train_loss": "0.25", "val_loss": ""},
        {"step": "3", "train_loss": "0.125", "val_loss": "0.75"},
    ]
    assert not [name for name in os.listdir(logger.log_dir) if name.endswith(".tmp")]


def test_csv_flush_cadence(tmp_path):
    # step=None: each call is one step, so rows reach the file every n calls.
    logger = CSVLogger(tmp_path, version="calls", flush_logs_every_n_steps=3)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"x": 1})
    logger.log_metrics({"x": 2})
    assert not os.path.exists(path)
    logger.log_metrics({"x": 3})
    assert [row["step"] for row in _read_csv(path)[1]] == ["0", "1", "2"]
    logger.log_metrics({"x": 4})
    assert len(_read_csv(path)[1]) == 3  # buffered
    logger.finalize("success")
    assert [row["x"] for row in _read_csv(path)[1]] == ["1", "2", "3", "4"]

    # Trainer-style steps every 5 training steps: flushed every 10 steps, i.e. every 2 calls.
    logger = CSVLogger(tmp_path, version="trainer", flush_logs_every_n_steps=10)
    path = os.path.join(logger.log_dir, "metrics.csv")
    written = []
    for step in range(4, 40, 5):
        logger.log_metrics({"loss": 0.5}, step=step)
        written.append(len(_read_csv(path)[1]) if os.path.exists(path) else 0)
    assert written == [0, 2, 2, 4, 4, 6, 6, 8]

    # The same step logged over and over still flushes every n rows.
    logger = CSVLogger(tmp_path, version="repeat", flush_logs_every_n_steps=3)
    path = os.path.join(logger.log_dir, "metrics.csv")
    for _ in range(3):
        logger.log_metrics({"val": 0.5}, step=0)
    assert len(_read_csv(path)[1]) == 3


def test_csv_hparams_yaml_round_trip(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(argparse.Namespace(lr=0.01, model={"depth": 4, "norm": "batch"}, dims=(2, 3)))
    path = Path(logger.log_dir, "hparams.yaml")
    assert load_hparams_from_yaml(path) == {"lr": 0.01, "model": {"depth": 4, "norm": "batch"}, "dims": (2, 3)}
    logger.log_hyperparams({"lr": 0.02})
    assert load_hparams_from_yaml(path) == {"lr": 0.02, "model": {"depth": 4, "norm": "batch"}, "dims": (2, 3)}
    assert logger.hparams["lr"] == 0.02


def test_csv_existing_metrics_file_is_replaced_with_a_warning(tmp_path):
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"old": 1.0}, step=0)
    first.finalize("success")
    second = CSVLogger(tmp_path, version=0)
    with pytest.warns(UserWarning, match="removes it"):
        second.log_metrics({"new": 2.0}, step=0)
    second.finalize("success")
    assert _read_csv(os.path.join(second.log_dir, "metrics.csv")) == (["new", "step"], [{"new": "2.0", "step": "0"}])


def test_csv_rejects_bad_flush_setting(tmp_path):
    with pytest.raises(ValueError, match="Received: flush_logs_every_n_steps=0"):
        CSVLogger(tmp_path, flush_logs_every_n_steps=0)


# --- import cost --------------------------------------------------------------------------------


def test_importing_loggers_does_not_import_tensorboard_or_tqdm():
    # torch 2.13 itself imports tqdm (through torch.hub), so tqdm is compared against what
    # `import torch` alone loads; TensorBoard must not be imported at all.
    code = (
        "import sys, json, torch\n"
        "before = set(sys.modules)\n"
        "import fulmen.loggers\n"
        "after = set(sys.modules)\n"
        "print(json.dumps({'tb': sorted(m for m in after if 'tensorboard' in m and not m.startswith('fulmen')),"
        " 'new_tqdm': sorted(m for m in after - before if m.split('.')[0] == 'tqdm')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"tb": [], "new_tqdm": []}


# --- a real TensorBoard server -----------------------------------------------------------------


def test_tensorboard_server_serves_the_logged_run(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="exp")
    logger.log_hyperparams({"lr": 0.01, "optim": "adam"})
    logger.log_metrics({"train/loss": 0.75}, step=5)
    logger.log_metrics({"train/loss": 0.5}, step=6)
    logger.finalize("success")

    with tensorboard_server(tmp_path / "exp", "train/loss", log_file=tmp_path / "tensorboard.out") as base:
        query = urllib.parse.urlencode({"run": "version_0", "tag": "train/loss"})
        points = get_json(f"{base}/data/plugin/scalars/scalars?{query}")  # [[wall_time, step, value], ...]
        assert [(step, value) for _, step, value in points] == [(5, 0.75), (6, 0.5)]

        # What the HPARAMS tab asks for: the run's hyperparameters and its hp_metric.
        query = {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS"], "colParams": [],
                 "startIndex": 0, "sliceSize": 10}  # fmt: skip
        groups = get_json(f"{base}/data/plugin/hparams/session_groups", query)["sessionGroups"]
        assert [group["name"] for group in groups] == ["version_0"]
        assert groups[0]["hparams"] == {"lr": 0.01, "optim": "adam"}
        assert [(m["name"]["tag"], m["value"]) for m in groups[0]["metricValues"]] == [("hp_metric", -1.0)]
