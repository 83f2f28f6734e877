"""Fixtures for the whole suite."""

from __future__ import annotations

import random

import pytest
import torch

import fulmen.errors


@pytest.fixture(scope="session")
def _environment_at_start() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.fixture(autouse=True)
def _same_environment_variables(_environment_at_start):
    """Each test starts with the environment variables the suite started with: fulmen exports some
    on purpose (a cluster environment's MASTER_ADDR/MASTER_PORT, PL_GLOBAL_SEED from seed_everything),
    and one left by an in-process test reaches every later test's subprocesses (a SLURM test's
    MASTER_ADDR=gpu007 sent a later 2-process run to an unknown host, where it waited in the
    rendezvous). Restored before the test rather than after it: `monkeypatch`'s own undo, which runs
    after the other fixtures' teardown, puts back values it saw set directly during a test."""
    import os

    if os.environ != _environment_at_start:
        os.environ.clear()
        os.environ.update(_environment_at_start)


@pytest.fixture(autouse=True)
def _fresh_warn_once(monkeypatch):
    """`warn_once` remembers messages per process; each test starts with a clean memory."""
    monkeypatch.setattr(fulmen.errors, "_warned", set())


@pytest.fixture(autouse=True)
def _same_random_state():
    """Each test starts from the same global random state (torch, random, numpy): a model's initial
    weights or a shuffled loader's order cannot depend on which tests ran before it in the process
    (the LR finder's suggestion was None for 2 of 12 such states, so its test failed in a random order)."""
    random.seed(0)
    torch.manual_seed(0)
    try:
        import numpy
    except ImportError:  # numpy is optional for fulmen
        return
    numpy.random.seed(0)


# Lightning projects that the alias tests run in their own processes (on Lightning and on
# fulmen); they import Lightning's names, so this suite must not collect them itself.
collect_ignore = ["lightning_projects"]


@pytest.fixture(autouse=True)
def _rank_zero():
    """Each test starts as global rank 0: a Trainer run in-process with a cluster environment that
    claims another rank (tests/test_plugins.py) sets `rank_zero_only.rank` for the whole process,
    which would silence every later rank_zero_warn."""
    from fulmen.utilities.rank_zero import rank_zero_only

    rank_zero_only.rank = 0
    yield
    rank_zero_only.rank = 0

