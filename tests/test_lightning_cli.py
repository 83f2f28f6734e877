"""LightningCLI (fulmen.cli) run for real: the scripts and configs in tests/cli_projects/, of the
kinds Lightning's CLI documentation shows, run in subprocesses. Each script writes what it built
and ran as JSON (tests/cli_projects/models.py: `report`) to $CLI_REPORT; the tests read that, the
files on disk and the printed configs. The parity tests run the same `pytorch_lightning` scripts
under the real pytorch-lightning and under fulmen's drop-in runner and compare `--print_config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("jsonargparse")

PROJECTS = Path(__file__).parent / "cli_projects"
CONFIGS = PROJECTS / "configs"
TIMEOUT = 300  # generous: two cores shared with other jobs


def run_cli(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
            cli_kwargs: dict | None = None) -> subprocess.CompletedProcess:
    """`python tests/cli_projects/<script> args...` in `cwd`, reporting to cwd/report.json."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PL_")}
    environ.update(CLI_REPORT=str(cwd / "report.json"), **(env or {}))
    if cli_kwargs is not None:
        environ["CLI_KWARGS"] = json.dumps(cli_kwargs)
    return subprocess.run([sys.executable, str(PROJECTS / script), *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def report_of(proc: subprocess.CompletedProcess, cwd: Path) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((cwd / "report.json").read_text())


def short_fit(root: Path) -> list[str]:
    return ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={root}"]


def saved_config(log_dir: str | Path, cwd: Path) -> dict:
    return yaml.safe_load((cwd / log_dir / "config.yaml").read_text())


# --- subcommands, hooks, seeding --------------------------------------------------------------


def test_fit_builds_the_classes_runs_the_hooks_and_saves_the_config(tmp_path):
    proc = run_cli("fixed_cli.py", "fit", *short_fit(tmp_path), "--model.lr=0.05", "--data.batch_size=2",
                   "--seed_everything=7", cwd=tmp_path)
    report = report_of(proc, tmp_path)
    assert (report["model"], report["datamodule"], report["subcommand"]) == ("Model", "Data", "fit")
    assert report["hparams"]["lr"] == 0.05 and report["batch_size"] == 2
    assert report["optimizers"] == [{"class": "SGD", "lr": 0.05}]  # the model's own configure_optimizers
    assert report["global_step"] == 2 and report["max_epochs"] == 1
    assert report["events"] == ["before_instantiate_classes", "after_instantiate_classes", "before_fit:0", "after_fit:2"]
    assert report["seed"] == 7
    assert report["callbacks"][0] == "SaveConfigCallback" and report["loggers"] == ["TensorBoardLogger"]
    assert Path(report["log_dir"]) == tmp_path / "lightning_logs" / "version_0"
    config = saved_config(report["log_dir"], tmp_path)
    assert config["model"]["lr"] == 0.05 and config["data"]["batch_size"] == 2
    assert config["seed_everything"] == 7 and config["trainer"]["max_epochs"] == 1
    assert "fit" not in config and "subcommand" not in config  # the subcommand's own config


def test_a_random_seed_is_drawn_and_recorded_in_the_saved_config(tmp_path):
    report = report_of(run_cli("fixed_cli.py", "fit", *short_fit(tmp_path), cwd=tmp_path), tmp_path)
    assert isinstance(report["seed"], int) and not isinstance(report["seed"], bool)
    assert saved_config(report["log_dir"], tmp_path)["seed_everything"] == report["seed"]


@pytest.mark.parametrize("subcommand, event", [
    ("validate", "after_validate:['val_loss']"), ("test", "after_test:['test_loss']"), ("predict", "before_predict"),
])
def test_validate_test_predict_run_their_loop(tmp_path, subcommand, event):
    limits = ["--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--trainer.limit_predict_batches=3",
              f"--trainer.default_root_dir={tmp_path}"]
    report = report_of(run_cli("fixed_cli.py", subcommand, *limits, cwd=tmp_path), tmp_path)
    assert report["subcommand"] == subcommand and report["global_step"] == 0
    assert report["events"][-1] == event
    assert report["predicted_batches"] == (3 if subcommand == "predict" else 0)
    assert (tmp_path / report["log_dir"] / "config.yaml").is_file()


def test_run_false_and_args_as_a_list_and_as_a_dict(tmp_path):
    proc = subprocess.run([sys.executable, str(PROJECTS / "run_false_cli.py")], cwd=tmp_path,
                          env={**os.environ, "CLI_ROOT": str(tmp_path)}, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    as_list, as_dict, dict_fit = (json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))
    # run=False: nothing ran before the script's own fit; no subcommand level in the config
    assert as_list == {"kind": "list", "subcommand": None, "before": 0, "after": 3, "lr": 0.25, "batch_size": 2,
                       "seed": 5}
    assert as_dict == {"kind": "dict", "after": 2, "tag": "from-dict", "max_epochs": 2, "seed": 9, "callbacks": []}
    assert dict_fit == {"kind": "dict-fit", "subcommand": "fit", "after": 2, "lr": 0.5}
    assert saved_config(".", tmp_path)["model"]["lr"] == 0.25  # the first CLI's, with logger=False


@pytest.mark.parametrize("subcommand", ["fit", "predict"])
def test_help_per_subcommand_lists_the_options(tmp_path, subcommand):
    proc = run_cli("fixed_cli.py", subcommand, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("--trainer.max_epochs", "--model.lr", "--data.batch_size", "--ckpt_path", "--seed_everything"):
        assert option in proc.stdout
    assert ("--optimizer" in proc.stdout) and ("--lr_scheduler" in proc.stdout)


def test_help_lists_the_subcommands(tmp_path):
    proc = run_cli("fixed_cli.py", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "{fit,validate,test,predict}" in proc.stdout


# --- classes named in the config ----------------------------------------------------------------


def test_class_paths_callbacks_and_logger_from_two_merged_configs(tmp_path):
    proc = run_cli("any_cli.py", "fit", "--config", str(CONFIGS / "any_model.yaml"),
                   "--config", str(CONFIGS / "override.yaml"), f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path)
    report = report_of(proc, tmp_path)
    assert (report["model"], report["datamodule"], report["batch_size"]) == ("OtherModel", "Data", 8)
    # override.yaml came second: its depth and max_epochs win; the first config's tag stays
    assert report["hparams"]["depth"] == 5 and report["hparams"]["tag"] == "first"
    assert report["max_epochs"] == 2 and report["global_step"] == 4
    assert report["callbacks"][:3] == ["EarlyStopping", "LearningRateMonitor", "SaveConfigCallback"]
    assert report["loggers"] == ["CSVLogger"]
    log_dir = tmp_path / "csv_logs" / "run" / "version_0"
    assert report["log_dir"] == "csv_logs/run/version_0" and (log_dir / "metrics.csv").is_file()
    config = saved_config(log_dir, tmp_path)
    assert config["model"] == {"class_path": "models.OtherModel", "init_args": {
        "depth": 5, "width": 32, "lr": 0.1, "tag": "first", "batch_size": 1, "num_classes": 2}}
    assert [c["class_path"] for c in config["trainer"]["callbacks"]] == [
        "fulmen.callbacks.EarlyStopping", "fulmen.callbacks.LearningRateMonitor"]
    assert config["trainer"]["callbacks"][0]["init_args"]["patience"] == 5
    assert config["trainer"]["logger"]["class_path"] == "fulmen.loggers.CSVLogger"


def test_configs_merge_in_the_order_given_and_the_command_line_after_them(tmp_path):
    (tmp_path / "a.yaml").write_text("trainer:\n  max_epochs: 3\nmodel:\n  tag: a\n")
    (tmp_path / "b.yaml").write_text("trainer:\n  max_epochs: 4\n")
    for order, epochs in ((("a.yaml", "b.yaml"), 4), (("b.yaml", "a.yaml"), 3)):
        proc = run_cli("fixed_cli.py", "fit", "-c", order[0], "--config", order[1], "--model.lr=0.3", "--print_config",
                       cwd=tmp_path)
        config = yaml.safe_load(proc.stdout)
        assert (config["trainer"]["max_epochs"], config["model"]["tag"], config["model"]["lr"]) == (epochs, "a", 0.3)
    # an option before --config is overridden by it, as jsonargparse reads left to right
    proc = run_cli("fixed_cli.py", "fit", "--trainer.max_epochs=9", "-c", "a.yaml", "--print_config", cwd=tmp_path)
    assert yaml.safe_load(proc.stdout)["trainer"]["max_epochs"] == 3


def test_short_class_names_on_the_command_line(tmp_path):
    proc = run_cli("subclass_cli.py", "fit", *short_fit(tmp_path), "--model=OtherModel", "--model.depth=3",
                   "--data=Data", "--data.batch_size=16", "--trainer.callbacks+=EarlyStopping",
                   "--trainer.callbacks.monitor=val_loss", "--trainer.callbacks+=fulmen.callbacks.LearningRateMonitor",
                   "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={tmp_path / 'csv'}", cwd=tmp_path)
    report = report_of(proc, tmp_path)
    assert (report["model"], report["hparams"]["depth"], report["datamodule"], report["batch_size"]) == (
        "OtherModel", 3, "Data", 16)
    assert report["callbacks"][:2] == ["EarlyStopping", "LearningRateMonitor"] and report["loggers"] == ["CSVLogger"]
    assert (tmp_path / "csv" / "lightning_logs" / "version_0" / "metrics.csv").is_file()


def test_print_config_and_skip_null(tmp_path):
    full = run_cli("fixed_cli.py", "fit", "--model.tag=printed", "--print_config", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    assert full.stdout.startswith("# fulmen==")
    config = yaml.safe_load(full.stdout)
    assert config["model"]["tag"] == "printed" and config["trainer"]["max_epochs"] is None
    assert config["trainer"]["enable_progress_bar"] is False  # the script's trainer_defaults
    assert not (tmp_path / "report.json").exists()  # printed, then exited before building anything
    skipped = yaml.safe_load(run_cli("fixed_cli.py", "fit", "--print_config=skip_null", cwd=tmp_path).stdout)
    assert "max_epochs" not in skipped["trainer"] and "ckpt_path" not in skipped
    assert skipped["model"]["tag"] == "model"


def test_trainer_defaults_and_seed_everything_default(tmp_path):
    kwargs = {"trainer_defaults": {"max_steps": 3, "limit_val_batches": 0, "enable_progress_bar": False},
              "seed_everything_default": 123}
    report = report_of(run_cli("fixed_cli.py", "fit", f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path,
                               cli_kwargs=kwargs), tmp_path)
    assert report["max_steps"] == 3 and report["global_step"] == 3 and report["seed"] == 123
    # the command line wins over both
    proc = run_cli("fixed_cli.py", "fit", "--trainer.max_steps=1", "--seed_everything=false", "--print_config",
                   cwd=tmp_path, cli_kwargs=kwargs)
    config = yaml.safe_load(proc.stdout)
    assert config["trainer"]["max_steps"] == 1 and config["seed_everything"] is False


# --- the saved config ---------------------------------------------------------------------------


def test_an_existing_config_is_not_overwritten_unless_asked(tmp_path):
    args = ["fit", *short_fit(tmp_path), "--trainer.logger=false"]  # log_dir is default_root_dir itself
    report_of(run_cli("fixed_cli.py", *args, "--model.tag=first", cwd=tmp_path), tmp_path)
    assert saved_config(tmp_path, tmp_path)["model"]["tag"] == "first"
    refused = run_cli("fixed_cli.py", *args, "--model.tag=second", cwd=tmp_path)
    assert refused.returncode == 1
    assert "RuntimeError: SaveConfigCallback expected" in refused.stderr and "to NOT exist" in refused.stderr
    assert saved_config(tmp_path, tmp_path)["model"]["tag"] == "first"
    replaced = run_cli("fixed_cli.py", *args, "--model.tag=third", cwd=tmp_path,
                       cli_kwargs={"save_config_kwargs": {"overwrite": True}})
    report_of(replaced, tmp_path)
    assert saved_config(tmp_path, tmp_path)["model"]["tag"] == "third"


def test_autoresume_into_the_same_version_keeps_its_config(tmp_path):
    args = ["fit", *short_fit(tmp_path), "--seed_everything=3", "--ckpt_path=last"]
    first = report_of(run_cli("fixed_cli.py", *args, cwd=tmp_path), tmp_path)
    saved = (Path(first["log_dir"]) / "config.yaml").read_text()
    again = report_of(run_cli("fixed_cli.py", *args, cwd=tmp_path), tmp_path)
    assert again["log_dir"] == first["log_dir"]  # the same run, resumed
    assert (Path(again["log_dir"]) / "config.yaml").read_text() == saved
    # the same version folder with another config is another run's file: refused, as Lightning
    changed = run_cli("fixed_cli.py", *args, "--model.tag=other", cwd=tmp_path)
    assert changed.returncode == 1 and "to NOT exist" in changed.stderr


def test_no_config_saved_with_save_config_callback_none(tmp_path):
    report = report_of(run_cli("fixed_cli.py", "fit", *short_fit(tmp_path), cwd=tmp_path,
                               cli_kwargs={"save_config_callback": None}), tmp_path)
    assert "SaveConfigCallback" not in report["callbacks"]
    assert not (Path(report["log_dir"]) / "config.yaml").exists()


# --- optimizers and schedulers ------------------------------------------------------------------


def test_optimizer_and_plateau_scheduler_from_a_config(tmp_path):
    proc = run_cli("fixed_cli.py", "fit", *short_fit(tmp_path), "--config", str(CONFIGS / "optimizers.yaml"),
                   cwd=tmp_path)
    report = report_of(proc, tmp_path)
    assert report["optimizers"] == [{"class": "Adam", "lr": 0.01}]
    assert report["schedulers"] == [{"class": "ReduceLROnPlateau", "monitor": "val_loss"}]
    assert "`Model.configure_optimizers` will be overridden by `CLI.configure_optimizers`" in proc.stderr
    config = saved_config(report["log_dir"], tmp_path)
    assert config["lr_scheduler"]["class_path"] == "fulmen.cli.ReduceLROnPlateau"
    assert config["lr_scheduler"]["init_args"]["factor"] == 0.5


def test_optimizer_and_step_scheduler_on_the_command_line(tmp_path):
    proc = run_cli("fixed_cli.py", "fit", *short_fit(tmp_path), "--optimizer=Adam", "--optimizer.lr=0.04",
                   "--lr_scheduler=StepLR", "--lr_scheduler.step_size=1", "--lr_scheduler.gamma=0.5", cwd=tmp_path)
    report = report_of(proc, tmp_path)
    # one epoch done: StepLR stepped once
    assert report["optimizers"] == [{"class": "Adam", "lr": 0.02}]
    assert report["schedulers"] == [{"class": "StepLR", "monitor": None}]


def test_dependency_injection_with_optimizer_callable(tmp_path):
    proc = run_cli("injected_cli.py", "fit", *short_fit(tmp_path), "--config", str(CONFIGS / "injected.yaml"),
                   cwd=tmp_path)
    report = report_of(proc, tmp_path)
    assert report["optimizers"] == [{"class": "SGD", "lr": 0.3}]
    assert report["schedulers"] == [{"class": "StepLR", "monitor": None}]
    short = report_of(run_cli("injected_cli.py", "fit", *short_fit(tmp_path), "--model.optimizer=Adagrad",
                              "--model.optimizer.lr=0.2", cwd=tmp_path), tmp_path)
    # the __init__'s default scheduler: ConstantLR holds the lr at a third for its first 5 steps
    assert short["schedulers"] == [{"class": "ConstantLR", "monitor": None}]
    assert short["optimizers"][0]["class"] == "Adagrad" and short["optimizers"][0]["lr"] == pytest.approx(0.2 / 3)


def test_linked_arguments_and_optimizer_groups_linked_to_the_model(tmp_path):
    proc = run_cli("linked_cli.py", "fit", *short_fit(tmp_path), "--data.batch_size=3", "--data.classes=a,b,c",
                   "--optimizer.lr=0.02", "--lr_scheduler.step_size=1", "--lr_scheduler.gamma=0.5", cwd=tmp_path)
    report = report_of(proc, tmp_path)
    assert report["hparams"]["batch_size"] == 3  # linked when parsed
    assert report["hparams"]["num_classes"] == 3 and report["out_features"] == 3  # linked once Data was built
    assert report["optimizer_init"]["class_path"] == "torch.optim.adam.Adam"
    assert report["optimizer_init"]["init_args"]["lr"] == 0.02
    assert report["scheduler_init"]["init_args"] == {"step_size": 1, "gamma": 0.5, "last_epoch": -1}
    assert report["optimizers"] == [{"class": "Adam", "lr": 0.01}]  # built by the model's instantiate_class
    printed = yaml.safe_load(run_cli("linked_cli.py", "fit", "--data.batch_size=3", "--print_config",
                                     cwd=tmp_path).stdout)
    assert "batch_size" not in printed["model"] and "optimizer_init" not in printed["model"]  # link targets
    assert printed["optimizer"]["lr"] == 0.001


# --- parser_kwargs -----------------------------------------------------------------------------


def test_default_config_files_and_environment_variables(tmp_path):
    (tmp_path / "defaults.yaml").write_text("trainer:\n  max_steps: 7\nmodel:\n  tag: from-default-file\n")
    kwargs = {"parser_kwargs": {"default_env": True, "fit": {"default_config_files": [str(tmp_path / "defaults.yaml")]}}}
    env = {"PL_FIT__TRAINER__MAX_EPOCHS": "4", "PL_FIT__MODEL__LR": "0.5"}
    proc = run_cli("fixed_cli.py", "fit", "--print_config", cwd=tmp_path, env=env, cli_kwargs=kwargs)
    config = yaml.safe_load(proc.stdout)
    assert config["trainer"]["max_epochs"] == 4 and config["model"]["lr"] == 0.5
    assert config["trainer"]["max_steps"] == 7 and config["model"]["tag"] == "from-default-file"
    # the command line wins over the environment
    report = report_of(run_cli("fixed_cli.py", "fit", *short_fit(tmp_path), cwd=tmp_path, env=env,
                               cli_kwargs=kwargs), tmp_path)
    assert report["max_epochs"] == 1 and report["max_steps"] == 7 and report["hparams"]["lr"] == 0.5
    # without default_env the variable is ignored
    plain = yaml.safe_load(run_cli("fixed_cli.py", "fit", "--print_config", cwd=tmp_path, env=env).stdout)
    assert plain["trainer"]["max_epochs"] is None


def test_cli_lightning_logo_prints_a_logo(capsys):
    from fulmen.cli import cli_lightning_logo

    cli_lightning_logo()
    printed = capsys.readouterr().out
    assert len([line for line in printed.splitlines() if line.strip()]) >= 3


# --- errors: jsonargparse's message, a suggestion, status 2, no traceback -----------------------


@pytest.mark.parametrize("script, args, expected", [
    ("fixed_cli.py", ["--trainer.max_epoks=3"],
     "error: unrecognized arguments: --trainer.max_epoks=3\nDid you mean --trainer.max_epochs?"),
    ("fixed_cli.py", ["--trainer.max_epochs=abc"], "Expected a <class 'int'>"),
    ("any_cli.py", [], "error: the following arguments are required: fit.model"),
    ("any_cli.py", ["--model=models.Modle"], "module 'models' has no attribute 'Modle'"),
    ("subclass_cli.py", ["--model=OtherModle"], "Given value: OtherModle\nDid you mean OtherModel?"),
    ("subclass_cli.py", ["--trainer.callbacks+=EarlyStoping"], "Did you mean EarlyStopping?"),
    ("subclass_cli.py", ["--trainer.logger=CSVLoger"], "Did you mean CSVLogger?"),
])
def test_bad_command_lines_end_in_one_error_with_status_2(tmp_path, script, args, expected):
    proc = run_cli(script, "fit", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "report.json").exists()


def test_a_bad_class_path_in_a_config_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  class_path: models.OtherModle\n")
    proc = run_cli("subclass_cli.py", "fit", "--config", str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "OtherModle" in proc.stderr and "Traceback" not in proc.stderr


# --- parity with pytorch-lightning 2.6.6 ------------------------------------------------------

LIGHTNING = PROJECTS / "lightning"

# (name, function of pl_scripts.py, args); --print_config is in each
PARITY_CASES = [
    ["plain", "fixed", ["fit", "--print_config"]],
    ["options", "fixed", ["fit", "--model.lr=0.3", "--data.batch_size=3", "--optimizer=Adam", "--lr_scheduler=StepLR",
                          "--lr_scheduler.step_size=2", "--seed_everything=5", "--print_config"]],
    ["validate", "fixed", ["validate", "--trainer.limit_val_batches=0.5", "--print_config"]],
    ["skip_null", "fixed", ["predict", "--print_config=skip_null"]],
    ["config", "any_classes", ["fit", "--config", str(LIGHTNING / "pl_config.yaml"), "--print_config"]],
    ["short", "subclasses", ["fit", "--model=OtherModel", "--model.depth=3", "--data=Data",
                             "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val_loss",
                             "--trainer.callbacks+=LearningRateMonitor", "--trainer.logger=CSVLogger",
                             "--trainer.logger.save_dir=logs", "--trainer.logger.flush_logs_every_n_steps=7",
                             "--print_config"]],
]

# The differences allowed between the two printed configs, each for a reason:
# - the first line names the package that printed it (`# pytorch_lightning==2.6.6` / `# fulmen==...`);
# - a class_path names Lightning's class under Lightning and fulmen's class of the same name at the
#   same place under fulmen (pytorch_lightning.callbacks.EarlyStopping -> fulmen.callbacks.EarlyStopping;
#   test_lightning_cli_import_paths_are_fulmens checks that the alias maps one to the other);
# - arguments only fulmen has, with their defaults: Trainer(preemption_signals) (the signals that
#   checkpoint and stop a run) and ModelCheckpoint(background_landing).
FULMEN_ONLY = {"Trainer": {"preemption_signals"}, "ModelCheckpoint": {"background_landing"}}


def _normalised(config, owner: str = "Trainer"):
    """`config` with Lightning's class paths spelt as fulmen's and fulmen-only arguments removed."""
    if isinstance(config, list):
        return [_normalised(item, owner) for item in config]
    if not isinstance(config, dict):
        return config
    if "class_path" in config:
        path = config["class_path"]
        for lightning_prefix in ("pytorch_lightning.", "lightning.pytorch."):
            if path.startswith(lightning_prefix):
                path = "fulmen." + path[len(lightning_prefix):]
        owner = path.rpartition(".")[2]
        return {**config, "class_path": path, "init_args": _normalised(config.get("init_args", {}), owner)}
    out = {}
    for key, value in config.items():
        if key in FULMEN_ONLY.get(owner, ()):
            continue
        out[key] = _normalised(value, "Trainer" if key == "trainer" else owner)
    return out


def test_print_config_is_the_same_under_lightning_and_under_fulmen(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(PARITY_CASES))
    script = str(LIGHTNING / "pl_scripts.py")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PL_")}
    runs = {}
    for runtime, command in (("lightning", [sys.executable, script]),
                             ("fulmen", [sys.executable, "-m", "fulmen", "run", script])):
        proc = subprocess.run([*command, str(spec)], cwd=tmp_path, env=environ, capture_output=True, text=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        runs[runtime] = json.loads(proc.stdout.splitlines()[-1])
    for name, _, _ in PARITY_CASES:
        lightning, fulmen = runs["lightning"][name], runs["fulmen"][name]
        assert lightning.startswith("# pytorch_lightning==2.6.6\n") and fulmen.startswith("# fulmen==")
        lightning_config, fulmen_config = yaml.safe_load(lightning), yaml.safe_load(fulmen)
        assert isinstance(lightning_config, dict) and len(lightning_config) > 3, name
        assert _normalised(fulmen_config) == _normalised(lightning_config), name
    # the fulmen-only arguments are there, with their defaults
    fulmen_plain = yaml.safe_load(runs["fulmen"]["plain"])
    assert fulmen_plain["trainer"]["preemption_signals"] == [15, 10]
    # and the cases show what they are meant to
    config = yaml.safe_load(runs["lightning"]["config"])
    assert [c["class_path"] for c in config["trainer"]["callbacks"]] == [
        "pytorch_lightning.callbacks.EarlyStopping", "pytorch_lightning.callbacks.ModelCheckpoint"]
    assert config["trainer"]["logger"][1]["init_args"]["flush_secs"] == 120  # SummaryWriter's, through **kwargs
    options = yaml.safe_load(runs["fulmen"]["options"])
    assert options["data"]["batch_size"] == 3 and "batch_size" not in options["model"]  # a link target
    assert options["optimizer"]["class_path"] == "torch.optim.Adam" and options["seed_everything"] == 5


def test_lightning_cli_import_paths_are_fulmens(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fulmen", "run", str(LIGHTNING / "alias_names.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    for group, names in found.items():
        assert all(names.values()), (group, names)
    assert len(found["lightning.pytorch.cli"]) == 8
