"""`TunerExit`: how `Tuner` ends the `fit` it runs a search in (the Trainer treats it as a success)."""


class TunerExit(Exception):
    """Raised by a finder callback after its search when it was started by `Tuner`: the Trainer
    ends the run there, tears down as after a successful run, and returns."""
