"""Sorting `Trainer(plugins=...)` into what each plugin configures, checked before any work.

`resolve_plugins` takes the Trainer's `plugins` (one plugin or a list), `precision` and
`sync_batchnorm`, and returns a `ResolvedPlugins`: the precision (as a name, and the object that
runs it), the cluster environment, the checkpoint IO and the layer sync, at most one of each.
Which kinds exist, and what they set:

- a `ClusterEnvironment` (Lightning/SLURM/TorchElastic/Kubeflow/LSF/MPI or your own): where the
  parallel strategy takes its ranks, world size and rendezvous address from;
- a precision plugin (`Precision`, `DoublePrecision`, `HalfPrecision`, `MixedPrecision`, `FSDPPrecision`
  or a subclass): the precision, instead of `Trainer(precision=...)`;
- a `CheckpointIO` (`TorchCheckpointIO`, `AsyncCheckpointIO` or your own): what the strategy calls to
  save, load and remove checkpoint files;
- a `LayerSync` (`TorchSyncBatchNorm`, what `sync_batchnorm=True` means, or your own): applied to the
  module by the parallel strategies.

>>> resolve_plugins([DoublePrecision()]).precision
'64-true'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fulmen.errors import MisconfigurationException
from fulmen.plugins.environments import ClusterEnvironment
from fulmen.plugins.io import CheckpointIO
from fulmen.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from fulmen.plugins.precision import DoublePrecision, Precision  # noqa: F401 (DoublePrecision: the doctest)
from fulmen.precision import Precision as PrecisionEngine
from fulmen.precision import parse_precision

__all__ = ["ResolvedPlugins", "resolve_plugins"]

# Lightning's kind names, in the order its error lists them.
_KINDS = (("Precision", Precision), ("CheckpointIO", CheckpointIO), ("ClusterEnvironment", ClusterEnvironment),
          ("LayerSync", LayerSync))


@dataclass
class ResolvedPlugins:
    """What `Trainer(plugins=..., precision=..., sync_batchnorm=...)` asks for, one of each kind at most."""

    precision: str  # fulmen's name: "32-true", "16-mixed", ...
    precision_plugin: Precision | None = None
    cluster_environment: ClusterEnvironment | None = None
    checkpoint_io: CheckpointIO | None = None
    layer_sync: LayerSync | None = None

    @property
    def sync_batchnorm(self) -> bool:
        """Whether BatchNorm layers become SyncBatchNorm (`sync_batchnorm=True` or a TorchSyncBatchNorm plugin)."""
        return isinstance(self.layer_sync, TorchSyncBatchNorm)

    def precision_engine(self, device: torch.device) -> PrecisionEngine:
        """The object the loop runs forward, backward and the optimizer step through, on `device`."""
        if self.precision_plugin is not None:
            return self.precision_plugin.bind(device)
        return PrecisionEngine(self.precision, device)


def _listed(plugins: Any) -> list[Any]:
    if plugins is None:
        return []
    if isinstance(plugins, (list, tuple)):
        return list(plugins)
    return [plugins]


def _kind_of(plugin: Any) -> str:
    for name, cls in _KINDS:
        if isinstance(plugin, cls):
            return name
    raise MisconfigurationException(
        f"plugins= holds an object fulmen cannot use as a plugin: {type(plugin).__name__}. "
        f"Received: plugins=[..., {plugin!r}, ...]. Fix: pass only precision plugins (Precision, MixedPrecision, "
        "HalfPrecision, DoublePrecision, FSDPPrecision), CheckpointIO (TorchCheckpointIO, AsyncCheckpointIO), "
        "ClusterEnvironment (LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment, KubeflowEnvironment, "
        "LSFEnvironment, MPIEnvironment) or LayerSync (TorchSyncBatchNorm) objects, or subclasses of them "
        "(from fulmen.plugins / lightning.pytorch.plugins)."
    )


def resolve_plugins(plugins: Any = None, *, precision: Any = None, sync_batchnorm: bool = False) -> ResolvedPlugins:
    """Sort `plugins` by kind and check them against `precision` and `sync_batchnorm` (see the module doc)."""
    found: dict[str, Any] = {}
    for plugin in _listed(plugins):
        kind = _kind_of(plugin)
        if kind in found:
            raise MisconfigurationException(
                f"plugins= holds two {kind} plugins, and a run can use only one of each kind. Received: "
                f"{type(found[kind]).__name__} and {type(plugin).__name__}. Fix: keep one of them."
            )
        found[kind] = plugin
    if not isinstance(sync_batchnorm, bool):
        raise MisconfigurationException(
            f"sync_batchnorm must be True or False. Received: sync_batchnorm={sync_batchnorm!r}. Fix: pass a bool."
        )
    layer_sync = found.get("LayerSync")
    if sync_batchnorm and layer_sync is not None and not isinstance(layer_sync, TorchSyncBatchNorm):
        raise MisconfigurationException(
            f"sync_batchnorm=True and a {type(layer_sync).__name__} plugin both say how to synchronise layers. "
            f"Received: sync_batchnorm=True, plugins=[{type(layer_sync).__name__}()]. Fix: choose one of them."
        )
    if layer_sync is None and sync_batchnorm:
        layer_sync = TorchSyncBatchNorm()
    plugin = found.get("Precision")
    if plugin is None:
        name = parse_precision(precision)
    else:
        name = plugin.precision
        if precision is not None and parse_precision(precision) != name:
            # ValueError, as Lightning raises here.
            raise ValueError(
                f"precision= and a precision plugin disagree. Received: precision={precision!r}, plugins=["
                f"{type(plugin).__name__}() ({name!r})]. Fix: drop precision= (the plugin sets it), or the plugin."
            )
    return ResolvedPlugins(
        precision=name, precision_plugin=plugin, cluster_environment=found.get("ClusterEnvironment"),
        checkpoint_io=found.get("CheckpointIO"), layer_sync=layer_sync,
    )
