"""hparams.yaml through PyYAML (`fulmen.saving`): what the loggers and `save_hparams_to_yaml` write,
that files written by fulmen's earlier hand-written writer still load, the round trip back into
a module, and that PyYAML is imported only when a YAML file is written or read.

The expected texts below are what Lightning's `save_hparams_to_yaml` (plain `yaml.dump`) writes
for the same hyperparameters; one test compares with Lightning itself when it is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml

import fulmen as pl
from fulmen.loggers import CSVLogger, TensorBoardLogger
from fulmen.report import read_run
from fulmen.saving import _hparams_yaml_text, load_hparams_from_yaml, save_hparams_to_yaml

from helpers import quiet_trainer, random_regression

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "hparams_yaml"

# Plain hyperparameters of the kinds a model saves, and the text yaml.dump writes for them:
# keys sorted, block style, strings that YAML would read as something else quoted, floats with
# a dot before the exponent, tuples tagged so they load back as tuples, non-ASCII escaped.
COMMON = {
    "lr": 1e-3, "batch_size": 32, "sizes": (64, 32), "layers": [64, {"act": None}],
    "optim": {"name": "adam", "betas": [0.9, 0.999]}, "version": "1.10", "flag": "yes", "big": 1e20,
    "note": None, "name": "héllo", "empty": {}, "multi": "a\nb", "Z": 1,
}  # fmt: skip
COMMON_TEXT = """\
Z: 1
batch_size: 32
big: 1.0e+20
empty: {}
flag: 'yes'
layers:
- 64
- act: null
lr: 0.001
multi: 'a

  b'
name: "h\\xE9llo"
note: null
optim:
  betas:
  - 0.9
  - 0.999
  name: adam
sizes: !!python/tuple
- 64
- 32
version: '1.10'
"""


# Strings YAML would read as something else, numbers at the edges of float syntax, characters a
# YAML reader rejects or reads as line breaks unless escaped, and keys that need quoting.
TRICKY = {
    "plain": "text",
    "reserved words": ["yes", "no", "null", "~", "true", "", "- item", "key: value", "#not comment", "'q'"],
    "numbers": [0, -7, 10**30, 0.1, -1e-5, 1e20, 5e-324, math.inf, -math.inf, -0.0],
    "bools": [True, False, None],
    "unicode": "é 😀 tab\t newline\n nul\x00 del\x7f nel\x85 ls\u2028 quote\" backslash\\",
    "nested": {"deep": {"deeper": [[1, 2], [], {}, [{"a": {"b": "c"}}]]}, "empty": {}},
    "yes": 1,
    "a/b.c-d": 2,
    "": "empty key",
}


class Mode(enum.Enum):
    TRAIN = "train"


@dataclasses.dataclass
class Optim:
    name: str = "sgd"
    momentum: float = 0.9


class Net(pl.LightningModule):
    def __init__(self, lr=0.1, sizes=(3, 1), optim=None, tag="0.5", note=None):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(random_regression(8), batch_size=4)


# --- the text written -----------------------------------------------------------------------------
def test_save_hparams_to_yaml_and_the_loggers_write_what_yaml_dump_writes(tmp_path):
    save_hparams_to_yaml(tmp_path / "saved.yaml", COMMON)
    assert (tmp_path / "saved.yaml").read_text(encoding="utf-8") == COMMON_TEXT
    csv_logger, tb_logger = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    for logger in (csv_logger, tb_logger):
        logger.log_hyperparams(argparse.Namespace(**COMMON))
        logger.finalize("success")
        assert Path(logger.log_dir, "hparams.yaml").read_text(encoding="utf-8") == COMMON_TEXT
    assert load_hparams_from_yaml(tmp_path / "saved.yaml") == COMMON
    assert type(load_hparams_from_yaml(tmp_path / "saved.yaml")["sizes"]) is tuple


def test_the_text_matches_lightnings_save_hparams_to_yaml(tmp_path):
    saving = pytest.importorskip("pytorch_lightning.core.saving")
    hparams = {**COMMON, "nan": math.nan, "inf": -math.inf, "neg": -0.0, "tiny": 5e-324, "huge": 10**30}
    saving.save_hparams_to_yaml(str(tmp_path / "lightning.yaml"), hparams)
    assert _hparams_yaml_text(hparams) == (tmp_path / "lightning.yaml").read_text()


def test_values_yaml_dump_would_tag_as_python_objects_are_written_as_plain_data(tmp_path):
    # yaml.dump writes a Path or Namespace as a Python object tag that no safe reader loads
    # (Lightning's own reader included); fulmen writes the text / the mapping instead.
    hparams = {
        "data_dir": Path("/data/mnist"), "opt": argparse.Namespace(lr=0.1), "mode": Mode.TRAIN,
        "nested": {"mode": Mode.TRAIN}, "seed": torch.tensor(7), "scale": torch.tensor([0.5]),
        "optim": Optim(), "order": OrderedDict(b=1, a=2),
    }  # fmt: skip
    expected = {
        "data_dir": "/data/mnist", "opt": {"lr": 0.1}, "mode": "TRAIN", "nested": {"mode": "TRAIN"}, "seed": 7,
        "scale": 0.5, "optim": {"name": "sgd", "momentum": 0.9}, "order": {"a": 2, "b": 1},
    }  # fmt: skip
    save_hparams_to_yaml(tmp_path / "h.yaml", hparams)
    assert yaml.safe_load((tmp_path / "h.yaml").read_text()) == expected
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(hparams)
    assert yaml.safe_load(Path(logger.log_dir, "hparams.yaml").read_text()) == expected


def test_what_yaml_cannot_hold_is_skipped_by_save_and_written_as_text_by_the_loggers(tmp_path):
    hparams = {"act": torch.nn.GELU, "weights": torch.zeros(2), "lr": 0.1}
    with pytest.warns(UserWarning, match=r"Skipping '(act|weights)' parameter because it is not possible") as record:
        save_hparams_to_yaml(tmp_path / "h.yaml", hparams)
    assert sorted(str(w.message).split("'")[1] for w in record) == ["act", "weights"]
    assert load_hparams_from_yaml(tmp_path / "h.yaml") == {"lr": 0.1}
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(hparams)
    assert yaml.safe_load(Path(logger.log_dir, "hparams.yaml").read_text()) == {
        "act": "<class 'torch.nn.modules.activation.GELU'>", "weights": "tensor([0., 0.])", "lr": 0.1,
    }  # fmt: skip


def test_tricky_strings_and_numbers_read_back_unchanged(tmp_path):
    save_hparams_to_yaml(tmp_path / "h.yaml", TRICKY)
    assert load_hparams_from_yaml(tmp_path / "h.yaml") == TRICKY
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams({**TRICKY, "nan": math.nan})
    loaded = yaml.safe_load(Path(logger.log_dir, "hparams.yaml").read_text(encoding="utf-8"))  # plain YAML: no tuple
    assert math.isnan(loaded.pop("nan")) and loaded == TRICKY


def test_keys_that_cannot_be_sorted_keep_their_order():
    assert _hparams_yaml_text({"b": 1, 2: "two", "a": [1]}) == "b: 1\n2: two\na:\n- 1\n"


# --- reading --------------------------------------------------------------------------------------
def test_files_written_by_fulmens_earlier_yaml_writer_still_load(tmp_path):
    # Written by fulmen/_yaml.py's dump_yaml (block style, JSON scalars) before PyYAML wrote hparams.yaml.
    assert load_hparams_from_yaml(FIXTURES / "fulmen_0_tricky.yaml") == TRICKY
    # What the old TensorBoardLogger/CSVLogger wrote for a typical model (tuples became lists then).
    logger_file = {
        "lr": 0.001, "weight_decay": 1e-05, "sizes": [64, 32], "optim": {"name": "adamw", "betas": [0.9, 0.999]},
        "act": "<class 'torch.nn.modules.activation.GELU'>", "mode": "train", "seed": 7, "data_dir": "/data/mnist",
        "version": "1.10", "note": None, "empty": {},
    }  # fmt: skip
    loaded = load_hparams_from_yaml(FIXTURES / "fulmen_0_logger.yaml")
    assert loaded == logger_file and list(loaded) == list(logger_file)  # and in the order written
    assert type(loaded["weight_decay"]) is float and type(loaded["version"]) is str
    (tmp_path / "hparams.yaml").write_bytes((FIXTURES / "fulmen_0_logger.yaml").read_bytes())
    assert read_run(tmp_path).hparams == logger_file  # fulmen report reads it the same way


def test_the_reader_builds_only_tuples_and_says_so_for_other_python_tags(tmp_path):
    path = tmp_path / "hparams.yaml"
    path.write_text("act: !!python/name:torch.nn.modules.activation.ReLU ''\nlr: 0.1\n")  # as Lightning writes a class
    with pytest.raises(ValueError, match=r"tagged value that fulmen does not build .* Received: config_yaml='.*hparams.yaml': "
                       r"could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:torch"):
        load_hparams_from_yaml(path)
    path.write_text("x: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ValueError, match="could not determine a constructor"):
        load_hparams_from_yaml(path)


def test_report_shows_a_lightning_hparams_yaml_with_python_tags(tmp_path):
    (tmp_path / "hparams.yaml").write_text(
        "act: !!python/name:torch.nn.modules.activation.ReLU ''\n"
        "data_dir: !!python/object/apply:pathlib.PosixPath\n- /\n- data\n"
        "lr: 0.1\nsizes: !!python/tuple\n- 64\n- 32\n"
    )
    assert read_run(tmp_path).hparams == {
        "act": "!!python/name:torch.nn.modules.activation.ReLU",
        "data_dir": "!!python/object/apply:pathlib.PosixPath ['/', 'data']",
        "lr": 0.1,
        "sizes": (64, 32),
    }


# --- round trip -----------------------------------------------------------------------------------
def test_a_loggers_hparams_yaml_loads_back_into_the_module(tmp_path):
    csv_logger, tb_logger = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    model = Net(lr=0.05, sizes=(4, (2, 1)), optim={"name": "sgd", "betas": (0.9, 0.99), "nesterov": True}, note=None)
    trainer = quiet_trainer(tmp_path, logger=[csv_logger, tb_logger], max_epochs=1, log_every_n_steps=1)
    trainer.fit(model)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    for logger in (csv_logger, tb_logger):
        hparams_file = Path(logger.log_dir, "hparams.yaml")
        loaded = load_hparams_from_yaml(hparams_file)
        assert loaded == dict(model.hparams) and loaded["tag"] == "0.5"
        assert type(loaded["sizes"][1]) is tuple and type(loaded["optim"]["betas"]) is tuple
        restored = Net.load_from_checkpoint(ckpt, hparams_file=hparams_file, lr=0.5)
        assert dict(restored.hparams) == {**dict(model.hparams), "lr": 0.5}
        assert type(restored.hparams.sizes) is tuple and restored.hparams.note is None
        assert read_run(logger.log_dir).hparams == dict(model.hparams)


# --- PyYAML is imported only when YAML is written or read -------------------------------------------
_IMPORTS_SCRIPT = """
import json, sys, tempfile
import torch
import fulmen, fulmen.trainer

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("yaml", "jsonargparse") or m == "fulmen.cli")

class Net(fulmen.LightningModule):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(2, 1)
    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
seen = {"import": loaded()}
root = tempfile.mkdtemp()
fulmen.Trainer(logger=False, max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
               default_root_dir=root, accelerator="cpu").fit(Net(), data)
seen["fit without a logger"] = loaded()
fulmen.Trainer(logger=fulmen.loggers.CSVLogger(root), max_epochs=1, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=root, accelerator="cpu").fit(Net(), data)
seen["fit with CSVLogger"] = loaded()
print(json.dumps(seen))
"""


def test_pyyaml_is_imported_only_once_a_logger_writes_hparams_yaml():
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS_SCRIPT], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["import"] == [] and seen["fit without a logger"] == []
    assert "yaml" in seen["fit with CSVLogger"] and "jsonargparse" not in seen["fit with CSVLogger"]
