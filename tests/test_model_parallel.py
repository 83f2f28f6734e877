"""ModelParallelStrategy: tensor parallelism x FSDP2 on a 2-D device mesh, with real processes
(torchrun, gloo on CPU) running tests/scripts/model_parallel_run.py.

Two ranks with tensor_parallel_size=2 compute one model together, so they must reproduce a plain
one-process run step by step; their distributed checkpoint (a directory) must resume on one
process and load on another mesh shape, and a one-process checkpoint must resume on the mesh.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fulmen as pl
from fulmen.checkpoint import load_checkpoint
from fulmen.errors import MisconfigurationException
from fulmen.strategies import FSDPStrategy, ModelParallelStrategy, StrategyRegistry
from fulmen.strategies.environment import free_port

SCRIPT = Path(__file__).parent / "scripts" / "model_parallel_run.py"
TIMEOUT = 180  # seconds for one launch: far above a normal run (~5 s)
STEPS_PER_EPOCH = 32 // 8


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "LOCAL_RANK", "NODE_RANK"))}
    env.update(FULMEN_DOCTOR="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _torchrun(out: Path, *args: str) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(SCRIPT), "--out", str(out), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _single_process(out: Path, *args: str) -> dict:
    """The same script in this process, as a plain one-device run (no mesh, no strategy)."""
    spec = importlib.util.spec_from_file_location("model_parallel_run", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(out), "--single", *args])
    return json.loads((out / "rank0.json").read_text())


def _assert_params_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(torch.tensor(a[key]), torch.tensor(b[key]), atol=atol, rtol=0), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return _single_process(tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module")
def tensor_parallel(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two epochs on two ranks, sizes "auto" (one node: data_parallel 1 x tensor_parallel 2)."""
    out = tmp_path_factory.mktemp("tp2")
    return out, _torchrun(out)


# --- with processes ---------------------------------------------------------------------------
def test_tensor_parallel_ranks_train_step_by_step_like_one_process(tensor_parallel, reference):
    _, (r0, r1) = tensor_parallel
    assert (r0["strategy"], r0["world_size"]) == ("model_parallel", 2)
    # The module saw the 2-D mesh in configure_model, and its parameters are split over "tensor_parallel".
    assert r0["mesh"]["shape"] == [1, 2] and r0["mesh"]["dim_names"] == ["data_parallel", "tensor_parallel"]
    assert r0["mesh"]["placements"]["w1.weight"].endswith("Shard(dim=0))")  # column-wise: output features
    assert r0["mesh"]["placements"]["w2.weight"].endswith("Shard(dim=1))")  # row-wise: input features
    assert reference["mesh"] is None  # other strategies give the module no mesh
    # One data-parallel row: both ranks read the same batches, the ones the plain run reads.
    assert r0["seen"] == r1["seen"] == reference["seen"] and len(r0["seen"]) == 2 * STEPS_PER_EPOCH
    assert r0["losses"] == r1["losses"]
    assert r0["losses"] == pytest.approx(reference["losses"], abs=1e-6, rel=0)
    assert r0["params"] == r1["params"]
    _assert_params_close(r0["params"], reference["params"])
    assert r0["global_step"] == reference["global_step"] == 2 * STEPS_PER_EPOCH


def test_distributed_checkpoint_resumes_on_one_process(tensor_parallel, tmp_path):
    out, (r0, _) = tensor_parallel
    ckpt = out / "ckpt" / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
    assert r0["checkpoints"] == [f"epoch=0-step={STEPS_PER_EPOCH}.ckpt", f"epoch=1-step={2 * STEPS_PER_EPOCH}.ckpt"]
    assert ckpt.is_dir() and (ckpt / "meta.pt").is_file() and len(list(ckpt.glob("*.distcp"))) == 2
    resumed = _single_process(tmp_path, "--resume", str(ckpt))
    # Weights and momentum came back whole: the second epoch repeats the mesh's losses.
    assert resumed["losses"] == pytest.approx(r0["losses"][STEPS_PER_EPOCH:], abs=1e-6, rel=0)
    _assert_params_close(resumed["params"], r0["params"])
    assert resumed["global_step"] == 2 * STEPS_PER_EPOCH


def test_distributed_checkpoint_loads_on_another_mesh_shape(tensor_parallel, tmp_path):
    """Saved on (1 x 2), loaded on (2 x 1): FSDP over two replicas instead of tensor parallelism."""
    out, _ = tensor_parallel
    ckpt = out / "ckpt" / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
    r0, r1 = _torchrun(tmp_path, "--dp", "2", "--tp", "1", "--epochs", "1", "--resume", str(ckpt))
    assert r0["mesh"]["shape"] == [2, 1] and r0["global_step"] == STEPS_PER_EPOCH and r0["losses"] == []
    whole = {k: v.flatten().tolist() for k, v in load_checkpoint(ckpt)["state_dict"].items()}
    _assert_params_close(r0["params"], whole, atol=0)
    assert r1["params"] == r0["params"]


def test_one_process_checkpoint_resumes_on_the_mesh_and_saves_one_file(reference, tmp_path):
    first = _single_process(tmp_path / "one", "--epochs", "1")
    ckpt = tmp_path / "one" / "ckpt" / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
    assert first["global_step"] == STEPS_PER_EPOCH and ckpt.is_file()
    r0, r1 = _torchrun(tmp_path / "tp", "--full-checkpoint", "--resume", str(ckpt))
    assert r0["losses"] == r1["losses"]
    assert r0["losses"] == pytest.approx(reference["losses"][STEPS_PER_EPOCH:], abs=1e-6, rel=0)
    _assert_params_close(r0["params"], reference["params"])
    # save_distributed_checkpoint=False: rank 0 gathers one ordinary file, in torch.optim's own format.
    saved = tmp_path / "tp" / "ckpt" / f"epoch=1-step={2 * STEPS_PER_EPOCH}.ckpt"
    assert saved.is_file()
    state = torch.load(saved, weights_only=True)
    assert {k: v.flatten().tolist() for k, v in state["state_dict"].items()} == r0["params"]
    assert sorted(state["optimizer_states"][0]["state"]) == [0, 1, 2, 3]


def test_replicas_stay_in_sync_when_configure_model_does_not_shard(tmp_path):
    """(2 x 1) and a configure_model without fully_shard: the strategy shards the root over
    "data_parallel", so the two replicas, each on its own half of the data, average their gradients
    (here over two accumulated batches per step: no_backward_sync must not leave a step unsynced)."""
    r0, r1 = _torchrun(tmp_path, "--dp", "2", "--tp", "1", "--epochs", "1", "--no-shard", "--accumulate", "2")
    assert r0["mesh"]["shape"] == [2, 1]
    mine, theirs = sum(r0["seen"], []), sum(r1["seen"], [])
    assert not set(mine) & set(theirs) and sorted(mine + theirs) == list(range(32))
    assert r0["losses"] != r1["losses"]
    assert r0["params"] == r1["params"]
    assert r0["global_step"] == STEPS_PER_EPOCH // 2


# --- without processes ------------------------------------------------------------------------
def _trainer(tmp_path, devices: int, strategy) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False, default_root_dir=tmp_path,
                      enable_progress_bar=False)


def test_sizes_that_do_not_fill_the_mesh_are_refused_at_trainer_init(tmp_path):
    with pytest.raises(MisconfigurationException, match=(
        r"data_parallel_size x tensor_parallel_size = 2 x 2 = 4, but the run has 2 processes\. Received: "
        r"data_parallel_size=2, tensor_parallel_size=2, world_size=2\. Fix: choose sizes whose product is"
    )):
        _trainer(tmp_path, 2, ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=2))
    with pytest.raises(MisconfigurationException, match=r"= 1 x 2 = 2, but the run has 3 processes"):
        _trainer(tmp_path, 3, ModelParallelStrategy(tensor_parallel_size=2))


@pytest.mark.parametrize("value", [0, -2, "two", True, 1.5])
def test_sizes_must_be_auto_or_positive_ints(value):
    with pytest.raises(MisconfigurationException, match=(
        rf"ModelParallelStrategy\(tensor_parallel_size=\.\.\.\) must be 'auto' or a positive int\. "
        rf"Received: tensor_parallel_size={value!r}\."
    )):
        ModelParallelStrategy(tensor_parallel_size=value)


def test_auto_sizes_and_each_mesh_row_reads_one_share_of_the_data(tmp_path):
    auto = _trainer(tmp_path, 2, "model_parallel").strategy  # one node: all devices in one tensor-parallel group
    assert isinstance(auto, ModelParallelStrategy) and isinstance(auto, FSDPStrategy)
    assert (auto.data_parallel_size, auto.tensor_parallel_size) == (1, 2)
    assert auto.distributed_sampler_kwargs == {"num_replicas": 1, "rank": 0}
    grid = _trainer(tmp_path, 4, ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=2)).strategy
    shares = []
    for rank in range(4):  # rank r sits in mesh row r // 2
        grid.global_rank = rank
        shares.append(grid.distributed_sampler_kwargs)
    assert shares == [{"num_replicas": 2, "rank": r} for r in (0, 0, 1, 1)]
    assert "model_parallel" in StrategyRegistry.available_strategies()


def test_device_mesh_before_the_processes_join_is_an_error():
    with pytest.raises(RuntimeError, match=r"device_mesh was read before the processes joined.*Fix: read it from "
                                           r"configure_model"):
        ModelParallelStrategy().device_mesh


def test_a_module_without_configure_model_is_refused(tmp_path):
    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

    strategy = ModelParallelStrategy()
    with pytest.raises(TypeError, match=r"parallelizes the model in configure_model, which Plain does not define\. "
                                        r"Received: strategy=ModelParallelStrategy\. Fix: define configure_model"):
        strategy.setup_module(Plain(), torch.device("cpu"), training=True)


def test_save_distributed_checkpoint_chooses_the_checkpoint_format():
    assert ModelParallelStrategy().state_dict_type == "sharded"
    assert ModelParallelStrategy(save_distributed_checkpoint=False).state_dict_type == "full"
