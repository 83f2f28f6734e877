"""Fabric save/load under FSDP2 for tests/test_fabric_checkpoint.py (2 CPU processes, gloo).

    python fabric_resume_fsdp.py CKPT OUT

Trains a sharded model two steps with Adam, saves `{"model", "optimizer", "step"}` to CKPT (one
file, gathered on rank 0), loads it into a freshly sharded model and optimizer, and checks on every
rank that both give the same outputs before and after one more identical step (so Adam's state came
back too). Rank 0 prints `rank R: step S, same before/after: B A` per rank and saves the input and
the loaded model's output to OUT, for the test to compare with a plain module loaded from CKPT.
Last, a model built under `fabric.init_module(empty_init=True)` (on the meta device) is set up, loaded
from CKPT and compared with the loaded one (`rank R: empty_init: ...`).
"""

import sys

import torch
from torch import nn

from fulmen.fabric import Fabric

ckpt, out = sys.argv[1], sys.argv[2]
fabric = Fabric(accelerator="cpu", devices=2, strategy="fsdp")
fabric.launch()
fabric.seed_everything(3)


def make() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


model = fabric.setup_module(make())
optimizer = fabric.setup_optimizers(torch.optim.Adam(model.parameters(), lr=0.01))
for _ in range(2):
    fabric.backward(model(torch.randn(5, 4)).pow(2).mean())
    optimizer.step()
    optimizer.zero_grad()
fabric.save(ckpt, {"model": model, "optimizer": optimizer, "step": 2})

loaded = fabric.setup_module(make())
loaded_optimizer = fabric.setup_optimizers(torch.optim.Adam(loaded.parameters(), lr=0.5))
state = {"model": loaded, "optimizer": loaded_optimizer, "step": 0}
fabric.load(ckpt, state)
x = torch.randn(3, 4)
y = loaded(x)
before = torch.equal(model(x), y)
for net, opt in ((model, optimizer), (loaded, loaded_optimizer)):
    fabric.backward(net(x).sum())
    opt.step()
after = torch.equal(model(x), loaded(x))
lines = fabric.strategy.all_gather_object(f"step {state['step']}, same before/after: {before} {after}")
for rank, line in enumerate(lines):
    fabric.print(f"rank {rank}: {line}", flush=True)
if fabric.is_global_zero:
    torch.save({"x": x, "y": y.detach()}, out)

# A model too big for one process would be built on the meta device: no memory until each process
# gets its shards in setup_module; then the saved weights are loaded into it.
with fabric.init_module(empty_init=True):
    empty = make()
was_meta = all(p.is_meta for p in empty.parameters())
empty = fabric.setup_module(empty)
now_meta = any(p.is_meta for p in empty.parameters())
fabric.load(ckpt, {"model": empty})
line = f"empty_init: meta before {was_meta}, after {now_meta}, same {torch.equal(empty(x), y)}"
for rank, text in enumerate(fabric.strategy.all_gather_object(line)):
    fabric.print(f"rank {rank}: {text}", flush=True)
