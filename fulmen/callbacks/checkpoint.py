"""`Checkpoint`: the base class of callbacks that save checkpoints (Lightning's
`callbacks.checkpoint.Checkpoint`), so `isinstance(cb, Checkpoint)` finds every saver."""

from fulmen.callbacks.callback import Callback


class Checkpoint(Callback):
    """Marks a callback that writes checkpoints (`ModelCheckpoint`, `OnExceptionCheckpoint`)."""
