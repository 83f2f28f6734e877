"""A hand-written training loop on Lightning Fabric, as Lightning's Fabric docs write one.

    python train_loop.py OUT_DIR [--devices 2]

It imports only Lightning's names (`lightning`, `lightning.fabric`), so it runs unmodified on the
real Lightning Fabric and, through `fulmen run train_loop.py ...`, on fulmen. Rank 0 writes
OUT_DIR/summary.json (the losses, the weights, what the checkpoint held, the logger's files) for
tests/test_fabric_programs.py to compare.
"""

import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning as L
from lightning.fabric import seed_everything
from lightning.fabric.loggers import CSVLogger


def train(fabric, out_dir):
    seed_everything(7)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model, optimizer = fabric.setup(model, optimizer)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=generator)
    y = x[:, :1] * 2.0 - x[:, 1:2] + 0.1 * torch.randn(96, 1, generator=generator)
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True))

    losses, step = [], 0
    for epoch in range(3):
        for inputs, targets in loader:
            loss = F.mse_loss(model(inputs), targets)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            fabric.log_dict({"loss": loss.detach(), "epoch": float(epoch)}, step=step)
            losses.append(fabric.all_reduce(loss.detach(), reduce_op="mean").item())
            step += 1

    checkpoint = os.path.join(out_dir, "checkpoint.ckpt")
    fabric.save(checkpoint, {"model": model, "optimizer": optimizer, "step": step})
    fabric.barrier()

    restored = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    restored_optimizer = torch.optim.SGD(restored.parameters(), lr=0.05, momentum=0.9)
    restored, restored_optimizer = fabric.setup(restored, restored_optimizer)
    state = {"model": restored, "optimizer": restored_optimizer, "step": 0}
    remainder = fabric.load(checkpoint, state)

    fabric.logger.finalize("success")
    fabric.print(f"final loss {losses[-1]:.6f} after {step} steps on {fabric.world_size} device(s)")
    if fabric.is_global_zero:
        with open(os.path.join(fabric.logger.log_dir, "metrics.csv")) as file:
            header = file.readline().strip().split(",")
        summary = {
            "framework": type(fabric).__module__.split(".")[0],
            "world_size": fabric.world_size,
            "losses": losses,
            "weights": [p.detach().flatten().tolist() for p in model.parameters()],
            "restored_equal": all(torch.equal(a, b) for a, b in zip(model.parameters(), restored.parameters())),
            "restored_step": state["step"],
            "load_remainder": sorted(remainder),
            "momentum_restored": all(
                torch.equal(restored_optimizer.state_dict()["state"][i]["momentum_buffer"],
                            optimizer.state_dict()["state"][i]["momentum_buffer"])
                for i in optimizer.state_dict()["state"]
            ),
            "metrics_header": header,
            "log_dir": os.path.relpath(fabric.logger.log_dir, out_dir),
        }
        with open(os.path.join(out_dir, "summary.json"), "w") as file:
            json.dump(summary, file)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    fabric = L.Fabric(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        loggers=CSVLogger(args.out_dir, name="fabric_logs", flush_logs_every_n_steps=10),
    )
    fabric.launch(train, args.out_dir)
