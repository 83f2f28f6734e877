"""The `ModelSummary` callback and `summarize`, the table of layers and parameter counts it prints.

The table lists the model's submodules down to `max_depth` with their type, parameter count and
train/eval mode, followed by trainable, non-trainable and total parameters and the size of the
parameters in MB. It counts parameters only; it runs no forward pass, so unlike Lightning it shows
no input/output sizes and no FLOPs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from fulmen.callbacks.callback import Callback

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

# Bits per stored parameter for each Trainer precision. Mixed precision keeps fp32 weights,
# so anything not listed counts as 32 bits.
_PRECISION_BITS = {
    "64": 64, "64-true": 64,
    "32": 32, "32-true": 32,
    "16-true": 16, "bf16-true": 16,
}


class ModelSummary(Callback):
    """Print a table of the model's layers and parameter counts when `fit` starts.

    Args:
        max_depth: how deep into nested submodules the table goes: 1 lists the direct children,
            -1 every submodule, 0 prints nothing.

    Example:
        >>> import fulmen as pl
        >>> trainer = pl.Trainer(callbacks=[ModelSummary(max_depth=2)])
    """

    def __init__(self, max_depth: int = 1) -> None:
        _check_max_depth(max_depth)
        self._max_depth = max_depth

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._max_depth == 0 or not trainer.is_global_zero:
            return
        bits = _PRECISION_BITS.get(str(getattr(trainer, "precision", "32-true")), 32)
        print(summarize(pl_module, max_depth=self._max_depth, bits_per_param=bits))


def summarize(module: nn.Module, max_depth: int = 1, *, bits_per_param: int = 32) -> str:
    """The summary table of `module` as text.

    Example:
        >>> net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> print(summarize(net))
          | Name | Type   | Params | Mode
        ----------------------------------------
        0 | 0    | Linear | 2.1 K  | train
        1 | 1    | ReLU   | 0      | train
        2 | 2    | Linear | 650    | train
        ----------------------------------------
        2.8 K     Trainable params
        0         Non-trainable params
        2.8 K     Total params
        0.011     Total estimated model params size (MB)
        3         Modules in train mode
        0         Modules in eval mode
    """
    _check_max_depth(max_depth)
    rows = [
        [str(i), name, type(layer).__name__, get_human_readable_count(_count(layer.parameters())),
         "train" if layer.training else "eval"]
        for i, (name, layer) in enumerate(_layers(module, max_depth))
    ]
    # Parameters held by the root itself belong to no listed layer; show them so the column adds up.
    own = _count(module.parameters(recurse=False))
    if own and max_depth != 0:
        rows.append(["", "other params", "n/a", get_human_readable_count(own), "n/a"])

    total = _count(module.parameters())
    trainable = _count(p for p in module.parameters() if p.requires_grad)
    submodules = list(module.modules())[1:]
    in_train = sum(m.training for m in submodules)
    size_mb = total * bits_per_param / 8 / 1e6

    lines = _table([" ", "Name", "Type", "Params", "Mode"], rows)
    for value, label in [
        (get_human_readable_count(trainable), "Trainable params"),
        (get_human_readable_count(total - trainable), "Non-trainable params"),
        (get_human_readable_count(total), "Total params"),
        (f"{size_mb:,.3f}", "Total estimated model params size (MB)"),
        (str(in_train), "Modules in train mode"),
        (str(len(submodules) - in_train), "Modules in eval mode"),
    ]:
        lines.append(f"{value:<10}{label}")
    return "\n".join(lines)


def get_human_readable_count(number: int) -> str:
    """Shorten a count with K, M, B, T: three significant digits, thousands separators past T.

    Example:
        >>> [get_human_readable_count(n) for n in (123, 1234, 2_000_000, 123_456_789)]
        ['123  ', '1.2 K', '2.0 M', '123 M']
    """
    if number < 0:
        raise ValueError(f"Expected a count >= 0. Received: number={number}")
    units = [" ", "K", "M", "B", "T"]
    value, unit = float(number), 0
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    # Plain counts below 1000 and values from 100 up are whole ("123  ", "123 M"); others keep
    # one decimal ("1.2 K", "12.3 K"). Truncate, never round up: 999_999 is "999 K", not "1000 K".
    if unit == 0 or value >= 100:
        return f"{int(value):,d} {units[unit]}"
    return f"{value:,.1f} {units[unit]}"


def _layers(module: nn.Module, max_depth: int) -> list[tuple[str, nn.Module]]:
    """Submodules down to `max_depth` levels below `module`, in registration order."""
    if max_depth == 0:
        return []
    named = list(module.named_modules())[1:]  # [0] is the root itself
    if max_depth == -1:
        return named
    # A name with k dots sits k + 1 levels below the root.
    return [(name, layer) for name, layer in named if name.count(".") < max_depth]


def _count(params) -> int:
    # Lazy modules hold uninitialized parameters with no size yet: they count as 0.
    return sum(0 if isinstance(p, nn.parameter.UninitializedParameter) else p.numel() for p in params)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    width = sum(widths) + 3 * (len(widths) + 1)

    def line(cells: list[str]) -> str:
        return " | ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()

    return [line(header), "-" * width, *map(line, rows), "-" * width]


def _check_max_depth(max_depth: int) -> None:
    if not isinstance(max_depth, int) or max_depth < -1:
        raise ValueError(
            "Expected `max_depth` to be -1 (all layers), 0 (no table) or a positive int. "
            f"Received: max_depth={max_depth!r}"
        )
