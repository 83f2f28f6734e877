"""One training run that tests/test_model_parallel.py starts under torchrun with ModelParallelStrategy
(tensor parallel x FSDP2 on CPU with gloo), or in one plain process as the reference.

The module parallelizes its MLP in `configure_model` when a device mesh is there (column-wise
first layer, row-wise second), and stays a plain module without one. Each rank writes
`<out>/rank<R>.json` with what it saw: the mesh, its parameters' placements, the sample indices
and loss of every step, and the whole parameters after fit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

import fulmen as pl
from fulmen.callbacks import ModelCheckpoint
from fulmen.strategies import ModelParallelStrategy

N_SAMPLES, FEATURES, HIDDEN = 32, 4, 8


class Indexed(Dataset):
    """Sample i is (i, x_i, y_i), so each rank can report which samples it trained on."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(N_SAMPLES, FEATURES, generator=g), torch.randn(N_SAMPLES, 1, generator=g)

    def __len__(self) -> int:
        return N_SAMPLES

    def __getitem__(self, i: int):
        return i, self.x[i], self.y[i]


class MLP(pl.LightningModule):
    def __init__(self, shard: bool = True) -> None:
        super().__init__()
        self.shard = shard
        torch.manual_seed(0)
        self.w1, self.w2 = nn.Linear(FEATURES, HIDDEN), nn.Linear(HIDDEN, 1)
        self.seen: list[list[int]] = []
        self.losses: list[float] = []
        self.mesh: dict | None = None

    def configure_model(self) -> None:
        mesh = self.device_mesh
        if mesh is None:  # the one-process reference: a plain module
            return
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        self.mesh = {"shape": list(mesh.shape), "dim_names": list(mesh.mesh_dim_names)}
        parallelize_module(self, mesh["tensor_parallel"], {"w1": ColwiseParallel(), "w2": RowwiseParallel()})
        if self.shard:  # else the strategy shards the root over "data_parallel" itself
            fully_shard(self, mesh=mesh["data_parallel"])
        self.mesh["placements"] = {name: str(p.placements) for name, p in self.named_parameters()}

    def forward(self, x):
        return self.w2(torch.tanh(self.w1(x)))

    def training_step(self, batch, batch_idx):
        idx, x, y = batch
        loss = F.mse_loss(self(x), y)
        self.seen.append([int(i) for i in idx])
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--single", action="store_true", help="one plain process: the reference")
    parser.add_argument("--dp", default="auto")
    parser.add_argument("--tp", default="auto")
    parser.add_argument("--full-checkpoint", action="store_true", help="save_distributed_checkpoint=False")
    parser.add_argument("--no-shard", action="store_true", help="configure_model does not call fully_shard")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    data = Indexed()
    if args.single:
        strategy, devices = "auto", 1
        # What fulmen's DistributedSampler is for one data-parallel row (num_replicas=1): the same
        # shuffled order every tensor-parallel rank reads.
        loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, num_replicas=1, rank=0, seed=0))
    else:
        sizes = [a if a == "auto" else int(a) for a in (args.dp, args.tp)]
        strategy = ModelParallelStrategy(data_parallel_size=sizes[0], tensor_parallel_size=sizes[1],
                                         save_distributed_checkpoint=not args.full_checkpoint)
        devices = "auto"
        loader = DataLoader(data, batch_size=8 // (sizes[0] if sizes[0] != "auto" else 1))
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, max_epochs=args.epochs, logger=False,
        accumulate_grad_batches=args.accumulate,
        callbacks=[ModelCheckpoint(dirpath=os.path.join(args.out, "ckpt"), save_top_k=-1, filename="{epoch}-{step}")],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=args.out,
    )
    model = MLP(shard=not args.no_shard)
    trainer.fit(model, loader, ckpt_path=args.resume)

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = model.state_dict() if args.single else get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True))  # whole, on every rank
    ckpt_dir = os.path.join(args.out, "ckpt")
    report = {
        "rank": trainer.global_rank, "world_size": trainer.world_size, "strategy": trainer.strategy.name,
        "mesh": model.mesh, "seen": model.seen, "losses": model.losses, "global_step": trainer.global_step,
        "params": {k: v.detach().cpu().flatten().tolist() for k, v in state.items()},
        "checkpoints": sorted(os.listdir(ckpt_dir)) if os.path.isdir(ckpt_dir) else [],
    }
    with open(os.path.join(args.out, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    sys.exit(main())
