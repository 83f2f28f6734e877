"""Lightning's `utilities.compile`: `from_compiled` and `to_uncompiled`, between `torch.compile(model)`
and the LightningModule inside it.

`torch.compile(model)` returns an `OptimizedModule` wrapping the LightningModule; it behaves like the
module but is not one (`isinstance` fails, hooks are not found on it). `from_compiled` hands back the
LightningModule itself with its calls still compiled, the way `trainer.fit(torch.compile(model))`
does it (`fulmen.trainer._unwrap_compiled`: the module's `__call__` runs through the compiler);
`to_uncompiled` undoes that.
"""

from __future__ import annotations

from typing import Any


def _optimized_module_class() -> type:
    from torch._dynamo.eval_frame import OptimizedModule  # torch._dynamo is slow to import: only here

    return OptimizedModule


def from_compiled(model: Any) -> Any:
    """The LightningModule that `torch.compile` wrapped, its calls compiled with the same settings.

    >>> import torch, fulmen as pl
    >>> module = from_compiled(torch.compile(pl.demos.BoringModel()))  # doctest: +SKIP
    >>> isinstance(module, pl.LightningModule)  # doctest: +SKIP
    True
    """
    from fulmen.module import LightningModule
    from fulmen.trainer import _unwrap_compiled

    if not isinstance(model, _optimized_module_class()):
        raise ValueError(
            f"from_compiled expects what torch.compile returns. Received: model={type(model).__name__}. "
            "Fix: pass torch.compile(lightning_module)."
        )
    if not isinstance(model._orig_mod, LightningModule):
        raise ValueError(
            "from_compiled expects a compiled LightningModule. "
            f"Received: torch.compile({type(model._orig_mod).__name__}). Fix: compile a LightningModule."
        )
    return _unwrap_compiled(model)


def to_uncompiled(model: Any) -> Any:
    """The LightningModule without compilation: from `torch.compile(module)` or from `from_compiled`
    (which it changes in place)."""
    from fulmen.module import LightningModule

    if isinstance(model, _optimized_module_class()):
        original = model._orig_mod
        if not isinstance(original, LightningModule):
            raise TypeError(
                f"to_uncompiled expects a compiled LightningModule. Received: torch.compile({type(original).__name__}). "
                "Fix: pass a compiled LightningModule, or use model._orig_mod."
            )
    elif isinstance(model, LightningModule):
        if getattr(model, "_compiled_call_impl", None) is None:
            raise ValueError(
                f"to_uncompiled expects a compiled LightningModule, and this one is not compiled. Received: "
                f"model={type(model).__name__}. Fix: pass what torch.compile or from_compiled returned."
            )
        original = model
    else:
        raise ValueError(
            f"to_uncompiled expects a LightningModule or what torch.compile returns. Received: "
            f"model={type(model).__name__}. Fix: pass torch.compile(module) or from_compiled(...)'s result."
        )
    original._compiled_call_impl = None  # nn.Module's own switch: None calls forward directly
    return original


__all__ = ["from_compiled", "to_uncompiled"]
