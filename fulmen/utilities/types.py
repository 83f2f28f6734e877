"""The type names Lightning's hooks and utilities are annotated with (`lightning.pytorch.utilities.types`
and `lightning.fabric.utilities.types` together), so annotations written against Lightning resolve.

`LRSchedulerConfig` is fulmen's own (`fulmen.optim.LRSchedulerConfig`): the same dataclass, fields and
defaults as Lightning's, and the object `trainer.lr_scheduler_configs` holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, TypedDict, TypeVar, Union, runtime_checkable

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from typing_extensions import NotRequired, Required, TypeAlias

from fulmen.optim import LRSchedulerConfig

if TYPE_CHECKING:
    from torchmetrics import Metric  # optional: only type checkers need it

# --- fabric: paths, devices, parameters ------------------------------------------------------
UntypedStorage: TypeAlias = torch.UntypedStorage
_PATH = Union[str, Path]
_DEVICE = Union[torch.device, str, int]
_MAP_LOCATION_TYPE = Optional[
    Union[_DEVICE, Callable[[UntypedStorage, str], Optional[UntypedStorage]], dict[_DEVICE, _DEVICE]]
]
_PARAMETERS = Iterator[torch.nn.Parameter]

if torch.distributed.is_available():
    from torch.distributed import ProcessGroup, ReduceOp

    RedOpType: TypeAlias = ReduceOp.RedOpType
else:  # a torch built without distributed support
    ProcessGroup = Any  # type: ignore[assignment,misc]
    ReduceOp = RedOpType = object  # type: ignore[assignment,misc]

_DictKey = TypeVar("_DictKey")


@runtime_checkable
class _Stateful(Protocol[_DictKey]):
    """Anything with `state_dict`/`load_state_dict`: `isinstance(obj, _Stateful)` tells whether to checkpoint it."""

    def state_dict(self) -> dict[_DictKey, Any]: ...

    def load_state_dict(self, state_dict: dict[_DictKey, Any]) -> None: ...


@runtime_checkable
class CollectibleGroup(Protocol):
    def size(self) -> int: ...

    def rank(self) -> int: ...


@runtime_checkable
class Steppable(Protocol):
    """Anything with `step(closure=None)`, as an optimizer has."""

    def step(self, closure: Callable[[], float] | None = ...) -> float | None: ...


@runtime_checkable
class Optimizable(Steppable, Protocol):
    """What fulmen needs of an optimizer: `step`, its param groups, defaults and state."""

    param_groups: list[dict[Any, Any]]
    defaults: dict[Any, Any]
    state: defaultdict[Tensor, Any]

    def state_dict(self) -> dict[str, dict[Any, Any]]: ...

    def load_state_dict(self, state_dict: dict[str, dict[Any, Any]]) -> None: ...


# --- pytorch: what hooks take and return -----------------------------------------------------
_NUMBER = Union[int, float]
_METRIC = Union["Metric", Tensor, _NUMBER]
STEP_OUTPUT = Optional[Union[Tensor, Mapping[str, Any]]]
_EVALUATE_OUTPUT = list[Mapping[str, float]]  # one dict per dataloader
_PREDICT_OUTPUT = Union[list[Any], list[list[Any]]]
TRAIN_DATALOADERS = Any  # an iterable of batches, or a collection of them
EVAL_DATALOADERS = Any

LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]
LRSchedulerType = Union[type[LRScheduler], type[ReduceLROnPlateau]]
LRSchedulerPLType = Union[LRScheduler, ReduceLROnPlateau]


class LRSchedulerConfigType(TypedDict, total=False):
    """The dict form of a scheduler in `configure_optimizers` ({"scheduler": s, "interval": "step", ...})."""

    scheduler: Required[LRSchedulerTypeUnion]
    name: Optional[str]
    interval: str
    frequency: int
    reduce_on_plateau: bool
    monitor: Optional[str]
    strict: bool


class OptimizerConfig(TypedDict):
    optimizer: Optimizer


class OptimizerLRSchedulerConfig(TypedDict):
    optimizer: Optimizer
    lr_scheduler: Union[LRSchedulerTypeUnion, LRSchedulerConfigType]
    monitor: NotRequired[str]


OptimizerLRScheduler = Optional[
    Union[
        Optimizer,
        Sequence[Optimizer],
        tuple[Sequence[Optimizer], Sequence[Union[LRSchedulerTypeUnion, LRSchedulerConfig]]],
        OptimizerConfig,
        OptimizerLRSchedulerConfig,
        Sequence[OptimizerConfig],
        Sequence[OptimizerLRSchedulerConfig],
    ]
]


@runtime_checkable
class DistributedDataParallel(Protocol):
    """The shape of torch's DistributedDataParallel, for annotations."""

    def no_sync(self) -> Any: ...


class _SizedIterable(Protocol):
    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator: ...


__all__ = [
    "EVAL_DATALOADERS", "LRScheduler", "LRSchedulerConfig", "LRSchedulerConfigType", "LRSchedulerPLType",
    "LRSchedulerType", "LRSchedulerTypeTuple", "LRSchedulerTypeUnion", "Optimizable", "OptimizerConfig",
    "OptimizerLRScheduler", "OptimizerLRSchedulerConfig", "ProcessGroup", "ReduceLROnPlateau", "ReduceOp",
    "RedOpType", "STEP_OUTPUT", "Steppable", "TRAIN_DATALOADERS", "UntypedStorage",
]
