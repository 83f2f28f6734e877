"""Data parallel training on torch.distributed: one process per device, gradients averaged by
PyTorch's DistributedDataParallel, and the collectives the loop needs.

`training_step` runs *through* the DDP wrapper's forward (see `call_through`): DDP prepares the
gradient all-reduce in its forward, so calling the module's method directly would silently skip
the synchronisation. Batches that only accumulate gradients run under `no_sync()`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import gc
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from fulmen.errors import MisconfigurationException
from fulmen.strategies.environment import check_environment, detect_environment
from fulmen.strategies.launcher import ScriptCopies, die_with_parent
from fulmen.strategies.single import Strategy
from fulmen.strategies.stop_vote import StopVote

if TYPE_CHECKING:
    from fulmen.plugins.environments import ClusterEnvironment
    from fulmen.plugins.io import CheckpointIO

DEFAULT_TIMEOUT = dt.timedelta(minutes=30)  # torch.distributed's default for a collective
_OPS = {"sum": "SUM", "mean": "SUM", "max": "MAX", "min": "MIN"}


class DistributedFailure(RuntimeError):
    """Another process of the run failed, so this one had to stop as well."""


def call_through(wrapper: torch.nn.Module, module: torch.nn.Module, method: Any, *args: Any, **kwargs: Any) -> Any:
    """`method(*args, **kwargs)` run as `wrapper`'s forward, so the wrapper's work before and after forward
    (DDP's gradient-sync setup, FSDP's unsharding) surrounds it. `module.forward` is put back as
    soon as the wrapper calls it, so the user's own `self(x)` inside `method` reaches the real forward."""
    had_own = "forward" in module.__dict__
    own = module.__dict__.get("forward")

    def restore() -> None:
        if had_own:
            module.__dict__["forward"] = own
        else:
            module.__dict__.pop("forward", None)

    def redirected(*a: Any, **kw: Any) -> Any:
        restore()
        return method(*a, **kw)

    module.__dict__["forward"] = redirected
    try:
        return wrapper(*args, **kwargs)
    finally:
        restore()


class ParallelStrategy(Strategy):
    """What DDP and FSDP share: the processes, the process group, and the collectives."""

    distributed = True

    def __init__(
        self, *, process_group_backend: str | None = None, timeout: dt.timedelta = DEFAULT_TIMEOUT,
        cluster_environment: ClusterEnvironment | None = None, checkpoint_io: CheckpointIO | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(timeout, dt.timedelta):
            raise MisconfigurationException(
                f"{type(self).__name__}(timeout=...) must be a datetime.timedelta. Received: timeout={timeout!r}. "
                "Fix: e.g. timeout=datetime.timedelta(seconds=60)."
            )
        self.process_group_backend, self.timeout = process_group_backend, timeout
        # Where this process sits in the run; None until `configure` detects it (unless given).
        self.cluster_environment: ClusterEnvironment | None = cluster_environment
        self._checkpoint_io = checkpoint_io
        self._accelerator = "cpu"  # the name; the Accelerator object is `self.accelerator`
        self._copies: ScriptCopies | None = None
        self._votes: StopVote | None = None  # this fit's stop votes (see stop_vote)
        self._vote_group: Any = None  # where votes are all-reduced: a CPU (gloo) group; None: the default one
        self._vote_group_ready = False

    def configure(self, accelerator: str, device_ids: list[int], num_nodes: int) -> None:
        self._accelerator = accelerator
        self.num_processes, self.num_nodes = len(device_ids), num_nodes
        if self.cluster_environment is None:
            self.cluster_environment = detect_environment()
        check_environment(self.cluster_environment, self.num_processes, num_nodes)
        # Decided once: fulmen's own copies of the script find LOCAL_RANK set, and so would look
        # externally started to LightningEnvironment.
        self._external = self.cluster_environment.creates_processes_externally and os.environ.get(
            "FULMEN_LAUNCHED") != "1"
        self.set_ranks(self.cluster_environment.local_rank())

    def set_ranks(self, local_rank: int) -> None:
        """This process's ranks, as the environment gives them. An environment that fixes the ranks
        (torchrun, SLURM, Kubeflow, Ray) ignores the computed global rank and world size offered here."""
        env = self.cluster_environment
        self.local_rank, self.node_rank = local_rank, env.node_rank()
        env.set_global_rank(self.node_rank * self.num_processes + local_rank)
        env.set_world_size(self.num_nodes * self.num_processes)
        self.global_rank, self.world_size = env.global_rank(), env.world_size()
        from fulmen.utilities.rank_zero import rank_zero_only

        rank_zero_only.rank = self.global_rank  # the environment's guess at import may be a local rank

    @property
    def env(self) -> ClusterEnvironment | None:
        """The cluster environment (fulmen's older name for `cluster_environment`)."""
        return self.cluster_environment

    def root_device_index(self, device_ids: list[int]) -> int:
        return device_ids[self.local_rank] if self._accelerator == "cuda" else device_ids[0]

    # --- run lifecycle --------------------------------------------------------------------
    def setup_environment(self) -> None:
        """Start the other processes when nobody else did, then join the process group (once)."""
        if dist.is_available() and dist.is_initialized():
            if dist.get_world_size() != self.world_size:
                raise MisconfigurationException(
                    f"A process group of {dist.get_world_size()} processes already exists, but this Trainer asks "
                    f"for {self.world_size}. Fix: use the same devices/num_nodes as the run that created it."
                )
            self._make_vote_group()
            return
        env = self.cluster_environment
        started_by_fulmen = os.environ.get("FULMEN_LAUNCHED") == "1"
        if started_by_fulmen:
            die_with_parent()
        first_here = not self._external and self.local_rank == 0 and not started_by_fulmen
        if first_here and self.num_processes > 1 and not self.spawns:
            self._copies = ScriptCopies(self)
            self._copies.start()
        # torch.distributed's env:// rendezvous reads these.
        os.environ.setdefault("MASTER_ADDR", env.main_address)
        os.environ.setdefault("MASTER_PORT", str(env.main_port))
        if self._accelerator == "cuda":
            torch.cuda.set_device(self.root_device)
        backend = self.process_group_backend or ("nccl" if self._accelerator == "cuda" else "gloo")
        dist.init_process_group(backend, rank=self.global_rank, world_size=self.world_size, timeout=self.timeout)
        atexit.register(self._leave_group)
        self._make_vote_group()

    def _make_vote_group(self) -> None:
        """The per-batch stop vote runs on CPU tensors: on a GPU group, reading the vote's result
        would wait for the batch's kernels, and the host could never run ahead of the device."""
        if not self._vote_group_ready:
            self._vote_group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
            self._vote_group_ready = True

    def _leave_group(self) -> None:
        """At exit: close the process group while the interpreter is whole, all ranks together.

        Gloo work still referenced during interpreter shutdown, or a rank closing its connections
        while another still uses them, aborts the process ("terminate called without an active
        exception"). So: free the (usually cyclic) garbage that holds the DDP wrapper, wait for
        the other ranks (not after a failure: they may be gone), then destroy the group.
        """
        gc.collect()
        if not self._grouped():
            return
        if not self.failing:
            with contextlib.suppress(Exception):  # a rank that died: nothing left to wait for
                if dist.get_backend() == "gloo":
                    dist.monitored_barrier(timeout=dt.timedelta(seconds=60))
                else:
                    dist.barrier()
        dist.destroy_process_group()

    def explain_failure(self, exc: BaseException) -> BaseException | None:
        """A clearer error when `exc` came from another rank failing (found by rank 0's watcher)."""
        copies = self._copies
        if copies is None:
            return None
        deadline = time.monotonic() + 5.0  # the failed process may still be exiting
        while copies.first_failure() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        failure = copies.first_failure()
        if failure is None:
            return None
        rank, code = failure
        return DistributedFailure(
            f"Rank {rank} of {self.world_size} failed (exit code {code}; its traceback is printed above), so rank "
            f"{self.global_rank} stopped too. Received: {type(exc).__name__}: {str(exc)[:200]}. "
            f"Fix: correct the error rank {rank} reports."
        )

    # --- collectives ----------------------------------------------------------------------
    # Outside the process group (ddp_spawn's calling process, before or after its run) each is the
    # identity, as for one process.
    @staticmethod
    def _grouped() -> bool:
        return dist.is_available() and dist.is_initialized()

    def barrier(self, name: str | None = None) -> None:
        if self._grouped():
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self._grouped():
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        if not self._grouped():
            return tensor
        out = tensor.detach().clone()
        if not out.is_floating_point():
            out = out.double()
        dist.all_reduce(out, op=getattr(dist.ReduceOp, _OPS[reduce_op]))
        return out / self.world_size if reduce_op == "mean" else out

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self._grouped():
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002 (Lightning's name)
        if not self._grouped():
            return decision
        votes = torch.tensor(int(bool(decision)), device=self.root_device)
        dist.all_reduce(votes, op=dist.ReduceOp.SUM)
        return int(votes) == self.world_size if all else int(votes) > 0

    def stop_vote(self, stop: bool, signum: int = 0, settle: bool = False) -> tuple[bool, int]:
        """(whether any rank asked to stop, the largest preemption signal any rank received; 0: none),
        as all ranks agree on them, without a collective at every batch: see `fulmen.strategies.stop_vote`.
        `settle=True` (a point every rank reaches: an epoch's end, after validation) waits for the vote."""
        if not self._grouped():
            return stop, signum
        if self._votes is None:
            self._votes = StopVote(self._vote_group)
        return self._votes.cast(stop, signum, settle)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, background: bool = False) -> None:
        super().save_checkpoint(checkpoint, path, background)  # rank 0 writes
        if not self.failing:
            self.barrier("save_checkpoint")  # nobody reads or removes it before it is whole

    def teardown(self) -> None:
        super().teardown()
        self._votes = None  # a vote still in flight completes on its own; the next fit starts afresh
        if self.cluster_environment is not None:  # as Lightning: the environment undoes its set-up
            self.cluster_environment.teardown()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": self.world_size, "rank": self.global_rank}


class DDPStrategy(ParallelStrategy):
    """`DistributedDataParallel`, one process per device (Lightning's `strategy="ddp"`).

    Keyword arguments other than the ones below go to `DistributedDataParallel`, e.g.
    `find_unused_parameters=True`, `static_graph=True`, `gradient_as_bucket_view=True`.

    >>> DDPStrategy(find_unused_parameters=True, timeout=datetime.timedelta(seconds=120))  # doctest: +SKIP
    """

    name = "ddp"

    def __init__(
        self, *, process_group_backend: str | None = None, timeout: dt.timedelta = DEFAULT_TIMEOUT,
        start_method: str = "popen", cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None, **ddp_kwargs: Any,
    ) -> None:
        super().__init__(process_group_backend=process_group_backend, timeout=timeout,
                         cluster_environment=cluster_environment, checkpoint_io=checkpoint_io)
        if start_method not in ("popen", "spawn"):
            raise MisconfigurationException(
                f"DDPStrategy(start_method=...) must be 'popen' or 'spawn'. Received: start_method={start_method!r}. "
                "Fix: 'popen' (run copies of the script, the default) or 'spawn' (like strategy='ddp_spawn')."
            )
        self.spawns = start_method == "spawn"
        self.name = "ddp_spawn" if self.spawns else "ddp"
        self.ddp_kwargs = ddp_kwargs

    def setup_module(self, module: torch.nn.Module, device: torch.device, training: bool) -> None:
        from torch.nn.parallel import DistributedDataParallel

        if not training:  # evaluation needs no gradient sync: the module runs as it is
            self.model = module
            return
        if self._layer_sync is not None:  # e.g. BatchNorm -> SyncBatchNorm, before DDP sees the layers
            module = self._layer_sync.apply(module)
        device_ids = [device.index] if device.type == "cuda" else None
        self.model = DistributedDataParallel(module, device_ids=device_ids, **self.ddp_kwargs)

    def training_step(self, module: Any) -> Any:
        ddp = self.model
        if ddp is module:
            return module.training_step
        return lambda *args: call_through(ddp, module, module.training_step, *args)  # the args training_step takes

    def no_backward_sync(self, module: torch.nn.Module | None = None) -> contextlib.AbstractContextManager:
        return (self.model if module is None else module).no_sync()
