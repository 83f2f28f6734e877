"""The stop vote's cadence (fulmen/strategies/stop_vote.py): how many collectives a run of fast or
slow steps makes, and when a wish made on a batch without a vote is agreed.

A one-process gloo group stands in for the ranks (the vote's all-reduce is real); a fake clock
stands in for the step time, so the counts are exact. The multi-process behaviour (both ranks
stop at the same batch) is tests/test_distributed.py's.
"""

from __future__ import annotations

import pytest
import torch.distributed as dist

from fulmen.strategies import stop_vote
from fulmen.strategies.stop_vote import StopVote


class _Clock:
    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 0.0, step_s

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield None  # the default group
    finally:
        dist.destroy_process_group()


def _run(monkeypatch, step_s: float, batches: int, stop_at: int | None = None) -> tuple[int, int | None]:
    """(all-reduces started, the batch after which the stop was agreed) for `batches` batches."""
    clock = _Clock(step_s)
    monkeypatch.setattr(stop_vote, "time", clock)
    calls = []
    real = dist.all_reduce

    def counting(*args, **kwargs):
        calls.append(kwargs.get("async_op", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(dist, "all_reduce", counting)
    vote = StopVote(None)
    agreed_at = None
    for batch in range(1, batches + 1):
        clock.now += step_s
        stop, _ = vote.cast(stop_at == batch, 0, settle=False)
        if stop and agreed_at is None:
            agreed_at = batch
    return len(calls), agreed_at


def test_fast_steps_share_one_vote_among_many_batches(group, monkeypatch):
    # 0.8 ms steps: one vote per 25 ms of training, so every 31 batches once the step time is known
    # (the first three batches vote: the clock starts at the first, the second measures and
    # proposes, the third reads the agreed cadence).
    collectives, _ = _run(monkeypatch, 0.0008, 200)
    assert collectives == 3 + len(range(3 + 31, 201, 31))  # batches 1, 2, 3, 34, 65, ..., 189


def test_slow_steps_vote_after_every_batch(group, monkeypatch):
    collectives, agreed_at = _run(monkeypatch, 0.05, 40, stop_at=10)
    assert collectives == 40
    assert agreed_at == 11  # asked after batch 10, agreed by the vote read one batch later


def test_a_wish_between_votes_is_carried_to_the_next_vote_and_agreed_at_the_one_after(group, monkeypatch):
    _, agreed_at = _run(monkeypatch, 0.0008, 200, stop_at=10)
    assert agreed_at == 65  # asked at batch 10, sent with the vote of batch 34, read at batch 65


def test_the_longest_wait_between_votes_is_bounded(group, monkeypatch):
    collectives, _ = _run(monkeypatch, 1e-7, 3 + 3 * stop_vote.MAX_EVERY)
    assert collectives == 3 + 3  # MAX_EVERY batches apart, however fast the steps


def test_a_settled_vote_waits_and_reports_a_wish_made_since_the_last_vote(group, monkeypatch):
    monkeypatch.setattr(stop_vote, "time", _Clock(0.001))
    vote = StopVote(None)
    assert vote.cast(False, 0, settle=False) == (False, 0)
    assert vote.cast(True, 0, settle=False) == (False, 0)  # started asynchronously: not read yet
    assert vote.cast(False, 15, settle=True) == (True, 15)  # the epoch's end: read, and this call's too
