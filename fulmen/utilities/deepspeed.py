"""Lightning's `utilities.deepspeed`: `ds_checkpoint_dir` (where a DeepSpeed checkpoint's shards are) and
`convert_zero_checkpoint_to_fp32_state_dict`, which fulmen does not provide, because fulmen does not
run DeepSpeed: the name is here so that Lightning code importing it loads, and calling it says what
to do instead.
"""

from __future__ import annotations

import os
from typing import Any

from fulmen.errors import MisconfigurationException


def ds_checkpoint_dir(checkpoint_dir: Any, tag: str | None = None) -> str:
    """The folder of one save inside a DeepSpeed checkpoint directory: `tag` (e.g. "global_step14"), or
    the one its "latest" file names."""
    if tag is None:
        latest = os.path.join(checkpoint_dir, "latest")
        if not os.path.isfile(latest):
            # ValueError, as Lightning raises here.
            raise ValueError(
                f"A DeepSpeed checkpoint directory names its newest save in a 'latest' file, and there is none. "
                f"Received: checkpoint_dir={str(checkpoint_dir)!r}. Fix: pass tag='global_step...' explicitly."
            )
        with open(latest) as f:
            tag = f.read().strip()
    directory = os.path.join(checkpoint_dir, tag)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The DeepSpeed checkpoint has no folder for this tag. Received: checkpoint_dir={str(checkpoint_dir)!r}, "
            f"tag={tag!r}. Fix: pick one of the global_step* folders in it."
        )
    return directory


def convert_zero_checkpoint_to_fp32_state_dict(checkpoint_dir: Any, output_file: Any, tag: str | None = None) -> dict:
    """Refuses: a DeepSpeed ZeRO checkpoint directory can only be consolidated with DeepSpeed's tools."""
    raise MisconfigurationException(
        "DeepSpeed is not supported by fulmen, so it cannot consolidate a DeepSpeed ZeRO checkpoint. "
        f"Received: checkpoint_dir={str(checkpoint_dir)!r}, output_file={str(output_file)!r}, tag={tag!r}. "
        "Fix: run DeepSpeed's `zero_to_fp32.py` (in the checkpoint directory) or Lightning's "
        "convert_zero_checkpoint_to_fp32_state_dict once with deepspeed installed; fulmen loads the file it writes."
    )


__all__ = ["convert_zero_checkpoint_to_fp32_state_dict", "ds_checkpoint_dir"]
