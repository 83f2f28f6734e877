"""`FulmenCLI` (LightningCLI on jsonargparse) and the `fulmen` command: options read by their
annotations, config files merged in order, --print_config, the config saved into the run directory
and read back, `fulmen fit` with class_path, and jsonargparse's errors with status 2. The command
line itself runs in real subprocesses. (LightningCLI's features one by one: test_lightning_cli.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
import yaml

import fulmen as pl
from fulmen.cli import FulmenCLI
from fulmen.commands import main
from fulmen.demos import BoringDataModule, BoringModel

REPO = Path(__file__).resolve().parents[1]

MODULES = textwrap.dedent('''
    from __future__ import annotations

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import fulmen as pl


    class Net(pl.LightningModule):
        def __init__(self, lr: float = 0.1, name: str = "net", layers: list[int] = (4,),
                     act: str | None = None) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


    class Data(pl.LightningDataModule):
        def __init__(self, batch_size: int = 4, n: int = 16) -> None:
            super().__init__()
            self.save_hyperparameters()

        def setup(self, stage):
            g = torch.Generator().manual_seed(0)
            self.data = TensorDataset(torch.randn(self.hparams.n, 4, generator=g),
                                      torch.randn(self.hparams.n, 1, generator=g))

        def train_dataloader(self):
            return DataLoader(self.data, batch_size=self.hparams.batch_size)

        def val_dataloader(self):
            return DataLoader(self.data, batch_size=self.hparams.batch_size)
''')

TRAIN = textwrap.dedent('''
    import json, sys
    from fulmen.cli import FulmenCLI
    from mods import Data, Net

    cli = FulmenCLI(Net, Data, trainer_defaults={"enable_progress_bar": False, "enable_model_summary": False})
    print("RESULT " + json.dumps({"hparams": dict(cli.model.hparams), "batch_size": cli.datamodule.hparams.batch_size,
          "max_epochs": cli.trainer.max_epochs, "global_step": cli.trainer.global_step,
          "log_dir": cli.trainer.log_dir, "seed": cli.config["fit"]["seed_everything"]}))
''')


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mods.py").write_text(MODULES)
    (tmp_path / "train.py").write_text(TRAIN)
    return tmp_path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_train_script_options_config_saved_and_read_back(project):
    proc = _run(["train.py", "fit", "--trainer.max_epochs=1", "--model.lr=1e-3", "--model.name", "1.5",
                 "--model.layers=[8, 2]", "--data.batch_size=8", f"--trainer.default_root_dir={project / 'runs'}"],
                project)
    result = _result(proc)
    # by annotation: float, str (not the number), list[int]; unset ones keep their defaults. (Not "1e-3"
    # for the str: jsonargparse writes it unquoted and reads it back as the float 0.001.)
    assert result["hparams"] == {"lr": 0.001, "name": "1.5", "layers": [8, 2], "act": None}
    assert (result["max_epochs"], result["batch_size"], result["global_step"]) == (1, 8, 2)
    saved_path = Path(result["log_dir"]) / "config.yaml"
    assert saved_path.parent == project / "runs" / "lightning_logs" / "version_0"
    saved = _load(saved_path)
    assert saved["model"] == {"lr": 0.001, "name": "1.5", "layers": [8, 2], "act": None}
    assert saved["data"] == {"batch_size": 8, "n": 16}
    assert saved["trainer"]["max_epochs"] == 1 and saved["seed_everything"] == result["seed"]
    assert isinstance(result["seed"], int)  # seed_everything=True draws a seed and records it

    # the saved config reproduces the run: same values, a fresh version directory
    again = _result(_run(["train.py", "fit", "--config", str(saved_path)], project))
    assert again["hparams"] == result["hparams"] and again["seed"] == result["seed"]
    assert Path(again["log_dir"]).name == "version_1"
    assert _load(Path(again["log_dir"]) / "config.yaml") == saved


def test_print_config_prints_the_merged_config_and_exits(project):
    (project / "cfg.yaml").write_text("trainer:\n  max_epochs: 7\nmodel:\n  lr: 0.5\n  name: from_file\n")
    proc = _run(["train.py", "fit", "--config", "cfg.yaml", "--model.lr=0.25", "--print_config"], project)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert config["model"] == {"lr": 0.25, "name": "from_file", "layers": [4], "act": None}
    assert config["trainer"]["max_epochs"] == 7 and config["trainer"]["enable_progress_bar"] is False
    assert config["data"] == {"batch_size": 4, "n": 16} and config["ckpt_path"] is None
    assert not (project / "lightning_logs").exists()  # nothing ran


def test_bad_options_exit_2_with_the_fix(project):
    proc = _run(["train.py", "fit", "--model.lrr=0.1"], project)  # more cases in process, below
    assert proc.returncode == 2, proc.stderr
    assert "error: unrecognized arguments: --model.lrr=0.1" in proc.stderr and "Did you mean --model.lr?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fulmen_command_runs_classes_named_in_the_config(project):
    (project / "cfg.yaml").write_text(textwrap.dedent("""
        seed_everything: 3
        trainer:
          max_epochs: 2
          enable_progress_bar: false
          enable_model_summary: false
          callbacks:
            - class_path: fulmen.callbacks.ModelCheckpoint
              init_args: {monitor: val_loss, save_top_k: 1}
        model:
          class_path: mods.Net
          init_args: {lr: 0.05}
        data:
          class_path: mods.Data
    """))
    proc = _run(["-m", "fulmen", "fit", "--config", "cfg.yaml", "--data.init_args.batch_size=8"], project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "args= and command-line arguments" not in proc.stderr  # the command's own argv, not a second one
    run_dir = project / "lightning_logs" / "version_0"
    saved = _load(run_dir / "config.yaml")
    assert saved["model"] == {"class_path": "mods.Net", "init_args": {"lr": 0.05, "name": "net", "layers": [4],
                                                                      "act": None}}
    assert saved["data"] == {"class_path": "mods.Data", "init_args": {"batch_size": 8, "n": 16}}
    assert saved["seed_everything"] == 3
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["epoch=1-step=4.ckpt"]


# --- in process: reading values, merging configs ------------------------------------------------


class Typed(pl.LightningModule):
    def __init__(self, lr: float = 0.1, steps: int | str = 3, mode: Literal["a", "b"] = "a",
                 sizes: tuple[int, ...] = (1, 2), extra: dict | None = None, flag: bool = False) -> None:
        super().__init__()
        self.kwargs = dict(lr=lr, steps=steps, mode=mode, sizes=sizes, extra=extra, flag=flag)


def _cli(*args: str, **kwargs) -> FulmenCLI:
    return FulmenCLI(Typed, args=list(args), run=False, seed_everything_default=False, **kwargs)


def test_values_follow_the_annotations(capsys):
    cli = _cli("--model.lr=1", "--model.steps=5", "--model.mode=b", "--model.sizes=[3, 4]",
               '--model.extra={"k": 1}', "--model.flag=true", "--trainer.logger=false")
    assert cli.model.kwargs == dict(lr=1.0, steps=5, mode="b", sizes=(3, 4), extra={"k": 1}, flag=True)
    assert isinstance(cli.model.kwargs["lr"], float) and cli.trainer.loggers == []
    assert _cli("--model.steps=all").model.kwargs["steps"] == "all"
    for bad, expected in [("--model.mode=c", 'Parser key "model.mode":\n  Expected a typing.Literal[\'a\', \'b\']. Got value: c'),
                          ("--model.flag=3", 'Parser key "model.flag":\n  Expected a <class \'bool\'>. Got value: 3'),
                          ("--trainer.max_epochs=many", 'Parser key "trainer.max_epochs"'),
                          ("--model.nope=1", "unrecognized arguments: --model.nope=1"),
                          ("--optimizer.lr=1", "class_path 'torch.optim.Optimizer':\n        Option 'lr' is not accepted")]:
        with pytest.raises(SystemExit) as exit_info:
            _cli(bad)
        assert exit_info.value.code == 2, bad
        assert expected in capsys.readouterr().err, bad


def test_configs_and_arguments_apply_in_order(tmp_path, capsys):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump({"model": {"lr": 0.5, "steps": 7}, "trainer": {"max_epochs": 4}}))
    second.write_text(yaml.safe_dump({"model": {"lr": 0.25}}))
    with pytest.raises(SystemExit) as exit_info:
        FulmenCLI(Typed, args=["fit", "--model.lr=9", "--config", str(first), "-c", str(second), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lr"] == 0.25 and printed["model"]["steps"] == 7 and printed["trainer"]["max_epochs"] == 4
    cli = _cli("--config", str(first), "--model.lr=2", trainer_defaults={"max_epochs": 9, "logger": False})
    assert cli.model.kwargs["lr"] == 2.0 and cli.trainer.max_epochs == 4
    # Lightning's layout for a config given before the subcommand: the subcommand is its top key
    (tmp_path / "top.yaml").write_text(yaml.safe_dump({"fit": {"model": {"lr": 0.125}}}))
    with pytest.raises(SystemExit):
        FulmenCLI(Typed, args=["--config", str(tmp_path / "top.yaml"), "fit", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["lr"] == 0.125


def test_trainer_defaults_callbacks_are_added_to_the_configs(capsys):
    early_stop = pl.callbacks.EarlyStopping(monitor="val_loss")
    defaults = {"callbacks": [early_stop], "logger": False}
    cli = _cli("--trainer.max_epochs=2", trainer_defaults=defaults)
    assert early_stop in cli.trainer.callbacks and cli.trainer.max_epochs == 2
    # as in Lightning, the config's callbacks come first and the defaults' are added to them
    both = _cli("--trainer.callbacks=fulmen.callbacks.LearningRateMonitor", trainer_defaults=defaults)
    names = [type(c).__name__ for c in both.trainer.callbacks]
    assert early_stop in both.trainer.callbacks and names.index("LearningRateMonitor") < names.index("EarlyStopping")


def test_save_config_callback_does_not_overwrite_another_runs_config(tmp_path, capsys):
    def validate(**kwargs) -> None:
        FulmenCLI(BoringModel, BoringDataModule, seed_everything_default=False, args=[
            "validate", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--verbose=false", *kwargs.pop("args", [])],
            **kwargs)

    validate()
    first = (tmp_path / "config.yaml").read_text()
    assert yaml.safe_load(first)["trainer"]["limit_val_batches"] == 1
    with pytest.raises(RuntimeError, match=r"config.yaml to NOT exist: it holds the config of an earlier run"):
        validate(args=["--trainer.limit_val_batches=2"])
    assert (tmp_path / "config.yaml").read_text() == first  # kept
    validate(args=["--trainer.limit_val_batches=2"], save_config_kwargs={"overwrite": True})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["limit_val_batches"] == 2
    (tmp_path / "config.yaml").unlink()
    validate(save_config_callback=None)
    assert not (tmp_path / "config.yaml").exists()


def test_fulmen_main_usage_and_version(capsys):
    assert main([]) == 2 and "usage: fulmen" in capsys.readouterr().err  # a usage error: stderr, as argparse
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith(f"fulmen {pl.__version__}")
    assert main(["train"]) == 2 and "unknown command 'train'" in capsys.readouterr().err
