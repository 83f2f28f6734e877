"""`Trainer(plugins=[...])` honoured: precision plugins set the precision, a CheckpointIO receives
every checkpoint file's save, removal and load, a ClusterEnvironment gives the strategy its ranks
(a Kubeflow PyTorchJob's variables drive a real 2-process gloo run), a LayerSync is applied by DDP,
and anything else is refused by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fulmen.callbacks import ModelCheckpoint
from fulmen.demos import BoringModel
from fulmen.errors import MisconfigurationException
from fulmen.plugins import (
    AsyncCheckpointIO, ClusterEnvironment, DoublePrecision, HalfPrecision, KubeflowEnvironment, LayerSync,
    LightningEnvironment, MixedPrecision, Precision, SLURMEnvironment, TorchCheckpointIO, TorchSyncBatchNorm,
    resolve_plugins,
)
from fulmen.strategies import DDPStrategy
from fulmen.strategies.environment import free_port
from tests.helpers import quiet_trainer


# --- precision ---------------------------------------------------------------------------------
class DtypeSeen(BoringModel):
    def training_step(self, batch, batch_idx):
        self.seen = (self.layer.weight.dtype, batch.dtype, self(batch).dtype)
        return super().training_step(batch, batch_idx)


def test_double_precision_plugin_trains_in_float64(tmp_path):
    model = DtypeSeen()
    trainer = quiet_trainer(tmp_path, plugins=DoublePrecision(), max_steps=1)  # one plugin, not in a list
    trainer.fit(model)
    assert trainer.precision == "64-true" and model.seen == (torch.float64, torch.float64, torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_mixed_precision_plugin_autocasts_and_half_precision_converts(tmp_path):
    model = DtypeSeen()
    quiet_trainer(tmp_path, plugins=[MixedPrecision("bf16-mixed", device="cpu")], max_steps=1).fit(model)
    assert model.seen == (torch.float32, torch.float32, torch.bfloat16)  # float32 weights, bf16 matmuls
    model = DtypeSeen()
    quiet_trainer(tmp_path, plugins=[HalfPrecision("bf16-true")], max_steps=1).fit(model)
    assert model.seen == (torch.bfloat16, torch.bfloat16, torch.bfloat16)


def test_a_precision_plugin_subclass_has_its_override_called(tmp_path):
    class CountingConvert(Precision):
        calls = 0

        def convert_module(self, module):
            CountingConvert.calls += 1
            return super().convert_module(module)

    plugin = CountingConvert()
    trainer = quiet_trainer(tmp_path, plugins=[plugin], max_steps=1)
    trainer.fit(BoringModel())
    assert CountingConvert.calls == 1 and trainer._precision is plugin  # the plugin is what the loop runs
    assert trainer.precision == "32-true"


def test_precision_argument_and_plugin_must_agree():
    assert resolve_plugins([DoublePrecision()], precision="64-true").precision == "64-true"  # same: fine
    with pytest.raises(ValueError, match=r"precision= and a precision plugin disagree\. Received: precision='16-mixed'"
                                         r", plugins=\[DoublePrecision\(\) \('64-true'\)\]"):
        quiet_trainer(precision="16-mixed", plugins=[DoublePrecision()])


def test_precision_plugins_reject_what_they_cannot_run():
    with pytest.raises(ValueError, match=r"MixedPrecision does not run this precision\. Received: precision='16-true'"):
        MixedPrecision("16-true", device="cpu")
    with pytest.raises(ValueError, match=r"does not scale the loss.*Received: scaler="):
        MixedPrecision("bf16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))


# --- checkpoint IO ------------------------------------------------------------------------------
class RecordingIO(TorchCheckpointIO):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.calls.append(("save", Path(path).name))
        super().save_checkpoint(checkpoint, path, storage_options)

    def load_checkpoint(self, path, map_location=None):
        self.calls.append(("load", Path(path).name))
        return super().load_checkpoint(path, map_location)

    def remove_checkpoint(self, path):
        self.calls.append(("remove", Path(path).name))
        super().remove_checkpoint(path)


def test_a_custom_checkpoint_io_receives_every_save_removal_and_load(tmp_path):
    io = RecordingIO()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=1, monitor="step", mode="max")
    trainer = quiet_trainer(tmp_path, plugins=[io], callbacks=[ckpt], enable_checkpointing=True, max_epochs=2,
                            limit_train_batches=2, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert trainer.strategy.checkpoint_io is io
    assert io.calls == [("save", "epoch=0-step=2.ckpt"), ("save", "epoch=1-step=4.ckpt"),
                        ("remove", "epoch=0-step=2.ckpt")]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch=1-step=4.ckpt"]
    io.calls.clear()
    resumed = quiet_trainer(tmp_path, plugins=[io], max_epochs=3, limit_train_batches=2, limit_val_batches=0)
    resumed.fit(BoringModel(), ckpt_path=tmp_path / "ckpt" / "epoch=1-step=4.ckpt")
    assert io.calls == [("load", "epoch=1-step=4.ckpt")] and resumed.global_step == 6


def test_async_checkpoint_io_writes_the_weights_as_they_were_when_saved(tmp_path):
    io = AsyncCheckpointIO()
    weights = torch.zeros(3)
    io.save_checkpoint({"w": weights}, tmp_path / "a.ckpt")
    weights += 1  # training goes on while the save runs
    io.teardown()  # the end of the run: waits for the save
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=True)["w"], torch.zeros(3))
    assert io.load_checkpoint(tmp_path / "a.ckpt")["w"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(TypeError, match=r"takes no storage_options.*Received: storage_options=\{'x': 1\}"):
        TorchCheckpointIO().save_checkpoint({}, tmp_path / "b.ckpt", storage_options={"x": 1})


# --- cluster environments -------------------------------------------------------------------------
class FixedPlace(ClusterEnvironment):
    """A scheduler that placed this process as rank 5 of 8 (node 2, local rank 1)."""

    creates_processes_externally = True
    main_address = "10.1.2.3"
    main_port = 29999

    @staticmethod
    def detect() -> bool:
        return True

    def world_size(self) -> int:
        return 8

    def set_world_size(self, size: int) -> None:
        pass

    def global_rank(self) -> int:
        return 5

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return 1

    def node_rank(self) -> int:
        return 2


def test_a_custom_cluster_environment_gives_the_strategy_its_ranks():
    env = FixedPlace()
    trainer = quiet_trainer(plugins=[env], strategy="ddp", devices=2, num_nodes=4)
    strategy = trainer.strategy
    assert strategy.cluster_environment is env
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (8, 5, 1, 2)
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 8, "rank": 5} and not trainer.is_global_zero


def test_without_a_plugin_the_strategy_detects_lightnings_environment(monkeypatch):
    for name in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "LOCAL_RANK", "NODE_RANK", "LSB_JOBID"):
        monkeypatch.delenv(name, raising=False)
    trainer = quiet_trainer(strategy="ddp", devices=2)
    assert isinstance(trainer.strategy.cluster_environment, LightningEnvironment)
    assert (trainer.world_size, trainer.global_rank) == (2, 0)


def test_an_environment_on_the_strategy_and_in_plugins_is_refused():
    with pytest.raises(MisconfigurationException, match=r"cluster_environment is set both on the strategy and in "
                                                        r"plugins=.*DDPStrategy\(cluster_environment=FixedPlace\(\)\)"):
        quiet_trainer(strategy=DDPStrategy(cluster_environment=FixedPlace()), plugins=[LightningEnvironment()],
                      devices=2)


def test_a_strategy_subclass_may_compute_root_device_and_sampler_kwargs():
    """Ray's RayDDPStrategy defines both as read-only properties: assigning root_device failed."""

    class ComputedDDP(DDPStrategy):
        @property
        def root_device(self) -> torch.device:
            return torch.device("cpu", 0)

        @property
        def distributed_sampler_kwargs(self) -> dict:
            return {"num_replicas": self.world_size, "rank": self.global_rank, "shuffle": False}

    trainer = quiet_trainer(strategy=ComputedDDP(), devices=2)
    assert trainer.strategy.root_device == torch.device("cpu", 0)
    assert trainer.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 0, "shuffle": False}


# --- layer sync and refusals -------------------------------------------------------------------------
def test_layer_sync_plugins_and_sync_batchnorm():
    class Mine(LayerSync):
        def apply(self, model):
            return model

        def revert(self, model):
            return model

    assert resolve_plugins(sync_batchnorm=True).sync_batchnorm
    assert isinstance(resolve_plugins([TorchSyncBatchNorm()]).layer_sync, TorchSyncBatchNorm)
    with pytest.raises(MisconfigurationException, match=r"sync_batchnorm=True and a Mine plugin.*choose one"):
        resolve_plugins([Mine()], sync_batchnorm=True)
    with pytest.raises(MisconfigurationException, match=r"sync_batchnorm=True needs GPUs"):
        quiet_trainer(plugins=[TorchSyncBatchNorm()], strategy="ddp", devices=2)
    reverted = TorchSyncBatchNorm().revert(TorchSyncBatchNorm().apply(torch.nn.Sequential(torch.nn.BatchNorm2d(3))))
    assert type(reverted[0]).__name__ == "_BatchNormAnyDim" and reverted[0](torch.randn(2, 3, 4, 4)).shape == (2, 3, 4, 4)


@pytest.mark.parametrize("plugins, text", [
    (["16-mixed"], r"cannot use as a plugin: str\. Received: plugins=\[\.\.\., '16-mixed', \.\.\.\]"),
    ([torch.nn.Linear(1, 1)], r"cannot use as a plugin: Linear\..*Fix: pass only precision plugins"),
    ([LightningEnvironment(), KubeflowEnvironment()], r"two ClusterEnvironment plugins.*Received: "
                                                      r"LightningEnvironment and KubeflowEnvironment"),
    ([TorchCheckpointIO(), AsyncCheckpointIO()], r"two CheckpointIO plugins"),
    ([DoublePrecision(), Precision()], r"two Precision plugins"),
])
def test_bad_plugins_are_refused_by_name(plugins, text):
    with pytest.raises(MisconfigurationException, match=text):
        quiet_trainer(plugins=plugins)


def test_slurm_environment_plugin_is_taken_as_given(monkeypatch):
    for name, value in dict(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", SLURM_PROCID="1", SLURM_LOCALID="1",
                            SLURM_NODEID="0", SLURM_JOB_NAME="interactive").items():
        monkeypatch.setenv(name, value)  # interactive: detect() says no, but the plugin is used as given
    trainer = quiet_trainer(plugins=[SLURMEnvironment()], strategy="ddp", devices=2)
    assert (trainer.global_rank, trainer.world_size) == (1, 2)


# --- Kubeflow: a real 2-process run -------------------------------------------------------------------
_KUBEFLOW_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    import fulmen as pl
    from fulmen.demos import BoringModel
    from fulmen.plugins import KubeflowEnvironment, LayerSync

    class CountedKubeflow(KubeflowEnvironment):
        torn_down = 0
        def teardown(self):
            CountedKubeflow.torn_down += 1

    class Recorded(LayerSync):
        applied = 0
        def apply(self, model):
            Recorded.applied += 1
            return model
        def revert(self, model):
            return model

    trainer = pl.Trainer(accelerator="cpu", devices=1, num_nodes=2, strategy="ddp",
                         plugins=[CountedKubeflow(), Recorded()], max_steps=4, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    model = BoringModel()
    trainer.fit(model)
    import torch.distributed as dist
    out = dict(rank=trainer.global_rank, world_size=trainer.world_size, node_rank=trainer.node_rank,
               local_rank=trainer.local_rank, group=(dist.get_rank(), dist.get_world_size()),
               layer_sync=Recorded.applied, weight=model.layer.weight.flatten().tolist(),
               torn_down=CountedKubeflow.torn_down)
    with open(os.path.join(sys.argv[1], f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(out, f)
''')


def test_kubeflow_pytorchjob_variables_drive_a_two_process_run(tmp_path):
    """Each pod of a PyTorchJob runs one process with MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK set
    (no LOCAL_RANK, no torchrun): here two local processes with those variables."""
    script = tmp_path / "train.py"
    script.write_text(_KUBEFLOW_SCRIPT)
    port = free_port()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_")) and k not in ("LOCAL_RANK", "NODE_RANK")}
    base.update(OMP_NUM_THREADS="1", FULMEN_DOCTOR="0", PYTHONPATH=str(Path(__file__).parents[1]),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)], env={**base, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r0["node_rank"], r0["local_rank"], r0["world_size"], r0["group"]) == (0, 0, 0, 2, [0, 2])
    assert (r1["rank"], r1["node_rank"], r1["local_rank"], r1["world_size"], r1["group"]) == (1, 1, 0, 2, [1, 2])
    assert r0["layer_sync"] == r1["layer_sync"] == 1  # DDP applied the LayerSync plugin once, on each rank
    assert r0["weight"] == r1["weight"]  # one DDP run: the gradients were averaged across the two pods
    assert r0["torn_down"] == r1["torn_down"] == 1  # the strategy's teardown tears the environment down, as Lightning
