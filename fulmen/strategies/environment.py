"""Which cluster environment this process runs in, and the launcher-variable helpers it rests on.

A process comes to be part of a run in one of these ways, told apart by `detect_environment` in
Lightning's order (the first whose `detect()` is true wins):

- `TorchElasticEnvironment`: started by `torchrun` (TORCHELASTIC_RUN_ID, RANK, LOCAL_RANK, GROUP_RANK,
  LOCAL_WORLD_SIZE, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). First, because torchrun inside a SLURM
  allocation is what started the processes;
- `SLURMEnvironment`: started by `srun`, one task per device (SLURM_NTASKS, SLURM_PROCID, ...);
- `LSFEnvironment` (`jsrun`), then `MPIEnvironment` (`mpirun`, with mpi4py installed);
- otherwise `LightningEnvironment`: a plain `python train.py` with `devices=N`, where fulmen starts the
  other N-1 processes itself (`fulmen.strategies.launcher`) and hands them their ranks through
  LOCAL_RANK, NODE_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and FULMEN_LAUNCHED.

Kubeflow (and Ray, and any custom `ClusterEnvironment`) cannot be told from the variables alone:
pass it in `Trainer(plugins=[KubeflowEnvironment()])`. The classes are in `fulmen.plugins.environments`.
"""

from __future__ import annotations

import os
import re
import socket
from typing import TYPE_CHECKING

from fulmen.errors import MisconfigurationException

if TYPE_CHECKING:  # fulmen.plugins.environments imports this module
    from fulmen.plugins.environments import ClusterEnvironment


def torchrun_detected() -> bool:
    """Whether `torchrun` (torch.distributed.elastic) started this process: it exports TORCHELASTIC_RUN_ID."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_torchelastic_launched()


def slurm_detected() -> bool:
    # As in Lightning: an interactive SLURM shell (`srun --pty bash`) is not a managed job.
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def detect_environment() -> ClusterEnvironment:
    """The environment of this process: the first of Lightning's detectable environments that
    recognises its variables, else `LightningEnvironment`."""
    from fulmen.plugins.environments import (
        LightningEnvironment, LSFEnvironment, MPIEnvironment, SLURMEnvironment, TorchElasticEnvironment,
    )

    for kind in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment):
        if kind.detect():
            return kind()
    return LightningEnvironment()


def check_environment(env: ClusterEnvironment, devices: int, num_nodes: int) -> None:
    """Raise before any work if the Trainer's `devices`/`num_nodes` cannot run in `env`.

    The environment's own `validate_settings` checks what its launcher fixed (torchrun's and SLURM's
    process counts); a run without a launcher on several nodes must be told each node's place."""
    env.validate_settings(num_devices=devices, num_nodes=num_nodes)
    if num_nodes > 1 and not env.creates_processes_externally and not (
        "NODE_RANK" in os.environ and "MASTER_ADDR" in os.environ
    ):
        raise MisconfigurationException(
            f"num_nodes={num_nodes} needs each node's process to know its place, but this one was started "
            "without a launcher. Received: no torchrun, SLURM, or NODE_RANK/MASTER_ADDR variables. Fix: launch with "
            f"`torchrun --nnodes={num_nodes} --node_rank=<n> --master_addr=<host> ...` or under SLURM (srun), or set "
            "NODE_RANK, MASTER_ADDR and MASTER_PORT on every node."
        )


def processes_per_node() -> int:
    """How many processes torchrun or SLURM started on this node."""
    env = os.environ
    if torchrun_detected():
        return int(env["LOCAL_WORLD_SIZE"])
    if "SLURM_NTASKS_PER_NODE" in env:
        return int(env["SLURM_NTASKS_PER_NODE"].split("(")[0])  # e.g. "2(x3)"
    return int(env["SLURM_NTASKS"]) // int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", 1)))


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[003-005,007],cpu1" -> "gpu003"."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    match = re.match(r"^(.*?)\[([^\]]+)\](.*)$", first)
    if match is None:
        return first
    prefix, ranges, suffix = match.groups()
    return prefix + re.split(r"[,-]", ranges)[0] + suffix


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
