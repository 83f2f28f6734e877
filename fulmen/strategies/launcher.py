"""Starting the other processes of a run when no outside launcher did.

`ScriptCopies` (strategy "ddp", the default): a plain `python train.py` with `devices=N`
becomes rank 0, and starts N-1 copies of the same command line with their ranks in the
environment. Every copy runs the script from the top and joins the process group when it reaches
`trainer.fit`, as in Lightning. A watcher thread notices a copy that dies: the others are
stopped and rank 0's error names the failed rank, instead of waiting for a collective to time out;
and each copy ends when rank 0 does (`die_with_parent`), even while it waits in the rendezvous.

`spawn` (strategy "ddp_spawn"): `torch.multiprocessing` starts N fresh processes that receive the
Trainer and the module by pickling; rank 0 sends its results (weights, metrics, checkpoint paths)
back to the calling process, which carries on with them.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import __main__

if TYPE_CHECKING:
    from fulmen.strategies.ddp import ParallelStrategy
    from fulmen.trainer import Trainer


class ScriptCopies:
    """The N-1 copies of this script that rank 0 started, and a watch over them."""

    def __init__(self, strategy: ParallelStrategy):
        self.env, self.devices = strategy.cluster_environment, strategy.num_processes
        self.node_rank, self.world_size = strategy.node_rank, strategy.world_size
        self.procs: list[subprocess.Popen] = []
        self.failed: tuple[int, int] | None = None  # (rank, exit code) of the first copy that failed

    def start(self) -> None:
        env = self.env
        # Rank 0 shares the rendezvous address with the copies through its own environment too.
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port))
        for local_rank in range(1, self.devices):
            child_env = {
                **os.environ, "LOCAL_RANK": str(local_rank), "NODE_RANK": str(self.node_rank),
                "WORLD_SIZE": str(self.world_size), "FULMEN_LAUNCHED": "1", "FULMEN_PARENT_PID": str(os.getpid()),
            }
            self.procs.append(subprocess.Popen(_this_command(), env=child_env, cwd=os.getcwd()))
        threading.Thread(target=self._watch, name="fulmen-rank-watch", daemon=True).start()
        atexit.register(self.wait)

    def first_failure(self) -> tuple[int, int] | None:
        """(global rank, exit code) of the first copy found to have failed, if any."""
        if self.failed is None:
            for local_rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                # 128 + a signal is a preempted copy's clean exit (fulmen.preemption), not a failure.
                if code not in (None, 0) and not 128 < code < 128 + 65:
                    self.failed = (self.node_rank * self.devices + local_rank, code)
                    break
        return self.failed

    def _watch(self) -> None:
        while self.first_failure() is None:
            if all(p.poll() is not None for p in self.procs):
                return
            time.sleep(0.1)
        self.terminate()

    def terminate(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()

    def wait(self, timeout: float = 60.0) -> None:
        """At exit: let the copies finish their own run, then make sure none is left behind."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()


def die_with_parent() -> None:
    """In a process fulmen started (a copy, or a ddp_spawn child), before it joins the process group:
    end when the process that started it ends. A rank 0 killed (SIGKILL, a timeout) while the others
    wait in the rendezvous, where there is no connection to a peer yet whose loss they would notice,
    would otherwise leave them waiting for the whole timeout (30 minutes by default). Linux only
    (prctl's PR_SET_PDEATHSIG); elsewhere the copies wait as before."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL)) != 0:
        return
    parent = os.environ.get("FULMEN_PARENT_PID")
    if parent is not None and os.getppid() != int(parent):  # it ended before the line above took effect
        raise SystemExit(f"fulmen: rank 0 (pid {parent}) ended before this process joined the run.")


def _this_command() -> list[str]:
    """The command line that started this process (`python -m pkg ...` or `python path.py ...`)."""
    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):
        return [sys.executable, "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    return [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]]


# --- ddp_spawn --------------------------------------------------------------------------------
def spawn(trainer: Trainer, run: Any, *args: Any) -> Any:
    """Run `run(trainer, *args)` in `trainer.world_size` new processes; return rank 0's result after
    bringing its weights, metrics and checkpoint paths back into `trainer` and its module."""
    import torch.multiprocessing as mp

    strategy = trainer.strategy
    queue = mp.get_context("spawn").SimpleQueue()
    env = strategy.cluster_environment
    os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port))
    # Pickled here, by value: through torch.multiprocessing the processes would share (and all
    # update) the parameters' memory.
    payload = pickle.dumps((trainer, run, args))
    mp.start_processes(_spawned, args=(payload, queue), nprocs=trainer.num_devices, start_method="spawn")
    returned = pickle.loads(queue.get())  # our own child's data
    _take_back(trainer, returned)
    return returned["result"]


def _spawned(local_rank: int, payload: bytes, queue: Any) -> None:
    trainer, run, args = pickle.loads(payload)
    strategy = trainer.strategy
    os.environ.update(LOCAL_RANK=str(local_rank), WORLD_SIZE=str(strategy.world_size), FULMEN_LAUNCHED="1")
    strategy.set_ranks(local_rank)
    strategy.launched = True
    result = run(trainer, *args)
    if trainer.is_global_zero:
        # As bytes: a tensor sent as itself would be shared through this process, which is about to exit.
        queue.put(pickle.dumps(_results_of(trainer, result)))
    # Leave together, and close the process group before the interpreter exits: a gloo thread
    # still running at exit aborts the process.
    import torch.distributed as dist

    strategy.barrier("spawn_end")
    dist.destroy_process_group()


def _results_of(trainer: Trainer, result: Any) -> dict[str, Any]:
    module = trainer.lightning_module
    return {
        "result": result,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "callback_metrics": {k: v.detach().cpu() for k, v in trainer.callback_metrics.items()},
        "logged_metrics": dict(trainer._logged_metrics),
        "state": {k: getattr(trainer.state, k) for k in ("epoch", "global_step", "status", "should_stop")},
        "checkpoints": [
            {k: getattr(cb, k) for k in ("best_model_path", "best_model_score", "last_model_path", "best_k_models")}
            for cb in trainer.checkpoint_callbacks
        ],
    }


def _take_back(trainer: Trainer, returned: dict[str, Any]) -> None:
    module = trainer.lightning_module
    if module is not None:
        module.load_state_dict(returned["state_dict"])
    trainer._callback_metrics = returned["callback_metrics"]
    trainer._logged_metrics = returned["logged_metrics"]
    for key, value in returned["state"].items():
        setattr(trainer.state, key, value)
    for cb, values in zip(trainer.checkpoint_callbacks, returned["checkpoints"]):
        for key, value in values.items():
            setattr(cb, key, value)
