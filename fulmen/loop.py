"""The loops, as plain functions: fit → epochs → batches, evaluation, and prediction.

One training batch under automatic optimization, in Lightning's hook order:

    on_train_batch_start
    optimizer_step(closure)              # module hook; default: optimizer.step(closure)
      closure: training_step → on_before_zero_grad → optimizer_zero_grad (first batch of an
               accumulation window) → on_before_backward → backward → on_after_backward
      → on_before_optimizer_step → configure_gradient_clipping → the real optimizer step
    "step"-interval schedulers
    on_train_batch_end
    log to loggers every `log_every_n_steps`; validation when due
    after the batch: checkpoints that came due, a preemption (see `_run_after_batch`)

When nothing in that chain is customised, `run_train_batch` skips the no-op hooks and makes the
calls of the default ones itself, as a hand-written loop does (`HookDispatch.plain_step`).

At the end of an epoch: on_train_epoch_end (callbacks, then the module), epoch metrics to the
loggers, "epoch"-interval schedulers, then the monitoring callbacks (ModelCheckpoint,
EarlyStopping), so that a checkpoint saved there resumes at the next epoch.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from fulmen.data import prefetch, set_sampler_epoch
from fulmen.dataloading import reload_fit_dataloaders, train_epoch_batches
from fulmen.errors import MisconfigurationException, warn_once, warn_once_at
from fulmen.logging import Results, to_float_dict
from fulmen.optim import step_schedulers
from fulmen.preemption import stop_for_preemption
from fulmen.profilers.wiring import timed, timed_batches
from fulmen.seed import isolate_rng
from fulmen.state import RunningStage
from fulmen.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from fulmen.run_state import RunState
    from fulmen.trainer import Trainer

_STOP_EPOCH = -1  # what on_train_batch_start returns to end the epoch early
_TENSOR = torch.Tensor  # one global lookup on the hot path instead of two


# ==========================================================================================
# fit
# ==========================================================================================
def run_fit(trainer: Trainer) -> None:
    hooks = trainer._hooks
    _warn_eval_modules(trainer.lightning_module)
    hooks.callbacks_then_module("on_fit_start")
    if trainer.run_state.val_enabled and trainer.num_sanity_val_steps > 0 and trainer.state.global_step == 0:
        run_sanity_check(trainer)
    trainer.state.stage = RunningStage.TRAINING
    if trainer.max_time is not None:
        trainer.run_state.deadline = time.monotonic() + trainer.max_time
    _warn_few_batches(trainer)
    hooks.callbacks_then_module("on_train_start")
    trainer.run_state.none_steps = 0  # training steps that returned None in this fit's first epoch (see _end_train_epoch)
    train_epoch = timed(trainer, "run_training_epoch", run_train_epoch)  # run_train_epoch itself without a profiler
    while not _fit_done(trainer):
        train_epoch(trainer)
    reason = _stop_reason(trainer)
    hooks.callbacks_then_module("on_train_end")
    # Lightning's line, once the progress bar has closed its line (on_train_end), so that it starts a line of its own.
    rank_zero_info(f"`Trainer.fit` stopped: {reason}")
    hooks.callbacks_then_module("on_fit_end")


def _warn_few_batches(trainer: Trainer) -> None:
    """Lightning's warning: with fewer batches per epoch than log_every_n_steps, no training step
    of an epoch is logged (only epoch-level values reach the loggers)."""
    n = trainer.num_training_batches
    if trainer.loggers and n < trainer.log_every_n_steps and not trainer.fast_dev_run and trainer.is_global_zero:
        from fulmen.utilities.warnings import PossibleUserWarning

        warn_once(
            f"The number of training batches ({n}) is smaller than the logging interval "
            f"Trainer(log_every_n_steps={trainer.log_every_n_steps}). Set a lower value for log_every_n_steps if "
            "you want to see logs for the training epoch.",
            PossibleUserWarning,
        )


def _stop_reason(trainer: Trainer) -> str:
    """Why the fit loop ended, in Lightning's words where it has them ("`max_epochs=3` reached.")."""
    s = trainer.state
    if trainer.num_training_batches == 0:
        return "No training batches."
    if _max_steps_reached(trainer):
        return f"`max_steps={trainer.max_steps}` reached."
    if trainer.max_epochs != -1 and s.epoch >= trainer.max_epochs:
        return f"`max_epochs={trainer.max_epochs}` reached."
    from fulmen.callbacks.timer import Timer

    timers = [cb for cb in trainer.callbacks if isinstance(cb, Timer) and cb.time_remaining() is not None]
    if _deadline_passed(trainer) or any(cb.time_remaining() <= 0 for cb in timers):
        return "`max_time` reached."
    for cb in trainer.early_stopping_callbacks:
        summary = cb._stop_summary()
        if summary is not None:
            return summary
    return f"a callback set trainer.should_stop at epoch {max(s.epoch - 1, 0)}."


def _warn_eval_modules(module: torch.nn.Module) -> None:
    """As in Lightning, fit keeps each submodule's mode; say so when some are in eval mode."""
    in_eval = [name or type(module).__name__ for name, m in module.named_modules() if not m.training]
    if in_eval:
        warn_once(
            f"{len(in_eval)} module(s) are in eval mode at the start of training (e.g. {in_eval[:3]}), so dropout "
            "and batch norm behave as in evaluation. Fix: call model.train() before fit unless this is intended."
        )


def _min_reached(trainer: Trainer) -> bool:
    s = trainer.state
    return (trainer.min_epochs is None or s.epoch >= trainer.min_epochs) and (
        trainer.min_steps is None or s.global_step >= trainer.min_steps
    )


def _max_steps_reached(trainer: Trainer) -> bool:
    return trainer.max_steps != -1 and trainer.state.global_step >= trainer.max_steps


def _fit_done(trainer: Trainer) -> bool:
    s = trainer.state
    if trainer.strategy.distributed:  # e.g. a stop asked for in one rank's epoch-end hook
        _agree_on_stop(trainer, settle=True)
    if _max_steps_reached(trainer) or (trainer.max_epochs != -1 and s.epoch >= trainer.max_epochs):
        return True
    if trainer.num_training_batches == 0:
        warn_once(
            "The training dataloader has no batches, so there is nothing to train. Received: "
            f"num_training_batches=0 (limit_train_batches={trainer.limit_train_batches!r}). Fix: check the "
            "dataset's length against batch_size and drop_last, or raise limit_train_batches."
        )
        return True
    if s.should_stop:
        if _min_reached(trainer):
            return True
        warn_once(
            f"should_stop was set, but min_epochs={trainer.min_epochs} / min_steps={trainer.min_steps} "
            "are not reached yet: training continues."
        )
        # should_stop stays set, as in Lightning: the epoch then ends at the batch that reaches min_steps.
    return False


def _deadline_passed(trainer: Trainer) -> bool:
    return trainer.run_state.deadline is not None and time.monotonic() >= trainer.run_state.deadline


def _should_leave_epoch(trainer: Trainer, max_steps: float, deadline: float | None) -> bool:
    """After a training batch: whether the epoch ends here. It does at `max_steps` (inf for
    Trainer(max_steps=-1)), and when a stop was asked for (`should_stop`, or the `deadline` of
    max_time passed) once min_epochs/min_steps are reached. The limits are read once per epoch."""
    if trainer.state.global_step >= max_steps:
        return True
    if deadline is not None and not trainer.strategy.distributed and time.monotonic() >= deadline:
        trainer.state.should_stop = True  # several processes: the deadline is part of their vote (_agree_on_stop)
    return trainer.state.should_stop and _min_reached(trainer)


def _agree_on_stop(trainer: Trainer, settle: bool = False) -> None:
    """Several processes: every rank must take the same path after a batch (validate because of a
    stop, leave the epoch), or the others wait in a collective forever. A stop asked for by any
    rank (or its clock, for max_time) becomes every rank's, and so does a preemption signal that
    reached one rank only, all ranks acting on it at the same later batch; see
    `fulmen.strategies.stop_vote`."""
    s, preemption = trainer.state, trainer.run_state.preemption
    signum = (preemption.received or 0) if preemption is not None else 0
    s.should_stop, agreed_signal = trainer.strategy.stop_vote(s.should_stop or _deadline_passed(trainer), signum, settle)
    if preemption is not None and agreed_signal:
        preemption.agreed = agreed_signal  # every rank saves and exits at the same batch boundary


def run_sanity_check(trainer: Trainer) -> None:
    """A few validation batches before training, to fail fast on a broken validation_step.

    Runs with the random generators isolated, so training draws the same numbers as it would
    without the check; its metrics are discarded.
    """
    hooks = trainer._hooks
    with isolate_rng():
        trainer.state.stage = RunningStage.SANITY_CHECKING
        hooks.callbacks("on_sanity_check_start")
        run_evaluation(trainer, RunningStage.SANITY_CHECKING)
        hooks.callbacks("on_sanity_check_end")


def _train_epoch_loader(trainer: Trainer) -> Any:
    s, n = trainer.state, trainer.reload_dataloaders_every_n_epochs
    if n and s.epoch - (trainer.run_state.last_train_reload_epoch or 0) >= n:
        reload_fit_dataloaders(trainer)
    # Several training loaders are read through their CombinedLoader; one loader as it is.
    loader = trainer._combined_loader if trainer._combined_loader is not None else trainer.train_dataloader
    set_sampler_epoch(loader, s.epoch)
    return loader


def run_train_epoch(trainer: Trainer) -> None:
    s, hooks, run = trainer.state, trainer._hooks, trainer.run_state
    loader = _train_epoch_loader(trainer)
    s.stage = RunningStage.TRAINING
    results = run.results = run.train_results = Results()
    hooks.callbacks_then_module("on_train_epoch_start")

    limit = trainer.num_training_batches
    stop = None if limit == float("inf") else int(limit)
    validated_at_end = False
    log_at = s.log_step
    # Decided once per epoch, so that a batch after which nothing is due costs a few comparisons.
    distributed = trainer.strategy.distributed
    validating = run.val_enabled and _validation_due_this_epoch(trainer) and trainer.val_check_batch != float("inf")
    max_steps = float("inf") if trainer.max_steps == -1 else trainer.max_steps
    pending, preemption, deadline = run.after_batch, run.preemption, run.deadline
    # Profiling is decided once per epoch: without a profiler these are the functions themselves.
    train_batch = timed(trainer, "run_training_batch", run_train_batch)
    # A resumed epoch skips the batches it already trained on.
    batches = timed_batches(trainer, train_epoch_batches(trainer, loader, stop))
    for batch_idx, batch in _device_batches(trainer, batches, 0):
        # As in Lightning, validation after a batch logs at that batch's step, not the next one.
        log_at = s.log_step
        if train_batch(trainer, results, run, batch, batch_idx):  # on_train_batch_start ended the epoch
            break
        if distributed:
            _agree_on_stop(trainer)
        if validating:
            validated_at_end = _maybe_validate(trainer, batch_idx, batch_idx + 1 == limit, log_at)
        if pending or (preemption is not None and (preemption.received or preemption.agreed)):
            _run_after_batch(trainer)
        if _should_leave_epoch(trainer, max_steps, deadline):
            break
    if trainer.val_check_batch == float("inf") and not validated_at_end and _validation_due_this_epoch(trainer):
        run_evaluation(trainer, RunningStage.VALIDATING, log_at)  # an iterable without length: validate at its end
        _run_after_batch(trainer)
    _end_train_epoch(trainer, results)


def _end_train_epoch(trainer: Trainer, results: Results) -> None:
    s, hooks = trainer.state, trainer._hooks
    none_steps, trainer.run_state.none_steps = trainer.run_state.none_steps, None  # counted in the first epoch only
    if none_steps and none_steps >= results.batch_counter:
        module = trainer.lightning_module
        raise MisconfigurationException(
            f"{type(module).__name__}.training_step returned None for every batch of the first epoch, so nothing "
            f"was trained. Received: None from {results.batch_counter} of {results.batch_counter} batches. Fix: "
            "end training_step with `return loss` (None skips a batch, which is meant for a batch now and then). "
            "(fulmen doctor code FM201)"
        )
    _run_after_batch(trainer, window_closed=True)  # an epoch ended early leaves no window open
    s.stage = RunningStage.TRAINING
    trainer.run_state.results = results
    results.epoch_end_reached = True
    hooks.train_epoch_end()
    trainer._callback_metrics.update(results.view("callback"))
    trainer._progress_bar_metrics.update(results.view("prog_bar"))
    trainer._log_metrics(results.view("logger"), step=max(s.log_step - 1, 0))
    step_schedulers(trainer, "epoch", s.epoch + 1)
    s.epoch_finished = True
    hooks.train_epoch_end_monitors()
    trainer.run_state.train_results = trainer.run_state.results = None
    s.epoch, s.batches_done, s.epoch_finished = s.epoch + 1, 0, False


def _device_batches(trainer: Trainer, batches: Iterator[tuple[int, Any]], dataloader_idx: int) -> Iterator[tuple[int, Any]]:
    """The `(batch_idx, batch)` pairs of `batches`, each batch through the transfer hooks.

    On CUDA the next batch's copy runs on a side stream while the current step computes, so its
    transfer hooks run one batch ahead; elsewhere they run right before each batch, in Lightning's order.
    """
    if trainer.device.type == "cuda":
        stream = torch.cuda.Stream(trainer.device)
        return prefetch(batches, lambda batch: trainer._to_device(batch, dataloader_idx), stream)
    if trainer.run_state.transfer_is_noop:
        return batches  # a CPU batch with no transfer hook to run: nothing to do per batch
    return ((i, trainer._to_device(batch, dataloader_idx)) for i, batch in batches)


def _run_after_batch(trainer: Trainer, window_closed: bool = False) -> None:
    """Work that must wait until a batch is completely done (its logging and validation included),
    e.g. a ModelCheckpoint due at this step or a preemption: a checkpoint taken here resumes
    exactly after the batch."""
    run = trainer.run_state
    preemption = run.preemption
    signum = preemption.due(trainer.strategy.distributed) if preemption is not None else None
    if not run.after_batch and signum is None:
        return  # the usual case: nothing to do
    # Checkpoints land on optimizer-step boundaries: inside an accumulation window they wait for it to close.
    if not window_closed and is_accumulating(trainer):
        return
    pending = run.after_batch
    while pending:
        pending.pop(0)()
    if signum is not None:
        stop_for_preemption(trainer, signum)


def run_train_batch(trainer: Trainer, results: Results, run: RunState, batch: Any, batch_idx: int) -> bool:
    """One training batch, its hooks, its optimizer step and its logging. Returns True when the
    module's on_train_batch_start returned -1, which ends the epoch before this batch."""
    s, hooks = trainer.state, trainer._hooks
    run.in_batch = True
    run.current_batch, run.batch_size = batch, None
    results.batch_counter += 1
    # Decided before the hooks, for the loop and for callbacks that log when the loop does
    # (`should_update_logs`): this batch completes a step (as in Lightning, every
    # manual-optimization batch does) whose logging step is a multiple of log_every_n_steps.
    window = _WHOLE_WINDOW if trainer.accumulate_grad_batches == 1 else _window(trainer, batch_idx)
    steps = window.step or not hooks.automatic_optimization
    run.log_due = steps and (s.log_step + 1) % trainer.log_every_n_steps == 0
    if hooks.has_train_batch_start and _train_batch_start(trainer, batch, batch_idx) == _STOP_EPOCH:
        run.in_batch = False
        return True

    steps_before = s.global_step
    # The automatic step: _forward_backward (training_step, zero_grad, backward), and at the end
    # of an accumulation window the optimizer step. As in Lightning, each completed window is one
    # step (global_step += 1), whether or not an overridden optimizer_step really stepped, and also
    # with no optimizer at all: max_steps, "step" schedulers and logging follow windows.
    if hooks.plain_step and window.step:
        # Nothing between training_step and the optimizer step customised (HookDispatch.plain_step):
        # the calls that the chain below makes with its default hooks, as a hand-written loop does.
        outputs = _forward_backward(trainer, batch, batch_idx, window.zero_grad)[1]
        trainer._optimizers[0].optimizer.step()
        s.global_step += 1
    elif not hooks.automatic_optimization:  # manual: each optimizer.step() in training_step counts
        outputs = trainer._training_step(batch, batch_idx)
    elif window.step and trainer._optimizers:
        # module.optimizer_step(closure) → LightningOptimizer.step → Precision.optimizer_step: the
        # closure, then on_before_optimizer_step and clipping (Trainer._after_closure), then the step.
        closure = _TrainingClosure(trainer, batch, batch_idx, window.zero_grad)
        trainer.lightning_module.optimizer_step(s.epoch, batch_idx, trainer._optimizers[0], closure)
        outputs = closure.outputs
        s.global_step += 1
    elif window.step or not trainer.strategy.distributed:  # inside a window, or no optimizer
        outputs = _forward_backward(trainer, batch, batch_idx, window.zero_grad)[1]
        s.global_step += window.step
    else:  # several processes, a batch that only accumulates: its gradients sync with the window's last batch
        with trainer.strategy.no_backward_sync():
            outputs = _forward_backward(trainer, batch, batch_idx, window.zero_grad)[1]
    if trainer.lr_scheduler_configs and s.global_step > steps_before:
        step_schedulers(trainer, "step", s.global_step)

    # The resume point moves before on_train_batch_end, so a checkpoint saved there resumes after this batch.
    s.batches_done = batch_idx + 1
    s.batches_total += 1
    log_at = s.log_step
    if steps:
        s.log_step = log_at + 1
    if hooks.has_train_batch_end:
        hooks.callbacks_then_module("on_train_batch_end", outputs, batch, batch_idx)
    run.in_batch = False
    # Not on a batch that only accumulates gradients: its step is logged by the batch that steps.
    if run.log_due or s.should_stop:  # should_update_logs(trainer), spelled out on the hot path
        trainer._log_metrics(results.view("logger", fresh_only=True), step=log_at)
    return False


def should_update_logs(trainer: Trainer) -> bool:
    """Whether the training batch now running is a logging point: it completes an optimizer
    step whose logging step is a multiple of `log_every_n_steps`, or training stops after it.

    The loop sends the batch's logged values to the loggers exactly then; callbacks that log per
    step (LearningRateMonitor, DeviceStatsMonitor, ThroughputMonitor) ask this to log with it.
    Lightning's `trainer._logger_connector.should_update_logs`.
    """
    return trainer.run_state.log_due or trainer.state.should_stop


def _train_batch_start(trainer: Trainer, batch: Any, batch_idx: int) -> int | None:
    """on_train_batch_start of the callbacks, then the module's; -1 from the module ends the epoch."""
    hooks = trainer._hooks
    hooks.callbacks("on_train_batch_start", batch, batch_idx)
    if hooks.module_overrides("on_train_batch_start") and trainer.lightning_module.on_train_batch_start(batch, batch_idx) == -1:
        return _STOP_EPOCH
    return None


class Window(NamedTuple):
    """What a training batch does under gradient accumulation (`accumulate_grad_batches`)."""

    zero_grad: bool  # zero the gradients before backward: the first batch of a window
    step: bool  # step the optimizer after backward: the last batch of a window (or of the epoch)


_WHOLE_WINDOW = Window(zero_grad=True, step=True)  # no accumulation: every batch is a window of its own


def _window(trainer: Trainer, batch_idx: int) -> Window:
    """This batch's place in its accumulation window: zero at its first batch, step at its last (or the epoch's)."""
    accumulate = trainer.accumulate_grad_batches
    if accumulate == 1:
        return _WHOLE_WINDOW
    last = (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == trainer.num_training_batches
    return Window(zero_grad=batch_idx % accumulate == 0, step=last)


def _forward_backward(trainer: Trainer, batch: Any, batch_idx: int, zero_grad: bool) -> tuple[Any, Any]:
    """The automatic step's body, run directly (see `run_train_batch`) or as optimizer_step's
    closure: training_step, zero_grad (the first batch of an accumulation window) and backward.
    Returns (the loss, the outputs for on_train_batch_end).

    When nothing between training_step and the optimizer step is customised
    (`HookDispatch.plain_step`), every hook it would call is a no-op or its default, so it makes
    the calls those defaults make, as a hand-written loop does."""
    hooks = trainer._hooks
    output = trainer._training_step(batch, batch_idx)
    # The usual loss (a scalar tensor with a graph) is taken as it is; anything else is checked.
    if type(output) is _TENSOR and output.requires_grad and not output.ndim:
        loss = output
    else:
        loss = _loss_from(output, trainer.lightning_module)
    if zero_grad and trainer._optimizers:
        if hooks.plain_step:
            trainer._optimizers[0].optimizer.zero_grad()  # what the default optimizer_zero_grad does
        else:
            hooks.callbacks_then_module("on_before_zero_grad", trainer._optimizers[0])
            trainer.lightning_module.optimizer_zero_grad(trainer.state.epoch, batch_idx, trainer._optimizers[0])
    if loss is None:
        return None, None
    accumulate = trainer.accumulate_grad_batches
    hooks.backward(loss / accumulate if accumulate > 1 else loss)  # see HookDispatch.backward
    # Detaching costs a tensor per step: only when someone reads the outputs in on_train_batch_end.
    return loss, _outputs_dict(output, loss) if hooks.has_train_batch_end else None


class _TrainingClosure:
    """`_forward_backward` as the closure handed to optimizer_step; it returns the loss.

    Optimizers such as LBFGS call it several times per step, so it must be re-runnable.
    """

    __slots__ = ("trainer", "batch", "batch_idx", "zero_grad", "outputs")

    def __init__(self, trainer: Trainer, batch: Any, batch_idx: int, zero_grad: bool):
        self.trainer, self.batch, self.batch_idx, self.zero_grad = trainer, batch, batch_idx, zero_grad
        self.outputs: Any = None

    def __call__(self) -> torch.Tensor | None:
        loss, self.outputs = _forward_backward(self.trainer, self.batch, self.batch_idx, self.zero_grad)
        return loss


def _loss_from(output: Any, module: Any) -> torch.Tensor | None:
    """The loss in what training_step returned, with a clear error when it cannot be trained on."""
    if output is None:
        trainer = module._trainer
        if trainer is not None and trainer.run_state.none_steps is not None:
            trainer.run_state.none_steps += 1
        warn_once_at(
            f"{type(module).__name__}.training_step returned None, so this batch is skipped (no backward). "
            "If that was not intended, return the loss. (fulmen doctor code FM201)",
            type(module).training_step,
        )
        return None
    if isinstance(output, torch.Tensor):  # the usual case first: isinstance with an ABC (Mapping) is slower
        loss = output
    elif isinstance(output, Mapping):
        if "loss" not in output:
            raise MisconfigurationException(
                "training_step returned a dict without 'loss'. "
                f"Received keys: {sorted(map(str, output))}. Fix: return the loss tensor or {{'loss': loss, ...}}. "
                "(fulmen doctor code FM202)"
            )
        loss = output["loss"]
    else:
        loss = output
    if not isinstance(loss, torch.Tensor):
        raise MisconfigurationException(
            f"training_step must return the loss as a tensor (or a dict with 'loss'). Received: "
            f"{type(loss).__name__} ({loss!r:.60}). Fix: return the tensor itself, not loss.item(). "
            "(fulmen doctor code FM202)"
        )
    if loss.numel() != 1:
        raise MisconfigurationException(
            f"training_step must return a scalar loss. Received: a tensor of shape {tuple(loss.shape)}. "
            "Fix: reduce it, e.g. loss.mean()."
        )
    if not loss.requires_grad:
        raise MisconfigurationException(
            "training_step returned a loss that is not connected to the model's parameters (no grad_fn), "
            "so backward cannot compute gradients. Received: loss with requires_grad=False. Fix: compute the "
            "loss from the model's outputs, without .detach(), .item() or torch.no_grad(). (fulmen doctor code FM202)"
        )
    return loss


def _outputs_dict(output: Any, loss: torch.Tensor) -> dict[str, Any]:
    extra = {k: v for k, v in output.items() if k != "loss"} if isinstance(output, Mapping) else {}
    return {"loss": loss.detach(), **extra}


def _validation_due_this_epoch(trainer: Trainer) -> bool:
    every = trainer.check_val_every_n_epoch
    return trainer.run_state.val_enabled and (every is None or (trainer.state.epoch + 1) % every == 0)


def is_accumulating(trainer: Trainer) -> bool:
    """Whether an accumulation window is open after the batches done so far: the optimizer has
    not stepped on their gradients yet (they must survive a validation run, and a checkpoint
    waits for the window to close)."""
    done = trainer.state.batches_done
    return trainer.lightning_module.automatic_optimization and done > 0 and not _window(trainer, done - 1).step


def _maybe_validate(trainer: Trainer, batch_idx: int, is_last: bool, log_at: int) -> bool:
    """Run validation if this batch is a validation point; return whether it ran. Only called in
    epochs that validate every `val_check_batch` batches (see `run_train_epoch`)."""
    s = trainer.state
    counter = s.batches_total if trainer.check_val_every_n_epoch is None else batch_idx + 1
    # As in Lightning, a batch that stops training early (should_stop, min_* reached) also validates.
    if counter % trainer.val_check_batch != 0 and not (s.should_stop and _min_reached(trainer)):
        return False
    run_evaluation(trainer, RunningStage.VALIDATING, log_at)
    if trainer.strategy.distributed:  # a stop asked for during validation, e.g. by a callback on one rank
        _agree_on_stop(trainer, settle=True)
    return is_last


# ==========================================================================================
# the step methods, called with the arguments their signature takes (decided once)
# ==========================================================================================
def _takes(fn: Any, name: str, explicit: bool = False, min_args: int | None = None) -> bool:
    """Whether step method `fn` takes argument `name`, Lightning's way: by that name, through
    `*args` (unless `explicit`), or by position when it has at least `min_args` arguments."""
    spec = inspect.getfullargspec(getattr(fn, "__wrapped__", fn))  # a decorated (or profiled) step: the real one
    args = spec.args[1:]  # without self
    return name in args or (not explicit and spec.varargs is not None) or (min_args is not None and len(args) >= min_args)


def check_training_step(module: Any) -> None:
    """At fit's start, before configure_optimizers: a Lightning 1.x step that takes `optimizer_idx`."""
    fn = module.training_step
    if _takes(fn, "optimizer_idx", explicit=True):
        raise RuntimeError(
            f"{type(module).__name__}.training_step takes `optimizer_idx`, which Lightning 2 (and fulmen) no longer "
            "passes: several optimizers are only supported with manual optimization. Received: "
            f"training_step{inspect.signature(fn)}. Fix: remove the `optimizer_idx` argument, set "
            "`self.automatic_optimization = False` and step each optimizer in training_step "
            "(`opt1, opt2 = self.optimizers()`)."
        )


def bind_training_step(trainer: Trainer, module: Any) -> Any:
    """The training step as the loop calls it, `step(batch, batch_idx)`: through the strategy's
    wrapper and the precision's autocast, with `batch_idx` left out when the module's
    `training_step(self, batch)` does not take it. Decided once, when a run is set up."""
    fn = module.training_step
    step = trainer.strategy.training_step(module)
    if not _takes(fn, "batch_idx", min_args=2):
        with_index = step

        def step(batch: Any, batch_idx: int) -> Any:  # training_step(self, batch)
            return with_index(batch)

    return trainer._precision.in_forward_context(step)


def _eval_step(module: Any, step_name: str, hook_names: tuple[str, ...], several: bool, kind: str) -> Any:
    """`call(batch, batch_idx, dataloader_idx)` that calls the step with what it takes, as
    Lightning does: `batch_idx` when the step has room for it, `dataloader_idx` only when there
    are several dataloaders, which the step (and its batch hooks) must then accept."""
    fn = getattr(module, step_name)
    for hook in (step_name, *hook_names):
        hook_fn = getattr(module, hook)
        present = _takes(hook_fn, "dataloader_idx")
        if several and not present:
            raise RuntimeError(
                f"There are several {kind} dataloaders, so {type(module).__name__}.{hook} is passed "
                f"`dataloader_idx`, but it does not take it. Received: {hook}{inspect.signature(hook_fn)}. "
                "Fix: add `dataloader_idx=0` to its signature."
            )
        if not several and present:
            param = inspect.signature(hook_fn).parameters.get("dataloader_idx")
            if param is not None and param.default is inspect.Parameter.empty:
                raise RuntimeError(
                    f"There is a single {kind} dataloader, so {type(module).__name__}.{hook} is not passed "
                    f"`dataloader_idx`, but it requires it. Received: {hook}{inspect.signature(hook_fn)}. "
                    "Fix: remove the argument or give it a default, e.g. `dataloader_idx=0`."
                )
    with_index = _takes(fn, "batch_idx", min_args=2)
    if several:
        return (lambda b, i, d: fn(b, i, d)) if with_index else (lambda b, i, d: fn(b, d))
    return (lambda b, i, d: fn(b, i)) if with_index else (lambda b, i, d: fn(b))


# ==========================================================================================
# evaluation: validation, sanity check and test share one loop
# ==========================================================================================
def _module_modes(module: torch.nn.Module) -> list[tuple[torch.nn.Module, bool]]:
    return [(m, m.training) for m in module.modules()]


def _restore_modes(modes: list[tuple[torch.nn.Module, bool]]) -> None:
    for m, training in modes:
        m.training = training


def _grad_context(trainer: Trainer) -> Any:
    return torch.inference_mode() if trainer.inference_mode else torch.no_grad()


class _EvaluationHooks(NamedTuple):
    """The names of one evaluation loop's step and hooks, in the order they run (module-only
    hooks: `model_eval`, `model_train`; the others: callbacks, then the module)."""

    step: str
    model_eval: str
    start: str
    epoch_start: str
    batch_start: str
    batch_end: str
    epoch_end: str
    end: str
    model_train: str


_VALIDATION_HOOKS = _EvaluationHooks(
    "validation_step", "on_validation_model_eval", "on_validation_start", "on_validation_epoch_start",
    "on_validation_batch_start", "on_validation_batch_end", "on_validation_epoch_end", "on_validation_end",
    "on_validation_model_train",
)
_TEST_HOOKS = _EvaluationHooks(
    "test_step", "on_test_model_eval", "on_test_start", "on_test_epoch_start", "on_test_batch_start",
    "on_test_batch_end", "on_test_epoch_end", "on_test_end", "on_test_model_train",
)


def run_evaluation(trainer: Trainer, stage: RunningStage, log_at: int | None = None) -> list[dict[str, float]]:
    """Validate (also for the sanity check) or test; return one dict of metrics per dataloader.

    Metrics go to the loggers at step `log_at` (validation during fit: the step of the training
    batch just run), or else at the current logging step.
    """
    s, hooks, module, run = trainer.state, trainer._hooks, trainer.lightning_module, trainer.run_state
    testing = stage == RunningStage.TESTING
    names = _TEST_HOOKS if testing else _VALIDATION_HOOKS
    loaders = trainer._test_loaders if testing else trainer._val_loaders
    limits = (
        trainer.num_test_batches if testing
        else trainer.num_sanity_val_batches if stage == RunningStage.SANITY_CHECKING
        else trainer.num_val_batches
    )
    several = len(loaders) > 1
    step_fn = _eval_step(module, names.step, (names.batch_start, names.batch_end), several, "test" if testing else "val")
    previous_stage, previous_results = s.stage, run.results
    s.stage = stage
    results = run.results = Results(training=False)
    run.num_eval_loaders = len(loaders)
    modes = _module_modes(module)
    if stage == RunningStage.VALIDATING and s.fn == "fit" and not is_accumulating(trainer):
        module.on_validation_model_zero_grad()
    getattr(module, names.model_eval)()
    hooks.callbacks_then_module(names.start)
    hooks.callbacks_then_module(names.epoch_start)
    with _grad_context(trainer):
        for dl_idx, loader in enumerate(loaders):
            run.dataloader_idx = dl_idx
            extra = (dl_idx,) if several else ()  # as in Lightning, the hooks get dataloader_idx only when there are several
            stop = None if limits[dl_idx] == float("inf") else int(limits[dl_idx])
            for batch_idx, batch in _device_batches(trainer, itertools.islice(enumerate(loader), stop), dl_idx):
                run.in_batch, run.current_batch, run.batch_size = True, batch, None
                results.batch_counter += 1
                hooks.callbacks_then_module(names.batch_start, batch, batch_idx, *extra)
                with trainer._precision.forward_context():
                    output = step_fn(batch, batch_idx, dl_idx)
                hooks.callbacks_then_module(names.batch_end, output, batch, batch_idx, *extra)
                run.in_batch = False
        results.epoch_end_reached = True
        hooks.callbacks_then_module(names.epoch_end)
    metrics = results.view("callback")
    if stage != RunningStage.SANITY_CHECKING:
        trainer._callback_metrics.update(metrics)
        trainer._progress_bar_metrics.update(results.view("prog_bar"))
        trainer._log_metrics(results.view("logger"), step=s.log_step if log_at is None else log_at)
    hooks.callbacks_then_module(names.end)
    _restore_modes(modes)
    getattr(module, names.model_train)()
    s.stage, run.results = previous_stage, previous_results
    run.num_eval_loaders = 0
    # What validate/test return (and print) is Lightning's: the epoch values sent to loggers
    # (`name_epoch` for a value also logged per step; nothing logged with logger=False).
    return _per_dataloader(to_float_dict(results.view("logger")), len(loaders))


def _per_dataloader(metrics: dict[str, float], n: int) -> list[dict[str, float]]:
    """Split `name/dataloader_idx_i` keys by dataloader; keys without a suffix go to every dict."""
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for key, value in metrics.items():
        head, sep, idx = key.rpartition("/dataloader_idx_")
        targets = [int(idx)] if sep and idx.isdigit() and int(idx) < n else range(n)
        for i in targets:
            out[i][key] = value
    return out


def print_results(stage: RunningStage, results: list[dict[str, float]]) -> None:
    """A small table of the metrics returned by validate/test."""
    title = "Test metric" if stage == RunningStage.TESTING else "Validate metric"
    keys = sorted({k for r in results for k in r})
    if not keys:
        return
    width = max(len(title), *(len(k) for k in keys)) + 2
    header = title.ljust(width) + "".join(f"DataLoader {i}".rjust(22) for i in range(len(results)))
    rule = "─" * len(header)
    lines = [rule, header, rule]
    for key in keys:
        cells = "".join((f"{r[key]:.6g}" if key in r else "").rjust(22) for r in results)
        lines.append(key.ljust(width) + cells)
    lines.append(rule)
    print("\n".join(lines))


# ==========================================================================================
# predict
# ==========================================================================================
def run_predict(trainer: Trainer, return_predictions: bool) -> list[Any] | None:
    s, hooks, module = trainer.state, trainer._hooks, trainer.lightning_module
    loaders = trainer._predict_loaders
    s.stage = RunningStage.PREDICTING
    modes = _module_modes(module)
    module.on_predict_model_eval()
    hooks.callbacks_then_module("on_predict_start")
    hooks.callbacks_then_module("on_predict_epoch_start")
    predictions: list[list[Any]] = [[] for _ in loaders]
    several = len(loaders) > 1
    step_fn = _eval_step(module, "predict_step", ("on_predict_batch_start", "on_predict_batch_end"), several, "predict")
    with _grad_context(trainer):
        for dl_idx, loader in enumerate(loaders):
            extra = (dl_idx,) if several else ()
            limit = trainer.num_predict_batches[dl_idx]
            stop = None if limit == float("inf") else int(limit)
            for batch_idx, batch in _device_batches(trainer, itertools.islice(enumerate(loader), stop), dl_idx):
                hooks.callbacks_then_module("on_predict_batch_start", batch, batch_idx, *extra)
                with trainer._precision.forward_context():
                    prediction = step_fn(batch, batch_idx, dl_idx)
                hooks.callbacks_then_module("on_predict_batch_end", prediction, batch, batch_idx, *extra)
                if return_predictions:
                    predictions[dl_idx].append(prediction)
        hooks.callbacks_then_module("on_predict_epoch_end")
    hooks.callbacks_then_module("on_predict_end")
    _restore_modes(modes)
    if not return_predictions:
        return None
    return predictions[0] if len(predictions) == 1 else predictions
