"""LightningModule / LightningDataModule at Lightning's surface: the hook mixins (`core.hooks`),
hyperparameters that round-trip exactly, `core.saving`'s files, `load_from_checkpoint` with
Lightning's strict rules, and the export helpers (`to_torchscript`, `to_onnx`)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer, random_regression
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.errors import MisconfigurationException
from fulmen.hparams import HyperparametersMixin
from fulmen.module_hooks import CheckpointHooks, DataHooks, ModelHooks
from fulmen.saving import (
    load_hparams_from_tags_csv, load_hparams_from_yaml, save_hparams_to_tags_csv, save_hparams_to_yaml,
)

# Net has a validation_step; most tests here fit without validation data.
pytestmark = pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")


class Net(pl.LightningModule):
    def __init__(self, sizes=(3, 1), names=("a", "b"), nested=None, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(sizes[0], sizes[1])

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader(n=8):
    return DataLoader(random_regression(n), batch_size=4)


def fitted(tmp_path, model=None, **trainer_args):
    model = model or Net(nested={"k": (1, (2, 3)), "l": [4, (5,)]})
    trainer = quiet_trainer(tmp_path, max_epochs=1, **trainer_args)
    trainer.fit(model, loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return trainer, model, path


# --- the hook mixins ------------------------------------------------------------------------------
def test_module_and_datamodule_have_lightnings_bases_in_lightnings_order():
    assert [c.__name__ for c in pl.LightningModule.__mro__] == [
        "LightningModule", "HyperparametersMixin", "ModelHooks", "DataHooks", "CheckpointHooks", "Module", "object"]
    assert [c.__name__ for c in pl.LightningDataModule.__mro__] == [
        "LightningDataModule", "DataHooks", "HyperparametersMixin", "object"]
    model, dm = Net(), pl.LightningDataModule()
    assert all(isinstance(model, c) for c in (ModelHooks, DataHooks, CheckpointHooks, HyperparametersMixin))
    assert isinstance(dm, DataHooks) and not isinstance(dm, ModelHooks)
    # The defaults live once, in the mixins.
    assert "on_train_start" not in vars(pl.LightningModule) and "setup" not in vars(pl.LightningDataModule)
    assert model.prepare_data_per_node is True and dm.allow_zero_length_dataloader_with_multiple_devices is False


def test_data_hooks_defaults_move_and_pass_the_batch():
    hooks = DataHooks()
    batch = {"x": torch.ones(2), "pair": (torch.zeros(1), [torch.arange(3)]), "tag": "b0"}
    moved = hooks.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved["x"].device.type == "meta" and moved["pair"][1][0].device.type == "meta"
    assert isinstance(moved["pair"], tuple) and moved["tag"] == "b0" and batch["x"].device.type == "cpu"
    assert hooks.on_before_batch_transfer(batch, 0) is batch and hooks.on_after_batch_transfer(batch, 0) is batch
    with pytest.raises(MisconfigurationException, match=r"DataHooks.val_dataloader\(\) was called but is not defined"):
        hooks.val_dataloader()


def test_an_inherited_hook_is_called_only_when_overridden(tmp_path):
    calls = []

    class Hooked(Net):
        def on_train_epoch_start(self):
            calls.append("epoch_start")

        def on_before_optimizer_step(self, optimizer):
            calls.append("before_step")

    quiet_trainer(tmp_path, max_epochs=1).fit(Hooked(), loader())
    assert calls == ["epoch_start", "before_step", "before_step"]


def test_a_module_without_dataloaders_still_reports_missing_data(tmp_path):
    with pytest.raises(MisconfigurationException, match="fit found no training data"):
        quiet_trainer(tmp_path, max_epochs=1).fit(Net())


@pytest.mark.filterwarnings("ignore:'pin_memory' argument")  # Lightning's from_datasets pins memory too
def test_from_datasets_feeds_the_trainer(tmp_path):
    dm = pl.LightningDataModule.from_datasets(random_regression(12), val_dataset=random_regression(4), batch_size=4)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Net(), datamodule=dm)
    assert trainer.global_step == 3 and "val_loss" in trainer.callback_metrics


# --- hyperparameters, exactly ----------------------------------------------------------------------
def test_tuples_round_trip_through_hparams_checkpoint_and_load(tmp_path):
    _, model, path = fitted(tmp_path)
    assert model.hparams.sizes == (3, 1) and type(model.hparams.names) is tuple
    stored = torch.load(path, weights_only=True)["hyper_parameters"]  # still plain, safe data
    assert stored == {"sizes": (3, 1), "names": ("a", "b"), "nested": {"k": (1, (2, 3)), "l": [4, (5,)]}, "lr": 0.1}
    assert type(stored["nested"]["l"][1]) is tuple
    loaded = Net.load_from_checkpoint(path)
    assert dict(loaded.hparams) == dict(model.hparams)
    assert type(loaded.hparams.sizes) is tuple and type(loaded.hparams.nested["k"][1]) is tuple
    assert loaded.hparams_initial == model.hparams_initial


def test_tuples_round_trip_through_an_hparams_yaml(tmp_path):
    _, model, path = fitted(tmp_path)
    save_hparams_to_yaml(tmp_path / "hparams.yaml", model.hparams)
    assert "!!python/tuple" in (tmp_path / "hparams.yaml").read_text()
    assert load_hparams_from_yaml(tmp_path / "hparams.yaml") == dict(model.hparams)
    loaded = Net.load_from_checkpoint(path, hparams_file=tmp_path / "hparams.yaml", lr=0.5)
    assert loaded.hparams.sizes == (3, 1) and type(loaded.hparams.nested["k"][1]) is tuple and loaded.hparams.lr == 0.5


@dataclasses.dataclass
class Optim:
    name: str = "sgd"
    betas: tuple = (0.9, 0.99)


class WithObjects(Net):
    def __init__(self, optim: Optim, args: argparse.Namespace, root: Path, dtype=torch.float64):
        super().__init__()
        self.save_hyperparameters()


def test_dataclasses_namespaces_paths_and_dtypes_come_back_as_they_were(tmp_path):
    model = WithObjects(Optim(), argparse.Namespace(batch_size=8, steps=(1, 2)), Path("/data"))
    _, _, path = fitted(tmp_path, model)
    loaded = WithObjects.load_from_checkpoint(path)
    assert loaded.hparams.optim == Optim() and loaded.hparams.args == argparse.Namespace(batch_size=8, steps=(1, 2))
    assert loaded.hparams.root == Path("/data") and loaded.hparams.dtype is torch.float64


def test_numpy_scalars_come_back_as_numbers_not_text(tmp_path):
    # e.g. a size from np.int64 arithmetic or a weight from np.linspace: a number, as the model needs it
    np = pytest.importorskip("numpy")
    _, _, path = fitted(tmp_path, Net(sizes=(np.int64(3), 1), nested={"w": np.float64(0.25), "on": np.bool_(True)}))
    stored = torch.load(path, weights_only=True)["hyper_parameters"]
    assert stored["sizes"] == (3, 1) and type(stored["sizes"][0]) is int
    assert stored["nested"] == {"w": 0.25, "on": True} and type(stored["nested"]["w"]) is float
    loaded = Net.load_from_checkpoint(path)
    assert loaded.hparams.nested["w"] == 0.25 and type(loaded.hparams.sizes[0]) is int


def test_a_single_saved_object_is_passed_back_as_its_argument(tmp_path):
    class FromConfig(Net):
        def __init__(self, config: dict):
            pl.LightningModule.__init__(self)  # not Net's, which saves its own arguments
            self.save_hyperparameters(config)
            self.layer = torch.nn.Linear(*config["sizes"])

    _, model, path = fitted(tmp_path, FromConfig({"lr": 0.2, "sizes": (3, 1)}))
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hparams_name"] == "config" and checkpoint["hyper_parameters"] == {"lr": 0.2, "sizes": (3, 1)}
    loaded = FromConfig.load_from_checkpoint(path)
    assert loaded.hparams == {"lr": 0.2, "sizes": (3, 1)}


def test_save_hyperparameters_rules():
    class Picky(HyperparametersMixin):  # no super().__init__(): hparams still work, as in Lightning
        def __init__(self, a, b=2, c=(3,)):
            self.save_hyperparameters("a", "c")

    assert Picky(1).hparams == {"a": 1, "c": (3,)}

    class Typo(HyperparametersMixin):
        def __init__(self, a):
            self.save_hyperparameters("aa")

    with pytest.raises(KeyError, match=r"not __init__ arguments. Received: \['aa'\]"):
        Typo(1)

    class Ignoring(Net):
        def __init__(self, backbone=None, **kwargs):
            super().__init__(**kwargs)
            self.save_hyperparameters(ignore=["backbone", "names"])

    model = Ignoring(backbone="resnet", lr=0.3)
    assert "backbone" not in model.hparams and "names" not in model.hparams and model.hparams.lr == 0.3
    model.hparams.lr = 1.0
    assert model.hparams_initial.lr == 0.3  # the initial copy does not follow later changes


# --- core.saving files ----------------------------------------------------------------------------
def test_hparams_yaml_and_csv_files_round_trip(tmp_path):
    hparams = argparse.Namespace(lr=0.001, layers=[64, 32], shape=(1, 28, 28), opt={"name": "adam"}, flag=None)
    save_hparams_to_yaml(tmp_path / "h.yaml", hparams)
    assert load_hparams_from_yaml(tmp_path / "h.yaml") == vars(hparams)
    with pytest.warns(UserWarning, match="Skipping 'fn' parameter"):
        save_hparams_to_yaml(tmp_path / "skip.yaml", {"fn": object(), "ok": 1})
    assert load_hparams_from_yaml(tmp_path / "skip.yaml") == {"ok": 1}
    (tmp_path / "evil.yaml").write_text("x: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_hparams_from_yaml(tmp_path / "evil.yaml")  # only tuples beyond plain YAML
    with pytest.warns(RuntimeWarning, match="Missing Tags"):
        assert load_hparams_from_yaml(tmp_path / "absent.yaml") == {}
    with pytest.raises(RuntimeError, match="folder that does not exist"):
        save_hparams_to_yaml(tmp_path / "no" / "h.yaml", {})
    save_hparams_to_tags_csv(tmp_path / "tags.csv", {"lr": 0.1, "name": "run a", "sizes": [1, 2]})
    assert load_hparams_from_tags_csv(tmp_path / "tags.csv") == {"lr": 0.1, "name": "run a", "sizes": [1, 2]}


def test_hparams_file_must_be_yaml_or_csv(tmp_path):
    _, _, path = fitted(tmp_path)
    with pytest.raises(ValueError, match=r"hparams_file must be a .csv, .yml or .yaml file. Received: hparams_file="):
        Net.load_from_checkpoint(path, hparams_file=tmp_path / "h.json")
    save_hparams_to_tags_csv(tmp_path / "tags.csv", {"lr": 0.4})
    assert Net.load_from_checkpoint(path, hparams_file=tmp_path / "tags.csv").hparams.lr == 0.4


# --- strict loading -------------------------------------------------------------------------------
class Bigger(Net):
    def __init__(self, strict_loading=None, **kwargs):
        super().__init__(**kwargs)
        self.extra = torch.nn.Linear(1, 1)
        if strict_loading is not None:
            self.strict_loading = strict_loading


def test_strict_follows_strict_loading_and_refuses_a_contradiction(tmp_path):
    _, _, path = fitted(tmp_path)
    assert Net().strict_loading is True
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "extra.weight", "extra.bias"'):
        Bigger.load_from_checkpoint(path)
    with pytest.raises(RuntimeError, match="Missing key"):
        Bigger.load_from_checkpoint(path, strict=True)
    with pytest.warns(UserWarning, match=r"in the model state dict but not in the checkpoint: \['extra.weight'"):
        loose = Bigger.load_from_checkpoint(path, strict_loading=False)  # strict=None follows the module
    assert loose.strict_loading is False
    with pytest.raises(ValueError, match=r"load_from_checkpoint\(strict=True\) is in conflict with "
                                         r"Bigger.strict_loading=False"):
        Bigger.load_from_checkpoint(path, strict=True, strict_loading=False)
    with pytest.raises(ValueError, match=r"strict=False\) is in conflict with Bigger.strict_loading=True"):
        Bigger.load_from_checkpoint(path, strict=False, strict_loading=True)


def test_an_empty_state_dict_warns(tmp_path):
    class Empty(pl.LightningModule):
        pass

    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "empty.ckpt")
    with pytest.warns(UserWarning, match=r"The state dict in '.*empty.ckpt' contains no parameters"):
        assert isinstance(Empty.load_from_checkpoint(tmp_path / "empty.ckpt"), Empty)


def test_trainer_ckpt_path_honours_strict_loading(tmp_path):
    _, _, path = fitted(tmp_path)
    with pytest.raises(RuntimeError, match="Missing key"):
        quiet_trainer(tmp_path).validate(Bigger(), loader(), ckpt_path=path, verbose=False)
    quiet_trainer(tmp_path).validate(Bigger(strict_loading=False), loader(), ckpt_path=path, verbose=False)


# --- datamodule -----------------------------------------------------------------------------------
class Data(pl.LightningDataModule):
    def __init__(self, batch_size=4, shape=(3,)):
        super().__init__()
        self.save_hyperparameters()
        self.seen = 0

    def train_dataloader(self):
        self.seen += 1
        return DataLoader(random_regression(8), batch_size=self.hparams.batch_size)

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state_dict):
        self.seen = state_dict["seen"]


def test_datamodule_load_from_checkpoint(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Net(), datamodule=Data(batch_size=2, shape=(3, 1)))
    trainer.save_checkpoint(tmp_path / "dm.ckpt")
    checkpoint = torch.load(tmp_path / "dm.ckpt", weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 2, "shape": (3, 1)}
    assert checkpoint["datamodule_hparams_name"] == "kwargs"
    dm = Data.load_from_checkpoint(tmp_path / "dm.ckpt")
    assert dm.hparams == {"batch_size": 2, "shape": (3, 1)} and type(dm.hparams.shape) is tuple and dm.seen == 1
    assert Data.load_from_checkpoint(tmp_path / "dm.ckpt", batch_size=8).hparams.batch_size == 8


# --- what the module knows, and exporting it ------------------------------------------------------
def test_module_properties_off_a_trainer():
    model = Net()
    assert model.on_gpu is False and model.device_mesh is None
    with pytest.raises(RuntimeError, match="Net is not attached to a `Trainer`"):
        model.trainer  # noqa: B018
    gathered = model.all_gather({"loss": torch.tensor([1.0, 2.0]), "n": 3})
    assert torch.equal(gathered["loss"], torch.tensor([1.0, 2.0])) and torch.equal(gathered["n"], torch.tensor(3))


def test_toggled_optimizer_restores_requires_grad(tmp_path):
    class TwoOpt(Net):
        def __init__(self):
            super().__init__()
            self.other = torch.nn.Linear(3, 1)
            self.automatic_optimization = False
            self.frozen_inside = None

        def training_step(self, batch, batch_idx):
            first, _ = self.optimizers()
            with self.toggled_optimizer(first):
                self.frozen_inside = [p.requires_grad for p in self.other.parameters()]
                first.zero_grad()
                self.manual_backward(torch.nn.functional.mse_loss(self(batch[0]), batch[1]))
                first.step()

        def configure_optimizers(self):
            return torch.optim.SGD(self.layer.parameters(), lr=0.1), torch.optim.SGD(self.other.parameters(), lr=0.1)

    model = TwoOpt()
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(model, loader())
    assert model.frozen_inside == [False, False] and all(p.requires_grad for p in model.other.parameters())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch deprecates TorchScript; Lightning still offers it
@pytest.mark.parametrize("method", ["script", "trace"])
def test_to_torchscript_saves_a_module_that_gives_the_same_outputs(tmp_path, method):
    model = Net()
    model.example_input_array = torch.randn(2, 3)
    model.train()
    compiled = model.to_torchscript(tmp_path / f"{method}.pt", method=method)
    assert model.training  # the module's mode is restored
    reloaded = torch.jit.load(str(tmp_path / f"{method}.pt"))
    x = torch.randn(5, 3)
    assert torch.equal(reloaded(x), model(x)) and torch.equal(compiled(x), model(x))


def test_to_torchscript_errors():
    with pytest.raises(ValueError, match=r"method='trace'\) needs inputs to trace"):
        Net().to_torchscript(method="trace")
    with pytest.raises(ValueError, match="unknown method. Received: method='compile'"):
        Net().to_torchscript(method="compile")


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is not None, reason="onnx and onnxscript are installed")
def test_to_onnx_names_the_packages_it_needs(tmp_path):
    with pytest.raises(ModuleNotFoundError, match=r"to_onnx\(\) needs packages .*Fix: pip install onnx onnxscript"):
        Net().to_onnx(tmp_path / "m.onnx", torch.randn(1, 3))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="needs onnx and onnxscript")
def test_to_onnx_writes_the_file(tmp_path):  # pragma: no cover (runs where onnx is installed)
    model = Net()
    model.example_input_array = torch.randn(1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.to_onnx(tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 0
