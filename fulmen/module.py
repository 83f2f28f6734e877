"""`LightningModule`: where the user writes the math.

The user subclasses it with the model (`__init__`/`forward`), the steps (`training_step`, ...)
and `configure_optimizers`. The hooks the Trainer calls at documented points, with their defaults,
come from `fulmen.module_hooks` (Lightning's `core.hooks`); hyperparameters from `fulmen.hparams`.
This file owns the rest: what the module knows about its run (`trainer`, `device`, `current_epoch`,
...), the helpers the steps use (`self.log`, `self.optimizers()`, `self.manual_backward`,
`all_gather`), loading it from a checkpoint (`load_from_checkpoint`, via `fulmen.saving`) and
exporting it (`to_torchscript`, `to_onnx`).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from torch import nn

from fulmen.errors import MisconfigurationException, warn_once
from fulmen.hparams import HyperparametersMixin
from fulmen.logging import log_value
from fulmen.module_hooks import CheckpointHooks, DataHooks, ModelHooks

if TYPE_CHECKING:
    from fulmen.optim import LightningOptimizer
    from fulmen.trainer import Trainer


class LightningModule(HyperparametersMixin, ModelHooks, DataHooks, CheckpointHooks, nn.Module):
    """A `torch.nn.Module` that also says how to train, validate, test and predict.

    Example:
        >>> import torch, fulmen as pl
        >>> class Regressor(pl.LightningModule):
        ...     def __init__(self, lr=0.1):
        ...         super().__init__()
        ...         self.save_hyperparameters()
        ...         self.layer = torch.nn.Linear(3, 1)
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         loss = torch.nn.functional.mse_loss(self.layer(x), y)
        ...         self.log("train_loss", loss)
        ...         return loss
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
    """

    # Lightning's checkpoint keys for the hyperparameters, their __init__ argument name, and their type.
    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    # torch.jit.script compiles every property of the module it scripts unless it is listed here.
    __jit_unused_properties__: list[str] = [
        "example_input_array", "on_gpu", "current_epoch", "global_step", "global_rank", "local_rank", "logger",
        "loggers", "automatic_optimization", "trainer", "strict_loading", "device_mesh", "device", "dtype",
        *HyperparametersMixin.__jit_unused_properties__,
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Trainer | None = None
        self._automatic_optimization = True
        self._example_input_array: Any = None
        self._strict_loading: bool | None = None  # None: not set by the user (loads strictly)
        self._device_mesh: Any = None
        self._jit_is_scripting = False

    def __setattr__(self, name: str, value: Any) -> None:
        # torch's own message for this ("cannot assign module before Module.__init__() call")
        # does not say which class or what to do.
        if "_modules" not in self.__dict__ and isinstance(value, (nn.Module, nn.Parameter)):
            raise MisconfigurationException(
                f"{type(self).__name__}.__init__ assigned self.{name} before calling super().__init__(). "
                f"Received: self.{name} = {type(value).__name__}(...) with the module not initialised. "
                "Fix: make `super().__init__()` the first line of __init__. (fulmen doctor code FM401)"
            )
        super().__setattr__(name, value)

    # --- where the module is and what it is part of ------------------------------------------
    @property
    def trainer(self) -> Trainer:
        if self._trainer is None and not self._jit_is_scripting:
            raise RuntimeError(
                f"{type(self).__qualname__} is not attached to a `Trainer`. "
                "Fix: call trainer.fit(model) (or validate/test/predict) first, or check `model._trainer is None`."
            )
        return self._trainer  # type: ignore[return-value]

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        # LightningModules nested inside this one belong to the same run (their self.log works too).
        for child in self.children():
            if isinstance(child, LightningModule):
                child.trainer = trainer
        self._trainer = trainer

    @property
    def on_gpu(self) -> bool:
        """Whether the module is on a CUDA device."""
        return self.device.type == "cuda"

    @property
    def strict_loading(self) -> bool:
        """Whether a checkpoint's state_dict must match this module's keys exactly (default True).

        Set it to False for a module that saves only part of its weights (e.g. without a frozen
        backbone): `load_from_checkpoint` and the Trainer's `ckpt_path` then load what is there.
        """
        return self._strict_loading in (None, True)

    @strict_loading.setter
    def strict_loading(self, strict_loading: bool) -> None:
        self._strict_loading = strict_loading

    @property
    def device_mesh(self) -> Any:
        """The device mesh a model-parallel strategy sets (None: fulmen's strategies set none)."""
        return self._device_mesh

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            return tensor.dtype
        return torch.get_default_dtype()

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer else 0

    @property
    def logger(self) -> Any:
        return self._trainer.logger if self._trainer else None

    @property
    def loggers(self) -> list[Any]:
        return self._trainer.loggers if self._trainer else []

    @property
    def automatic_optimization(self) -> bool:
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = value

    @property
    def example_input_array(self) -> Any:
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, value: Any) -> None:
        self._example_input_array = value

    # --- the user's part ---------------------------------------------------------------------
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """Compute and return the training loss (a tensor, or a dict with a 'loss' key)."""
        raise MisconfigurationException(
            f"{type(self).__name__} does not define training_step, so there is nothing to train. "
            "Fix: add `def training_step(self, batch, batch_idx): ... return loss`."
        )

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate one validation batch; log metrics with self.log."""

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate one test batch; log metrics with self.log."""

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Return the prediction for one batch. Default: `self(batch)`."""
        batch = kwargs.get("batch", args[0] if args else None)
        return self(batch)

    def configure_optimizers(self) -> Any:
        """Return an optimizer, a list, (optimizers, schedulers), or a dict; see fulmen.optim."""
        raise MisconfigurationException(
            f"{type(self).__name__} does not define configure_optimizers, which automatic optimization needs. "
            "Fix: add `def configure_optimizers(self): return torch.optim.Adam(self.parameters(), lr=1e-3)`."
        )

    def configure_callbacks(self) -> Any:
        """Callbacks this model always wants; they replace Trainer callbacks of the same type."""
        return []

    def configure_model(self) -> None:
        """Create layers lazily (called after setup, before optimizers are configured)."""

    # --- logging ------------------------------------------------------------------------------
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a scalar. In training_step the default is per step; elsewhere per epoch.

        Values stay on the device; loggers receive them every `log_every_n_steps` steps.
        """
        if self._trainer is None:
            warn_once("self.log() was called on a module not attached to a Trainer; the value is ignored.")
            return
        log_value(
            self._trainer, name, value, prog_bar=prog_bar, logger=logger, on_step=on_step,
            on_epoch=on_epoch, reduce_fx=reduce_fx, enable_graph=enable_graph, sync_dist=sync_dist,
            add_dataloader_idx=add_dataloader_idx, batch_size=batch_size,
        )

    def log_dict(self, dictionary: Mapping[str, Any], **kwargs: Any) -> None:
        """`self.log` for each item of `dictionary`, with the same options."""
        for name, value in dictionary.items():
            self.log(name, value, **kwargs)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` on the main process only, without breaking the progress bar."""
        trainer = self._trainer
        if trainer is not None and not trainer.is_global_zero:
            return
        bar = trainer.progress_bar_callback if trainer is not None else None
        if bar is not None and hasattr(bar, "print"):
            bar.print(*args, **kwargs)
        else:
            print(*args, **kwargs)

    # --- optimization --------------------------------------------------------------------------
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer(s) from configure_optimizers: one object, or a list when several."""
        opts = self.trainer._optimizers if use_pl_optimizer else [o.optimizer for o in self.trainer._optimizers]
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self) -> Any:
        """The scheduler(s) from configure_optimizers: None, one, or a list."""
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward under manual optimization; applies precision scaling. Use instead of loss.backward()."""
        if self._automatic_optimization:
            raise MisconfigurationException(
                "manual_backward is for manual optimization, but automatic_optimization is True. "
                "Fix: set `self.automatic_optimization = False` in __init__, or return the loss "
                "from training_step and let the Trainer call backward. (fulmen doctor code FM301)"
            )
        self.trainer._backward(loss, *args, **kwargs)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Called by the Trainer to run backward; override for custom behaviour."""
        loss.backward(*args, **kwargs)

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Let only `optimizer`'s parameters require grad (for alternating multi-optimizer updates)."""
        target = getattr(optimizer, "optimizer", optimizer)
        mine = {id(p) for group in target.param_groups for p in group["params"]}
        self._toggled_requires_grad = {}
        for opt in self.trainer._optimizers:
            for group in opt.optimizer.param_groups:
                for p in group["params"]:
                    if id(p) not in mine:
                        self._toggled_requires_grad.setdefault(p, p.requires_grad)
                        p.requires_grad = False

    def untoggle_optimizer(self, optimizer: Any) -> None:
        """Undo `toggle_optimizer`."""
        for p, requires_grad in getattr(self, "_toggled_requires_grad", {}).items():
            p.requires_grad = requires_grad
        self._toggled_requires_grad = {}

    @contextlib.contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Generator[None, None, None]:
        """`toggle_optimizer` for the duration of a `with` block, untoggled even if it raises."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: LightningOptimizer, optimizer_closure: Any = None
    ) -> None:
        """Step `optimizer`; the closure runs training_step, zero_grad and backward."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip gradients before the optimizer step; default uses the Trainer's settings."""
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def clip_gradients(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients of `optimizer`'s parameters by norm (default) or by value."""
        if not gradient_clip_val:
            return
        algorithm = gradient_clip_algorithm or "norm"
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        elif algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            raise MisconfigurationException(
                f"Unknown gradient_clip_algorithm. Received: gradient_clip_algorithm={algorithm!r}. "
                "Fix: use 'norm' or 'value'."
            )

    # --- freezing --------------------------------------------------------------------------------
    def freeze(self) -> LightningModule:
        """No gradients for any parameter, and eval mode."""
        for param in self.parameters():
            param.requires_grad = False
        return self.eval()

    def unfreeze(self) -> LightningModule:
        for param in self.parameters():
            param.requires_grad = True
        return self.train()


    # --- across processes --------------------------------------------------------------------------
    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather `data` (a tensor, a number, or a collection of them) from every process.

        Each tensor comes back with a leading dimension of size world_size, in rank order; with one
        process it comes back as it is. Every process must call it with tensors of the same shape.
        `sync_grads=True` lets gradients flow back through the gather.
        """
        from fulmen.data import apply_to_tensors

        data = _as_tensors(data, self.device)
        return apply_to_tensors(data, lambda t: _all_gather(t, group, sync_grads))

    # --- loading and exporting ---------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the module from a checkpoint's hyperparameters (overridden by `kwargs`) and load its weights.

        `hparams_file` (.yaml, .yml or .csv, e.g. a logger's hparams.yaml) replaces the stored
        hyperparameters. `strict=None` follows the module's `strict_loading`. Without `map_location`
        the weights stay on the device they were saved from (CPU when that device is missing), and
        the module is moved there.

        Example:
            >>> model = Regressor.load_from_checkpoint("best.ckpt", lr=0.01)  # doctest: +SKIP
        """
        from fulmen.saving import _load_from_checkpoint

        return _load_from_checkpoint(cls, checkpoint_path, map_location, hparams_file, strict, **kwargs)

    def on_exception(self, exception: BaseException) -> None:
        """A fit/validate/test/predict is failing with `exception` (before it propagates)."""

    @torch.no_grad()
    def to_torchscript(
        self, file_path: str | Path | None = None, method: str = "script", example_inputs: Any = None, **kwargs: Any
    ) -> Any:
        """This module compiled by TorchScript (`method="script"`) or recorded by tracing
        (`method="trace"`, on `example_inputs` or `example_input_array`); saved to `file_path` if given.

        The result is in eval mode; the module goes back to the mode it was in.

        Example:
            >>> scripted = model.to_torchscript("model.pt")  # doctest: +SKIP
            >>> torch.jit.load("model.pt")(x)  # doctest: +SKIP
        """
        mode = self.training
        if method == "script":
            with self._scripting():
                compiled = torch.jit.script(self.eval(), **kwargs)
        elif method == "trace":
            if example_inputs is None:
                if self.example_input_array is None:
                    raise ValueError(
                        "to_torchscript(method='trace') needs inputs to trace. Received: example_inputs=None and "
                        "example_input_array=None. Fix: pass example_inputs=... or set self.example_input_array."
                    )
                example_inputs = self.example_input_array
            if kwargs.get("check_inputs") is not None:
                kwargs["check_inputs"] = self._prepared_input(kwargs["check_inputs"])
            with self._scripting():
                compiled = torch.jit.trace(self.eval(), self._prepared_input(example_inputs), **kwargs)
        else:
            raise ValueError(
                f"to_torchscript got an unknown method. Received: method={method!r}. Fix: use 'script' or 'trace'."
            )
        self.train(mode)
        if file_path is not None:
            torch.jit.save(compiled, str(file_path))
        return compiled

    @torch.no_grad()
    def to_onnx(self, file_path: str | Path | IO | None = None, input_sample: Any = None, **kwargs: Any) -> Any:
        """Export to ONNX with `torch.onnx.export` (extra `kwargs` go to it), on `input_sample`
        or `example_input_array`. Needs the `onnx` package, and `onnxscript` for torch's default
        (dynamo) exporter.

        Example:
            >>> model.to_onnx("model.onnx", torch.randn(1, 64))  # doctest: +SKIP
        """
        missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
        if kwargs.get("dynamo") is False and "onnxscript" in missing:
            missing.remove("onnxscript")  # the TorchScript-based exporter needs only onnx
        if missing:
            raise ModuleNotFoundError(
                f"{type(self).__name__}.to_onnx() needs packages that are not installed. Received: missing "
                f"{missing}. Fix: pip install onnx onnxscript."
            )
        if input_sample is None:
            if self.example_input_array is None:
                raise ValueError(
                    "to_onnx needs an input to export with. Received: input_sample=None and "
                    "example_input_array=None. Fix: pass input_sample=... or set self.example_input_array."
                )
            input_sample = self.example_input_array
        mode = self.training
        file_path = str(file_path) if isinstance(file_path, Path) else file_path
        result = torch.onnx.export(self, self._prepared_input(input_sample), file_path, **kwargs)
        self.train(mode)
        return result

    @contextlib.contextmanager
    def _scripting(self) -> Generator[None, None, None]:
        # TorchScript reads properties such as `trainer` while compiling: they must not raise then.
        self._jit_is_scripting = True
        try:
            yield
        finally:
            self._jit_is_scripting = False

    def _prepared_input(self, sample: Any) -> Any:
        """An example input as a batch would be: through the batch-transfer hooks, onto the module's device."""
        sample = self.on_before_batch_transfer(sample, 0)
        sample = self.transfer_batch_to_device(sample, self.device, 0)
        return self.on_after_batch_transfer(sample, 0)


def _as_tensors(data: Any, device: torch.device) -> Any:
    """Numbers (also nested in lists, tuples and dicts) as tensors on `device`; tensors moved there."""
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, (bool, int, float)):
        return torch.tensor(data, device=device)
    if isinstance(data, Mapping):
        return type(data)({k: _as_tensors(v, device) for k, v in data.items()})  # type: ignore[call-arg]
    if isinstance(data, (list, tuple)) and not hasattr(data, "_fields"):
        return type(data)(_as_tensors(v, device) for v in data)
    return data


def _all_gather(tensor: torch.Tensor, group: Any, sync_grads: bool) -> torch.Tensor:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return tensor
    if sync_grads:
        from torch.distributed.nn.functional import all_gather

        return torch.stack(all_gather(tensor, group=group or dist.group.WORLD))
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, tensor.contiguous(), group=group)
    return torch.stack(gathered)
