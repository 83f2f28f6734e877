"""Issue 13, part 5: every command fulmen prints runs as typed, CLI misuses end in one error line,
the `fulmen new` project has a problem to learn (EarlyStopping fires), the report's epochs agree,
and ModelCheckpoint's scores are float32 like Lightning's."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen import commands, report
from fulmen.callbacks import ModelCheckpoint
from fulmen.checkpoint import load_checkpoint
from fulmen.template import new_project
from fulmen.demos import BoringModel, RandomDataset

# --- commands as typed ---------------------------------------------------------------------------


@pytest.fixture
def fake_venv(tmp_path, monkeypatch):
    """This Python seen as running from tmp_path/.venv, not activated (its bin not on PATH)."""
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "tensorboard", "fulmen"):
        (venv / "bin" / name).write_text("#!/bin/sh\n")
        (venv / "bin" / name).chmod(0o755)
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    return venv


def test_commands_name_the_venv_bin_when_it_is_not_active(fake_venv, tmp_path, monkeypatch):
    typed = commands.command_as_typed
    assert typed("tensorboard", "--logdir", "lightning_logs/") == ".venv/bin/tensorboard --logdir lightning_logs/"
    assert typed("fulmen", "report", "my runs") == ".venv/bin/fulmen report 'my runs'"
    (tmp_path / "proj").mkdir()
    assert typed("python", "train.py", cwd=tmp_path / "proj") == "../.venv/bin/python train.py"  # after `cd proj`
    far = tmp_path / "a" / "b"
    far.mkdir(parents=True)
    assert typed("python", cwd=far) == f"{fake_venv}/bin/python"
    assert typed("ls", "-l") == "ls -l"  # not in the venv: PATH's
    monkeypatch.setenv("PATH", f"{fake_venv / 'bin'}:/usr/bin:/bin")  # activated
    assert typed("tensorboard", "--logdir", "x") == "tensorboard --logdir x"
    monkeypatch.setattr(sys, "base_prefix", str(fake_venv))  # not a venv at all
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert typed("tensorboard") == "tensorboard"


def test_fulmen_new_prints_commands_that_run_and_the_project_stops_early(tmp_path):
    """`fulmen new`'s Next line, typed as printed in a shell whose PATH lacks the venv; the project's
    synthetic problem is not solved at once: EarlyStopping ends the run with val_acc near 0.85."""
    bin_dir = str(Path(sys.prefix) / "bin")
    env = {**os.environ, "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_dir)}
    env.pop("VIRTUAL_ENV", None)
    made = subprocess.run([sys.executable, "-m", "fulmen", "new", "proj"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    next_line = re.search(r"^Next: (.+)$", made.stdout, re.MULTILINE).group(1)
    if sys.prefix != sys.base_prefix:
        assert "../.venv/bin/python" in next_line or f"{sys.prefix}/bin/python" in next_line, next_line
    assert "--config config.yaml" in next_line and "-m pytest" in next_line
    readme = (tmp_path / "proj" / "README.md").read_text()
    assert "{{" not in readme and ("source " in readme) == (sys.prefix != sys.base_prefix)

    ran = subprocess.run(["bash", "-c", next_line + " -q -p no:cacheprovider"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "4 passed" in ran.stdout
    run = report.read_run(tmp_path / "proj" / "runs" / "lightning_logs" / "version_0")  # TensorBoard's events
    val_acc = [v for _, v in run.metrics["val_acc"]]
    assert len(val_acc) < 20, "EarlyStopping never fired: max_epochs=20 ran out"
    assert 0.75 <= max(val_acc) <= 0.95 and 0.7 <= val_acc[-1] <= 0.95, val_acc  # was 1.000 after one epoch
    assert run.monitor == "val_acc" and 0.75 <= max(c["score"] for c in run.checkpoints if c["score"]) <= 0.95


# --- CLI misuses -----------------------------------------------------------------------------------


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    """A `fulmen new` project as the current folder; its model/data modules are forgotten afterwards."""
    project = new_project("proj", tmp_path)
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = {name: sys.modules.get(name) for name in ("model", "data", "train")}
    yield project
    for name, module in before.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


QUICK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_fulmen_fit_runs_the_config_fulmen_new_writes(project_dir, capsys):
    # was: TypeError: argument of type 'NoneType' is not iterable (the config named no class_path)
    assert commands.main(["fit", "--config", "config.yaml", *QUICK]) == 0
    run_dir = project_dir / "runs" / "lightning_logs" / "version_0"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


# jsonargparse reports a bad option, value, config or class_path (usage, then one "error:" line and
# its details); the `fulmen` command reports the Trainer's and the checkpoint loader's errors in one
# "fulmen: error:" line. Every case: status 2, no traceback.
MISUSES = [
    (["bogus"], "unknown command 'bogus'"),
    ([], "usage: fulmen"),
    (["fit", "--config", "missing.yaml"], "File does not exist: '"),
    (["fit", "--config", "bad.yaml"], "line 3, column 1"),
    (["fit", "--config", "list.yaml"], "Unexpected config: - a"),
    (["fit", "--config", "config.yaml", "--trainer.max_epocs=1"], "Did you mean --trainer.max_epochs?"),
    (["fit", "--config", "config.yaml", "--trainer.max_epochs=abc"], "Expected a <class 'int'>"),
    (["fit", "--config", "config.yaml", "--model.lr=fast"], "Expected a <class 'float'>. Got value: fast"),
    (["fit", "--config", "config.yaml", "--model.class_path=model.Nope"], "module 'model' has no attribute 'Nope'"),
    (["fit", "--model.lr=1"], "class_path 'fulmen.LightningModule':\n        Option 'lr' is not accepted"),
    (["fit"], "the following arguments are required: fit.model"),
    (["fit", "--config"], "argument -c/--config: expected one argument"),
    (["fit", "--config", "config.yaml", "extra"], "unrecognized arguments: extra"),
    (["fit", "--config", "typo_callback.yaml"], "Option 'patiense' is not accepted"),
    (["fit", "--config", "config.yaml", "--trainer.precision=13"], "fulmen: error: Unknown precision. Received: precision="),
    (["fit", "--config", "config.yaml", "--ckpt_path=nope.ckpt"], "fulmen: error: Checkpoint file not found"),
    (["test", "--config", "config.yaml", "--ckpt_path=best"], 'fulmen: error: ckpt_path="best" needs a ModelCheckpoint'),
    (["new"], "usage: fulmen new NAME"),
    (["report"], "the following arguments are required: run_dir"),
]


@pytest.mark.parametrize(("argv", "expected"), MISUSES, ids=[" ".join(a) or "(none)" for a, _ in MISUSES])
def test_each_cli_misuse_ends_in_one_error_with_status_2(project_dir, capsys, argv, expected):
    (project_dir / "bad.yaml").write_text("trainer:\n  max_epochs: [1\n")
    (project_dir / "list.yaml").write_text("- a\n- b\n")
    (project_dir / "typo_callback.yaml").write_text(
        "model:\n  class_path: model.Classifier\ntrainer:\n  callbacks:\n    - class_path: fulmen.callbacks.EarlyStopping\n"
        "      init_args: {monitor: val_loss, patiense: 3}\n")
    try:
        status = commands.main(argv)
    except SystemExit as exit_info:  # jsonargparse's and argparse's usage errors exit 2 themselves
        status = exit_info.code
    assert status == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert len(re.findall(r"^(?:fulmen(?: \w+)?: )?error: ", err, re.MULTILINE)) <= 1, err  # one report, not two


def test_help_variants_exit_0(project_dir, capsys):
    assert commands.main(["--help"]) == 0 and "usage: fulmen" in capsys.readouterr().out
    assert commands.main(["help"]) == 0 and "usage: fulmen" in capsys.readouterr().out
    for argv in (["fit", "--help"], ["fit", "-h"], ["fit", "--config", "config.yaml", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            commands.main(argv)
        assert exit_info.value.code == 0, argv
        assert "--trainer.max_epochs" in capsys.readouterr().out


def test_the_projects_script_rejects_a_config_naming_another_class(project_dir, capsys):
    sys.path.insert(0, str(project_dir))
    from train import main as train_main

    with pytest.raises(SystemExit) as exit_info:
        train_main(["fit", "--config", "config.yaml", "--model.class_path=data.SyntheticDataModule"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # subclass mode: any subclass of Classifier, nothing else
    assert "Import path data.SyntheticDataModule does not correspond to a subclass of Classifier" in err


# --- fulmen report: epochs counted and indexed alike --------------------------------------------


def test_report_summary_and_checkpoint_rows_name_the_same_epoch(tmp_path, capsys, monkeypatch):
    trainer = pl.Trainer(max_epochs=3, default_root_dir=tmp_path, callbacks=[ModelCheckpoint(save_last=True)],
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1)
    trainer.fit(BoringModel(), DataLoader(RandomDataset(32, 8), batch_size=4),
                DataLoader(RandomDataset(32, 4), batch_size=4))
    run_dir = Path(trainer.log_dir)
    rows = {row["file"]: row for row in report.read_run(run_dir).checkpoints}
    assert rows["last.ckpt"]["epoch"] == 2
    page = report.render_html(report.read_run(run_dir))
    # was: "epochs (last checkpoint)" 3 in the summary beside epoch 2 in the last.ckpt row
    assert "<th>last checkpoint&#x27;s epoch</th><td>2 (from 0: the 3rd)</td>" in page
    assert "<th>epoch (from 0)</th>" in page
    assert re.search(r"<td>last\.ckpt</td>\s*<td class='num'>2</td>", page)

    # without matplotlib (the README's [examples] set-up) the command says what to install, as typed
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    assert report.main([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "needs the matplotlib package" in err and "pip install 'fulmen[report]'" in err


# --- ModelCheckpoint scores: float32, as in Lightning ---------------------------------------------


def test_best_model_score_is_float32_and_survives_a_round_trip(tmp_path):
    checkpoint = ModelCheckpoint(monitor="valid_loss", save_top_k=2)

    class Logged(BoringModel):
        def validation_step(self, batch, batch_idx):
            loss = self.step(batch)
            self.log("valid_loss", loss)
            return {"x": loss}

    trainer = pl.Trainer(max_epochs=3, default_root_dir=tmp_path, callbacks=[checkpoint], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         limit_train_batches=2, limit_val_batches=2)
    trainer.fit(Logged(), DataLoader(RandomDataset(32, 8), batch_size=4), DataLoader(RandomDataset(32, 8), batch_size=4))
    # was float64; Lightning keeps the logged metric's dtype (float32)
    assert checkpoint.best_model_score.dtype == torch.float32
    assert checkpoint.kth_value.dtype == torch.float32 and checkpoint.current_score.dtype == torch.float32
    assert {v.dtype for v in checkpoint.best_k_models.values()} == {torch.float32}
    assert len(checkpoint.best_k_models) == 2

    saved = load_checkpoint(checkpoint.best_model_path)
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint"))
    restored = ModelCheckpoint(monitor="valid_loss", save_top_k=2, dirpath=checkpoint.dirpath)
    restored.load_state_dict(state)
    assert restored.best_model_score.dtype == torch.float32
    assert {k: float(v) for k, v in restored.best_k_models.items()} == pytest.approx(
        {k: float(v) for k, v in state["best_k_models"].items()})


def test_readme_shows_venv_commands_after_the_set_up():
    """The README's set-up leaves .venv unactivated: the commands it shows next name .venv/bin/."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    setup = readme[readme.index("## Set up a fresh machine"):readme.index("## Quick start")]
    blocks = re.findall(r"```bash\n(.*?)```", setup, re.S)
    commands_shown = [shlex.split(part.split("#")[0])[0] for block in blocks for line in block.splitlines()
                      for part in line.split("&&") if part.strip()]
    assert commands_shown and all(c.startswith(".venv/bin/") or c in ("python3", "bash") for c in commands_shown), \
        commands_shown
    assert ".venv/bin/tensorboard --logdir" in setup
