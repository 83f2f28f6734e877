"""How the processes of a run agree to stop: the stop vote.

With several processes every rank must leave an epoch at the same batch, or the others wait in
a collective forever. A rank's wish to stop (its code or a callback set `trainer.should_stop`,
its clock passed `max_time`, it received a preemption signal) is therefore acted on only once
every rank knows of it, and wishes travel in a vote: an all-reduce (max) of three integers,
(stop, preemption signal, -batches until the next vote).

A raw DDP loop pays for no such collective, so the vote is made cheap in two ways:
- it is asynchronous: started at one voting batch, read at the next, so no batch waits for it;
- it is not taken at every batch. The ranks agree, in the vote itself, on how many batches to
  run until the next one: each proposes enough batches to fill `VOTE_PERIOD_S` of training at
  its measured step time (at most `MAX_EVERY`), and the smallest proposal wins. Fast steps share
  one vote among many batches; slow steps vote at every batch, so a preemption notice is acted
  on within two steps.
A stop asked for on one rank thus takes effect on all ranks at the same batch, about two vote
periods (0.05 s of training) later, and at the latest at the end of the epoch or after
validation, where the loop settles the vote (waits for it).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

VOTE_PERIOD_S = 0.025  # one vote per this much training, once the step time is known
MAX_EVERY = 256  # batches: the longest a stop may wait (fast steps)


class StopVote:
    """One fit's votes on a process group (`group`; None: the default one)."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.agreed = (False, 0)  # (stop, preemption signal) as the last vote read found them
        self.every = 1  # batches from one vote to the next, as last agreed
        self.countdown = 1  # batches until the next vote
        self.wish = False  # a stop this rank asked for since its last vote
        self.in_flight: tuple[Any, torch.Tensor] | None = None
        # The step time: batches since `clock` was started (at the first vote, and again at each settle).
        self.since, self.clock = 0, None

    def cast(self, stop: bool, signum: int, settle: bool) -> tuple[bool, int]:
        """After a batch (or, `settle=True`, at a point every rank reaches: an epoch's end, after
        validation): (stop, preemption signal) as all ranks agree on them so far."""
        if not settle:
            self.since += 1
            self.countdown -= 1
            if self.countdown > 0:  # the usual batch: note the wish, act on what was agreed
                self.wish = self.wish or stop
                return self.agreed
        if self.in_flight is not None:
            work, votes = self.in_flight
            self.in_flight = None
            work.wait()
            self._read(votes)
        agreed_stop, agreed_signal = self.agreed
        wishes = torch.tensor([int(stop or self.wish or agreed_stop), max(signum, agreed_signal), -self._proposal()])
        self.wish = False
        if settle:
            dist.all_reduce(wishes, op=dist.ReduceOp.MAX, group=self.group)
            self._read(wishes)
        else:
            self.in_flight = (dist.all_reduce(wishes, op=dist.ReduceOp.MAX, group=self.group, async_op=True), wishes)
        if settle or self.clock is None:  # validation and epoch ends are not step time
            self.since, self.clock = 0, time.perf_counter()
        self.countdown = self.every
        return self.agreed

    def _read(self, votes: torch.Tensor) -> None:
        stop, signum, minus_every = votes.tolist()
        self.agreed, self.every = (bool(stop), signum), -minus_every

    def _proposal(self) -> int:
        """The batches this rank proposes until the next vote: VOTE_PERIOD_S at its step time."""
        if self.clock is None or self.since == 0:
            return self.every
        step_time = (time.perf_counter() - self.clock) / self.since
        return max(1, min(MAX_EVERY, int(VOTE_PERIOD_S / max(step_time, 1e-9))))
