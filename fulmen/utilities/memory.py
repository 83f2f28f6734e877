"""Memory helpers of Lightning's `utilities.memory`: recognising out-of-memory errors, freeing cached
CUDA memory, detaching nested tensors, and a model's size.
"""

from __future__ import annotations

import gc
import io
from typing import Any

import torch
from torch import Tensor

from fulmen.tuner.batch_size_scaling import is_oom_error
from fulmen.utilities.apply_func import apply_to_collection


def recursive_detach(in_dict: Any, to_cpu: bool = False) -> Any:
    """`in_dict` (any nested collection) with every tensor detached, and moved to the CPU with `to_cpu=True`."""

    def detach(t: Tensor) -> Tensor:
        t = t.detach()
        return t.cpu() if to_cpu else t

    return apply_to_collection(in_dict, Tensor, detach)


def _single_message(exception: BaseException) -> str | None:
    if isinstance(exception, RuntimeError) and len(exception.args) == 1 and isinstance(exception.args[0], str):
        return exception.args[0]
    return None


def is_cuda_out_of_memory(exception: BaseException) -> bool:
    message = _single_message(exception)
    return message is not None and "CUDA" in message and "out of memory" in message


def is_cudnn_snafu(exception: BaseException) -> bool:
    # cuDNN reports an allocation failure as NOT_SUPPORTED (pytorch#4107).
    message = _single_message(exception)
    return message is not None and "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in message


def is_out_of_cpu_memory(exception: BaseException) -> bool:
    message = _single_message(exception)
    return message is not None and "DefaultCPUAllocator: can't allocate memory" in message


def garbage_collection_cuda() -> None:
    """Collect Python garbage, then return cached CUDA memory to the driver."""
    gc.collect()
    try:
        torch.cuda.empty_cache()
    except RuntimeError as exception:
        # Emptying the cache can itself run out of memory; anything else is a real error.
        if not is_oom_error(exception):
            raise


def get_model_size_mb(model: torch.nn.Module) -> float:
    """The size of `model`'s serialized state_dict in megabytes (Lightning 1.x's helper)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


__all__ = [
    "garbage_collection_cuda", "get_model_size_mb", "is_cuda_out_of_memory", "is_cudnn_snafu", "is_oom_error",
    "is_out_of_cpu_memory", "recursive_detach",
]
