"""`grad_norm`: the p-norm of each parameter's gradient and of all of them together, as a dict to log.

    def on_before_optimizer_step(self, optimizer):
        self.log_dict(grad_norm(self, norm_type=2))
"""

from __future__ import annotations

import torch
from torch.nn import Module


def grad_norm(module: Module, norm_type: float | int | str, group_separator: str = "/") -> dict[str, torch.Tensor]:
    """The gradient p-norms of `module`'s parameters, keyed `grad_{p}_norm{sep}{name}`, plus
    `grad_{p}_norm_total`: the norm of all gradients as one vector. `p` is written as a float
    (`grad_2.0_norm/weight`), as in Lightning; parameters without a gradient are left out.

    Example:
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> net.weight.grad = torch.tensor([[3.0, 4.0]])
        >>> {k: v.item() for k, v in grad_norm(net, 2).items()}
        {'grad_2.0_norm/weight': 5.0, 'grad_2.0_norm_total': 5.0}
    """
    norm_type = float(norm_type)
    if norm_type <= 0:
        raise ValueError(
            f"grad_norm needs a positive p or 'inf'. Received: norm_type={norm_type}. Fix: e.g. norm_type=2."
        )
    norms = {
        f"grad_{norm_type}_norm{group_separator}{name}": p.grad.data.norm(norm_type)
        for name, p in module.named_parameters()
        if p.grad is not None
    }
    if norms:
        # The norm of the per-parameter norms equals the norm of all gradients concatenated, for any p.
        norms[f"grad_{norm_type}_norm_total"] = torch.tensor(list(norms.values())).norm(norm_type)
    return norms


__all__ = ["grad_norm"]
