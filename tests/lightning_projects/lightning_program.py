"""A Lightning 2.x script in the `import lightning as L` style (the unified package's names).

Written as Lightning users write them, not for fulmen; the tests run it unmodified through
`fulmen run` (also under torchrun) and read OUT/result.json.

    python lightning_program.py OUT
"""

import json
import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning as L
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.rank_zero import rank_zero_info
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.model_checkpoint import ModelCheckpoint as ModelCheckpointByModule
from lightning.pytorch.core import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary import ModelSummary

assert ModelCheckpoint is ModelCheckpointByModule and L.LightningModule is LightningModule


class Classifier(L.LightningModule):
    def __init__(self, classes: int = 3, shape: tuple = (4, 8)):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes))
        self.fit_states = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        self.fit_states.append(self.trainer.state.fn == TrainerFn.FITTING)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def main(out: str) -> None:
    L.seed_everything(3)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g))
    model = Classifier()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices="auto", default_root_dir=out,
                        enable_progress_bar=False, callbacks=[ModelCheckpoint(save_last=True)])
    trainer.fit(model, DataLoader(data, batch_size=8, shuffle=True))
    rank_zero_info(f"trained on {trainer.world_size} process(es)")
    write(out, {
        "lightning_version": L.__version__,
        "trainer_class": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "fit_states": all(model.fit_states),
        "parameters": ModelSummary(model).total_parameters,
        "last_exists": get_filesystem(out).exists(trainer.checkpoint_callback.last_model_path),
        "hparams_shape": repr(Classifier.load_from_checkpoint(trainer.checkpoint_callback.last_model_path).hparams.shape),
        "lightning_modules": sorted(n for n in sys.modules if n == "lightning" or n.startswith("lightning.")),
    })


@rank_zero_only
def write(out: str, result: dict) -> None:
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
