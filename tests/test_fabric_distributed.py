"""fulmen.fabric.Fabric on 2 processes (gloo): tests/scripts/fabric_ddp.py, launched by torchrun and by
a plain `python script.py` with devices=2 (Fabric starts the second process). One launch each checks:
DDP with batch 4 per rank trains the weights of one process with batch 8; setup_dataloaders shards
disjointly, covers the data and reshuffles per epoch (the same permutation on both ranks); the
collectives' values; no_backward_sync launches no gradient all-reduce until the synced step; FSDP2
(setup_module + setup_optimizers, and setup(model, optimizer)) trains bitwise the same weights as DDP;
tensor parallelism through ModelParallelStrategy(parallelize_fn) trains the one-process weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fulmen.strategies.environment import free_port

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
import fabric_ddp  # noqa: E402 (the worker script: its model and data)

SCRIPT = Path(fabric_ddp.__file__)
TIMEOUT = 180  # one launch: ~20 s on a busy 2-core machine


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "MASTER_", "LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "PL_"))}
    env.update(FULMEN_DOCTOR="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    return env


def _run(launcher: str, out: Path) -> list[dict]:
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               str(SCRIPT), str(out)]
    else:
        cmd = [sys.executable, str(SCRIPT), str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _expected_orders() -> list[torch.Tensor]:
    """DistributedSampler's permutation per epoch for seed 42 (seed_everything in the script)."""
    orders = []
    for epoch in range(fabric_ddp.EPOCHS):
        g = torch.Generator()
        g.manual_seed(42 + epoch)
        orders.append(torch.randperm(fabric_ddp.N, generator=g))
    return orders


def _one_process_reference(ranks: list[dict]) -> dict[str, torch.Tensor]:
    """The same loop on one process, each step on the union of both ranks' batches (batch 8)."""
    model = fabric_ddp.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _, x, y = fabric_ddp.make_loader().dataset.tensors
    b = fabric_ddp.BATCH
    for epoch in range(fabric_ddp.EPOCHS):
        shards = [torch.tensor(r["ddp_indices"][epoch]) for r in ranks]
        for step in range(len(shards[0]) // b):
            idx = torch.cat([s[step * b:(step + 1) * b] for s in shards])
            optimizer.zero_grad()
            F.mse_loss(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("launcher", ["torchrun", "plain_python"])
def test_fabric_on_two_processes(launcher, tmp_path):
    ranks = _run(launcher, tmp_path)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["wrapper"] == "DistributedDataParallel" and r["len"] == 4 for r in ranks)

    # (b) shards: disjoint, covering, DistributedSampler's per-epoch permutation, the same on both ranks.
    for epoch, order in enumerate(_expected_orders()):
        shards = [r["ddp_indices"][epoch] for r in ranks]
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(fabric_ddp.N))
        assert shards[0] == order[0::2].tolist() and shards[1] == order[1::2].tolist()
    assert ranks[0]["ddp_indices"][0] != ranks[0]["ddp_indices"][1]  # reshuffled between epochs

    # (a) DDP, batch 4 on each of 2 ranks == one process, batch 8; both ranks hold the same weights.
    reference = _one_process_reference(ranks)
    for name, value in reference.items():
        assert torch.equal(ranks[0]["ddp_state"][name], ranks[1]["ddp_state"][name])
        torch.testing.assert_close(ranks[0]["ddp_state"][name], value, rtol=1e-6, atol=1e-6)
    assert not torch.equal(reference["0.weight"], fabric_ddp.make_model()[0].weight.detach())

    # (c) collectives.
    for r in ranks:
        assert r["broadcast"] == {"from": 0, "list": [0, 0, 0]}
        assert torch.equal(r["gather"], torch.tensor([[0.0, 0.0], [1.0, 10.0]]))
        assert torch.equal(r["gather_dict"]["a"], torch.tensor([1.0, 2.0]))
        assert torch.equal(r["gather_dict"]["n"], torch.tensor([5, 5]))
        assert torch.equal(r["mean"], torch.tensor(1.5))
        assert torch.equal(r["sum"], torch.tensor([3.0, 4.0]))
        assert torch.equal(r["max"]["m"], torch.tensor(3))
    assert [r["first"] for r in ranks] == [False, True]  # rank 1 ran its block after rank 0's

    # (d) no_backward_sync: no gradient all-reduce on the 3 accumulating steps, one bucket on the synced one.
    assert all(r["syncs"] == [0, 0, 0, 1] for r in ranks)

    # FSDP2, set up in both orders, on the same shards: bitwise DDP's weights.
    for r in ranks:
        assert r["fsdp_same_indices"]
        for name, value in ranks[0]["ddp_state"].items():
            assert torch.equal(r["fsdp_state"][name], value), name
            assert torch.equal(r["fsdp_joint_state"][name], value), name

    # Tensor parallelism (mesh 1 x 2): both ranks read all the data, in batch 4; the one-process loop on it.
    orders = _expected_orders()
    assert all(r["tp_indices"] == [order.tolist() for order in orders] for r in ranks)
    reference = _one_process_reference([{"ddp_indices": ranks[0]["tp_indices"]}])
    for name, value in reference.items():
        assert torch.equal(ranks[0]["tp_state"][name], ranks[1]["tp_state"][name])
        torch.testing.assert_close(ranks[0]["tp_state"][name], value, rtol=1e-6, atol=1e-6)
