"""Lightning's `utilities.model_summary`: the `ModelSummary` object (layer names, types, parameter counts,
totals and size as attributes; the table as `str()`), `LayerSummary`, `summarize` and the number formatting.

The counting and the table are the `ModelSummary` callback's (`fulmen.callbacks.model_summary`), so the
object prints what the callback prints. When the model has an `example_input_array`, it is run through
the model once (eval mode, no grad) to record each layer's input and output sizes and FLOPs, and the
table gains Lightning's "FLOPs", "In sizes" and "Out sizes" columns; without one, nothing is run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fulmen.callbacks.model_summary import (
    _PRECISION_BITS,
    _check_max_depth,
    _count,
    _layers,
    _table,
    get_human_readable_count,
)

UNKNOWN_SIZE = "?"
LEFTOVER_PARAMS_NAME = "other params"
NOT_APPLICABLE = "n/a"


def parse_batch_shape(batch: Any) -> str | list:
    """The shape of a tensor as a list, of nested lists/tuples as nested lists, "?" for anything else."""
    if hasattr(batch, "shape"):
        return list(batch.shape)
    if isinstance(batch, (list, tuple)):
        return [parse_batch_shape(item) for item in batch]
    return UNKNOWN_SIZE


class LayerSummary:
    """One layer's row: its type, parameter count, train/eval mode, and (after a forward pass while
    the summary is being built) its input and output sizes.

    Example:
        >>> layer = LayerSummary(nn.Conv2d(3, 8, 3))
        >>> layer.num_parameters, layer.layer_type
        (224, 'Conv2d')
    """

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._in_size: str | list | None = None
        self._out_size: str | list | None = None
        self._hook_handle = self._register_hook()

    def __del__(self) -> None:
        self.detach_hook()

    def _register_hook(self) -> Any:
        if isinstance(self._module, torch.jit.ScriptModule):  # scripted modules take no hooks
            return None

        def record(_: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            inputs = (*args, *kwargs.values()) if kwargs else args
            self._in_size = parse_batch_shape(inputs[0] if len(inputs) == 1 else inputs)
            self._out_size = parse_batch_shape(out)
            self.detach_hook()  # the first call only: a module used twice shows its first use

        return self._module.register_forward_hook(record, with_kwargs=True)

    def detach_hook(self) -> None:
        handle = getattr(self, "_hook_handle", None)
        if handle is not None:
            handle.remove()
            self._hook_handle = None

    @property
    def in_size(self) -> str | list:
        return self._in_size or UNKNOWN_SIZE

    @property
    def out_size(self) -> str | list:
        return self._out_size or UNKNOWN_SIZE

    @property
    def layer_type(self) -> str:
        return type(self._module).__name__

    @property
    def num_parameters(self) -> int:
        return _count(self._module.parameters())

    @property
    def training(self) -> bool:
        return self._module.training


class ModelSummary:
    """The summary of `model` down to `max_depth` (1: direct children, -1: every submodule, 0: none).

    Example:
        >>> net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> summary = ModelSummary(net)
        >>> summary.total_parameters, summary.layer_names, round(summary.model_size, 4)
        (2762, ['0', '1', '2'], 0.011)
    """

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        _check_max_depth(max_depth)
        self._model = model
        self._max_depth = max_depth
        trainer = getattr(model, "_trainer", None)
        bits = _PRECISION_BITS.get(str(trainer.precision), 32) if trainer is not None else 32
        self._precision_megabytes = bits / 8 * 1e-6
        self._flop_counts: dict[str, dict[Any, int]] = {}
        self._total_flops = 0
        self._ran_example = False
        self._layer_summary = self.summarize()

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        return _layers(self._model, self._max_depth)

    def summarize(self) -> dict[str, LayerSummary]:
        summary = OrderedDict((name, LayerSummary(module)) for name, module in self.named_modules)
        if getattr(self._model, "example_input_array", None) is not None:
            self._forward_example_input()
        for layer in summary.values():
            layer.detach_hook()
        return summary

    def _forward_example_input(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        from fulmen.utilities.apply_func import move_data_to_device

        model = self._model
        example = model.example_input_array
        device = getattr(model, "device", None)
        if device is not None:
            example = move_data_to_device(example, device)
        modes = {name: m.training for name, m in model.named_modules()}
        counter = FlopCounterMode(display=False, depth=None if self._max_depth < 0 else self._max_depth + 1)
        model.eval()
        try:
            with torch.no_grad(), counter:
                if isinstance(example, (list, tuple)):
                    model(*example)
                elif isinstance(example, dict):
                    model(**example)
                else:
                    model(example)
        finally:
            for name, m in model.named_modules():  # put each module's own mode back, not model.train()
                m.training = modes.get(name, m.training)
        counts = counter.get_flop_counts()
        root = type(model).__name__
        self._flop_counts = {name: dict(counts.get(f"{root}.{name}", {})) for name, _ in self.named_modules}
        self._total_flops = counter.get_total_flops()
        self._ran_example = True

    # --- what the table shows, as numbers ------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        return list(self._layer_summary)

    @property
    def layer_types(self) -> list[str]:
        return [layer.layer_type for layer in self._layer_summary.values()]

    @property
    def in_sizes(self) -> list:
        return [layer.in_size for layer in self._layer_summary.values()]

    @property
    def out_sizes(self) -> list:
        return [layer.out_size for layer in self._layer_summary.values()]

    @property
    def param_nums(self) -> list[int]:
        return [layer.num_parameters for layer in self._layer_summary.values()]

    @property
    def training_modes(self) -> list[bool]:
        return [layer.training for layer in self._layer_summary.values()]

    @property
    def total_training_modes(self) -> dict[str, int]:
        modes = [m.training for m in list(self._model.modules())[1:]]  # the root is not counted
        return {"train": modes.count(True), "eval": modes.count(False)}

    @property
    def total_parameters(self) -> int:
        return _count(self._model.parameters())

    @property
    def trainable_parameters(self) -> int:
        return _count(p for p in self._model.parameters() if p.requires_grad)

    @property
    def total_layer_params(self) -> int:
        return sum(self.param_nums)

    @property
    def model_size(self) -> float:
        """The parameters' size in MB at the Trainer's precision (32 bits when no Trainer is attached)."""
        return self.total_parameters * self._precision_megabytes

    @property
    def total_flops(self) -> int:
        """FLOPs of one forward pass of `example_input_array` (0 when the model has none)."""
        return self._total_flops

    @property
    def flop_counts(self) -> dict[str, dict[Any, int]]:
        return {name: self._flop_counts.get(name, {}) for name in self.layer_names}

    def __str__(self) -> str:
        header = [" ", "Name", "Type", "Params", "Mode"]
        rows = [
            [str(i), name, layer.layer_type, get_human_readable_count(layer.num_parameters),
             "train" if layer.training else "eval"]
            for i, (name, layer) in enumerate(self._layer_summary.items())
        ]
        if self._ran_example:
            header += ["FLOPs", "In sizes", "Out sizes"]
            for row, name, layer in zip(rows, self.layer_names, self._layer_summary.values()):
                row += [get_human_readable_count(sum(self.flop_counts[name].values())), str(layer.in_size),
                        str(layer.out_size)]
        leftover = self.total_parameters - self.total_layer_params
        if leftover > 0:
            rows.append(["", LEFTOVER_PARAMS_NAME, NOT_APPLICABLE, get_human_readable_count(leftover), NOT_APPLICABLE]
                        + [NOT_APPLICABLE] * (len(header) - 5))
        modes = self.total_training_modes
        lines = _table(header, rows)
        footer = [
            (get_human_readable_count(self.trainable_parameters), "Trainable params"),
            (get_human_readable_count(self.total_parameters - self.trainable_parameters), "Non-trainable params"),
            (get_human_readable_count(self.total_parameters), "Total params"),
            (get_formatted_model_size(self.model_size), "Total estimated model params size (MB)"),
            (str(modes["train"]), "Modules in train mode"),
            (str(modes["eval"]), "Modules in eval mode"),
        ]
        if self._ran_example:
            footer.append((get_human_readable_count(self.total_flops), "Total Flops"))
        lines += [f"{value:<10}{label}" for value, label in footer]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def get_formatted_model_size(total_model_size: float) -> str:
    return f"{total_model_size:,.3f}"


def measure_flops(
    model: nn.Module, forward_fn: Callable[[], torch.Tensor], loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> int:
    """The FLOPs of `forward_fn()` (and, with `loss_fn`, of `loss_fn(output).backward()` too), counted by
    torch's FlopCounterMode. A model built under `torch.device("meta")` is counted without any compute.

    Example:
        >>> net = nn.Linear(4, 3)
        >>> measure_flops(net, lambda: net(torch.zeros(2, 4)))  # 2 * batch * in * out
        48
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        output = forward_fn()
        if loss_fn is not None:
            loss_fn(output).backward()
    return counter.get_total_flops()


def summarize(lightning_module: nn.Module, max_depth: int = 1) -> ModelSummary:
    """The `ModelSummary` of `lightning_module` (print it for the table)."""
    return ModelSummary(lightning_module, max_depth=max_depth)


__all__ = [
    "LayerSummary", "ModelSummary", "get_formatted_model_size", "get_human_readable_count", "measure_flops",
    "parse_batch_shape", "summarize",
]
