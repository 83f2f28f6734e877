"""Lightning's `utilities.seed`: seeding every generator, re-seeding from the environment, seeding
DataLoader workers, and running a block without disturbing the generators.

The work is fulmen's (`fulmen.seed`); this module adds Lightning's signatures on top: `verbose`,
`isolate_rng(include_cuda=...)`, and a seed given as any int-like value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from fulmen import seed as _seed
from fulmen.utilities import rank_zero

max_seed_value = _seed._MAX_SEED
min_seed_value = 0


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed Python's `random`, NumPy and torch; return the seed (see `fulmen.seed.seed_everything`).

    `seed=None` reads `PL_GLOBAL_SEED` (else draws one). `verbose` logs "Seed set to N" on each process.

    Example:
        >>> seed_everything(7, verbose=False)
        7
    """
    if seed is not None and not isinstance(seed, int):
        seed = int(seed)  # numpy integers, "42" from a config file: Lightning accepts them too
    seed = _seed.seed_everything(seed, workers=workers)
    if verbose:
        rank_zero.log.info(rank_zero.rank_prefixed_message(f"Seed set to {seed}", rank_zero._get_rank()))
    return seed


def reset_seed() -> None:
    """Seed again with what `seed_everything` last set (read from the environment); nothing when it never ran."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is None:
        return
    workers = bool(int(os.environ.get("PL_SEED_WORKERS", "0")))
    seed_everything(int(seed), workers=workers, verbose=False)


def pl_worker_init_function(worker_id: int, rank: int | None = None) -> None:
    """The `worker_init_fn` fulmen gives DataLoaders after `seed_everything(workers=True)`; the rank
    defaults to this process's global rank."""
    _seed.worker_init_function(worker_id, rank if rank is not None else rank_zero.rank_zero_only.rank)


@contextmanager
def isolate_rng(include_cuda: bool = True) -> Iterator[None]:
    """Run a block, then put the torch, NumPy and Python generators back where they were
    (and the CUDA ones unless `include_cuda=False`, e.g. in a forked process that must not touch CUDA).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(1)
        >>> with isolate_rng():
        ...     inside = torch.rand(1)
        >>> bool(torch.rand(1) == inside)  # the same draw again: the block left no trace
        True
    """
    states = _seed.rng_state_dict()
    if not include_cuda:
        states.pop("cuda", None)
    try:
        yield
    finally:
        _seed.load_rng_state_dict(states)


__all__ = ["isolate_rng", "pl_worker_init_function", "reset_seed", "seed_everything"]
