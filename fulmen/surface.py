"""Lightning's import paths, and what fulmen puts at each: the whole compatibility surface in one table.

fulmen keeps its own layout (`fulmen/trainer.py`, `fulmen/loop.py`, ...). Lightning's public API is
a *surface* over it, listed here and nowhere else: the drop-in runner (`fulmen.alias`) reads this
table to answer `import lightning.pytorch.callbacks.model_checkpoint`, `from pytorch_lightning
import Trainer` or `from lightning.fabric.utilities.types import _PATH`.

Keys are Lightning paths below a root: `pytorch.x.y` is `lightning.pytorch.x.y` and
`pytorch_lightning.x.y`; `fabric.x.y` is `lightning.fabric.x.y` and `lightning_fabric.x.y`; `""` is
the top-level `lightning` package. A value is either

- `"fulmen.a.b"`: that fulmen module. A Lightning module with no children here is the fulmen
  module object itself (patching it patches fulmen); a Lightning package gets a view whose names
  are the fulmen module's, plus its children from this table.
- `{"Name": "fulmen.a.b:Name", "*": "fulmen.c"}`: a module gathering names fulmen keeps in
  several files (`"fulmen.a.b"` alone is a module object; `"*"` takes every public name of
  a module).

A path missing here (Lightning's internals: `trainer.connectors`, the loop classes, ...) fails
with an error that says fulmen does not provide it. This file imports nothing: every value is a
string, resolved on first use.
"""

from __future__ import annotations

# The Lightning release whose API fulmen implements and is tested against (the parity tests run the
# same programs on it). `lightning.__version__` and `pytorch_lightning.__version__` report it under
# the alias, so that version gates (`Version(pl.__version__) >= Version("2.0")`) take their 2.x
# path; `fulmen.__version__` stays fulmen's own.
LIGHTNING_API_VERSION = "2.6.6"

# The import names the alias answers for, and the root of the table each one stands for.
ROOTS = {
    "lightning": "",
    "pytorch_lightning": "pytorch",
    "lightning_fabric": "fabric",
}

_TOP = {  # lightning.pytorch / pytorch_lightning
    "Callback": "fulmen.callbacks.callback:Callback",
    "LightningDataModule": "fulmen.datamodule:LightningDataModule",
    "LightningModule": "fulmen.module:LightningModule",
    "Trainer": "fulmen.trainer:Trainer",
    "seed_everything": "fulmen.utilities.seed:seed_everything",  # with Lightning's verbose=
    "cli_lightning_logo": "fulmen.cli:cli_lightning_logo",
    "LIGHTNING_LOGO": "fulmen.cli:LIGHTNING_LOGO",
}

TABLE: dict[str, str | dict[str, str]] = {
    # --- lightning --------------------------------------------------------------------------------
    "": {
        "Callback": _TOP["Callback"],
        "LightningDataModule": _TOP["LightningDataModule"],
        "LightningModule": _TOP["LightningModule"],
        "Trainer": _TOP["Trainer"],
        "seed_everything": _TOP["seed_everything"],
        "Fabric": "fulmen.fabric.fabric:Fabric",  # `import lightning as L; L.Fabric(...)`
    },
    # --- lightning.pytorch ------------------------------------------------------------------------
    "pytorch": _TOP,
    "pytorch.accelerators": "fulmen.accelerators",
    "pytorch.accelerators.accelerator": "fulmen.accelerators",
    "pytorch.accelerators.cpu": "fulmen.accelerators",
    "pytorch.accelerators.cuda": "fulmen.accelerators",
    "pytorch.accelerators.gpu": {"GPUAccelerator": "fulmen.accelerators:CUDAAccelerator"},  # Lightning 1.x
    "pytorch.accelerators.mps": {"*": "fulmen.accelerators", "get_device_stats": "fulmen.accelerators:get_mps_stats"},
    "pytorch.accelerators.xla": "fulmen.accelerators",
    "pytorch.callbacks": "fulmen.callbacks",
    "pytorch.callbacks.base": "fulmen.callbacks.callback",  # Lightning 1.x
    "pytorch.callbacks.batch_size_finder": "fulmen.callbacks.batch_size_finder",
    "pytorch.callbacks.callback": "fulmen.callbacks.callback",
    "pytorch.callbacks.checkpoint": "fulmen.callbacks.checkpoint",
    "pytorch.callbacks.device_stats_monitor": "fulmen.callbacks.device_stats_monitor",
    "pytorch.callbacks.early_stopping": "fulmen.callbacks.early_stopping",
    "pytorch.callbacks.finetuning": "fulmen.callbacks.finetuning",
    "pytorch.callbacks.gradient_accumulation_scheduler": "fulmen.callbacks.gradient_accumulation_scheduler",
    "pytorch.callbacks.lambda_function": "fulmen.callbacks.lambda_function",
    "pytorch.callbacks.lr_finder": "fulmen.callbacks.lr_finder",
    "pytorch.callbacks.lr_monitor": "fulmen.callbacks.lr_monitor",
    "pytorch.callbacks.model_checkpoint": "fulmen.callbacks.model_checkpoint",
    "pytorch.callbacks.model_summary": "fulmen.callbacks.model_summary",
    "pytorch.callbacks.on_exception_checkpoint": "fulmen.callbacks.on_exception_checkpoint",
    "pytorch.callbacks.prediction_writer": "fulmen.callbacks.prediction_writer",
    "pytorch.callbacks.progress": {
        "ProgressBar": "fulmen.callbacks.progress:ProgressBar",
        "TQDMProgressBar": "fulmen.callbacks.progress:TQDMProgressBar",
        "RichProgressBar": "fulmen.callbacks.rich_progress:RichProgressBar",
    },
    "pytorch.callbacks.progress.progress_bar": "fulmen.callbacks.progress",
    "pytorch.callbacks.progress.rich_progress": "fulmen.callbacks.rich_progress",
    "pytorch.callbacks.progress.tqdm_progress": "fulmen.callbacks.progress",
    "pytorch.callbacks.pruning": "fulmen.callbacks.pruning",
    "pytorch.callbacks.rich_model_summary": "fulmen.callbacks.rich_progress",
    "pytorch.callbacks.spike": "fulmen.callbacks.spike",
    "pytorch.callbacks.stochastic_weight_avg": "fulmen.callbacks.stochastic_weight_avg",
    "pytorch.callbacks.throughput_monitor": "fulmen.callbacks.throughput_monitor",
    "pytorch.callbacks.timer": "fulmen.callbacks.timer",
    "pytorch.callbacks.weight_averaging": "fulmen.callbacks.weight_averaging",
    "pytorch.cli": "fulmen.cli",
    "pytorch.core": {
        "LightningDataModule": _TOP["LightningDataModule"],
        "LightningModule": _TOP["LightningModule"],
    },
    "pytorch.core.datamodule": "fulmen.datamodule",
    "pytorch.core.hooks": "fulmen.module_hooks",
    "pytorch.core.lightning": "fulmen.module",  # Lightning 1.x's home of LightningModule
    "pytorch.core.mixins": {"HyperparametersMixin": "fulmen.hparams:HyperparametersMixin"},
    "pytorch.core.mixins.hparams_mixin": "fulmen.hparams",
    "pytorch.core.module": "fulmen.module",
    "pytorch.core.optimizer": "fulmen.optim",
    "pytorch.core.saving": "fulmen.saving",
    "pytorch.demos": "fulmen.demos",
    "pytorch.demos.boring_classes": "fulmen.demos.boring_classes",
    "pytorch.demos.mnist_datamodule": "fulmen.demos.mnist_datamodule",
    "pytorch.demos.lstm": "fulmen.demos.lstm",
    "pytorch.demos.transformer": "fulmen.demos.transformer",
    "pytorch.loggers": "fulmen.loggers",
    "pytorch.loggers.base": "fulmen.loggers.logger",  # Lightning 1.x (DummyLogger, rank_zero_experiment)
    "pytorch.loggers.comet": "fulmen.loggers.comet",
    "pytorch.loggers.csv_logs": "fulmen.loggers.csv_logs",
    "pytorch.loggers.logger": "fulmen.loggers.logger",
    "pytorch.loggers.mlflow": "fulmen.loggers.mlflow",
    "pytorch.loggers.neptune": "fulmen.loggers.neptune",
    "pytorch.loggers.tensorboard": "fulmen.loggers.tensorboard",
    "pytorch.loggers.wandb": "fulmen.loggers.wandb",
    "pytorch.plugins": "fulmen.plugins",
    "pytorch.plugins.environments": "fulmen.plugins.environments",
    "pytorch.plugins.io": "fulmen.plugins.io",
    "pytorch.plugins.io.async_plugin": "fulmen.plugins.io",
    "pytorch.plugins.io.checkpoint_plugin": "fulmen.plugins.io",
    "pytorch.plugins.io.torch_plugin": "fulmen.plugins.io",
    "pytorch.plugins.layer_sync": "fulmen.plugins.layer_sync",
    "pytorch.plugins.precision": "fulmen.plugins.precision",
    "pytorch.plugins.precision.precision": "fulmen.plugins.precision",
    "pytorch.plugins.precision.amp": "fulmen.plugins.precision",
    "pytorch.plugins.precision.double": "fulmen.plugins.precision",
    "pytorch.plugins.precision.half": "fulmen.plugins.precision",
    "pytorch.plugins.precision.fsdp": "fulmen.plugins.precision",
    "pytorch.profiler": "fulmen.profilers",  # Lightning 1.x
    "pytorch.profilers": "fulmen.profilers",
    "pytorch.profilers.advanced": "fulmen.profilers.advanced",
    "pytorch.profilers.base": "fulmen.profilers",  # Lightning 1.x
    "pytorch.profilers.profiler": "fulmen.profilers.profiler",
    "pytorch.profilers.pytorch": "fulmen.profilers.pytorch",
    "pytorch.profilers.simple": "fulmen.profilers.simple",
    "pytorch.profilers.xla": "fulmen.profilers.xla",
    "pytorch.serve": "fulmen.serve",
    "pytorch.serve.servable_module": "fulmen.serve",
    "pytorch.serve.servable_module_validator": "fulmen.serve",
    "pytorch.strategies": "fulmen.strategies",
    "pytorch.strategies.ddp": "fulmen.strategies.ddp",
    "pytorch.strategies.deepspeed": "fulmen.strategies",
    "pytorch.strategies.fsdp": "fulmen.strategies.fsdp",
    "pytorch.strategies.model_parallel": "fulmen.strategies",
    "pytorch.strategies.parallel": "fulmen.strategies",
    "pytorch.strategies.single_device": "fulmen.strategies",
    "pytorch.strategies.single_xla": "fulmen.strategies",
    "pytorch.strategies.strategy": "fulmen.strategies",
    "pytorch.strategies.xla": "fulmen.strategies",
    "pytorch.trainer": {"Trainer": _TOP["Trainer"], "seed_everything": _TOP["seed_everything"]},
    "pytorch.trainer.states": "fulmen.state",
    "pytorch.trainer.supporters": "fulmen.utilities.combined_loader",  # Lightning 1.x home of CombinedLoader
    "pytorch.trainer.trainer": "fulmen.trainer",
    "pytorch.tuner": "fulmen.tuner",
    "pytorch.tuner.batch_size_scaling": "fulmen.tuner.batch_size_scaling",
    "pytorch.tuner.lr_finder": "fulmen.tuner.lr_finder",
    "pytorch.tuner.tuning": "fulmen.tuner.tuning",
    "pytorch.utilities": "fulmen.utilities",
    "pytorch.utilities.apply_func": "fulmen.utilities.apply_func",  # Lightning 1.x
    "pytorch.utilities.cloud_io": "fulmen.utilities.cloud_io",  # Lightning 1.x
    "pytorch.utilities.combined_loader": "fulmen.utilities.combined_loader",
    "pytorch.utilities.compile": "fulmen.utilities.compile",
    "pytorch.utilities.data": "fulmen.utilities.data",
    "pytorch.utilities.deepspeed": "fulmen.utilities.deepspeed",
    "pytorch.utilities.distributed": "fulmen.utilities.distributed",  # Lightning 1.x
    "pytorch.utilities.enums": "fulmen.utilities.enums",
    "pytorch.utilities.exceptions": "fulmen.utilities.exceptions",
    "pytorch.utilities.grads": "fulmen.utilities.grads",
    "pytorch.utilities.imports": "fulmen.utilities.imports",
    "pytorch.utilities.memory": "fulmen.utilities.memory",
    "pytorch.utilities.migration": "fulmen.utilities.migration",
    "pytorch.utilities.migration.utils": "fulmen.utilities.migration",
    "pytorch.utilities.model_helpers": "fulmen.utilities.model_helpers",
    "pytorch.utilities.model_summary": "fulmen.utilities.model_summary",
    "pytorch.utilities.model_summary.model_summary": "fulmen.utilities.model_summary",
    "pytorch.utilities.parameter_tying": "fulmen.utilities.model_helpers",
    "pytorch.utilities.parsing": "fulmen.utilities.parsing",
    "pytorch.utilities.rank_zero": "fulmen.utilities.rank_zero",
    "pytorch.utilities.seed": "fulmen.utilities.seed",
    "pytorch.utilities.types": "fulmen.utilities.types",
    "pytorch.utilities.warnings": "fulmen.utilities.warnings",
    # --- lightning.fabric: fulmen.fabric (Fabric and its wrappers), and the parts it shares with the Trainer --
    "fabric": {
        "Fabric": "fulmen.fabric.fabric:Fabric",
        "seed_everything": _TOP["seed_everything"],
        "is_wrapped": "fulmen.fabric.wrappers:is_wrapped",
        "disable_possible_user_warnings": "fulmen.utilities.warnings:disable_possible_user_warnings",
    },
    "fabric.accelerators": "fulmen.accelerators",
    "fabric.fabric": "fulmen.fabric.fabric",
    "fabric.loggers": "fulmen.fabric.loggers",  # Fabric's signatures (root_dir=...), on the Trainer loggers' writers
    "fabric.loggers.csv_logs": "fulmen.fabric.loggers",
    "fabric.loggers.logger": "fulmen.loggers.logger",
    "fabric.loggers.tensorboard": "fulmen.fabric.loggers",
    "fabric.plugins": "fulmen.plugins",
    "fabric.plugins.environments": "fulmen.plugins.environments",
    "fabric.plugins.io": "fulmen.plugins.io",
    "fabric.plugins.io.checkpoint_io": "fulmen.plugins.io",
    "fabric.plugins.io.torch_io": "fulmen.plugins.io",
    "fabric.plugins.precision": "fulmen.plugins.precision",
    "fabric.plugins.environments.cluster_environment": "fulmen.plugins.environments",
    "fabric.plugins.environments.kubeflow": "fulmen.plugins.environments",
    "fabric.plugins.environments.lightning": "fulmen.plugins.environments",
    "fabric.plugins.environments.lsf": "fulmen.plugins.environments",
    "fabric.plugins.environments.mpi": "fulmen.plugins.environments",
    "fabric.plugins.environments.slurm": "fulmen.plugins.environments",
    "fabric.plugins.environments.torchelastic": "fulmen.plugins.environments",
    "fabric.plugins.environments.xla": "fulmen.plugins.environments",
    # Fabric's ModelParallelStrategy takes parallelize_fn first (the Trainer's takes the mesh sizes).
    "fabric.strategies": {"*": "fulmen.strategies",
                          "ModelParallelStrategy": "fulmen.strategies.model_parallel:FabricModelParallelStrategy"},
    "fabric.strategies.ddp": "fulmen.strategies.ddp",
    "fabric.strategies.fsdp": "fulmen.strategies.fsdp",
    "fabric.strategies.model_parallel": {
        "*": "fulmen.strategies.model_parallel",
        "ModelParallelStrategy": "fulmen.strategies.model_parallel:FabricModelParallelStrategy"},
    "fabric.strategies.parallel": "fulmen.strategies",
    "fabric.strategies.single_device": "fulmen.strategies",
    "fabric.strategies.strategy": "fulmen.strategies",
    "fabric.utilities": {"*": "fulmen.utilities", "Throughput": "fulmen.callbacks.throughput_monitor:Throughput"},
    "fabric.utilities.apply_func": "fulmen.utilities.apply_func",
    "fabric.utilities.cloud_io": "fulmen.utilities.cloud_io",
    "fabric.utilities.data": "fulmen.utilities.data",
    "fabric.utilities.distributed": "fulmen.utilities.distributed",
    "fabric.utilities.enums": "fulmen.utilities.enums",
    "fabric.utilities.exceptions": "fulmen.utilities.exceptions",
    "fabric.utilities.imports": "fulmen.utilities.imports",
    "fabric.utilities.rank_zero": "fulmen.utilities.rank_zero",
    "fabric.utilities.seed": "fulmen.utilities.seed",
    "fabric.utilities.spike": "fulmen.callbacks.spike",
    "fabric.utilities.throughput": {
        "measure_flops": "fulmen.utilities.model_summary:measure_flops",
        "Throughput": "fulmen.callbacks.throughput_monitor:Throughput",
        "get_available_flops": "fulmen.callbacks.throughput_monitor:get_available_flops",
    },
    "fabric.utilities.types": "fulmen.utilities.types",
    "fabric.utilities.warnings": "fulmen.utilities.warnings",
    "fabric.wrappers": "fulmen.fabric.wrappers",
}

# Names Lightning has and fulmen does not yet, and where they are planned: the error says so. (Fabric,
# once here, arrived with issue 17.)
PLANNED: dict[str, str] = {}


def lightning_path(name: str) -> str | None:
    """The table key for the import name `name` (`pytorch_lightning.utilities` -> `pytorch.utilities`),
    or None when `name` is not one of Lightning's (e.g. `lightning_utilities`, `lightningfoo`)."""
    head, dot, rest = name.partition(".")
    if head not in ROOTS:
        return None
    key = ROOTS[head]
    if head == "lightning" and rest:  # lightning.pytorch.x -> pytorch.x
        return rest
    return f"{key}.{rest}" if key and rest else key or rest


def has_children(key: str) -> bool:
    """Whether a Lightning path is a package here (other table paths lie below it)."""
    prefix = f"{key}." if key else ""
    return any(k.startswith(prefix) and k != key for k in TABLE)


def import_names(key: str) -> list[str]:
    """Every import name a table key answers for: `pytorch.utilities` ->
    `["lightning.pytorch.utilities", "pytorch_lightning.utilities"]`."""
    names = [f"lightning.{key}" if key else "lightning"]
    for root, root_key in ROOTS.items():
        if root_key and (key == root_key or key.startswith(f"{root_key}.")):
            names.append(root + key[len(root_key):])
    return names
