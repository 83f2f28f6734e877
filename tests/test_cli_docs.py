"""Every example in docs/cli.md runs as shown.

The page marks its code blocks with HTML comments (invisible when rendered):

- `<!-- example: NAME -->` starts an example, run in a folder of its own; `... after BASE` first
  writes BASE's files there too;
- `<!-- file: PATH -->`: the next block is written to PATH;
- `<!-- run -->`: the next (bash) block runs as one script in the folder, as typed (`python` and
  `fulmen` are this environment's), and must exit 0; `<!-- run: status=N -->`: each of its lines
  runs alone and must exit N;
- `<!-- output -->`: every line of the next block appears in what the run before printed (`...`
  stands for any text).

Each example has a check below that asserts what it built and ran (files, saved configs,
checkpoints), and every code block of the page must carry a marker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
MARKER = re.compile(r"<!-- (example|file|run|output)(?:: (.*?))? -->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass
class Example:
    name: str
    base: str | None
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, argument, block text)


def _parse(text: str) -> tuple[dict[str, Example], list[str]]:
    """The examples, and the first lines of the code blocks no marker claims."""
    examples: dict[str, Example] = {}
    current: Example | None = None
    pending: tuple[str, str] | None = None
    unclaimed: list[str] = []
    position = 0
    for fence in FENCE.finditer(text):
        for marker in MARKER.finditer(text, position, fence.start()):
            kind, argument = marker.group(1), marker.group(2) or ""
            if kind == "example":
                name, _, base = argument.partition(" after ")
                current = examples[name] = Example(name, base or None)
            else:
                pending = (kind, argument)
        position = fence.end()
        if pending is None or current is None:
            unclaimed.append(fence.group(2).splitlines()[0] if fence.group(2) else "(empty block)")
            continue
        current.steps.append((*pending, fence.group(2)))
        pending = None
    return examples, unclaimed


EXAMPLES, UNCLAIMED = _parse(DOC.read_text(encoding="utf-8"))


def _files(example: Example) -> list[tuple[str, str]]:
    inherited = _files(EXAMPLES[example.base]) if example.base else []
    return inherited + [(argument, block) for kind, argument, block in example.steps if kind == "file"]


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # `python` and `fulmen` as the README's set-up has them
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]), "COLUMNS": "100"}


def _run_example(example: Example, folder: Path) -> list[str]:
    """Write its files and run its blocks; returns each run's output (stdout and stderr)."""
    for path, block in _files(example):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(block, encoding="utf-8")
    outputs: list[str] = []
    for kind, argument, block in example.steps:
        if kind == "run":
            status = int(argument.partition("status=")[2] or 0)
            scripts = [block] if status == 0 else [line for line in block.splitlines() if line.strip()]
            printed = ""
            for script in scripts:
                proc = subprocess.run(["bash", "-ec", script], cwd=folder, env=_env(), capture_output=True,
                                      text=True, timeout=600)
                printed += proc.stdout + proc.stderr
                assert proc.returncode == status, f"{script!r} exited {proc.returncode}:\n{printed[-4000:]}"
                assert status == 1 or "Traceback" not in proc.stderr, printed[-4000:]
            outputs.append(printed)
        elif kind == "output":
            missing = [line for line in block.splitlines() if line.strip() and not re.search(
                ".*?".join(re.escape(piece) for piece in line.split("...")), outputs[-1])]
            assert not missing, f"not printed: {missing}\n{outputs[-1][-4000:]}"
    return outputs


def _config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _versions(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "lightning_logs").iterdir())


# --- what each example must have built and run ------------------------------------------------------


def check_new(folder: Path, outputs: list[str]) -> None:
    run_dir = folder / "digits_mlp" / "runs" / "lightning_logs" / "version_0"
    assert _config(run_dir)["model"]["class_path"] == "model.Classifier"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert re.search(r"\b4 passed\b", outputs[0]), outputs[0][-2000:]


def check_train(folder: Path, outputs: list[str]) -> None:
    logs = folder / "lightning_logs"
    # fit, fit, fit --config, validate; --help and --print_config run nothing
    assert _versions(folder) == ["version_0", "version_1", "version_2", "version_3"]
    first = _config(logs / "version_0")
    assert first["model"] == {"input_dim": 8, "hidden_dim": 16, "lr": 0.05} and first["trainer"]["max_epochs"] == 2
    assert isinstance(first["seed_everything"], int)  # drawn and recorded
    assert (logs / "version_0" / "checkpoints" / "epoch=1-step=6.ckpt").is_file()  # 48 samples / 16 = 3 steps
    assert _config(logs / "version_1")["data"] == {"num_features": 8, "num_samples": 64, "batch_size": 32}
    assert "--trainer.max_epochs MAX_EPOCHS" in outputs[0] and "--model.lr LR" in outputs[0]
    printed = yaml.safe_load((folder / "config.yaml").read_text())
    assert printed["trainer"]["max_epochs"] == 2 and printed["seed_everything"] is True
    from_file = _config(logs / "version_2")
    assert {k: from_file[k] for k in ("model", "data", "trainer")} == {k: printed[k] for k in ("model", "data", "trainer")}
    assert _config(logs / "version_3")["ckpt_path"] == "lightning_logs/version_0/checkpoints/epoch=1-step=6.ckpt"
    assert re.search(r"val_loss\s+\d", outputs[0])  # validate's results table


def check_config(folder: Path, outputs: list[str]) -> None:
    logs = folder / "logs" / "lightning_logs"  # the CSVLogger's save_dir
    assert sorted(p.name for p in logs.iterdir()) == ["version_0", "version_1"]
    run = logs / "version_0"
    assert (run / "metrics.csv").is_file() and (run / "hparams.yaml").is_file()
    saved = _config(run)
    assert saved["seed_everything"] == 42 and saved["model"]["hidden_dim"] == 32 and saved["data"]["batch_size"] == 8
    assert [c["class_path"] for c in saved["trainer"]["callbacks"]] == [
        "fulmen.callbacks.ModelCheckpoint", "fulmen.callbacks.EarlyStopping"]
    assert [re.fullmatch(r"epoch=\d-val_loss=\d+\.\d{3}\.ckpt", p.name) is not None
            for p in (run / "checkpoints").iterdir()] == [True]
    merged = _config(logs / "version_1")
    assert merged["trainer"]["max_epochs"] == 1 and merged["model"] == {"input_dim": 8, "hidden_dim": 8, "lr": 0.01}
    assert merged["data"]["batch_size"] == 8 and merged["seed_everything"] == 42  # from the first file
    assert "max_epochs: 1" in outputs[0] and "ckpt_path:" not in outputs[0]  # skip_null: no ckpt_path: null


def check_optimizer(folder: Path, outputs: list[str]) -> None:
    logs = folder / "lightning_logs"
    adam = _checkpoint(logs / "version_0" / "checkpoints" / "epoch=1-step=6.ckpt")
    assert "exp_avg" in adam["optimizer_states"][0]["state"][0]
    group = adam["optimizer_states"][0]["param_groups"][0]
    assert group["weight_decay"] == 0 and group["lr"] == pytest.approx(0.01 * 0.1**2)  # StepLR, twice
    assert adam["lr_schedulers"][0]["step_size"] == 1
    adamw = _checkpoint(logs / "version_1" / "checkpoints" / "epoch=1-step=6.ckpt")
    assert adamw["optimizer_states"][0]["param_groups"][0]["weight_decay"] == 0.01  # AdamW's default
    assert adamw["lr_schedulers"][0]["monitor"] == "val_loss" and adamw["lr_schedulers"][0]["patience"] == 1
    assert _config(logs / "version_1")["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert "configure_optimizers` will be overridden" in outputs[0]


def check_subclass(folder: Path, outputs: list[str]) -> None:
    logs = folder / "lightning_logs"
    assert _config(logs / "version_0")["model"]["class_path"] == "model.Regressor"
    model = _config(logs / "version_1")["model"]
    assert model["class_path"] == "deeper.Deeper" and model["init_args"]["depth"] == 3
    weights = _checkpoint(logs / "version_1" / "checkpoints" / "epoch=0-step=3.ckpt")["state_dict"]
    assert "net.6.weight" in weights and "net.8.weight" not in weights  # 3 hidden layers


def check_link(folder: Path, outputs: list[str]) -> None:
    run = folder / "lightning_logs" / "version_0"
    assert _versions(folder) == ["version_0"]  # the second command stopped at parsing
    checkpoint = _checkpoint(run / "checkpoints" / "epoch=0-step=3.ckpt")
    assert checkpoint["state_dict"]["net.0.weight"].shape == (16, 4)
    assert checkpoint["hyper_parameters"]["input_dim"] == 4
    assert _config(run)["data"]["num_features"] == 4 and "input_dim" not in _config(run)["model"]


def check_env(folder: Path, outputs: list[str]) -> None:
    run = folder / "lightning_logs" / "version_0"
    assert _config(run)["trainer"]["max_epochs"] == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch=0-step=3.ckpt"]


def check_run_false(folder: Path, outputs: list[str]) -> None:
    assert _versions(folder) == ["version_0"]  # manual.py's fit and test share one Trainer; in_code.py runs nothing
    assert _config(folder / "lightning_logs" / "version_0")["trainer"]["max_epochs"] == 1
    assert (folder / "lightning_logs" / "version_0" / "checkpoints" / "epoch=0-step=3.ckpt").is_file()
    assert re.search(r"test_loss\s+\d", outputs[0])


def check_save_config(folder: Path, outputs: list[str]) -> None:
    assert _config(folder)["trainer"]["logger"] is False  # the first run's, kept
    assert not (folder / "lightning_logs").exists()


def check_autoresume(folder: Path, outputs: list[str]) -> None:
    assert _versions(folder) == ["version_0"]
    assert _config(folder / "lightning_logs" / "version_0")["ckpt_path"] == "last"
    assert "RuntimeError" not in outputs[0]


def check_errors(folder: Path, outputs: list[str]) -> None:
    assert not (folder / "lightning_logs").exists()


def check_command(folder: Path, outputs: list[str]) -> None:
    model = _config(folder / "lightning_logs" / "version_0")["model"]
    assert model == {"class_path": "model.Regressor", "init_args": {"input_dim": 8, "hidden_dim": 32, "lr": 0.05}}
    assert re.search(r"test_loss\s+\d", outputs[0])


def check_report(folder: Path, outputs: list[str]) -> None:
    page = (folder / "lightning_logs" / "version_0" / "report.html").read_text()
    assert "val_loss" in page and "data:image/png;base64," in page
    assert "MLP, lr 1e-3" in (folder / "report.html").read_text()


CHECKS: dict[str, Callable[[Path, list[str]], None]] = {
    name[len("check_"):]: fn for name, fn in list(globals().items()) if name.startswith("check_")
}


def test_every_code_block_is_an_example_and_every_example_is_checked():
    assert UNCLAIMED == []
    assert sorted(EXAMPLES) == sorted(CHECKS)
    assert all(any(kind == "run" for kind, _, _ in example.steps) for example in EXAMPLES.values())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs_as_shown(name, tmp_path):
    outputs = _run_example(EXAMPLES[name], tmp_path)
    CHECKS[name](tmp_path, outputs)
