"""Tensor parallelism combined with FSDP2 on a 2-D device mesh (Lightning's `ModelParallelStrategy`).

The processes form a mesh of `data_parallel_size` rows by `tensor_parallel_size` columns, with the
dimension names "data_parallel" and "tensor_parallel" (rank r sits in row r // tp, column r % tp).
The strategy builds the mesh when the processes join (`setup_environment`); the module reads it as
`self.device_mesh` in `configure_model` and parallelizes itself there with torch's own tools:

    def configure_model(self):
        tp, dp = self.device_mesh["tensor_parallel"], self.device_mesh["data_parallel"]
        parallelize_module(self.mlp, tp, {"w1": ColwiseParallel(), "w2": RowwiseParallel()})
        fully_shard(self.mlp, mesh=dp)

What this strategy adds to FSDPStrategy (whose sharded checkpoints, state-dict verbs and gradient-sync
switch it reuses):
- data: each row of the mesh reads one share of the data; the ranks of a row (one tensor-parallel
  group) read the same batches, since they compute one model together;
- gradients over the data-parallel dimension: if `configure_model` did not call `fully_shard`, the
  root is sharded over the "data_parallel" mesh, so replicas never drift apart silently;
- checkpoints: `save_distributed_checkpoint=True` (the default) writes a directory with
  torch.distributed.checkpoint, every rank its own shards; False gathers one ordinary `.ckpt` on rank 0.
  Either loads on another mesh shape, one process included (through whole tensors, see
  `fulmen.checkpoint.load_checkpoint`).

The Trainer hands `device_mesh` to the module before `configure_model`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from fulmen.errors import MisconfigurationException
from fulmen.strategies.ddp import DEFAULT_TIMEOUT
from fulmen.strategies.fsdp import FSDPStrategy

MESH_DIM_NAMES = ("data_parallel", "tensor_parallel")


class ModelParallelStrategy(FSDPStrategy):
    """FSDP2 over the "data_parallel" dimension x tensor parallelism over the "tensor_parallel" one.

    `data_parallel_size`: how many model replicas ("auto": the number of nodes).
    `tensor_parallel_size`: how many processes share one replica ("auto": the devices on one node).
    Their product must be the number of processes.

    >>> ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=2).name
    'model_parallel'
    """

    name = "model_parallel"

    def __init__(
        self, data_parallel_size: int | str = "auto", tensor_parallel_size: int | str = "auto",
        save_distributed_checkpoint: bool = True, process_group_backend: str | None = None,
        timeout: dt.timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(state_dict_type="sharded" if save_distributed_checkpoint else "full",
                         process_group_backend=process_group_backend, timeout=timeout)
        for arg, value in (("data_parallel_size", data_parallel_size), ("tensor_parallel_size", tensor_parallel_size)):
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise MisconfigurationException(
                    f"ModelParallelStrategy({arg}=...) must be 'auto' or a positive int. Received: {arg}={value!r}. "
                    f"Fix: e.g. {arg}=2, or 'auto'."
                )
        self.requested_sizes = (data_parallel_size, tensor_parallel_size)
        self.data_parallel_size = self.tensor_parallel_size = 1  # resolved in `configure`
        self.save_distributed_checkpoint = save_distributed_checkpoint
        self._device_mesh: Any = None
        self._sharded: list[nn.Module] = []  # the FSDP2-sharded modules, found in setup_module

    def configure(self, accelerator: str, device_ids: list[int], num_nodes: int) -> None:
        super().configure(accelerator, device_ids, num_nodes)
        dp, tp = self.requested_sizes
        # As Lightning: replicas across nodes, tensor parallelism within a node (its fast links).
        dp = self.num_nodes if dp == "auto" else dp
        tp = self.world_size // self.num_nodes if tp == "auto" else tp
        if dp * tp != self.world_size:  # found at Trainer(...), before any process starts
            raise MisconfigurationException(
                f"ModelParallelStrategy's mesh must hold every process once: data_parallel_size x "
                f"tensor_parallel_size = {dp} x {tp} = {dp * tp}, but the run has {self.world_size} processes. "
                f"Received: data_parallel_size={self.requested_sizes[0]!r}, "
                f"tensor_parallel_size={self.requested_sizes[1]!r}, world_size={self.world_size}. "
                "Fix: choose sizes whose product is devices x num_nodes."
            )
        self.data_parallel_size, self.tensor_parallel_size = dp, tp

    @property
    def device_mesh(self) -> Any:
        """The (data_parallel, tensor_parallel) DeviceMesh, once the processes have joined."""
        if self._device_mesh is None:
            raise RuntimeError(
                "ModelParallelStrategy.device_mesh was read before the processes joined. Received: no mesh yet. "
                "Fix: read it from configure_model (self.device_mesh) or later."
            )
        return self._device_mesh

    # --- run lifecycle --------------------------------------------------------------------
    def setup_environment(self) -> None:
        super().setup_environment()
        if self._device_mesh is None:  # once: fit then test reuse the mesh (and its process groups)
            from torch.distributed.device_mesh import init_device_mesh

            self._device_mesh = init_device_mesh(
                self.root_device.type, (self.data_parallel_size, self.tensor_parallel_size),
                mesh_dim_names=MESH_DIM_NAMES,
            )

    def setup_module(self, module: nn.Module, device: torch.device, training: bool) -> None:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel, fully_shard

        from fulmen.module import LightningModule
        from fulmen.utilities.model_helpers import is_overridden

        if isinstance(module, LightningModule) and not is_overridden("configure_model", module, LightningModule):
            raise TypeError(
                f"ModelParallelStrategy parallelizes the model in configure_model, which "
                f"{type(module).__name__} does not define. Received: strategy=ModelParallelStrategy. "
                "Fix: define configure_model and call parallelize_module(..., self.device_mesh['tensor_parallel'], "
                "...) and fully_shard(..., mesh=self.device_mesh['data_parallel']) there, or use strategy='fsdp'."
            )
        if any(isinstance(m, FullyShardedDataParallel) for m in module.modules()):
            raise TypeError(
                "ModelParallelStrategy runs FSDP2 (torch.distributed.fsdp.fully_shard), but the model holds the older "
                "FullyShardedDataParallel wrapper. Received: a FullyShardedDataParallel submodule. "
                "Fix: call fully_shard(module, mesh=self.device_mesh['data_parallel']) in configure_model instead."
            )
        if not any(isinstance(m, FSDPModule) for m in module.modules()):
            dp_mesh = self.device_mesh["data_parallel"]
            fully_shard(module, mesh=dp_mesh, reshard_after_forward=self.reshard_after_forward)
        self.model = module
        # configure_model may have sharded submodules only: no_backward_sync switches each one.
        self._sharded = [m for m in module.modules() if isinstance(m, FSDPModule)]

    @contextlib.contextmanager
    def no_backward_sync(self, module: nn.Module | None = None) -> Iterator[None]:
        from torch.distributed.fsdp import FSDPModule

        sharded = self._sharded if module is None else [m for m in module.modules() if isinstance(m, FSDPModule)]
        for m in sharded:
            m.set_requires_gradient_sync(False, recurse=False)
        try:
            yield
        finally:
            for m in sharded:
                m.set_requires_gradient_sync(True, recurse=False)

    def teardown(self) -> None:
        super().teardown()
        self._sharded = []

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        # One share of the data per mesh row: a tensor-parallel group computes one batch together.
        return {"num_replicas": self.data_parallel_size, "rank": self.global_rank // self.tensor_parallel_size}


class FabricModelParallelStrategy(ModelParallelStrategy):
    """Lightning Fabric's `ModelParallelStrategy(parallelize_fn, ...)`: a Fabric loop has no
    `configure_model`, so `parallelize_fn(module, device_mesh)` parallelizes the module (and returns
    it) when Fabric sets it up; the rest is ModelParallelStrategy's.

    >>> FabricModelParallelStrategy(lambda m, mesh: m, data_parallel_size=1, tensor_parallel_size=2).name
    'model_parallel'
    """

    def __init__(
        self, parallelize_fn: Any, data_parallel_size: int | str = "auto", tensor_parallel_size: int | str = "auto",
        save_distributed_checkpoint: bool = True, process_group_backend: str | None = None,
        timeout: dt.timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        if not callable(parallelize_fn):
            raise TypeError(
                "ModelParallelStrategy for Fabric takes parallelize_fn(module, device_mesh) -> module first. "
                f"Received: parallelize_fn={parallelize_fn!r}. Fix: pass the function that parallelizes the model."
            )
        super().__init__(data_parallel_size, tensor_parallel_size, save_distributed_checkpoint,
                         process_group_backend, timeout)
        self.parallelize_fn = parallelize_fn

    def setup_module(self, module: nn.Module, device: torch.device, training: bool) -> None:
        parallelized = self.parallelize_fn(module, self.device_mesh)
        if not isinstance(parallelized, nn.Module):
            raise TypeError(
                "parallelize_fn must return the parallelized module. Received: "
                f"{type(parallelized).__name__}. Fix: end parallelize_fn with `return module`."
            )
        super().setup_module(parallelized, device, training)
