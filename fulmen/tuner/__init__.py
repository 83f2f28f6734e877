"""Tuning before training: `Tuner(trainer).lr_find(model)` and `.scale_batch_size(model)`.

Both run a short search inside `fit` and then put the model and the Trainer back exactly as they
were; their callback forms are `fulmen.callbacks.LearningRateFinder` and `BatchSizeFinder`.
"""

from fulmen.tuner.lr_finder import LRFinder
from fulmen.tuner.tuning import Tuner

__all__ = ["LRFinder", "Tuner"]
