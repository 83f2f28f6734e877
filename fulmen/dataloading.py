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

import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from torch.utils.data import (
    BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler, SequentialSampler,
)

from fulmen.data import as_loader_list, num_batches, with_sampler
from fulmen.datamodule import LightningDataModule
from fulmen.errors import MisconfigurationException, warn_once
from fulmen.hooks import is_overridden
from fulmen.module import LightningModule
from fulmen.seed import load_rng_state_dict, rng_state_dict, worker_init_function
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
        trainer._predict_loaders = [prepare_loader(trainer, dl, train=False, predict=True) for dl in loaders]
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


def prepare_loader(trainer: Trainer, loader: Any, train: bool, predict: bool = False) -> Any:
    """Fit a DataLoader to the run: pinned memory on CUDA, seeded workers, no shuffling under
    overfit_batches, and each process's share of the data when there are several."""
    if not isinstance(loader, DataLoader):
        return loader
    loader = _distributed(trainer, loader, train, predict)
    if trainer._device.type == "cuda" and not loader.pin_memory:
        # Page-locked host memory lets the copy to the GPU run asynchronously (non_blocking).
        loader.pin_memory = True
    if os.environ.get("PL_SEED_WORKERS") == "1" and loader.num_workers > 0 and loader.worker_init_fn is None:
        loader.worker_init_fn = worker_init_function
    if train and trainer.overfit_batches and isinstance(loader.sampler, RandomSampler):
        warn_once("overfit_batches is set: the training data is not shuffled, so every epoch sees the same batches.")
        loader = with_sampler(loader, SequentialSampler(loader.dataset))
    return loader


def _distributed(trainer: Trainer, loader: DataLoader, train: bool, predict: bool) -> DataLoader:
    """`loader` with a sampler that gives this process its own share of the data (as Lightning's
    `use_distributed_sampler`): the user's shuffling and drop_last are kept; the order depends on
    the seed and the epoch (`set_epoch` is called each epoch), the same on every rank.

    Training, validation and test pad the last share with repeated samples so that every rank
    runs the same number of batches (their collectives must line up); predict does not pad, so
    every sample is predicted exactly once.
    """
    kwargs = trainer.strategy.distributed_sampler_kwargs
    if kwargs is None or not trainer.use_distributed_sampler:
        return loader
    batch_sampler = loader.batch_sampler
    sampler = loader.sampler if batch_sampler is None or type(batch_sampler) is BatchSampler else None
    if isinstance(sampler, (DistributedSampler, ShardedSampler)) or isinstance(loader.dataset, IterableDataset):
        return loader  # already sharded by the user, or a stream fulmen cannot split by index
    if sampler is None:
        warn_once(
            f"use_distributed_sampler: a DataLoader with a custom batch_sampler ({type(batch_sampler).__name__}) "
            "is used as it is, so every rank sees the same batches. Fix: shard it yourself by rank "
            "(trainer.global_rank, trainer.world_size), or pass a sampler instead of a batch_sampler."
        )
        return loader
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    if isinstance(sampler, (RandomSampler, SequentialSampler)) and not predict:
        shuffle = isinstance(sampler, RandomSampler) and not (train and trainer.overfit_batches)
        return with_sampler(loader, DistributedSampler(loader.dataset, shuffle=shuffle, seed=seed, **kwargs))
    return with_sampler(loader, ShardedSampler(sampler, pad=not predict, **kwargs))


class ShardedSampler(Sampler):
    """This rank's share (every `num_replicas`-th index) of any sampler's indices: for custom
    samplers, and for predict, unpadded."""

    def __init__(self, inner: Sampler, num_replicas: int, rank: int, pad: bool = True):
        self.inner, self.num_replicas, self.rank, self.pad = inner, num_replicas, rank, pad

    def __iter__(self) -> Iterator[int]:
        indices = list(self.inner)
        if self.pad and len(indices) % self.num_replicas:
            indices += indices[: self.num_replicas - len(indices) % self.num_replicas]
        return iter(indices[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        n = len(self.inner)  # type: ignore[arg-type]
        return -(-n // self.num_replicas) if self.pad else len(range(self.rank, n, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.inner, "set_epoch", None)):
            self.inner.set_epoch(epoch)


def one_or_list(loaders: list[Any]) -> Any:
    """None, the one loader, or the list of them: how Lightning's `*_dataloaders` properties answer."""
    if not loaders:
        return None
    return loaders[0] if len(loaders) == 1 else loaders


# --- exact resume: the data order and random state of a training epoch ----------------------------
def _generators(loader: Any) -> list[torch.Generator]:
    """The torch generators that decide `loader`'s order (its own, its sampler's, its batch sampler's)."""
    found: dict[int, torch.Generator] = {}
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            found.setdefault(id(generator), generator)
    return list(found.values())


def _is_stateful(loader: Any) -> bool:
    """Loaders that save their own position (e.g. torchdata's StatefulDataLoader)."""
    return callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None))


def epoch_start_state(loader: Any) -> dict[str, Any]:
    """What decides this epoch's data order, taken just before its iterator is created."""
    return {"rng": rng_state_dict(), "generators": [g.get_state() for g in _generators(loader)]}


def loader_position(loader: Any) -> Any:
    """A stateful loader's own position, for the checkpoint; None for other loaders."""
    return loader.state_dict() if _is_stateful(loader) else None


class _SkipBatches:
    """A batch sampler that drops the first `skip` batches of `inner` without loading them.

    The sampler's randomness is drawn as in the original epoch (the epoch-start state is restored
    first); `then` runs once the skipped batches are drawn, to put back the random state the
    checkpoint had when the next batch was about to be loaded.
    """

    def __init__(self, inner: Any, skip: int, then: Any):
        self.inner, self.skip, self.then = inner, skip, then

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Any:
        for i, indices in enumerate(self.inner):
            if i == self.skip:
                self.then()
            if i >= self.skip:
                yield indices


def train_epoch_batches(trainer: Trainer, loader: Any, stop: int | None) -> Iterator[tuple[int, Any]]:
    """`(batch_idx, batch)` for the epoch's batches from `state.batches_done` to `stop`.

    Fresh epochs simply iterate. An epoch resumed from a checkpoint gets the data order and the
    random state the uninterrupted run had: the generators are set back to the epoch's start,
    the batches already trained on are skipped by index (their data is never loaded), and the
    random state at the checkpoint is restored just before the next batch is loaded.
    """
    start, resume = trainer.state.batches_done, trainer._resume
    trainer._resume = None
    if resume is not None and start == 0 and resume.get("rng") is not None:  # saved at the previous epoch's end
        load_rng_state_dict(resume["rng"])
    elif resume is not None and resume.get("epoch_start") is not None:
        epoch_start = resume["epoch_start"]
        load_rng_state_dict(epoch_start["rng"])
        for generator, state in zip(_generators(loader), epoch_start["generators"]):
            generator.set_state(state)
    trainer._epoch_start = epoch_start_state(loader)
    remaining = None if stop is None else max(stop - start, 0)
    if start == 0:
        return itertools.islice(enumerate(loader), stop)

    def restore_checkpoint_rng() -> None:
        if resume is not None and resume.get("rng") is not None:
            load_rng_state_dict(resume["rng"])

    if resume is not None and resume.get("loader") is not None and _is_stateful(loader):
        loader.load_state_dict(resume["loader"])
        batches = enumerate(loader, start)  # its iterator draws its seed from the epoch-start state, as before
        restore_checkpoint_rng()
        return itertools.islice(batches, remaining)
    if isinstance(loader, DataLoader) and loader.batch_sampler is not None:
        skipping = with_sampler(loader, batch_sampler=_SkipBatches(loader.batch_sampler, start, restore_checkpoint_rng))
        return itertools.islice(enumerate(skipping, start), remaining)
    # Any other iterable: there is no index to skip by, so the trained-on batches are loaded and dropped.
    warn_once(
        f"Resuming mid-epoch: {type(loader).__name__} has no batch sampler, so the {start} batches already "
        "trained on are loaded again and dropped. Fix: use a map-style DataLoader or a stateful loader."
    )
    batches = enumerate(loader)
    for _ in itertools.islice(batches, start):
        pass
    restore_checkpoint_rng()
    return itertools.islice(batches, remaining)
