"""A Fabric program on 2 processes (gloo), for tests/test_fabric_distributed.py: run under torchrun, or
as a plain `python fabric_ddp.py OUT` that starts its own second process (devices=2).

In one launch: (a) a DDP loop with batch 4 per rank, (b) the shards each rank drew per epoch,
(c) the collectives, (d) DDP's gradient all-reduce calls counted inside and outside
no_backward_sync, then the same loop under FSDP2 (setup_module + setup_optimizers, and setup(model,
optimizer) jointly), and tensor parallelism through ModelParallelStrategy(parallelize_fn). Each rank writes what it saw to OUT/rank<r>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fulmen.fabric import Fabric

N, BATCH, EPOCHS = 32, 4, 2


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def make_loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(N, 4, generator=g), torch.randn(N, 1, generator=g)
    return DataLoader(TensorDataset(torch.arange(N), x, y), batch_size=BATCH, shuffle=True)


def train(fabric: Fabric, model, optimizer, loader) -> list[list[int]]:
    seen = []
    for _ in range(EPOCHS):
        indices = []
        for idx, x, y in loader:
            optimizer.zero_grad()
            fabric.backward(F.mse_loss(model(x), y))
            optimizer.step()
            indices += idx.tolist()
        seen.append(indices)
    return seen


def full_state(model) -> dict[str, torch.Tensor]:
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in model.module.state_dict().items()}


def count_syncs(fabric: Fabric) -> list[int]:
    """Gradient all-reduce buckets DDP launched on each of 4 steps: 3 accumulating, then one synced."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    model = fabric.setup(make_model())
    calls = [0]

    def counting(state, bucket):
        calls[0] += 1
        return allreduce_hook(state, bucket)

    model._forward_module.register_comm_hook(None, counting)
    per_step = []
    for step in range(4):
        before = calls[0]
        with fabric.no_backward_sync(model, enabled=step < 3):
            model(torch.randn(2, 4)).sum().backward()
        per_step.append(calls[0] - before)
    return per_step


def parallelize(model: nn.Module, mesh) -> nn.Module:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    return parallelize_module(model, mesh["tensor_parallel"], {"0": ColwiseParallel(), "2": RowwiseParallel()})


def main(out: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
    fabric.launch()
    fabric.seed_everything(42)  # the distributed sampler's seed (PL_GLOBAL_SEED)
    rank = fabric.global_rank
    result: dict = {"rank": rank, "world_size": fabric.world_size}

    module = make_model()
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    loader = fabric.setup_dataloaders(make_loader())
    result["len"] = len(loader)
    result["ddp_indices"] = train(fabric, model, optimizer, loader)
    result["ddp_state"] = full_state(model)
    result["wrapper"] = type(model._forward_module).__name__

    result["broadcast"] = fabric.broadcast({"from": rank, "list": [rank] * 3})
    result["gather"] = fabric.all_gather(torch.tensor([rank, rank * 10.0]))
    result["gather_dict"] = fabric.all_gather({"a": torch.tensor(rank + 1.0), "n": 5})
    result["mean"] = fabric.all_reduce(torch.tensor(rank + 1.0))
    result["sum"] = fabric.all_reduce(torch.tensor([rank + 1.0, 2.0]), reduce_op="sum")
    result["max"] = fabric.all_reduce({"m": torch.tensor(rank * 3)}, reduce_op="max")
    result["syncs"] = count_syncs(fabric)
    with fabric.rank_zero_first():
        result["first"] = (out / "first.txt").exists()
        if rank == 0:
            (out / "first.txt").write_text("rank 0")
    fabric.barrier()

    # FSDP2 in the same processes (the process group is reused).
    fsdp = Fabric(accelerator="cpu", devices=2, strategy="fsdp")
    fsdp.launch()
    sharded = fsdp.setup_module(make_model())
    opt = fsdp.setup_optimizers(torch.optim.SGD(sharded.parameters(), lr=0.1))
    fsdp_indices = train(fsdp, sharded, opt, fsdp.setup_dataloaders(make_loader()))
    result["fsdp_state"] = full_state(sharded)
    module = make_model()
    joint, joint_opt = fsdp.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    train(fsdp, joint, joint_opt, fsdp.setup_dataloaders(make_loader()))
    result["fsdp_joint_state"] = full_state(joint)
    result["fsdp_same_indices"] = fsdp_indices == result["ddp_indices"]

    # Tensor parallelism (1 x 2 mesh) through Fabric's ModelParallelStrategy(parallelize_fn): both ranks
    # compute one model together, so each reads the whole data (one mesh row).
    from fulmen.strategies.model_parallel import FabricModelParallelStrategy

    tp = Fabric(accelerator="cpu", devices=2, strategy=FabricModelParallelStrategy(
        parallelize, data_parallel_size=1, tensor_parallel_size=2, save_distributed_checkpoint=False))
    tp.launch()
    tp_model = tp.setup_module(make_model())
    tp_opt = tp.setup_optimizers(torch.optim.SGD(tp_model.parameters(), lr=0.1))
    result["tp_indices"] = train(tp, tp_model, tp_opt, tp.setup_dataloaders(make_loader()))
    result["tp_state"] = full_state(tp_model)
    torch.save(result, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
