"""Where this process sits in a run of several: its ranks, the world size, and the rendezvous address.

Three ways a process comes to be part of a run, checked in this order:

- launched by `torchrun` (torch.distributed.elastic): it sets RANK, LOCAL_RANK, GROUP_RANK,
  LOCAL_WORLD_SIZE, WORLD_SIZE, MASTER_ADDR and MASTER_PORT;
- launched by SLURM's `srun` (one task per device): SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID,
  SLURM_NODEID and the job's node list; the port is derived from the job id, as Lightning does;
- a plain `python train.py` with `devices=N`: fulmen starts the other N-1 processes itself
  (`fulmen.strategies.launcher`) and hands them their ranks through the same variables a local
  launcher uses (LOCAL_RANK, NODE_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, FULMEN_LAUNCHED).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from fulmen.errors import MisconfigurationException

_TORCHRUN_VARS = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE")


@dataclass(frozen=True)
class ClusterEnvironment:
    kind: str  # "torchrun", "slurm" or "local"
    world_size: int
    global_rank: int
    local_rank: int
    node_rank: int
    main_address: str
    main_port: int
    # True when a launcher outside fulmen (torchrun, srun) started every process of the run.
    external: bool


def torchrun_detected() -> bool:
    return all(name in os.environ for name in _TORCHRUN_VARS)


def slurm_detected() -> bool:
    # As in Lightning: an interactive SLURM shell (`srun --pty bash`) is not a managed job.
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def detect(devices: int, num_nodes: int) -> ClusterEnvironment:
    """The environment of this process for a run of `devices` processes on each of `num_nodes` nodes."""
    env = os.environ
    if torchrun_detected():
        found = ClusterEnvironment(
            "torchrun", int(env["WORLD_SIZE"]), int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["GROUP_RANK"]),
            env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)), external=True,
        )
        _check_size(found, devices, num_nodes, int(env["LOCAL_WORLD_SIZE"]), "torchrun --nproc_per_node")
        return found
    if slurm_detected():
        found = ClusterEnvironment(
            "slurm", int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"]), int(env["SLURM_LOCALID"]),
            int(env["SLURM_NODEID"]), first_host(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "127.0.0.1")),
            slurm_port(), external=True,
        )
        _check_size(found, devices, num_nodes, processes_per_node(), "#SBATCH --ntasks-per-node")
        return found
    if num_nodes > 1 and not ("NODE_RANK" in env and "MASTER_ADDR" in env):
        raise MisconfigurationException(
            f"num_nodes={num_nodes} needs each node's process to know its place, but this one was started "
            "without a launcher. Received: no torchrun, SLURM, or NODE_RANK/MASTER_ADDR variables. Fix: launch with "
            f"`torchrun --nnodes={num_nodes} --node_rank=<n> --master_addr=<host> ...` or under SLURM (srun), or set "
            "NODE_RANK, MASTER_ADDR and MASTER_PORT on every node."
        )
    # A plain process: rank 0 unless fulmen's launcher started it with its ranks in the environment.
    local_rank, node_rank = int(env.get("LOCAL_RANK", 0)), int(env.get("NODE_RANK", 0))
    return ClusterEnvironment(
        "local", devices * num_nodes, node_rank * devices + local_rank, local_rank, node_rank,
        env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 0)) or free_port(), external=False,
    )


def processes_per_node() -> int:
    """How many processes torchrun or SLURM started on this node."""
    env = os.environ
    if torchrun_detected():
        return int(env["LOCAL_WORLD_SIZE"])
    if "SLURM_NTASKS_PER_NODE" in env:
        return int(env["SLURM_NTASKS_PER_NODE"].split("(")[0])  # e.g. "2(x3)"
    return int(env["SLURM_NTASKS"]) // int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", 1)))


def _check_size(found: ClusterEnvironment, devices: int, num_nodes: int, per_node: int, where: str) -> None:
    if found.world_size != devices * num_nodes or per_node != devices:
        raise MisconfigurationException(
            f"The {found.kind} launch and the Trainer disagree on the number of processes. Received: "
            f"{found.world_size} processes ({per_node} per node) from {found.kind}, but Trainer(devices={devices}, "
            f"num_nodes={num_nodes}) asks for {devices * num_nodes}. Fix: make `{where}` equal to `devices` and "
            "the number of nodes equal to `num_nodes`."
        )


def slurm_port() -> int:
    """MASTER_PORT if set, else 15000 + the last four digits of the job id (Lightning's choice, so
    every task of a job computes the same port without talking to the others)."""
    if "MASTER_PORT" in os.environ:
        return int(os.environ["MASTER_PORT"])
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "12345")
    return 15000 + int(job_id[-4:])


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
