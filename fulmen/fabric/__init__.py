"""`fulmen.fabric`: Lightning Fabric's API (`lightning.fabric`) on fulmen's strategies, precision,
checkpoints and loggers, for training loops you write yourself.

    from fulmen.fabric import Fabric

    fabric = Fabric(accelerator="auto", devices=2, precision="bf16-mixed")
    fabric.launch()
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(loader)
    for batch in loader:
        optimizer.zero_grad()
        fabric.backward(model(batch).sum())
        optimizer.step()

`import fulmen` does not import this package; it is loaded when first used.
"""

from fulmen.fabric.fabric import Fabric
from fulmen.fabric.wrappers import is_wrapped
from fulmen.utilities.seed import seed_everything  # with Lightning's verbose=

__all__ = ["Fabric", "is_wrapped", "seed_everything"]
