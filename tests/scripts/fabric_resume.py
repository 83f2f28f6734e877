"""A hand-written Fabric loop for the exact-resume tests (tests/test_fabric_checkpoint.py).

    python fabric_resume.py CKPT OUT SAVE_EVERY WAIT_AT [DEVICES]

Trains for 3 epochs on a shuffled DataLoader set up by `fabric.setup_dataloaders`, with dropout
(each rank its own masks) and Adam. Every SAVE_EVERY steps it saves `{"model", "optimizer",
"loader", "step"}` to CKPT, and it starts with `fabric.load(CKPT, state)` when that file exists,
so re-running the same command after a crash resumes there. After each step rank 0 prints
`step N`; at step WAIT_AT (-1: never) every rank stops and waits, for the test to SIGKILL it.
At the end rank 0 saves the final weights to OUT. DEVICES=2 runs DDP on CPU (Fabric starts the
second process from this one).
"""

import os
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from fulmen.fabric import Fabric

ckpt, out, save_every, wait_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
devices = int(sys.argv[5]) if len(sys.argv) > 5 else 1

fabric = Fabric(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto")
fabric.launch()
fabric.seed_everything(7)

g = torch.Generator().manual_seed(0)
x = torch.randn(64, 6, generator=g)
data = TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(64, 1, generator=g))

model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
model, optimizer = fabric.setup(model, optimizer)
loader = fabric.setup_dataloaders(DataLoader(data, batch_size=8, shuffle=True))
torch.manual_seed(100 + fabric.global_rank)  # each rank draws its own dropout masks

state = {"model": model, "optimizer": optimizer, "loader": loader, "step": 0}
if os.path.exists(ckpt):
    fabric.load(ckpt, state)
    fabric.print(f"resumed at step {state['step']}", flush=True)
step = state["step"]

for epoch in range(step // len(loader), 3):
    for batch_x, batch_y in loader:
        loss = F.mse_loss(model(batch_x), batch_y)
        optimizer.zero_grad()
        fabric.backward(loss)
        optimizer.step()
        step += 1
        if step % save_every == 0:
            state["step"] = step
            fabric.save(ckpt, state)
        fabric.print(f"step {step}", flush=True)
        if step == wait_at:
            time.sleep(600)  # the test SIGKILLs the run here

if fabric.is_global_zero:
    torch.save(model.module.state_dict(), out)
