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
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from torch.utils.data import (
    BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler, SequentialSampler,
)

from fulmen.data import as_loader_list, num_batches, with_sampler
from fulmen.utilities.combined_loader import CombinedLoader, _flatten, _is_leaf
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
    trainer.run_state.fit_data = data
    trainer.run_state.val_enabled = False
    if fn == TrainerFn.FITTING:
        load_train_dataloader(trainer)
        load_val_dataloaders(trainer)
        trainer.run_state.val_enabled = bool(trainer._val_loaders) and trainer.limit_val_batches != 0
        has_step = is_overridden("validation_step", model, LightningModule)
        if has_step and not trainer._val_loaders:
            warn_once("validation_step is defined but there is no validation data, so validation is skipped. "
                      "Fix: pass val_dataloaders to fit, or define val_dataloader().")
        elif trainer._val_loaders and not has_step:
            warn_once("Validation data was given but the model has no validation_step, so validation is skipped. "
                      "Fix: define validation_step(self, batch, batch_idx).")
        trainer.run_state.val_enabled = trainer.run_state.val_enabled and has_step
        compute_val_check_batch(trainer)
    elif fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
        kind = "val" if fn == TrainerFn.VALIDATING else "test"
        explicit = data.get("eval_loaders")
        loaders = eval_loader_list(explicit, "dataloaders") if explicit is not None else loaders_from(kind, model, datamodule)
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
        loaders = eval_loader_list(explicit, "dataloaders") if explicit is not None else loaders_from("predict", model, datamodule)
        if not loaders:
            raise MisconfigurationException(
                "trainer.predict() found no data. Received: dataloaders=None and no predict_dataloader(). "
                "Fix: trainer.predict(model, dataloaders=DataLoader(...))."
            )
        trainer._predict_loaders = [prepare_loader(trainer, dl, train=False, predict=True) for dl in loaders]
        trainer.num_predict_batches = [num_batches(dl, trainer.limit_predict_batches) for dl in trainer._predict_loaders]


def load_train_dataloader(trainer: Trainer) -> None:
    """Set `trainer.train_dataloader` and `num_training_batches`.

    As in Lightning, several training loaders (a list or dict of them, possibly nested) are read
    together as `CombinedLoader(loaders, "max_size_cycle")`, or in the mode of a CombinedLoader the
    user passed; `training_step` then gets a list or dict of batches, and `train_dataloader` is the
    collection of (prepared) loaders. The CombinedLoader itself is `trainer._combined_loader`.
    """
    source = _train_source(trainer)
    if source is None or (isinstance(source, (list, tuple, Mapping)) and not source):  # e.g. fit(model, [])
        raise MisconfigurationException(
            "fit found no training data. Received: train_dataloaders=None, no datamodule.train_dataloader() and "
            "no model.train_dataloader(). Fix: trainer.fit(model, train_dataloaders=DataLoader(dataset, ...))."
        )
    limit = trainer.limit_train_batches
    if not isinstance(source, CombinedLoader) and _is_leaf(source):  # one loader: read as it is
        as_loader_list(source, "train_dataloaders")  # the same check as for each of several
        trainer._combined_loader = None
        trainer.train_dataloader = prepare_loader(trainer, source, train=True)
        trainer.num_training_batches = num_batches(trainer.train_dataloader, limit)
    else:
        combined = source if isinstance(source, CombinedLoader) else CombinedLoader(source, "max_size_cycle")
        if combined._mode == "sequential":
            raise MisconfigurationException(
                "Training reads its dataloaders together, not one after the other. Received: "
                'CombinedLoader(mode="sequential") as training data. Fix: use mode "max_size_cycle", "max_size" '
                'or "min_size".'
            )
        as_loader_list(combined.flattened, "train_dataloaders")
        combined.flattened = [prepare_loader(trainer, dl, train=True) for dl in combined.flattened]
        combined.limits = [num_batches(dl, limit) for dl in combined.flattened]
        trainer._combined_loader = combined
        trainer.train_dataloader = combined.iterables
        trainer.num_training_batches = combined._length()
    trainer.run_state.last_train_reload_epoch = trainer.state.epoch


def _train_source(trainer: Trainer) -> Any:
    """What fit trains on, as given: the argument of fit, else the datamodule's or the model's train_dataloader()."""
    explicit = trainer.run_state.fit_data.get("train")
    if explicit is not None:
        return explicit
    model, datamodule = trainer.lightning_module, trainer.datamodule
    if datamodule is not None and (is_overridden("train_dataloader", datamodule, LightningDataModule)
                                   or "train_dataloader" in vars(datamodule)):  # from_datasets sets attributes
        return datamodule.train_dataloader()
    if is_overridden("train_dataloader", model, LightningModule) or "train_dataloader" in vars(model):
        return model.train_dataloader()  # (the default raises, as Lightning's)
    return None


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
            # ValueError, as Lightning raises here (code catches it by that type).
            raise ValueError(
                f"`val_check_interval` ({interval}) must be less than or equal to the number of the training "
                f"batches ({n}), or validation would never run. Received: val_check_interval={interval}. "
                f"Fix: use a value <= {n}, "
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
    explicit = trainer.run_state.fit_data.get(kind)
    if explicit is not None:
        return eval_loader_list(explicit, f"{kind}_dataloaders")
    return loaders_from(kind, trainer.lightning_module, trainer.datamodule)


def loaders_from(kind: str, model: LightningModule, datamodule: Any) -> list[Any]:
    """`{kind}_dataloader()` of the datamodule when it overrides it, else of the model, else []."""
    method = f"{kind}_dataloader"
    # An instance attribute counts as an override too (LightningDataModule.from_datasets sets them).
    if datamodule is not None and (is_overridden(method, datamodule, LightningDataModule) or method in vars(datamodule)):
        return eval_loader_list(getattr(datamodule, method)(), method)
    if is_overridden(method, model, LightningModule) or method in vars(model):  # the defaults raise
        return eval_loader_list(getattr(model, method)(), method)
    return []


def eval_loader_list(loaders: Any, name: str) -> list[Any]:
    """Evaluation's loaders as the list it runs one after the other (Lightning's "sequential"
    mode): a list, a dict or a nested collection gives its loaders in order, and so does a
    CombinedLoader in "sequential" mode; one in another mode is a single loader of combined batches."""
    if isinstance(loaders, CombinedLoader):
        if loaders._mode == "sequential":
            return as_loader_list(loaders.flattened, name)
        return [_CombinedBatches(loaders)]
    if isinstance(loaders, (list, tuple, Mapping)) and not isinstance(loaders, torch.Tensor) and not _is_leaf(loaders):
        loaders = _flatten(loaders)[0]
    return as_loader_list(loaders, name)


class _CombinedBatches:
    """A non-sequential CombinedLoader used for evaluation: its combined batches, without the indices."""

    def __init__(self, combined: CombinedLoader):
        self.combined = combined

    def __iter__(self) -> Iterator[Any]:
        return (batch for batch, _, _ in iter(self.combined))

    def __len__(self) -> int:
        length = self.combined._length()
        if length == float("inf"):
            raise TypeError("an iterable without a length")
        return int(length)


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
    `use_distributed_sampler`; see `distributed_loader`). Training data is always shuffled across
    ranks, evaluation keeps the loader's choice, overfit_batches never shuffles."""
    kwargs = trainer.strategy.distributed_sampler_kwargs
    if kwargs is None or not trainer.use_distributed_sampler:
        return loader
    shuffle = False if trainer.overfit_batches else (True if train else None)
    return distributed_loader(loader, kwargs, shuffle=shuffle, predict=predict)


def distributed_loader(
    loader: DataLoader, sampler_kwargs: dict[str, int], shuffle: bool | None = None, predict: bool = False,
) -> DataLoader:
    """`loader` with a sampler that gives this rank (`sampler_kwargs`: num_replicas, rank) its own
    share of the data; the Trainer's and Fabric's one implementation. drop_last is kept; the order
    depends on the seed (PL_GLOBAL_SEED) and the epoch (`set_epoch`), the same on every rank.
    `shuffle`: None keeps the loader's own choice (a RandomSampler shuffles).

    Without `predict`, the last share is padded with repeated samples so that every rank runs the
    same number of batches (their collectives must line up); predict does not pad, so every sample
    is predicted exactly once.
    """
    batch_sampler = loader.batch_sampler
    sampler = loader.sampler if batch_sampler is None or type(batch_sampler) is BatchSampler else None
    if isinstance(sampler, (DistributedSampler, ShardedSampler)) or isinstance(loader.dataset, IterableDataset):
        return loader  # already sharded by the user, or a stream fulmen cannot split by index
    if sampler is None:
        warn_once(
            f"use_distributed_sampler: a DataLoader with a custom batch_sampler ({type(batch_sampler).__name__}) "
            "is used as it is, so every rank sees the same batches. Fix: shard it yourself by rank "
            "(global_rank, world_size), or pass a sampler instead of a batch_sampler."
        )
        return loader
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    if isinstance(sampler, (RandomSampler, SequentialSampler)) and not predict:
        shuffle = isinstance(sampler, RandomSampler) if shuffle is None else shuffle
        return with_sampler(loader, DistributedSampler(loader.dataset, shuffle=shuffle, seed=seed, **sampler_kwargs))
    return with_sampler(loader, ShardedSampler(sampler, pad=not predict, **sampler_kwargs))


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
    """The torch generators that decide `loader`'s order (its own, its sampler's, its batch
    sampler's); for a CombinedLoader or a collection of loaders, those of every loader in it."""
    if isinstance(loader, CombinedLoader):
        loaders = loader.flattened
    elif isinstance(loader, (list, tuple, Mapping)) and not _is_leaf(loader):
        loaders = _flatten(loader)[0]
    else:
        loaders = [loader]
    found: dict[int, torch.Generator] = {}
    for one in loaders:
        batch_sampler = getattr(one, "batch_sampler", None)
        for owner in (one, getattr(one, "sampler", None), getattr(batch_sampler, "sampler", None)):
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


def train_position(trainer: Trainer) -> Any:
    """Where the training data stream stands, for the checkpoint's resume point: a stateful
    loader's own position, or for several loaders what `_InnerStarts.position` records."""
    combined = trainer._combined_loader
    if combined is None:
        return loader_position(trainer.train_dataloader)
    starts = combined._start
    return {"combined": starts.position(trainer.state.batches_done)} if isinstance(starts, _InnerStarts) else None


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
        done = False
        for i, indices in enumerate(self.inner):
            if i == self.skip:
                self.then()
                done = True
            if i >= self.skip:
                yield indices
        if not done:  # fewer batches than skipped (a loader that had run out): the state goes back all the same
            self.then()


def train_epoch_batches(trainer: Trainer, loader: Any, stop: int | None) -> Iterator[tuple[int, Any]]:
    """`(batch_idx, batch)` for the epoch's batches from `state.batches_done` to `stop`.

    Fresh epochs simply iterate. An epoch resumed from a checkpoint gets the data order and the
    random state the uninterrupted run had: the generators are set back to the epoch's start,
    the batches already trained on are skipped by index (their data is never loaded), and the
    random state at the checkpoint is restored just before the next batch is loaded.
    """
    if isinstance(loader, CombinedLoader):
        return _combined_epoch_batches(trainer, loader, stop)
    start, resume = trainer.state.batches_done, trainer.run_state.resume
    trainer.run_state.resume = None
    if resume is not None and start == 0 and resume.get("rng") is not None:  # saved at the previous epoch's end
        load_rng_state_dict(resume["rng"])
    elif resume is not None and resume.get("epoch_start") is not None:
        epoch_start = resume["epoch_start"]
        load_rng_state_dict(epoch_start["rng"])
        for generator, state in zip(_generators(loader), epoch_start["generators"]):
            generator.set_state(state)
    trainer.run_state.epoch_start = epoch_start_state(loader)
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



# --- exact resume with several training loaders (a CombinedLoader) --------------------------------
class _InnerStarts:
    """How a training CombinedLoader makes its inner iterators (its `_start`).

    Each inner iterator is made right before its first batch is drawn (see
    `fulmen.utilities.combined_loader`), so the random state at that moment (the global one and
    the loader's generators) decides that loader's order until it runs out. It is recorded with
    the batch index at which it was taken; a checkpoint stores, per loader, the last such state
    before its resume point and how many batches were drawn since (`position`). A resumed epoch
    (`resume` given) makes each loader's first iterator from that state, skips the drawn batches
    by index without loading them, and puts the live random state back before the next batch
    is loaded, so the run continues as the uninterrupted one would have.
    """

    def __init__(self, combined: CombinedLoader, resume: dict[str, Any] | None = None, batches_done: int = 0):
        self.combined = combined
        n = len(combined.flattened)
        # Per loader: the last two (batch index, state) records; two, because on CUDA the next
        # batch is prefetched, so a loader may have started over for a batch not trained on yet
        # (a loader of one batch starts over at every batch).
        self.records: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in range(n)]
        self.first_restart: list[int | None] = [None] * n  # batch index at which each loader first started over
        self.pending = dict(enumerate(resume["loaders"])) if resume is not None else {}
        self.batches_done = batches_done
        if resume is not None:
            self.first_restart = list(resume["first_restart"])

    def __call__(self, i: int) -> Iterator[Any]:
        loader = self.combined.flattened[i]
        at = self.combined._iterator.idx if self.combined._iterator is not None else 0
        pending = self.pending.pop(i, None)
        if pending is not None:
            state, skip = pending["state"], pending["skip"]
            at = self.batches_done - skip
        else:
            state = epoch_start_state(loader)
            if self.records[i] and self.first_restart[i] is None:
                self.first_restart[i] = at
        self.records[i] = [*self.records[i][-1:], (at, state)]
        if pending is None:
            return iter(loader)
        return _resumed_iterator(loader, state, skip)

    def position(self, batches_done: int) -> dict[str, Any] | None:
        if batches_done == 0 or not all(self.records):
            return None  # nothing drawn yet: a resumed epoch starts afresh
        loaders = []
        for records in self.records:
            # A start at `batches_done` itself (for a prefetched batch, on CUDA) drew its order before
            # the checkpoint's random state: the resumed run starts the loader from it, skipping nothing.
            at, state = next(((at, state) for at, state in reversed(records) if at <= batches_done), records[0])
            loaders.append({"state": state, "skip": batches_done - at})
        restarts = [r if r is not None and r <= batches_done else None for r in self.first_restart]
        return {"loaders": loaders, "first_restart": restarts}


def _resumed_iterator(loader: Any, state: dict[str, Any], skip: int) -> Iterator[Any]:
    """`loader`'s iterator as it stood `skip` batches after it was made from `state`; the live
    random state is put back before the first batch it still yields is loaded."""
    live = rng_state_dict()
    load_rng_state_dict(state["rng"])
    for generator, saved in zip(_generators(loader), state["generators"]):
        generator.set_state(saved)

    def put_back() -> None:
        load_rng_state_dict(live)

    if isinstance(loader, DataLoader) and loader.batch_sampler is not None:
        return iter(with_sampler(loader, batch_sampler=_SkipBatches(loader.batch_sampler, skip, put_back)))
    iterator = iter(loader)  # no index to skip by: the drawn batches are loaded again and dropped
    for _ in itertools.islice(iterator, skip):
        pass
    put_back()
    return iterator


def _combined_epoch_batches(trainer: Trainer, combined: CombinedLoader, stop: int | None) -> Iterator[tuple[int, Any]]:
    """`train_epoch_batches` for several loaders: `(batch_idx, combined batch)` from `batches_done` to `stop`."""
    start, resume = trainer.state.batches_done, trainer.run_state.resume
    trainer.run_state.resume = None
    trainer.run_state.epoch_start = None  # each inner loader records its own (see _InnerStarts)
    if resume is not None and resume.get("rng") is not None and start == 0:
        load_rng_state_dict(resume["rng"])  # saved at the previous epoch's end
    position = (resume or {}).get("loader") if start else None
    position = position.get("combined") if isinstance(position, dict) else None
    if start and (position is None or len(position["loaders"]) != len(combined.flattened)):
        warn_once(
            f"Resuming mid-epoch with {len(combined.flattened)} training loaders, but the checkpoint has no "
            f"position for them, so the {start} batches already trained on are loaded again and dropped, "
            "and the data order may differ from the uninterrupted run. Fix: resume with the loaders it was saved with."
        )
        position = None
    combined._start = _InnerStarts(combined, position, start)
    iter(combined)
    if position is not None:
        load_rng_state_dict(resume["rng"])  # the live state at the checkpoint; each loader's own is set as it starts
        iterator = combined._iterator
        iterator.idx = start
        if hasattr(iterator, "consumed"):
            iterator.consumed = [r is not None for r in position["first_restart"]]
    batches = ((batch_idx, batch) for batch, batch_idx, _ in iter(combined.__next__, None))
    if start and position is None:
        for _ in itertools.islice(batches, start):
            pass
        if resume is not None and resume.get("rng") is not None:
            load_rng_state_dict(resume["rng"])
    return itertools.islice(batches, None if stop is None else max(stop - start, 0))


def reload_fit_dataloaders(trainer: Trainer) -> None:
    """Load fit's training and validation data again and recount where validation falls (the epoch
    loop with `reload_dataloaders_every_n_epochs`, and the batch-size tuner once it found a size)."""
    load_train_dataloader(trainer)
    load_val_dataloaders(trainer)
    compute_val_check_batch(trainer)


_TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def batch_transfer_hooks(trainer: Trainer) -> tuple[Any, Any, Any]:
    """The three batch-transfer hooks a run calls (None where nobody overrides one), decided once
    per run: as in Lightning, the datamodule's when it overrides the hook (even if the module does
    too), else the module's when it does."""
    dm, found = trainer.datamodule, []
    for name in _TRANSFER_HOOKS:
        module_has = trainer._hooks.module_overrides(name)
        if dm is not None and is_overridden(name, dm, LightningDataModule):
            if module_has:
                warn_once(f"{name} is overridden in both the LightningModule and the LightningDataModule; "
                          "the LightningDataModule's is used. Fix: keep only one of them.")
            found.append(getattr(dm, name))
        else:
            found.append(getattr(trainer.lightning_module, name) if module_has else None)
    return found[0], found[1], found[2]
