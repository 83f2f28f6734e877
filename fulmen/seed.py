"""Reproducibility: seeding every random number generator, seeding DataLoader workers, saving
and restoring the generators' states, and running a block without disturbing them (`isolate_rng`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_MAX_SEED = 2**32 - 1


def seed_everything(seed: int | None = None, workers: bool = False) -> int:
    """Seed Python's `random`, NumPy (if installed) and torch (CPU and CUDA); return the seed.

    With `workers=True`, DataLoader workers used by the Trainer are also seeded, each one
    differently but reproducibly (see `worker_init_function`).

    Example:
        >>> seed_everything(42)
        42
    """
    if seed is None:
        env = os.environ.get("PL_GLOBAL_SEED")
        seed = int(env) if env is not None else random.randint(0, _MAX_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(
            f"seed_everything needs an int in [0, {_MAX_SEED}]. Received: seed={seed!r}. Fix: e.g. seed_everything(42)."
        )
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def worker_init_function(worker_id: int, rank: int = 0) -> None:
    """Seed `random` and NumPy in a DataLoader worker from torch's per-worker seed.

    torch already gives each worker the seed `base_seed + worker_id`, where `base_seed` is drawn
    from the main process's generator; deriving the other generators from it keeps workers
    distinct from each other and identical across identical runs.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed + rank)
    try:
        import numpy as np

        np.random.seed((seed + rank) % 2**32)
    except ImportError:
        pass


def rng_state_dict() -> dict[str, Any]:
    """The state of every global random generator, as tensors and plain data (checkpoint-safe)."""
    version, internal, gauss = random.getstate()
    # The 625 numbers as one tensor: pickled as a tuple of ints they cost a checkpoint ~1,300 calls.
    states: dict[str, Any] = {"python": (version, torch.tensor(internal), gauss), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        states["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    except ImportError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def load_rng_state_dict(states: dict[str, Any]) -> None:
    """Put every global random generator back to what `rng_state_dict` returned."""
    version, internal, gauss = states["python"]
    # A tensor; a tuple in checkpoints of earlier fulmen versions.
    random.setstate((version, tuple(internal.tolist() if isinstance(internal, torch.Tensor) else internal), gauss))
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        import numpy as np

        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def isolate_rng() -> Iterator[None]:
    """Run a block, then put every random generator back where it was."""
    states = rng_state_dict()
    try:
        yield
    finally:
        load_rng_state_dict(states)
