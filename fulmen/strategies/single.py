"""The strategy interface, and its one-process case: one device, every collective the identity.

A strategy owns what changes when a run spans several processes: starting and joining them,
wrapping the module (DDP, FSDP2), running `training_step` through that wrapper, skipping the
gradient sync inside an accumulation window, the collectives the loop needs (barrier, broadcast,
all_reduce, a shared stop decision), and how checkpoints are gathered, written and loaded.
All strategies have the same verbs, so the loop never asks which one it runs under.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fulmen.checkpoint import after_landing, atomic_save, load_checkpoint, optimizer_state_by_index

if TYPE_CHECKING:  # fulmen.accelerators imports this package
    from fulmen.accelerators import Accelerator
    from fulmen.plugins.io import CheckpointIO
    from fulmen.plugins.layer_sync import LayerSync


class Strategy:
    """The verbs every strategy has, as one process on one device runs them (see SingleDeviceStrategy)."""

    name = "single_device"
    distributed = False
    spawns = False  # whether fit/validate/test/predict run in freshly spawned processes (ddp_spawn)
    launched = False  # True inside a process that ddp_spawn started
    failing = False  # set while handling an exception: no collectives then (the other ranks may be gone)

    def __init__(self) -> None:
        self.global_rank = self.local_rank = self.node_rank = 0
        self.world_size = self.num_nodes = self.num_processes = 1
        self.model: torch.nn.Module | None = None  # what the loop calls: the module, or its wrapper
        # Set by the Trainer from its arguments (fulmen.accelerators.setup_hardware).
        self.accelerator: Accelerator | None = None
        self._root_device = torch.device("cpu")
        self._checkpoint_io: CheckpointIO | None = None  # None: fulmen's own atomic writes
        self._layer_sync: LayerSync | None = None  # applied by the parallel strategies only

    # `root_device` and `checkpoint_io` are properties, so a subclass may compute them (Ray's
    # RayDDPStrategy defines root_device as a property); the Trainer sets the backing attributes.
    @property
    def root_device(self) -> torch.device:
        """The device this process runs the module on."""
        return self._root_device

    @root_device.setter
    def root_device(self, device: torch.device) -> None:
        self._root_device = device

    @property
    def checkpoint_io(self) -> CheckpointIO:
        """What writes, reads and removes checkpoint files (a `TorchCheckpointIO` unless one was given)."""
        if self._checkpoint_io is None:
            from fulmen.plugins.io import TorchCheckpointIO

            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO | None) -> None:
        self._checkpoint_io = io

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    def configure(self, accelerator: str, device_ids: list[int], num_nodes: int) -> None:
        """Called once by the Trainer with the parsed hardware arguments."""

    def root_device_index(self, device_ids: list[int]) -> int:
        return device_ids[0]

    # --- run lifecycle --------------------------------------------------------------------
    def setup_environment(self) -> None:
        """Start or join the other processes; nothing to do for one process."""

    def setup_module(self, module: torch.nn.Module, device: torch.device, training: bool) -> None:
        self.model = module

    def training_step(self, module: Any) -> Any:
        """The callable the loop uses as `training_step(batch, batch_idx)`."""
        return module.training_step

    def no_backward_sync(self, module: torch.nn.Module | None = None) -> contextlib.AbstractContextManager:
        """Entered around forward+backward of a batch that only accumulates gradients; `module`: the
        wrapper to switch (Fabric sets up several modules), None for the one `setup_module` stored."""
        return contextlib.nullcontext()

    def teardown(self) -> None:
        self.model = None
        if self._checkpoint_io is not None:
            self._checkpoint_io.teardown()  # e.g. AsyncCheckpointIO waits for its saves

    def explain_failure(self, exc: BaseException) -> BaseException | None:
        """A clearer error to raise instead of `exc` (e.g. naming another rank that failed), or None."""
        return None

    # --- collectives ----------------------------------------------------------------------
    def barrier(self, name: str | None = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def all_reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        return tensor

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002 (Lightning's name)
        return decision

    def stop_vote(self, stop: bool, signum: int = 0, settle: bool = False) -> tuple[bool, int]:
        """(stop, preemption signal) as all ranks agree on them (see ParallelStrategy.stop_vote)."""
        return stop, signum

    # --- checkpoints ----------------------------------------------------------------------
    def model_state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        return module.state_dict()

    def load_model_state_dict(self, module: torch.nn.Module, state_dict: dict[str, Any], strict: bool = True) -> None:
        module.load_state_dict(state_dict, strict=strict)

    def optimizer_state_dict(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        # A sharded (FSDP) checkpoint keys the state by parameter name: torch.optim wants indices.
        optimizer.load_state_dict(optimizer_state_by_index(state, module, optimizer))

    def _own_io(self) -> bool:
        """Whether checkpoint files go through fulmen's own writer (which can land them in the background)."""
        from fulmen.plugins.io import TorchCheckpointIO

        return self._checkpoint_io is None or type(self._checkpoint_io) is TorchCheckpointIO

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, background: bool = False) -> None:
        """Write `checkpoint` to `path` (rank 0) through `checkpoint_io`; see `fulmen.checkpoint.atomic_save`
        for `background` (fulmen's own writer only: another CheckpointIO decides itself when it writes)."""
        if self.is_global_zero:
            if self._own_io():
                atomic_save(checkpoint, path, background)
            else:
                self._checkpoint_io.save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
        """The checkpoint at `path`, read through `checkpoint_io` (every rank reads)."""
        if self._own_io():
            return load_checkpoint(path, map_location=map_location)
        return self._checkpoint_io.load_checkpoint(path, map_location=map_location)

    def remove_checkpoint(self, path: str | Path) -> None:
        """Delete a checkpoint file (rank 0), once the checkpoints being saved in the background are in place."""
        if self.is_global_zero:
            remove = _remove_file if self._own_io() else self._checkpoint_io.remove_checkpoint
            after_landing(lambda: remove(path))

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """`num_replicas` and `rank` for a DistributedSampler; None when the data needs no sharding."""
        return None


class SingleDeviceStrategy(Strategy):
    """One process on one device (Lightning's `strategy="single_device"`, what "auto" picks for one device).

    `device` pins the device (e.g. "cuda:1"); None, the default, lets `accelerator`/`devices` choose it.
    `checkpoint_io` writes, reads and removes the checkpoint files (see `fulmen.plugins.io`).
    `accelerator` and `precision_plugin` are Lightning's arguments; fulmen takes the accelerator and
    precision from the Trainer, so only None is accepted for them.

    >>> SingleDeviceStrategy(device="cpu").requested_device
    device(type='cpu')
    """

    def __init__(
        self, device: str | torch.device | int | None = None, accelerator: Any = None, checkpoint_io: Any = None,
        precision_plugin: Any = None,
    ) -> None:
        super().__init__()
        for arg, value in (("accelerator", accelerator), ("precision_plugin", precision_plugin)):
            if value is not None:
                raise TypeError(
                    f"SingleDeviceStrategy({arg}=...) is not supported by fulmen. Received: {arg}={value!r}. "
                    "Fix: pass the accelerator and precision to the Trainer (Trainer(accelerator=..., precision=...) "
                    "or plugins=[MixedPrecision(...)])."
                )
        if isinstance(device, int):
            device = torch.device("cuda", device)
        self.requested_device = None if device is None else torch.device(device)
        self._checkpoint_io = checkpoint_io


def _remove_file(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
