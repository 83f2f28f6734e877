"""Tests for the `LightningModule` API a user's code touches, and for `import fulmen as pl`.

`save_hyperparameters` results were compared with PyTorch Lightning 2.6 for the same classes.
The import test runs a fresh interpreter, so it sees what `import fulmen` itself loads.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen
import fulmen as pl
from fulmen.optim import LightningOptimizer

from helpers import quiet_trainer, random_regression


def loader(n: int = 8, batch_size: int = 4) -> DataLoader:
    return DataLoader(random_regression(n), batch_size=batch_size)


# One epoch, no sanity check, on the default accelerator.
trainer = functools.partial(quiet_trainer, accelerator="auto", num_sanity_val_steps=0, max_epochs=1)


class Base(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


# ----------------------------------------------------------------------------------------------
# save_hyperparameters and hparams
# ----------------------------------------------------------------------------------------------
def test_save_hyperparameters_collects_every_init_argument():
    class M(pl.LightningModule):
        def __init__(self, lr: float = 0.1, layers: int = 2, name: str = "net", **kwargs) -> None:
            super().__init__()
            self.save_hyperparameters()

    model = M(0.5, name="big", dropout=0.2)
    assert dict(model.hparams) == {"lr": 0.5, "layers": 2, "name": "big", "dropout": 0.2}


def test_save_hyperparameters_selected_names():
    class M(pl.LightningModule):
        def __init__(self, a: int = 1, b: int = 2, c: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters("a", "c")

    assert dict(M(b=20, c=30).hparams) == {"a": 1, "c": 30}


@pytest.mark.parametrize("ignore", ["backbone", ["backbone", "verbose"]])
def test_save_hyperparameters_ignore(ignore):
    class M(pl.LightningModule):
        def __init__(self, backbone: torch.nn.Module, lr: float = 0.1, verbose: bool = False) -> None:
            super().__init__()
            self.save_hyperparameters(ignore=ignore)
            self.backbone = backbone

    model = M(torch.nn.Linear(2, 2), lr=0.3)
    expected = {"lr": 0.3} if isinstance(ignore, list) else {"lr": 0.3, "verbose": False}
    assert dict(model.hparams) == expected


def test_save_hyperparameters_warns_about_a_module_argument():
    class M(pl.LightningModule):
        def __init__(self, backbone: torch.nn.Module) -> None:
            super().__init__()
            self.save_hyperparameters()

    with pytest.warns(UserWarning, match="ignore=\\['backbone'\\]"):
        M(torch.nn.Linear(2, 2))


def test_save_hyperparameters_from_a_dict_and_a_namespace():
    class M(pl.LightningModule):
        def __init__(self, config) -> None:
            super().__init__()
            self.save_hyperparameters(config)

    from_dict = M({"lr": 0.01, "depth": 4})
    assert dict(from_dict.hparams) == {"lr": 0.01, "depth": 4}
    from_namespace = M(argparse.Namespace(lr=0.02, depth=5))
    assert dict(from_namespace.hparams) == {"lr": 0.02, "depth": 5}
    assert from_namespace.hparams.depth == 5


def test_save_hyperparameters_with_inheritance_collects_child_and_parent_arguments():
    class Parent(pl.LightningModule):
        def __init__(self, p: int = 1, shared: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters()

    class Child(Parent):
        def __init__(self, c: int = 3, shared: int = 5, **kwargs) -> None:
            super().__init__(shared=shared + 1, **kwargs)

    # the child's own value of `shared` wins over what it passed to the parent
    assert dict(Child(p=7).hparams) == {"p": 7, "shared": 5, "c": 3}

    class ChildSavesToo(Parent):
        def __init__(self, c: int = 3) -> None:
            super().__init__(p=9)
            self.save_hyperparameters()

    assert dict(ChildSavesToo().hparams) == {"p": 9, "shared": 2, "c": 3}


def test_hparams_attribute_access_and_hparams_initial():
    class M(pl.LightningModule):
        def __init__(self, lr: float = 0.1, sizes: list | None = None) -> None:
            super().__init__()
            self.save_hyperparameters()

    model = M(sizes=[1, 2])
    assert model.hparams.lr == model.hparams["lr"] == 0.1
    with pytest.raises(AttributeError, match="No hyperparameter 'missing'"):
        model.hparams.missing  # noqa: B018
    model.hparams.lr = 0.5
    model.hparams.sizes.append(3)
    model.hparams.new = True
    assert model.hparams["lr"] == 0.5 and model.hparams["new"] is True
    # hparams_initial is what save_hyperparameters saw, untouched by later changes, and a copy
    assert dict(model.hparams_initial) == {"lr": 0.1, "sizes": [1, 2]}
    model.hparams_initial["lr"] = 9.0
    assert model.hparams_initial.lr == 0.1


def test_module_without_save_hyperparameters_has_empty_hparams():
    model = Base()
    assert dict(model.hparams) == {} and dict(model.hparams_initial) == {}


# ----------------------------------------------------------------------------------------------
# device, dtype, freezing, printing
# ----------------------------------------------------------------------------------------------
def test_device_and_dtype_follow_the_parameters():
    model = Base()
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    model.double()
    assert model.dtype == torch.float64
    model.to(torch.device("meta"))
    assert model.device == torch.device("meta")


def test_freeze_and_unfreeze():
    model = Base()
    model.freeze()
    assert all(not p.requires_grad for p in model.parameters())
    assert not model.training and not model.layer.training
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())
    assert model.training and model.layer.training


def test_print_detached_and_inside_a_step(capsys):
    class Prints(Base):
        def training_step(self, batch, batch_idx):
            self.print("step", batch_idx, sep="=")
            return super().training_step(batch, batch_idx)

    model = Prints()
    model.print("hello", 42)
    assert capsys.readouterr().out == "hello 42\n"
    trainer().fit(model, loader(8))
    assert capsys.readouterr().out == "step=0\nstep=1\n"


# ----------------------------------------------------------------------------------------------
# the trainer as the module sees it
# ----------------------------------------------------------------------------------------------
def test_current_epoch_and_global_step_inside_steps():
    class Records(Base):
        def __init__(self):
            super().__init__()
            self.train_seen: list[tuple[int, int]] = []
            self.val_seen: list[tuple[int, int]] = []

        def training_step(self, batch, batch_idx):
            self.train_seen.append((self.current_epoch, self.global_step))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            self.val_seen.append((self.current_epoch, self.global_step))

    model = Records()
    assert model.current_epoch == 0 and model.global_step == 0  # detached: zeros
    trainer(max_epochs=2).fit(model, loader(12, batch_size=4), loader(4))
    assert model.train_seen == [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5)]
    assert model.val_seen == [(0, 3), (1, 6)]
    assert model.current_epoch == 2 and model.global_step == 6


def test_trainer_property_raises_when_detached():
    model = Base()
    with pytest.raises(RuntimeError, match="Base is not attached to a `Trainer`"):
        model.trainer  # noqa: B018
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        model.optimizers()
    t = trainer()
    t.fit(model, loader())
    assert model.trainer is t
    assert model.logger is None and model.loggers == []


def test_optimizers_and_lr_schedulers_return_types():
    seen = {}

    class One(Base):
        def training_step(self, batch, batch_idx):
            seen["opt"] = self.optimizers()
            seen["raw"] = self.optimizers(use_pl_optimizer=False)
            seen["sched"] = self.lr_schedulers()
            return super().training_step(batch, batch_idx)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1)}

    trainer().fit(One(), loader())
    assert isinstance(seen["opt"], LightningOptimizer)
    assert isinstance(seen["opt"].optimizer, torch.optim.SGD)
    assert seen["opt"].param_groups is seen["opt"].optimizer.param_groups
    assert type(seen["raw"]) is torch.optim.SGD and seen["raw"] is seen["opt"].optimizer
    assert isinstance(seen["sched"], torch.optim.lr_scheduler.StepLR)

    class NoScheduler(Base):
        def training_step(self, batch, batch_idx):
            seen["none"] = self.lr_schedulers()
            return super().training_step(batch, batch_idx)

    trainer().fit(NoScheduler(), loader())
    assert seen["none"] is None

    class Two(Base):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.other = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            opts, scheds = self.optimizers(), self.lr_schedulers()
            seen["two"] = (opts, scheds)
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x) + self.other(x), y)
            for opt in opts:
                opt.zero_grad()
            self.manual_backward(loss)
            for opt in opts:
                opt.step()

        def configure_optimizers(self):
            a = torch.optim.SGD(self.layer.parameters(), lr=0.1)
            b = torch.optim.Adam(self.other.parameters(), lr=0.1)
            return [a, b], [torch.optim.lr_scheduler.StepLR(a, 1), torch.optim.lr_scheduler.ExponentialLR(b, 0.9)]

    t = trainer()
    t.fit(Two(), loader())
    opts, scheds = seen["two"]
    assert isinstance(opts, list) and len(opts) == 2
    assert all(isinstance(o, LightningOptimizer) for o in opts)
    assert [type(o.optimizer) for o in opts] == [torch.optim.SGD, torch.optim.Adam]
    assert [type(s) for s in scheds] == [torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.ExponentialLR]
    assert t.global_step == 4  # two optimizer steps per batch, two batches


# ----------------------------------------------------------------------------------------------
# the package
# ----------------------------------------------------------------------------------------------
def test_public_api_names():
    assert pl.LightningModule is fulmen.module.LightningModule
    assert pl.LightningDataModule is fulmen.datamodule.LightningDataModule
    assert pl.Trainer is fulmen.trainer.Trainer
    assert pl.Callback is fulmen.callbacks.callback.Callback
    assert pl.seed_everything is fulmen.seed.seed_everything
    assert isinstance(pl.__version__, str) and pl.__version__.count(".") >= 1
    assert pl.callbacks.ModelCheckpoint and pl.callbacks.EarlyStopping and pl.callbacks.Callback is pl.Callback
    assert pl.loggers.TensorBoardLogger and pl.loggers.CSVLogger and pl.loggers.Logger
    assert set(pl.__all__) >= {"LightningModule", "LightningDataModule", "Trainer", "Callback", "seed_everything",
                               "__version__", "callbacks", "loggers"}


_MODULES = "import sys, json, {0}; print(json.dumps(sorted(sys.modules)))"


def _modules_after(statement: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _MODULES.format(statement)], capture_output=True, text=True,
                         check=True)
    return set(json.loads(out.stdout))


def test_import_fulmen_alone_imports_nothing_heavy():
    """`import fulmen` (what the `fulmen` command and the drop-in runner start with) loads no torch."""
    bare = _modules_after("fulmen")
    assert "fulmen" in bare and "torch" not in bare
    assert {n for n in bare if n.startswith("fulmen.")} == {"fulmen.__about__"}


def test_import_fulmen_loads_neither_tensorboard_nor_extra_tqdm():
    with_torch = _modules_after("torch")
    # What a user touches: the Trainer and the callbacks (the names of `fulmen` load on first use).
    with_fulmen = _modules_after("fulmen.trainer, fulmen.callbacks.model_checkpoint")
    assert "fulmen" in with_fulmen and "torch" in with_fulmen

    def tensorboard(names: set[str]) -> set[str]:
        return {n for n in names if n.split(".")[0] in ("tensorboard", "tensorboardX")
                or n.startswith("torch.utils.tensorboard")}

    def tqdm(names: set[str]) -> set[str]:
        return {n for n in names if n.split(".")[0] == "tqdm"}

    assert tensorboard(with_fulmen) == set()
    # torch itself imports some of tqdm (via torch.hub); fulmen must not add to that
    assert tqdm(with_fulmen) - tqdm(with_torch) == set()
