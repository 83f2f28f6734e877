"""The small Lightning names filled in from scripts/lightning_surface.py's gap list: each behaves as
Lightning's does (accelerator helpers, EarlyStoppingReason, WriteInterval, progress helpers, Timer's
Interval, merge_dicts, has_len_all_ranks, DistributedSamplerWrapper, Throughput with world_size,
utilities.compile/deepspeed/migration) and answers at its Lightning path under the alias."""

from __future__ import annotations

import importlib
import statistics
import sys
import types

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import fulmen as pl
from fulmen import accelerators
from fulmen.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from fulmen.callbacks.prediction_writer import BasePredictionWriter, WriteInterval
from fulmen.callbacks.progress import ProgressBar, convert_inf, get_standard_metrics
from fulmen.callbacks.throughput_monitor import Throughput, get_available_flops
from fulmen.callbacks.timer import Interval, Timer
from fulmen.errors import MisconfigurationException
from fulmen.loggers.logger import merge_dicts
from fulmen.optim import do_nothing_closure
from fulmen.utilities.data import has_len_all_ranks
from fulmen.utilities.distributed import DistributedSamplerWrapper
from tests.helpers import quiet_trainer


# --- accelerators -----------------------------------------------------------------------------------------------------
def test_find_usable_cuda_devices_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert accelerators.find_usable_cuda_devices(0) == []
    with pytest.raises(ValueError, match="No CUDA device is visible.*num_devices=-1"):
        accelerators.find_usable_cuda_devices()
    with pytest.raises(ValueError, match="num_devices=2"):
        accelerators.find_usable_cuda_devices(2)


def test_find_usable_cuda_devices_skips_busy_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    real_tensor = torch.tensor

    def fake_tensor(value, device=None):  # GPU 1 is held by another process in exclusive mode
        if device is not None and device.type == "cuda":
            if device.index == 1:
                raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable")
            return real_tensor(value)
        return real_tensor(value, device=device)

    monkeypatch.setattr(torch, "tensor", fake_tensor)
    assert accelerators.find_usable_cuda_devices() == [0, 2]
    assert accelerators.find_usable_cuda_devices(1) == [0]
    with pytest.raises(RuntimeError, match=r"Only 2 of the requested GPUs.*GPUs \[1\] are occupied"):
        accelerators.find_usable_cuda_devices(3)


def test_get_cpu_stats_reads_proc_without_psutil():
    stats = accelerators.get_cpu_stats()
    assert {"cpu_vm_percent", "cpu_percent", "cpu_swap_percent"} <= set(stats)
    assert 0.0 < stats["cpu_vm_percent"] < 100.0
    assert 0.0 <= stats["cpu_percent"] <= 100.0
    assert accelerators.CPUAccelerator().get_device_stats("cpu").keys() == stats.keys()


def test_stats_without_proc_need_psutil(monkeypatch):
    monkeypatch.setattr(accelerators.os.path, "exists", lambda path: False)
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"Received: get_cpu_stats\(\). Fix: pip install psutil"):
        accelerators.get_cpu_stats()
    with pytest.raises(ModuleNotFoundError, match=r"mps.get_device_stats\(\). Fix: pip install psutil"):
        accelerators.MPSAccelerator().get_device_stats("mps")
    fake = types.SimpleNamespace(virtual_memory=lambda: types.SimpleNamespace(percent=40.0), cpu_percent=lambda: 7.5,
                                 swap_memory=lambda: types.SimpleNamespace(percent=1.0))
    monkeypatch.setitem(sys.modules, "psutil", fake)
    assert accelerators.get_mps_stats() == {"M1_vm_percent": 40.0, "M1_percent": 7.5, "M1_swap_percent": 1.0}
    assert accelerators.get_cpu_stats() == {"cpu_vm_percent": 40.0, "cpu_percent": 7.5, "cpu_swap_percent": 1.0}


def test_get_nvidia_gpu_stats(monkeypatch):
    import shutil
    import subprocess

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="nvidia-smi.*not on PATH"):
        accelerators.get_nvidia_gpu_stats(torch.device("cuda", 0))
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return types.SimpleNamespace(stdout="37, 1024, 80000, 12, [N/A], 45, 50\n")

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    stats = accelerators.get_nvidia_gpu_stats("cuda:1")
    assert stats == {"utilization.gpu (%)": 37.0, "memory.used (MB)": 1024.0, "memory.free (MB)": 80000.0,
                     "utilization.memory (%)": 12.0, "fan.speed (%)": 0.0, "temperature.gpu (°C)": 45.0,
                     "temperature.memory (°C)": 50.0}
    assert calls[0][-1] == "--id=5"  # the visible index 1 is physical GPU 5


# --- callbacks --------------------------------------------------------------------------------------------------------
class _Logged(pl.LightningModule):
    """Logs `values[epoch]` as "val_loss" once per epoch."""

    def __init__(self, values):
        super().__init__()
        self.values = values
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def on_train_epoch_end(self):
        self.log("val_loss", float(self.values[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit_with(stopper, values, tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=len(values), callbacks=[stopper], limit_val_batches=0)
    trainer.fit(_Logged(values), DataLoader(TensorDataset(torch.ones(2, 2)), batch_size=2))
    return trainer


@pytest.mark.parametrize(("kwargs", "values", "reason"), [
    ({"patience": 1}, [1.0, 2.0, 3.0], EarlyStoppingReason.PATIENCE_EXHAUSTED),
    ({"stopping_threshold": 0.5}, [1.0, 0.4, 0.3], EarlyStoppingReason.STOPPING_THRESHOLD),
    ({"divergence_threshold": 5.0}, [1.0, 6.0, 0.3], EarlyStoppingReason.DIVERGENCE_THRESHOLD),
    ({}, [1.0, float("nan"), 0.3], EarlyStoppingReason.NON_FINITE_METRIC),
])
def test_early_stopping_reason(tmp_path, kwargs, values, reason):
    stopper = EarlyStopping(monitor="val_loss", **kwargs)
    assert stopper.stopping_reason is EarlyStoppingReason.NOT_STOPPED
    trainer = _fit_with(stopper, values, tmp_path)
    assert trainer.current_epoch == 2 and stopper.stopped_epoch == 1
    assert stopper.stopping_reason is reason
    assert stopper.stopping_reason_message.endswith("Signaling Trainer to stop.")
    state = stopper.state_dict()
    assert state["stopping_reason"] == reason.value and state["stopping_reason_message"] == stopper.stopping_reason_message
    again = EarlyStopping(monitor="val_loss")
    again.load_state_dict(state)
    assert again.stopping_reason is reason and again.stopping_reason_message == stopper.stopping_reason_message
    older = {k: v for k, v in state.items() if not k.startswith("stopping_reason")}  # a pre-2.6 checkpoint
    again.load_state_dict(older)
    assert again.stopping_reason is EarlyStoppingReason.NOT_STOPPED and again.stopping_reason_message is None


def test_early_stopping_reason_stays_not_stopped_while_improving(tmp_path):
    stopper = EarlyStopping(monitor="val_loss", patience=2)
    _fit_with(stopper, [3.0, 2.0, 1.0], tmp_path)
    assert stopper.stopping_reason is EarlyStoppingReason.NOT_STOPPED and stopper.stopping_reason_message is None
    assert [r.value for r in EarlyStoppingReason] == [0, 1, 2, 3, 4]


class _Recorder(BasePredictionWriter):
    def __init__(self, interval):
        super().__init__(interval)
        self.calls = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self.calls.append(("batch", batch_idx))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        self.calls.append(("epoch", len(predictions)))


@pytest.mark.parametrize(("interval", "expected"), [
    (WriteInterval.BATCH, [("batch", 0), ("batch", 1)]),
    ("EPOCH", [("epoch", 2)]),
    (WriteInterval.BATCH_AND_EPOCH, [("batch", 0), ("batch", 1), ("epoch", 2)]),
])
def test_prediction_writer_takes_write_interval_members(tmp_path, interval, expected):
    writer = _Recorder(interval)
    assert isinstance(writer.interval, WriteInterval) and writer.interval == str(interval).lower().split(".")[-1]
    model = pl.demos.BoringModel()
    quiet_trainer(tmp_path, callbacks=[writer]).predict(model, DataLoader(torch.randn(4, 32), batch_size=2),
                                                        return_predictions=False)
    assert writer.calls == expected
    assert WriteInterval.BATCH.on_batch and not WriteInterval.BATCH.on_epoch and WriteInterval.BATCH_AND_EPOCH.on_epoch
    with pytest.raises(MisconfigurationException, match="write_interval='step'"):
        BasePredictionWriter("step")


def test_get_standard_metrics_joins_logger_versions():
    def trainer_with(*versions):
        return types.SimpleNamespace(loggers=[types.SimpleNamespace(version=v) for v in versions])

    assert get_standard_metrics(trainer_with()) == {}
    assert get_standard_metrics(trainer_with(7)) == {"v_num": 7}
    assert get_standard_metrics(trainer_with("run_2024_0042")) == {"v_num": "0042"}
    assert get_standard_metrics(trainer_with(None)) == {}
    assert get_standard_metrics(trainer_with(1, 1, "b")) == {"v_num": "1_b"}  # each version once, in order
    trainer = types.SimpleNamespace(loggers=[types.SimpleNamespace(version=3)], progress_bar_metrics={"loss": 0.5})
    assert ProgressBar().get_metrics(trainer, None) == {"v_num": 3, "loss": 0.5}


def test_convert_inf_and_tqdm_padding():
    assert convert_inf(None) is None and convert_inf(float("inf")) is None and convert_inf(float("nan")) is None
    assert convert_inf(5) == 5 and convert_inf(2.5) == 2.5
    from fulmen.callbacks.progress import Tqdm
    from tqdm import tqdm

    assert issubclass(Tqdm, tqdm)
    assert Tqdm.format_num(0.5) == "0.500"  # floats padded to 5 characters
    assert Tqdm.format_num("2") == "2.000" and Tqdm.format_num("abc") == "abc"
    assert Tqdm.format_num(3) == "3"  # ints are not padded
    assert Tqdm.format_num(1e-8) == "1e-8"  # nor scientific notation (as tqdm writes it)


def test_timer_interval_enum(monkeypatch):
    assert Interval.step == "step" and Interval("epoch") is Interval.epoch
    assert Timer(duration="00:00:00:01", interval=Interval.epoch)._interval is Interval.epoch
    assert Timer(interval="STEP")._interval is Interval.step
    with pytest.raises(MisconfigurationException, match="interval='batch'"):
        Timer(interval="batch")


def test_do_nothing_closure_steps_with_existing_grads():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    weight.grad = torch.tensor([2.0])
    optimizer = torch.optim.SGD([weight], lr=0.5)
    assert do_nothing_closure() is None
    assert optimizer.step(do_nothing_closure) is None
    assert weight.item() == 0.0


def test_merge_dicts():
    d1 = {"a": 1.7, "b": 2.0, "c": 1, "d": {"d1": 1, "d3": 3}}
    d2 = {"a": 1.1, "b": 2.2, "v": 1, "d": {"d1": 2, "d2": 3}}
    d3 = {"a": 1.1, "v": 2.3, "d": {"d3": 3, "d4": {"d5": 1}}}
    merged = merge_dicts([d1, d2, d3], {"a": statistics.mean, "v": max, "d": {"d1": sum}}, min)
    assert merged == {"a": pytest.approx(1.3), "b": 2.0, "c": 1, "v": 2.3,
                      "d": {"d1": 3, "d2": 3, "d3": 3, "d4": {"d5": 1}}}
    assert merge_dicts([{"x": 1.0}, {"x": 3.0, "y": None}, {"y": 4}]) == {"x": 2.0, "y": 4}  # mean, None skipped


# --- utilities --------------------------------------------------------------------------------------------------------
class _SumStrategy:
    """A stand-in for one rank of a run whose other ranks hold `others` batches in all."""

    root_device = torch.device("cpu")
    global_rank = 1

    def __init__(self, others):
        self.others = others

    def all_reduce(self, tensor, reduce_op="mean"):
        assert reduce_op == "sum"
        return tensor + self.others


class _Stream(IterableDataset):
    def __iter__(self):
        return iter(range(3))


def test_has_len_all_ranks():
    loader = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)
    assert has_len_all_ranks(loader, _SumStrategy(0)) is True
    assert has_len_all_ranks(DataLoader(_Stream()), _SumStrategy(0)) is False  # no __len__
    empty = DataLoader(TensorDataset(torch.ones(0, 1)), batch_size=2)
    with pytest.warns(UserWarning, match="Total length of `DataLoader` across ranks is zero"):
        assert has_len_all_ranks(empty, _SumStrategy(0))
    with pytest.raises(RuntimeError, match="zero length on this rank.*allow_zero_length_dataloader_with_multiple"):
        has_len_all_ranks(empty, _SumStrategy(5))
    with pytest.warns(UserWarning, match="zero length on this rank, but not across ranks"):
        assert has_len_all_ranks(empty, _SumStrategy(5), allow_zero_length_dataloader_with_multiple_devices=True)


def test_get_torchvision_model_needs_torchvision(monkeypatch):
    from fulmen.utilities.model_helpers import get_torchvision_model

    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ModuleNotFoundError, match="model_name='resnet18'. Fix: pip install torchvision"):
        get_torchvision_model("resnet18")


class _Ordered(torch.utils.data.Sampler):
    """A sampler with a fixed custom order; records set_epoch."""

    def __init__(self):
        self.epochs = []

    def __iter__(self):
        return iter([9, 7, 5, 3, 1, 0, 2])

    def __len__(self):
        return 7

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def test_distributed_sampler_wrapper_shards_the_wrapped_order():
    inner = _Ordered()
    shards = [list(DistributedSamplerWrapper(inner, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert shards == [[9, 3, 2], [7, 1, 9], [5, 0, 7]]  # every 3rd, padded from the start to 3 each
    dropped = [list(DistributedSamplerWrapper(inner, num_replicas=3, rank=r, shuffle=False, drop_last=True))
               for r in range(3)]
    assert dropped == [[9, 3], [7, 1], [5, 0]]
    wrapper = DistributedSamplerWrapper(inner, num_replicas=2, rank=0, seed=3)
    assert isinstance(wrapper, torch.utils.data.DistributedSampler) and len(wrapper) == 4
    wrapper.set_epoch(4)
    assert inner.epochs == [4]
    ranks = [DistributedSamplerWrapper(inner, num_replicas=2, rank=r, seed=3) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(4)
    together = list(ranks[0]) + list(ranks[1])
    # Shuffled positions, the same permutation on both ranks: together they cover the order, one padded repeat.
    assert len(together) == 8 and set(together) == {9, 7, 5, 3, 1, 0, 2}
    assert together != [9, 5, 1, 2, 7, 3, 0, 9]  # not the unshuffled split
    with pytest.raises(TypeError, match="finite length"):
        DistributedSamplerWrapper(iter([1, 2]), num_replicas=2, rank=0)


def test_throughput_world_size_and_checks():
    t = Throughput(available_flops=100.0, world_size=4, window_size=2)
    t.update(time=1.0, batches=1, samples=8, lengths=16, flops=10)
    t.update(time=2.0, batches=2, samples=16, lengths=32, flops=10)
    out = t.compute()
    assert out["device/samples_per_sec"] == 8.0 and out["samples_per_sec"] == 32.0
    assert out["device/items_per_sec"] == 16.0 and out["items_per_sec"] == 64.0
    assert out["device/flops_per_sec"] == 10.0 and out["flops_per_sec"] == 40.0 and out["device/mfu"] == 0.1
    single = Throughput(window_size=2)
    single.update(time=1.0, batches=1, samples=1)
    single.update(time=2.0, batches=2, samples=2)
    assert "samples_per_sec" not in single.compute() and single.compute()["device/samples_per_sec"] == 1.0
    with pytest.raises(ValueError, match="Expected `time` to increase"):
        single.update(time=2.0, batches=3, samples=3)
    with pytest.raises(ValueError, match=r"Expected lengths \(1\) >= samples \(2\)"):
        Throughput().update(time=1.0, batches=1, samples=2, lengths=1)
    with pytest.raises(ValueError, match="world_size=0"):
        Throughput(world_size=0)
    assert get_available_flops(torch.device("cpu"), torch.bfloat16) is None


def test_get_available_flops_for_known_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    cuda = torch.device("cuda", 0)
    assert get_available_flops(cuda, torch.bfloat16) == 312 * 10**12
    assert get_available_flops(cuda, torch.float32) == int(19.5e12)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert get_available_flops(cuda, torch.float32) == 156 * 10**12  # TF32 tensor cores
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert get_available_flops(cuda, torch.float16) == int(989.4e12)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.warns(UserWarning, match="no published peak.*bfloat16"):
        assert get_available_flops(cuda, torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU 9000")
    with pytest.warns(UserWarning, match="'Some Future GPU 9000'"):
        assert get_available_flops(cuda, torch.float16) is None


def test_compile_round_trip():
    from fulmen.utilities.compile import from_compiled, to_uncompiled

    model = pl.demos.BoringModel()
    compiled = torch.compile(model)
    module = from_compiled(compiled)
    assert module is model and module._compiled_call_impl is not None
    assert to_uncompiled(module) is model and model._compiled_call_impl is None
    assert to_uncompiled(compiled) is model
    with pytest.raises(ValueError, match="not compiled"):
        to_uncompiled(model)
    with pytest.raises(ValueError, match="Received: model=BoringModel"):
        from_compiled(model)
    with pytest.raises(ValueError, match=r"torch.compile\(Linear\)"):
        from_compiled(torch.compile(torch.nn.Linear(1, 1)))


def test_deepspeed_helpers(tmp_path):
    from fulmen.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict, ds_checkpoint_dir

    with pytest.raises(MisconfigurationException, match="DeepSpeed is not supported by fulmen.*zero_to_fp32"):
        convert_zero_checkpoint_to_fp32_state_dict(tmp_path, tmp_path / "out.pt")
    with pytest.raises(ValueError, match="'latest' file"):
        ds_checkpoint_dir(tmp_path)
    (tmp_path / "global_step14").mkdir()
    (tmp_path / "latest").write_text("global_step14\n")
    assert ds_checkpoint_dir(tmp_path) == str(tmp_path / "global_step14")
    with pytest.raises(FileNotFoundError, match="tag='global_step2'"):
        ds_checkpoint_dir(tmp_path, tag="global_step2")


def test_migrate_checkpoint():
    from fulmen.utilities.migration import migrate_checkpoint

    old = {"pytorch-lightning_version": "1.9.4", "loops": {"fit_loop": {"epoch_loop.batch_progress": {}}},
           "amp_scaling_state": {}, "epoch": 3, "global_step": 30}
    with pytest.warns(UserWarning, match="apex AMP"):
        ckpt, applied = migrate_checkpoint(old)
    assert ckpt is old and applied == {"2.0.0": ["_drop_apex_amp_state", "_drop_legacy_loop_state"]}
    assert "loops" not in ckpt and "amp_scaling_state" not in ckpt and ckpt["epoch"] == 3
    assert ckpt["pytorch-lightning_version"] == "2.6.6" and ckpt["legacy_pytorch-lightning_version"] == "1.9.4"
    assert migrate_checkpoint({"pytorch-lightning_version": "1.9.4", "loops": {}}, target_version="1.9.9")[1] == {}
    current = {"pytorch-lightning_version": "2.1.0", "loops": {"fit_loop": {}}}
    assert migrate_checkpoint(current) == (current, {}) and "loops" in current
    assert current["legacy_pytorch-lightning_version"] == "2.1.0"
    ours = {"fulmen_version": "0.1", "epoch": 1}
    assert migrate_checkpoint(ours) == ({"fulmen_version": "0.1", "epoch": 1}, {})
    newer = {"pytorch-lightning_version": "3.0.0"}
    with pytest.warns(UserWarning, match="newer than the 2.6.6"):
        assert migrate_checkpoint(newer) == ({"pytorch-lightning_version": "3.0.0"}, {})


_LEGACY_PICKLE = r"""
import pickle, sys
import fulmen.alias
fulmen.alias.install(children=False)
from fulmen.utilities import enums
from fulmen.utilities.migration import _gpus_arg_default, pl_legacy_patch

# What old checkpoints pickled: a function of a module Lightning 1.4 removed, an enum 2.0 removed.
gpus = b"\x80\x04\x8c*pytorch_lightning.utilities.argparse_utils\x94\x8c\x11_gpus_arg_default\x94\x93\x94."
mode = b"\x80\x04\x8c!pytorch_lightning.utilities.enums\x94\x8c\x12_FaultTolerantMode\x94\x93\x94."
for payload in (gpus, mode):
    try:
        pickle.loads(payload)
        raise SystemExit("loaded without the patch")
    except (ModuleNotFoundError, AttributeError):
        pass
with pl_legacy_patch():
    assert pickle.loads(gpus) is _gpus_arg_default
    assert pickle.loads(mode)("automatic") == "AUTOMATIC"
assert "pytorch_lightning.utilities.argparse_utils" not in sys.modules
assert not hasattr(enums, "_FaultTolerantMode")
print("ok")
"""


def test_pl_legacy_patch_unpickles_removed_names():
    """In a child process under the alias, as a Lightning program unpickling an old checkpoint runs."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _LEGACY_PICKLE], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_find_free_network_port(monkeypatch):
    import socket

    from fulmen.plugins.environments import find_free_network_port

    monkeypatch.delenv("STANDALONE_PORT", raising=False)
    port = find_free_network_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # it is free
    monkeypatch.setenv("STANDALONE_PORT", "12345")
    assert find_free_network_port() == 12345


# --- the Lightning paths ----------------------------------------------------------------------------------------------
_PATHS = {
    "lightning.fabric.plugins.environments.lightning": ["find_free_network_port"],
    "lightning.pytorch.accelerators": ["find_usable_cuda_devices"],
    "lightning.pytorch.accelerators.cpu": ["get_cpu_stats"],
    "lightning.pytorch.accelerators.cuda": ["get_nvidia_gpu_stats"],
    "lightning.pytorch.callbacks.early_stopping": ["EarlyStoppingReason"],
    "lightning.pytorch.callbacks.prediction_writer": ["WriteInterval"],
    "lightning.pytorch.callbacks.progress.progress_bar": ["get_standard_metrics"],
    "lightning.pytorch.callbacks.progress.tqdm_progress": ["Tqdm", "convert_inf"],
    "lightning.pytorch.callbacks.timer": ["Interval"],
    "lightning.pytorch.core.optimizer": ["do_nothing_closure"],
    "lightning.pytorch.loggers.logger": ["merge_dicts"],
    "lightning.pytorch.trainer": ["seed_everything"],
    "lightning.pytorch.utilities.data": ["has_len_all_ranks"],
    "lightning.pytorch.utilities.model_helpers": ["get_torchvision_model"],
    "lightning.pytorch.utilities.compile": ["from_compiled", "to_uncompiled"],
    "lightning.pytorch.utilities.deepspeed": ["convert_zero_checkpoint_to_fp32_state_dict", "ds_checkpoint_dir"],
    "lightning.pytorch.utilities.migration": ["migrate_checkpoint", "pl_legacy_patch"],
    "pytorch_lightning.utilities.migration.utils": ["migrate_checkpoint"],
    "lightning.pytorch.demos.lstm": ["LightningLSTM"],
    "lightning_fabric.utilities.distributed": ["DistributedSamplerWrapper"],
    "lightning_fabric.utilities.throughput": ["Throughput", "get_available_flops", "measure_flops"],
    "lightning_fabric.utilities": ["Throughput"],
}


def test_names_answer_at_their_lightning_paths():
    """In a child process (the alias must not meet a Lightning import in this one): every name
    resolves, to the fulmen object."""
    import json
    import subprocess

    code = (
        "import importlib, json, sys\n"
        "import fulmen.alias\n"
        "fulmen.alias.install(children=False)\n"
        "out = {}\n"
        "for path, names in json.loads(sys.argv[1]).items():\n"
        "    module = importlib.import_module(path)\n"
        "    out[path] = [getattr(getattr(module, n), '__module__', '?') for n in names]\n"
        "from lightning.pytorch.accelerators.mps import get_device_stats\n"
        "out['mps'] = get_device_stats.__name__\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, __import__("json").dumps(_PATHS)], capture_output=True,
                          text=True, check=True, cwd=str(importlib.import_module("fulmen").__path__[0] + "/.."))
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("mps") == "get_mps_stats"
    for path, modules in out.items():
        assert all(m.startswith("fulmen.") for m in modules), (path, modules)
