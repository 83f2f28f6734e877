"""What the Trainer does when a run fails or is interrupted (called from `Trainer._run`).

Ctrl-C: say where the run stopped and shut down gracefully, a second Ctrl-C ignored meanwhile.
Any other error: land the background checkpoints, tell every callback and the module
(`on_exception`), close the loggers as "failed", attach fulmen doctor's diagnosis, and let the
strategy name a clearer cause ("rank 1 failed"). A handler that fails itself becomes a warning:
the user's error is what propagates. A preempted fit's exit is no failure (it saved and logged).
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

from fulmen.checkpoint import wait_for_checkpoints
from fulmen.doctor import explain_runtime_error
from fulmen.errors import warn_once
from fulmen.state import TrainerFn, TrainerStatus

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


def handle_failure(trainer: Trainer, exc: BaseException) -> BaseException | None:
    """Tell the hooks about `exc` and explain it; returns a clearer error to raise from it, if any."""
    watch = trainer.run_state.preemption
    preempted = watch is not None and watch.due(trainer.strategy.distributed) is not None
    if preempted and isinstance(exc, SystemExit):  # stop_for_preemption's exit, not an error after the signal
        trainer.state.status = TrainerStatus.INTERRUPTED  # preempted: already saved and logged, not a failure
        return None
    call_exception_handlers(trainer, exc)
    if isinstance(exc, Exception) and trainer.lightning_module is not None:
        explain(trainer, exc)
    return trainer.strategy.explain_failure(exc)  # e.g. "rank 1 failed" instead of a broken connection


def shut_down_after_interrupt(trainer: Trainer, fn: TrainerFn, exc: KeyboardInterrupt) -> None:
    """Say where Ctrl-C stopped the run, then the exception handlers, with a second Ctrl-C ignored
    meanwhile (the user presses it again while the loggers close), then the previous handler back."""
    warn_once(f"Detected KeyboardInterrupt: shut down gracefully; trainer.interrupted is True. `Trainer.{fn.value}` "
              f"stopped at epoch {trainer.state.epoch}, step {trainer.state.global_step}; exiting with status 1.")
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        call_exception_handlers(trainer, exc)
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        call_exception_handlers(trainer, exc)
    finally:
        if previous is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)


def explain(trainer: Trainer, exc: Exception) -> None:
    """Attach fulmen doctor's diagnosis to an error it explains (see `fulmen.doctor.explain_runtime_error`)."""
    try:
        explain_runtime_error(exc, trainer.lightning_module)
    except Exception as err:  # the user's error is what matters; a failing diagnosis must not replace it
        warn_once(f"fulmen doctor could not explain {type(exc).__name__}: {type(err).__name__}: {err}")


def call_exception_handlers(trainer: Trainer, exc: BaseException) -> None:
    """Tell the callbacks and the module, then close the loggers. A handler that fails itself
    becomes a warning, so that the others still run and `exc`, the user's error, propagates."""
    trainer.state.status = TrainerStatus.INTERRUPTED
    trainer.strategy.failing = True  # the handlers below must not wait for ranks that may be gone
    module = trainer.lightning_module
    handlers = [("landing background checkpoints", wait_for_checkpoints)]
    handlers += [(f"{type(cb).__name__}.on_exception", lambda cb=cb: cb.on_exception(trainer, module, exc))
                 for cb in trainer.callbacks]
    if module is not None:
        handlers.append((f"{type(module).__name__}.on_exception", lambda: module.on_exception(exc)))
    handlers += [(f"{type(lg).__name__}.finalize", lambda lg=lg: lg.finalize("failed")) for lg in trainer.loggers]
    for name, handler in handlers:
        try:
            handler()
        except Exception as err:
            warn_once(f"{name} raised {type(err).__name__}: {err} while handling {type(exc).__name__}; "
                      f"the {type(exc).__name__} is what propagates.")
