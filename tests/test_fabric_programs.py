"""A program written against Lightning Fabric runs unmodified on fulmen and gives Lightning's numbers.

tests/fabric_programs/train_loop.py imports only `lightning` / `lightning.fabric` names. Each test
runs it twice in real processes: on the real Lightning Fabric 2.6.6 (`lightning_fabric`; the
`lightning` package itself is not installed, so tests/fabric_programs/lightning_shim stands in for
it on PYTHONPATH: `lightning.fabric` *is* `lightning_fabric`), and through `fulmen run`. Both write a
summary.json and a CSVLogger metrics.csv, compared here: the losses and final weights to 1e-6, the
checkpoint round trip, the logged keys and rows, the log directory.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fulmen import alias

PROGRAMS = Path(__file__).parent / "fabric_programs"
SHIM = PROGRAMS / "lightning_shim"


def _env(**extra: str) -> dict[str, str]:
    """This environment without an alias the test process may have on, nor the shim."""
    env = {k: v for k, v in os.environ.items() if k != alias.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                        if p and p not in (alias.BOOT_DIR, str(SHIM)))
    env.update(extra)
    return env


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=_env(**env), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def _metrics(out: Path, summary: dict) -> list[dict[str, str]]:
    with open(out / summary["log_dir"] / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize("devices", [1, 2], ids=["one_process", "ddp_two_processes"])
def test_a_lightning_fabric_program_runs_unmodified_on_fulmen_with_lightnings_numbers(tmp_path, devices):
    program = str(PROGRAMS / "train_loop.py")
    flags = ["--devices", str(devices)]
    real_run = _run([sys.executable, program, str(tmp_path / "lightning"), *flags],
                    PYTHONPATH=os.pathsep.join(filter(None, [str(SHIM), os.environ.get("PYTHONPATH", "")])))
    our_run = _run([sys.executable, "-m", "fulmen", "run", program, str(tmp_path / "fulmen"), *flags])
    real = json.loads((tmp_path / "lightning" / "summary.json").read_text())
    ours = json.loads((tmp_path / "fulmen" / "summary.json").read_text())

    assert real["framework"] == "lightning_fabric" and ours["framework"] == "fulmen"
    assert real["world_size"] == ours["world_size"] == devices
    assert len(ours["losses"]) == len(real["losses"]) == 36 // devices  # 96 samples, batch 8, 3 epochs, sharded
    assert ours["losses"] == pytest.approx(real["losses"], abs=1e-6)
    for real_weights, our_weights in zip(real["weights"], ours["weights"]):
        assert our_weights == pytest.approx(real_weights, abs=1e-6)
    for key in ("restored_equal", "restored_step", "load_remainder", "momentum_restored", "metrics_header", "log_dir"):
        assert ours[key] == real[key], key
    assert ours["restored_equal"] and ours["momentum_restored"] and ours["restored_step"] == 36 // devices

    real_rows, our_rows = _metrics(tmp_path / "lightning", real), _metrics(tmp_path / "fulmen", ours)
    assert [row["step"] for row in our_rows] == [row["step"] for row in real_rows] == [str(i) for i in range(36 // devices)]
    assert [float(row["loss"]) for row in our_rows] == pytest.approx([float(row["loss"]) for row in real_rows], abs=1e-6)
    final = f"final loss {real['losses'][-1]:.6f} after {36 // devices} steps on {devices} device(s)"
    assert final in real_run.stdout and our_run.stdout.count(final) == 1  # fabric.print: rank 0 only

    # Beyond Lightning: fulmen's checkpoint loads with torch.load(weights_only=True).
    checkpoint = torch.load(tmp_path / "fulmen" / "checkpoint.ckpt", weights_only=True)
    assert checkpoint["step"] == 36 // devices
    assert torch.equal(checkpoint["model"]["2.bias"], torch.tensor(ours["weights"][-1]))
