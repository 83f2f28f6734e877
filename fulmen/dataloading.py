"""What data each stage runs on: finding the dataloaders, preparing them, counting batches, when validation runs.

`setup_dataloaders` is called once per run by `Trainer`: for fit it loads the training and
validation loaders (`load_train_dataloader`, `load_val_dataloaders`, which `fulmen.loop` calls
again when `reload_dataloaders_every_n_epochs` asks for fresh ones) and works out after how many
training batches validation runs (`compute_val_check_batch`); for validate/test/predict it loads
that stage's loaders. Loaders come from the arguments of the call, else the datamodule, else the
model (`loaders_from`), and each is prepared for the device (`prepare_loader`). The results are
stored on the trainer (`train_dataloader`, `num_training_batches`, `val_check_batch`, ...),
where the loops and users read them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from fulmen.data import as_loader_list, num_batches, with_sampler
from fulmen.datamodule import LightningDataModule
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.hooks import is_overridden
from fulmen.module import LightningModule
from fulmen.seed import worker_init_function
from fulmen.state import TrainerFn

if TYPE_CHECKING:  # trainer.py imports this module, so only the type checker may import it back
    from fulmen.trainer import Trainer


def setup_dataloaders(trainer: Trainer, fn: TrainerFn, model: LightningModule, datamodule: Any, data: dict) -> None:
    """Load the loaders stage `fn` runs on; `data` holds the loaders passed to fit/validate/test/predict."""
    trainer._fit_data = data
    trainer._val_enabled = False
    if fn == TrainerFn.FITTING:
        load_train_dataloader(trainer)
        load_val_dataloaders(trainer)
        trainer._val_enabled = bool(trainer._val_loaders) and trainer.limit_val_batches != 0
        has_step = is_overridden("validation_step", model, LightningModule)
        if has_step and not trainer._val_loaders:
            warn_once("validation_step is defined but there is no validation data, so validation is skipped. "
                      "Fix: pass val_dataloaders to fit, or define val_dataloader().")
        elif trainer._val_loaders and not has_step:
            warn_once("Validation data was given but the model has no validation_step, so validation is skipped. "
                      "Fix: define validation_step(self, batch, batch_idx).")
        trainer._val_enabled = trainer._val_enabled and has_step
        compute_val_check_batch(trainer)
    elif fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
        kind = "val" if fn == TrainerFn.VALIDATING else "test"
        explicit = data.get("eval_loaders")
        loaders = as_loader_list(explicit, "dataloaders") if explicit is not None else loaders_from(kind, model, datamodule)
        step = "validation_step" if kind == "val" else "test_step"
        if not loaders:
            raise MisconfigurationException(
                f"trainer.{fn.value}() found no data. Received: dataloaders=None and no {kind}_dataloader(). "
                f"Fix: trainer.{fn.value}(model, dataloaders=DataLoader(...))."
            )
        if not is_overridden(step, model, LightningModule):
            raise MisconfigurationException(
                f"trainer.{fn.value}() needs {type(model).__name__}.{step}. Received: no {step} override. "
                f"Fix: define `def {step}(self, batch, batch_idx)`."
            )
        loaders = [prepare_loader(trainer, dl, train=False) for dl in loaders]
        limit = trainer.limit_val_batches if kind == "val" else trainer.limit_test_batches
        counts = [num_batches(dl, limit) for dl in loaders]
        if kind == "val":
            trainer._val_loaders, trainer.num_val_batches = loaders, counts
        else:
            trainer._test_loaders, trainer.num_test_batches = loaders, counts
    else:
        explicit = data.get("predict")
        loaders = as_loader_list(explicit, "dataloaders") if explicit is not None else loaders_from("predict", model, datamodule)
        if not loaders:
            raise MisconfigurationException(
                "trainer.predict() found no data. Received: dataloaders=None and no predict_dataloader(). "
                "Fix: trainer.predict(model, dataloaders=DataLoader(...))."
            )
        trainer._predict_loaders = [prepare_loader(trainer, dl, train=False) for dl in loaders]
        trainer.num_predict_batches = [num_batches(dl, trainer.limit_predict_batches) for dl in trainer._predict_loaders]


def load_train_dataloader(trainer: Trainer) -> None:
    """Set `trainer.train_dataloader` and `num_training_batches`; fit runs on exactly one loader."""
    loaders = _fit_loaders(trainer, "train")
    if not loaders:
        raise MisconfigurationException(
            "fit found no training data. Received: train_dataloaders=None, no datamodule.train_dataloader() and "
            "no model.train_dataloader(). Fix: trainer.fit(model, train_dataloaders=DataLoader(dataset, ...))."
        )
    if len(loaders) > 1:
        raise MisconfigurationException(
            f"fit takes one training dataloader. Received: {len(loaders)} training dataloaders. "
            "Fix: combine the datasets (torch.utils.data.ConcatDataset) into one DataLoader."
        )
    trainer.train_dataloader = prepare_loader(trainer, loaders[0], train=True)
    trainer.num_training_batches = num_batches(trainer.train_dataloader, trainer.limit_train_batches)
    trainer._last_train_reload_epoch = trainer.state.epoch


def load_val_dataloaders(trainer: Trainer) -> None:
    """Set fit's validation loaders and their batch counts (none is fine: validation is then skipped)."""
    loaders = _fit_loaders(trainer, "val")
    trainer._val_loaders = [prepare_loader(trainer, dl, train=False) for dl in loaders]
    trainer.num_val_batches = [num_batches(dl, trainer.limit_val_batches) for dl in trainer._val_loaders]
    trainer.num_sanity_val_batches = [min(trainer.num_sanity_val_steps, n) for n in trainer.num_val_batches]


def compute_val_check_batch(trainer: Trainer) -> None:
    """Set `trainer.val_check_batch`: validate every this many training batches (inf: at epoch end)."""
    interval, n = trainer.val_check_interval, trainer.num_training_batches
    if isinstance(interval, int):
        if trainer.check_val_every_n_epoch is not None and n != float("inf") and interval > n:
            raise MisconfigurationException(
                f"val_check_interval ({interval}) is larger than the number of training batches ({n}), so "
                f"validation would never run. Received: val_check_interval={interval}. Fix: use a value <= {n}, "
                "set check_val_every_n_epoch=None to count batches across epochs, or limit_val_batches=0 to "
                "disable validation."
            )
        trainer.val_check_batch = interval
    elif n == float("inf"):
        if interval != 1.0:
            raise MisconfigurationException(
                "A fractional val_check_interval needs a training dataloader with a length. "
                f"Received: val_check_interval={interval} with an iterable of unknown length. "
                "Fix: pass an int number of batches."
            )
        trainer.val_check_batch = float("inf")
    else:
        trainer.val_check_batch = max(1, int(n * interval))


def _fit_loaders(trainer: Trainer, kind: str) -> list[Any]:
    """fit's "train" or "val" loaders: those passed to fit, else the datamodule's or the model's."""
    explicit = trainer._fit_data.get(kind)
    if explicit is not None:
        return as_loader_list(explicit, f"{kind}_dataloaders")
    return loaders_from(kind, trainer.lightning_module, trainer.datamodule)


def loaders_from(kind: str, model: LightningModule, datamodule: Any) -> list[Any]:
    """`{kind}_dataloader()` of the datamodule when it overrides it, else of the model, else []."""
    method = f"{kind}_dataloader"
    if datamodule is not None and is_overridden(method, datamodule, LightningDataModule):
        return as_loader_list(getattr(datamodule, method)(), method)
    if callable(getattr(model, method, None)):
        return as_loader_list(getattr(model, method)(), method)
    return []


def prepare_loader(trainer: Trainer, loader: Any, train: bool) -> Any:
    """Fit a DataLoader to the run: pinned memory on CUDA, seeded workers, no shuffling under overfit_batches."""
    if not isinstance(loader, DataLoader):
        return loader
    if trainer._device.type == "cuda" and not loader.pin_memory:
        # Page-locked host memory lets the copy to the GPU run asynchronously (non_blocking).
        loader.pin_memory = True
    if os.environ.get("PL_SEED_WORKERS") == "1" and loader.num_workers > 0 and loader.worker_init_fn is None:
        loader.worker_init_fn = worker_init_function
    if train and trainer.overfit_batches and isinstance(loader.sampler, RandomSampler):
        warn_once("overfit_batches is set: the training data is not shuffled, so every epoch sees the same batches.")
        loader = with_sampler(loader, SequentialSampler(loader.dataset))
    return loader


def one_or_list(loaders: list[Any]) -> Any:
    """None, the one loader, or the list of them: how Lightning's `*_dataloaders` properties answer."""
    if not loaders:
        return None
    return loaders[0] if len(loaders) == 1 else loaders
