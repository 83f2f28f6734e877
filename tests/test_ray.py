"""Ray Train runs a Lightning-on-Ray script on fulmen, unchanged, through the drop-in runner.

`tests/scripts/ray_train_fit.py` is written against `lightning.pytorch` and `ray.train.lightning`
(TorchTrainer, RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback, prepare_trainer).
One run of it (a module-scoped fixture: one local Ray cluster on 127.0.0.1 for the whole file, 2 CPU
workers on gloo) trains twice, uninterrupted and with a worker SIGKILLed mid-epoch; the tests read
what it left on disk. Ray's workers are processes the raylet starts: they get fulmen through the
environment the runner sets (FULMEN_ALIAS=1, fulmen/_alias_boot on PYTHONPATH), inherited by the
cluster that `ray.init()` starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fulmen as pl

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "scripts" / "ray_train_fit.py"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.train") is None,
    reason="ray[train] is not installed (pip install 'fulmen[ray]')",
)


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never join a cluster that happens to be running
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONHASHSEED="0")
    return env


@pytest.fixture(scope="module")
def ray_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ray")
    # Its own session, so a run that hangs is stopped with every process it started (raylet, workers).
    proc = subprocess.Popen([sys.executable, "-m", "fulmen", "run", str(SCRIPT), str(out)], cwd=REPO,
                            env=_quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"The Ray script did not finish in 900 s. Its output ends:\n{log[-4000:]}")
    assert proc.returncode == 0, log[-6000:]
    return out


def _seen(out: Path, run: str, rank: int, attempt: str) -> list[list[int]]:
    files = sorted(out.glob(f"{run}-seen-rank{rank}-{attempt}-*.json"))
    assert len(files) == 1, [f.name for f in out.iterdir()]
    return json.loads(files[0].read_text())


def _by_epoch(seen: list[list[int]]) -> dict[int, list[int]]:
    epochs: dict[int, list[int]] = {}
    for epoch, index in seen:
        epochs.setdefault(epoch, []).append(index)
    return epochs


class Regressor(pl.LightningModule):
    """The script's model, as a user reloading its checkpoint elsewhere would write it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)


def test_ray_workers_run_fulmen_in_one_group_of_two(ray_runs: Path) -> None:
    places = [json.loads(p.read_text()) for p in sorted(ray_runs.glob("plain-place-*.json"))]
    assert sorted(p["global_rank"] for p in places) == [0, 1]
    for place in places:
        assert place["trainer"] == "fulmen.trainer"  # lightning.pytorch.Trainer was fulmen's in the worker
        assert place["alias"] == "1"
        assert place["world_size"] == 2  # the Ray group, not one process per Trainer
        assert place["sampler"] == {"num_replicas": 2, "rank": place["global_rank"]}


def test_both_workers_train_disjoint_shards_covering_the_data(ray_runs: Path) -> None:
    rank0, rank1 = (_by_epoch(_seen(ray_runs, "plain", rank, "first")) for rank in (0, 1))
    assert sorted(rank0) == sorted(rank1) == [0, 1, 2]
    for epoch in range(3):
        assert len(rank0[epoch]) == len(rank1[epoch]) == 32
        assert not set(rank0[epoch]) & set(rank1[epoch])
        assert sorted(rank0[epoch] + rank1[epoch]) == list(range(64))
    assert rank0[0] != rank0[1]  # the sampler reshuffles every epoch


def test_metrics_and_checkpoint_reach_rays_result(ray_runs: Path) -> None:
    result = json.loads((ray_runs / "plain.json").read_text())
    assert result["error"] is None
    metrics = result["metrics"]
    assert metrics["epoch"] == 2 and metrics["step"] == 12  # 3 epochs of 4 batches of 8 per worker
    assert isinstance(metrics["train_loss"], float) and 0 < metrics["train_loss"] < 100

    ckpt_file = Path(result["checkpoint"]) / "checkpoint.ckpt"
    assert ckpt_file.is_file()
    checkpoint = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 2 and checkpoint["global_step"] == 12
    model = Regressor.load_from_checkpoint(ckpt_file)
    final = torch.load(ray_runs / "plain-final.pt")
    assert all(torch.equal(model.state_dict()[k], final[k]) for k in final)


def test_killed_worker_is_retried_from_the_last_checkpoint_bit_identically(ray_runs: Path) -> None:
    assert (ray_runs / "killed.killed").exists()
    first = _by_epoch(_seen(ray_runs, "killed", 1, "first"))
    assert {epoch: len(seen) for epoch, seen in first.items()} == {0: 32, 1: 24}  # died at batch 2 of epoch 1
    for rank in (0, 1):
        resumed = _by_epoch(_seen(ray_runs, "killed", rank, "resumed"))
        assert sorted(resumed) == [1, 2]  # Ray's retry resumed from epoch 0's checkpoint, not from scratch
    result = json.loads((ray_runs / "killed.json").read_text())
    assert result["error"] is None and result["metrics"]["step"] == 12

    plain, killed = torch.load(ray_runs / "plain-final.pt"), torch.load(ray_runs / "killed-final.pt")
    assert plain.keys() == killed.keys()
    for name in plain:
        assert torch.equal(plain[name], killed[name]), name
    assert result["metrics"]["train_loss"] == json.loads((ray_runs / "plain.json").read_text())["metrics"]["train_loss"]


def test_lightning_modules_pickle_by_name_under_the_alias(tmp_path: Path) -> None:
    """cloudpickle (Ray, Dask) sends a function with its module globals; `pl` is fulmen's surface module."""
    probe = (
        "import pickle, ray.cloudpickle as cp, lightning.pytorch as pl, ray.train.lightning as rl, fulmen\n"
        "from fulmen.plugins.environments import LightningEnvironment\n"
        "assert pickle.loads(pickle.dumps(pl)) is pl\n"
        "assert pickle.loads(cp.dumps(lambda: pl.Trainer))() is fulmen.Trainer\n"
        "assert issubclass(rl.RayDDPStrategy, fulmen.strategies.DDPStrategy)\n"
        "assert issubclass(rl.RayLightningEnvironment, LightningEnvironment)\n"
        "print('ok')\n"
    )
    script = tmp_path / "probe.py"
    script.write_text(probe)
    done = subprocess.run([sys.executable, "-m", "fulmen", "run", str(script)], cwd=REPO, env=_quiet_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
