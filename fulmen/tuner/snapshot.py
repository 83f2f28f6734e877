"""Take the whole training state in memory and put it back, so a search leaves no trace.

A search (learning rate, batch size) runs real training steps inside `fit`. Before it, `take`
records what those steps change: the model's weights and buffers, the optimizers, schedulers and
gradient scaler, the Trainer's counters and settings, its callbacks and loggers, the metrics, and
every random generator (global and the DataLoader's own). `restore` puts all of it back, so the
fit that follows behaves bit for bit as one without the search.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from fulmen.dataloading import _generators
from fulmen.seed import load_rng_state_dict, rng_state_dict

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

# Trainer attributes a search replaces or advances (restored as they were, same objects).
_TRAINER_ATTRS = (
    "callbacks", "loggers", "_hooks", "lr_scheduler_configs", "max_steps", "max_epochs", "min_epochs", "min_steps",
    "train_dataloader", "num_training_batches", "val_check_batch", "limit_train_batches",
    "reload_dataloaders_every_n_epochs", "_val_loaders", "num_val_batches", "num_sanity_val_batches",
)
# Containers that the loop updates in place: copied, and their contents put back.
_TRAINER_DICTS = ("_callback_metrics", "_progress_bar_metrics", "_logged_metrics")


def _clone(value: Any) -> Any:
    return copy.deepcopy(value)


def take(trainer: Trainer) -> dict[str, Any]:
    """Everything `restore` puts back (see the module docstring)."""
    module = trainer.lightning_module
    scaler = trainer._precision.scaler
    loader = trainer.train_dataloader
    return {
        "model": {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()},
        "optimizers": [_clone(o.optimizer.state_dict()) for o in trainer._optimizers],
        "schedulers": [_clone(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs],
        "scaler": None if scaler is None else _clone(scaler.state_dict()),
        "state": copy.copy(vars(trainer.state)),
        "attrs": {name: getattr(trainer, name) for name in _TRAINER_ATTRS},
        "run_state": copy.copy(vars(trainer.run_state)),  # the run in progress, whole (fulmen/run_state.py)
        "after_batch": list(trainer.run_state.after_batch),
        "dicts": {name: dict(getattr(trainer, name)) for name in _TRAINER_DICTS},
        "rng": rng_state_dict(),
        "generators": [(g, g.get_state()) for g in _generators(loader)],
        "training": [(m, m.training) for m in module.modules()],
        "grads": [(p, None if p.grad is None else p.grad.detach().clone()) for p in module.parameters()],
    }


def restore(trainer: Trainer, snapshot: dict[str, Any]) -> None:
    """Put back what `take` recorded. Tensors are copied in place, so references stay valid."""
    module = trainer.lightning_module
    current = module.state_dict(keep_vars=True)
    for key, saved in snapshot["model"].items():
        current[key].data.copy_(saved)
    for param, grad in snapshot["grads"]:
        param.grad = grad
    for module_, training in snapshot["training"]:
        module_.training = training
    for name, value in snapshot["attrs"].items():
        setattr(trainer, name, value)
    vars(trainer.run_state).update(snapshot["run_state"])
    trainer.run_state.after_batch[:] = snapshot["after_batch"]
    for name, saved in snapshot["dicts"].items():
        target = getattr(trainer, name)
        target.clear()
        target.update(saved)
    for optimizer, saved in zip(trainer._optimizers, snapshot["optimizers"]):
        optimizer.optimizer.load_state_dict(_clone(saved))
    for config, saved in zip(trainer.lr_scheduler_configs, snapshot["schedulers"]):
        config.scheduler.load_state_dict(_clone(saved))
    if snapshot["scaler"] is not None:
        trainer._precision.scaler.load_state_dict(snapshot["scaler"])
    vars(trainer.state).update(snapshot["state"])
    load_rng_state_dict(snapshot["rng"])
    for generator, state in snapshot["generators"]:
        generator.set_state(state)
