"""Cluster environments under Lightning's names: where a process sits in a run (ranks, world size,
rendezvous address), each read from the variables its launcher sets.

These are the `ClusterEnvironment` plugins Lightning code imports and subclasses. A parallel strategy
takes its ranks, world size and rendezvous address from one of them: the one given in
`Trainer(plugins=[...])` or `DDPStrategy(cluster_environment=...)`, else the one
`fulmen.strategies.environment.detect_environment` finds. Which variables each reads:

- `LightningEnvironment`: LOCAL_RANK, NODE_RANK (or GROUP_RANK), MASTER_ADDR, MASTER_PORT; always detected.
- `TorchElasticEnvironment` (torchrun): RANK, LOCAL_RANK, GROUP_RANK, WORLD_SIZE; detected by TORCHELASTIC_RUN_ID.
- `SLURMEnvironment` (srun): SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_NODELIST, SLURM_JOB_ID.
- `KubeflowEnvironment` (PyTorchJob): RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; never auto-detected.
- `LSFEnvironment` (jsrun): LSB_JOBID, LSB_DJOB_RANKFILE, JSM_NAMESPACE_{RANK,LOCAL_RANK,SIZE}.
- `MPIEnvironment`: asks MPI through `mpi4py`; `XLAEnvironment`: importable, refuses to be built.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
from abc import ABC, abstractmethod

from fulmen.errors import MisconfigurationException
from fulmen.strategies.environment import first_host, free_port, slurm_detected, torchrun_detected

__all__ = [
    "ClusterEnvironment", "KubeflowEnvironment", "LSFEnvironment", "LightningEnvironment", "MPIEnvironment",
    "SLURMEnvironment", "TorchElasticEnvironment", "XLAEnvironment", "find_free_network_port",
]


def find_free_network_port() -> int:
    """A TCP port free on this machine now, for MASTER_PORT of a run on one node (Lightning's name).

    STANDALONE_PORT, when set, is the answer instead: a fixed port for jobs that must know it ahead.
    Another process may still take the port before the run binds it: the race of any port picked ahead.
    """
    if "STANDALONE_PORT" in os.environ:
        return int(os.environ["STANDALONE_PORT"])
    return free_port()


class ClusterEnvironment(ABC):
    """What a launcher or scheduler tells a process about the run it belongs to.

    Environments whose launcher fixes the ranks (torchrun, SLURM) ignore `set_world_size` /
    `set_global_rank`; `LightningEnvironment` stores them.
    """

    @property
    @abstractmethod
    def creates_processes_externally(self) -> bool:
        """True when something outside the Trainer started every process of the run."""

    @property
    @abstractmethod
    def main_address(self) -> str:
        """Host name or address of the rank-0 process (the rendezvous)."""

    @property
    @abstractmethod
    def main_port(self) -> int:
        """Port of the rendezvous on `main_address`."""

    @staticmethod
    @abstractmethod
    def detect() -> bool:
        """Whether this process runs in this environment."""

    @abstractmethod
    def world_size(self) -> int:
        """Number of processes in the run."""

    @abstractmethod
    def set_world_size(self, size: int) -> None:
        """Record the world size (where the environment does not fix it)."""

    @abstractmethod
    def global_rank(self) -> int:
        """This process's rank among all processes."""

    @abstractmethod
    def set_global_rank(self, rank: int) -> None:
        """Record the global rank (where the environment does not fix it)."""

    @abstractmethod
    def local_rank(self) -> int:
        """This process's rank among the processes of its node."""

    @abstractmethod
    def node_rank(self) -> int:
        """This node's rank among the nodes."""

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Raise if the Trainer's `devices`/`num_nodes` disagree with the environment; nothing by default."""

    def teardown(self) -> None:
        """Undo what the environment set up (e.g. variables it exported); nothing by default."""


def _int_var(name: str, launcher: str) -> int:
    if name not in os.environ:
        raise ValueError(
            f"The environment variable {name} is not set, so this process's place in the run is unknown. "
            f"Received: {name} unset. Fix: start the script with {launcher}, which sets it."
        )
    return int(os.environ[name])


class LightningEnvironment(ClusterEnvironment):
    """A plain `python train.py` (the Trainer starts the other processes), or processes started by hand
    with at least LOCAL_RANK set. MASTER_ADDR/MASTER_PORT default to 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        self._main_port = -1
        self._global_rank = 0
        self._world_size = 1

    @property
    def creates_processes_externally(self) -> bool:
        return "LOCAL_RANK" in os.environ  # someone launched this process with its rank already set

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        if self._main_port == -1:  # chosen once, so every caller in this process sees the same port
            if "MASTER_PORT" in os.environ:
                self._main_port = int(os.environ["MASTER_PORT"])
            elif "STANDALONE_PORT" in os.environ:
                self._main_port = int(os.environ["STANDALONE_PORT"])
            else:
                self._main_port = find_free_network_port()
        return self._main_port

    @staticmethod
    def detect() -> bool:
        return True

    def world_size(self) -> int:
        return self._world_size

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return self._global_rank

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))

    def teardown(self) -> None:
        os.environ.pop("WORLD_SIZE", None)


class TorchElasticEnvironment(ClusterEnvironment):
    """Processes started by `torchrun` (torch.distributed.elastic)."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.setdefault("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.setdefault("MASTER_PORT", "12910"))

    @staticmethod
    def detect() -> bool:
        return torchrun_detected()

    def world_size(self) -> int:
        return _int_var("WORLD_SIZE", "torchrun")

    def set_world_size(self, size: int) -> None:
        pass  # torchrun fixed it

    def global_rank(self) -> int:
        return _int_var("RANK", "torchrun")

    def set_global_rank(self, rank: int) -> None:
        pass  # torchrun fixed it

    def local_rank(self) -> int:
        return _int_var("LOCAL_RANK", "torchrun")

    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", 0))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        if num_devices * num_nodes != self.world_size():
            raise ValueError(
                f"torchrun started {self.world_size()} processes, but the Trainer asks for {num_devices * num_nodes}. "
                f"Received: devices={num_devices}, num_nodes={num_nodes}. Fix: make devices * num_nodes equal "
                "torchrun's --nproc_per_node * --nnodes."
            )
        per_node = os.environ.get("LOCAL_WORLD_SIZE")
        if per_node is not None and int(per_node) != num_devices:
            raise ValueError(
                f"torchrun started {per_node} processes on this node, but the Trainer asks for {num_devices}. "
                f"Received: devices={num_devices}. Fix: make devices equal torchrun's --nproc_per_node={per_node} "
                "(or leave devices='auto')."
            )


class SLURMEnvironment(ClusterEnvironment):
    """Tasks started by SLURM's `srun`, one per device. A job named "bash" or "interactive" (an interactive
    allocation) is not detected, so another environment can be used inside it.

    `auto_requeue` and `requeue_signal` (default SIGUSR1) are kept for Lightning code that reads them.
    """

    def __init__(self, auto_requeue: bool = True, requeue_signal: signal.Signals | None = None) -> None:
        self.auto_requeue = auto_requeue
        if requeue_signal is None and hasattr(signal, "SIGUSR1"):
            requeue_signal = signal.SIGUSR1
        self.requeue_signal = requeue_signal
        ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
        if ntasks > 1 and "SLURM_NTASKS_PER_NODE" not in os.environ:
            raise RuntimeError(
                "The SLURM job sets --ntasks but not --ntasks-per-node, so the tasks per node are unknown. "
                f"Received: SLURM_NTASKS={ntasks}. Fix: use `#SBATCH --ntasks-per-node={ntasks}` instead of --ntasks."
            )

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        if "MASTER_ADDR" not in os.environ:  # exported, so the process group finds it
            nodes = os.environ.get("SLURM_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")
            os.environ["MASTER_ADDR"] = self.resolve_root_node_address(nodes)
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        # 15000 + the job id's last four digits: every task of the job computes the same port alone.
        job_id = os.environ.get("SLURM_JOB_ID")
        port = 15000 + int(job_id[-4:]) if job_id is not None else 12910
        return int(os.environ.setdefault("MASTER_PORT", str(port)))

    @staticmethod
    def detect() -> bool:
        return slurm_detected()

    @staticmethod
    def job_name() -> str | None:
        return os.environ.get("SLURM_JOB_NAME")

    @staticmethod
    def job_id() -> int | None:
        if SLURMEnvironment.job_name() in ("bash", "interactive"):
            return None  # an interactive shell is not the job whose logs should carry its id
        try:
            return int(os.environ["SLURM_JOB_ID"])
        except (KeyError, ValueError):
            return None

    def world_size(self) -> int:
        return _int_var("SLURM_NTASKS", "srun")

    def set_world_size(self, size: int) -> None:
        pass  # SLURM fixed it

    def global_rank(self) -> int:
        return _int_var("SLURM_PROCID", "srun")

    def set_global_rank(self, rank: int) -> None:
        pass  # SLURM fixed it

    def local_rank(self) -> int:
        return _int_var("SLURM_LOCALID", "srun")

    def node_rank(self) -> int:
        return _int_var("SLURM_NODEID", "srun")

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        if self.job_name() in ("bash", "interactive"):
            return
        per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
        if per_node is not None and int(per_node.split("(")[0]) != num_devices:
            raise ValueError(
                f"SLURM runs {per_node} tasks per node, but the Trainer asks for {num_devices} devices. "
                f"Received: devices={num_devices}. Fix: set devices={per_node.split('(')[0]} or change --ntasks-per-node."
            )
        nodes = os.environ.get("SLURM_NNODES", os.environ.get("SLURM_JOB_NUM_NODES"))
        if nodes is not None and int(nodes) != num_nodes:
            raise ValueError(
                f"The SLURM job has {nodes} nodes, but the Trainer asks for {num_nodes}. "
                f"Received: num_nodes={num_nodes}. Fix: set num_nodes={nodes} or change --nodes."
            )

    @staticmethod
    def resolve_root_node_address(nodes: str) -> str:
        """The first host of a SLURM node list ("host[5-9]" -> "host5"; space- or comma-separated lists too)."""
        return first_host(nodes.strip().split(" ")[0])


class KubeflowEnvironment(ClusterEnvironment):
    """A Kubeflow PyTorchJob: one process per pod, so the node rank is the global rank. Not auto-detected:
    pass it explicitly."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    @staticmethod
    def detect() -> bool:
        raise NotImplementedError(
            "A Kubeflow PyTorchJob cannot be detected from its environment. Received: KubeflowEnvironment.detect(). "
            "Fix: create KubeflowEnvironment() explicitly."
        )

    def world_size(self) -> int:
        return _int_var("WORLD_SIZE", "a Kubeflow PyTorchJob")

    def set_world_size(self, size: int) -> None:
        pass  # the job fixed it

    def global_rank(self) -> int:
        return _int_var("RANK", "a Kubeflow PyTorchJob")

    def set_global_rank(self, rank: int) -> None:
        pass  # the job fixed it

    def local_rank(self) -> int:
        return 0

    def node_rank(self) -> int:
        return self.global_rank()


class LSFEnvironment(ClusterEnvironment):
    """IBM LSF with the job step manager (`jsrun`). The rank file LSB_DJOB_RANKFILE lists one host per
    task, its first line being the launch node: the rest give the main address (the first host) and this
    node's rank (its host's position); the port is 10000 + the job id mod 1000 unless MASTER_PORT is set."""

    def __init__(self) -> None:
        hosts = self._read_hosts()
        self._main_address = hosts[0]
        self._main_port = self._get_main_port()
        self._node_rank = list(dict.fromkeys(hosts)).index(socket.gethostname())
        # torch.distributed's env:// rendezvous reads these.
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = self._main_address, str(self._main_port)

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self._main_address

    @property
    def main_port(self) -> int:
        return self._main_port

    @staticmethod
    def detect() -> bool:
        needed = ("LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE")
        return all(name in os.environ for name in needed)

    def world_size(self) -> int:
        return _int_var("JSM_NAMESPACE_SIZE", "jsrun")

    def set_world_size(self, size: int) -> None:
        pass  # jsrun fixed it

    def global_rank(self) -> int:
        return _int_var("JSM_NAMESPACE_RANK", "jsrun")

    def set_global_rank(self, rank: int) -> None:
        pass  # jsrun fixed it

    def local_rank(self) -> int:
        return _int_var("JSM_NAMESPACE_LOCAL_RANK", "jsrun")

    def node_rank(self) -> int:
        return self._node_rank

    @staticmethod
    def _read_hosts() -> list[str]:
        rankfile = os.environ.get("LSB_DJOB_RANKFILE")
        if not rankfile:
            raise ValueError(
                "LSFEnvironment needs the job's rank file. Received: LSB_DJOB_RANKFILE="
                f"{rankfile!r}. Fix: run the script with jsrun inside an LSF job."
            )
        with open(rankfile) as f:
            return [line.strip() for line in f][1:]  # the first line is the launch node, which runs no task

    @staticmethod
    def _get_main_port() -> int:
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        if "LSB_JOBID" in os.environ:
            return int(os.environ["LSB_JOBID"]) % 1000 + 10000
        raise ValueError(
            "LSFEnvironment cannot choose a port. Received: neither MASTER_PORT nor LSB_JOBID is set. "
            "Fix: run inside an LSF job, or set MASTER_PORT."
        )


class MPIEnvironment(ClusterEnvironment):
    """Processes started by an MPI launcher (`mpirun`), asked for their ranks through `mpi4py`."""

    def __init__(self) -> None:
        if importlib.util.find_spec("mpi4py") is None:
            raise ModuleNotFoundError(
                "MPIEnvironment needs the `mpi4py` package, which is not installed. Received: MPIEnvironment(). "
                "Fix: pip install mpi4py (with an MPI library on the machine), or launch with torchrun or srun."
            )
        from mpi4py import MPI

        self._comm = MPI.COMM_WORLD
        self._main_address: str | None = None
        self._main_port: int | None = None
        self._local: tuple[int, int] | None = None  # (local rank, node rank), asked once

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        if self._main_address is None:  # rank 0's host, told to everyone
            self._main_address = self._comm.bcast(socket.gethostname(), root=0)
        return self._main_address

    @property
    def main_port(self) -> int:
        if self._main_port is None:
            self._main_port = self._comm.bcast(free_port(), root=0)
        return self._main_port

    @staticmethod
    def detect() -> bool:
        if importlib.util.find_spec("mpi4py") is None:
            return False
        try:
            from mpi4py import MPI  # installed without an MPI library, this import fails
        except ImportError:
            return False
        return MPI.COMM_WORLD.Get_size() > 1

    def world_size(self) -> int:
        return self._comm.Get_size()

    def set_world_size(self, size: int) -> None:
        pass  # MPI fixed it

    def global_rank(self) -> int:
        return self._comm.Get_rank()

    def set_global_rank(self, rank: int) -> None:
        pass  # MPI fixed it

    def local_rank(self) -> int:
        return self._local_ranks()[0]

    def node_rank(self) -> int:
        return self._local_ranks()[1]

    def _local_ranks(self) -> tuple[int, int]:
        if self._local is None:
            host = socket.gethostname()
            hosts = sorted(set(self._comm.allgather(host)))
            node_comm = self._comm.Split(color=hosts.index(host))  # the processes of this host
            self._local = (node_comm.Get_rank(), hosts.index(host))
        return self._local


class XLAEnvironment(ClusterEnvironment):
    """Lightning's TPU environment: importable, never detected; building one raises (fulmen does not run on XLA).
    The refusal is in `__new__`, before Python would complain about the abstract methods it leaves unwritten."""

    def __new__(cls, *args: object, **kwargs: object) -> XLAEnvironment:
        raise MisconfigurationException(
            "XLAEnvironment is not supported by fulmen: fulmen does not run on XLA (TPU). "
            "Received: XLAEnvironment(). Fix: run on CUDA, MPS or CPU, with torchrun or SLURM for several processes."
        )

    @staticmethod
    def detect() -> bool:
        return False
