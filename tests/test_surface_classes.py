"""Lightning's accelerator, strategy, profiler, logger and plugin classes at fulmen's paths: what
they accept, what they refuse and with which message, and the environment variables each reads."""

from __future__ import annotations

import signal

import pytest
import torch

import fulmen as pl
from fulmen.accelerators import (
    Accelerator, AcceleratorRegistry, CPUAccelerator, CUDAAccelerator, MPSAccelerator, XLAAccelerator,
)
from fulmen.demos.boring_classes import BoringModel
from fulmen.errors import MisconfigurationException
from fulmen.loggers import CometLogger, DummyLogger, NeptuneLogger
from fulmen.loggers.logger import DummyExperiment, rank_zero_experiment
from fulmen.plugins import environments as envs
from fulmen.profilers import PassThroughProfiler, Profiler, XLAProfiler
from fulmen.strategies import (
    DDPStrategy, DeepSpeedStrategy, FSDPStrategy, ParallelStrategy, SingleDeviceStrategy,
    SingleDeviceXLAStrategy, Strategy, StrategyRegistry, XLAStrategy,
)
from helpers import quiet_trainer


# --- accelerators -------------------------------------------------------------------------------
def test_accelerator_instance_fits_and_is_what_trainer_accelerator_returns(tmp_path):
    given = CPUAccelerator()
    trainer = quiet_trainer(tmp_path, accelerator=given, max_steps=3, limit_val_batches=0)
    model = BoringModel()
    trainer.fit(model)
    assert trainer.accelerator is given and isinstance(trainer.accelerator, CPUAccelerator)
    assert trainer.strategy.accelerator is given
    assert trainer._accelerator == "cpu" and trainer.global_step == 3
    assert model.device == torch.device("cpu")


def test_accelerator_name_gives_its_class():
    trainer = quiet_trainer(accelerator="cpu")
    assert type(trainer.accelerator) is CPUAccelerator
    assert not isinstance(trainer.accelerator, CUDAAccelerator)


def test_accelerator_registry_lists_fulmens_accelerators():
    assert AcceleratorRegistry.available_accelerators() == {"cpu", "cuda", "mps"}
    assert type(AcceleratorRegistry.get("cpu")) is CPUAccelerator
    with pytest.raises(MisconfigurationException, match="already registered.*override=True"):
        AcceleratorRegistry.register("cpu", CPUAccelerator)
    with pytest.raises(KeyError, match="Received: name='tpu'"):
        AcceleratorRegistry.get("tpu")


def test_registered_subclass_name_is_accepted_by_the_trainer():
    class MyCPU(CPUAccelerator):
        pass

    AcceleratorRegistry.register("my_cpu", MyCPU)
    try:
        trainer = quiet_trainer(accelerator="my_cpu")
        assert type(trainer.accelerator) is MyCPU and trainer._accelerator == "cpu"
    finally:
        AcceleratorRegistry.remove("my_cpu")


def test_cpu_accelerator_static_methods():
    assert CPUAccelerator.parse_devices(3) == 3 and CPUAccelerator.parse_devices("2") == 2
    assert CPUAccelerator.get_parallel_devices(2) == [torch.device("cpu")] * 2
    assert CPUAccelerator.auto_device_count() == 1 and CPUAccelerator.is_available() and CPUAccelerator.name() == "cpu"
    for bad in (0, -1, "x", 1.5):
        with pytest.raises(TypeError, match=r"must be a number of processes > 0\. Received: devices="):
            CPUAccelerator.parse_devices(bad)
    with pytest.raises(MisconfigurationException, match="not a CPU. Received: device=cuda:0"):
        CPUAccelerator().setup_device(torch.device("cuda", 0))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only machine")
def test_cuda_accelerator_on_a_cpu_machine():
    assert not CUDAAccelerator.is_available() and CUDAAccelerator.auto_device_count() == 0
    assert CUDAAccelerator.parse_devices(0) is None and CUDAAccelerator.parse_devices([]) is None
    assert CUDAAccelerator.get_parallel_devices([0, 1]) == [torch.device("cuda", 0), torch.device("cuda", 1)]
    with pytest.raises(MisconfigurationException, match="this machine has 0"):
        CUDAAccelerator.parse_devices(1)
    with pytest.raises(MisconfigurationException, match="no CUDA device"):
        pl.Trainer(accelerator=CUDAAccelerator())


def test_xla_and_custom_accelerators_are_refused():
    assert not XLAAccelerator.is_available() and XLAAccelerator.name() == "tpu"
    with pytest.raises(MisconfigurationException, match=r"XLAAccelerator \(TPU\) is not supported by fulmen"):
        pl.Trainer(accelerator=XLAAccelerator())
    with pytest.raises(MisconfigurationException, match=r"XLA \(TPU\) is not supported by fulmen\. "
                                                         r"Received: accelerator='tpu'"):
        pl.Trainer(accelerator="tpu")
    with pytest.raises(MisconfigurationException, match="not supported by fulmen"):
        XLAAccelerator().setup_device(torch.device("cpu"))

    class Custom(Accelerator):
        setup_device = teardown = lambda self, *a: None  # noqa: E731
        parse_devices = get_parallel_devices = staticmethod(lambda d: d)
        auto_device_count = staticmethod(lambda: 1)
        is_available = staticmethod(lambda: True)
        name = staticmethod(lambda: "custom")

    with pytest.raises(MisconfigurationException, match=r"cannot drive a custom Accelerator\. Received: "
                                                         r"accelerator=Custom\(\)"):
        pl.Trainer(accelerator=Custom())


def test_mps_accelerator_names():
    assert MPSAccelerator.name() == "mps" and MPSAccelerator.auto_device_count() == 1


# --- strategies ---------------------------------------------------------------------------------
def test_strategy_registry_lists_fulmens_names_and_builds_them():
    assert set(StrategyRegistry.available_strategies()) == {
        "ddp", "ddp_spawn", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true",
        "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true", "fsdp", "model_parallel",
        "single_device",
    }
    spawn = StrategyRegistry.get("ddp_spawn_find_unused_parameters_true")
    assert isinstance(spawn, DDPStrategy) and spawn.spawns and spawn.ddp_kwargs == {"find_unused_parameters": True}
    assert isinstance(StrategyRegistry.get("fsdp"), FSDPStrategy)
    assert isinstance(quiet_trainer(strategy="single_device").strategy, SingleDeviceStrategy)


def test_class_tree_matches_lightning():
    assert issubclass(DDPStrategy, ParallelStrategy) and issubclass(FSDPStrategy, ParallelStrategy)
    assert issubclass(SingleDeviceStrategy, Strategy) and not issubclass(DDPStrategy, SingleDeviceStrategy)
    trainer = quiet_trainer()
    assert type(trainer.strategy) is SingleDeviceStrategy  # what "auto" picks for one device


def test_registered_strategy_name_is_accepted():
    StrategyRegistry.register("my_single", SingleDeviceStrategy, description="test")
    try:
        assert type(quiet_trainer(strategy="my_single").strategy) is SingleDeviceStrategy
    finally:
        StrategyRegistry.remove("my_single")


def test_single_device_strategy_device_pins_the_device():
    trainer = pl.Trainer(strategy=SingleDeviceStrategy(device="cpu"), logger=False, enable_progress_bar=False)
    assert trainer.device == torch.device("cpu") and isinstance(trainer.accelerator, CPUAccelerator)
    with pytest.raises(TypeError, match=r"SingleDeviceStrategy\(precision_plugin=\.\.\.\) is not supported by fulmen"):
        SingleDeviceStrategy(precision_plugin=object())


@pytest.mark.parametrize(("cls", "args", "kwargs", "text"), [
    (DeepSpeedStrategy, (), {"stage": 3}, r"DeepSpeedStrategy is not supported by fulmen\. Received: "
                                          r"strategy=DeepSpeedStrategy\(stage=3\)\. Fix: use 'ddp', or 'fsdp'"),
    (XLAStrategy, (), {}, r"XLAStrategy is not supported by fulmen\. Received: strategy=XLAStrategy\(\)"),
    (SingleDeviceXLAStrategy, ("xla:0",), {}, r"Received: strategy=SingleDeviceXLAStrategy\('xla:0'\)"),
])
def test_unsupported_strategy_classes_refuse_to_be_built(cls, args, kwargs, text):
    with pytest.raises(MisconfigurationException, match=text):
        cls(*args, **kwargs)


@pytest.mark.parametrize(("name", "text"), [
    ("deepspeed", r"strategy='deepspeed' is not supported by fulmen \(DeepSpeed\)\. Received: strategy='deepspeed'\. "
                  r"Fix: use 'ddp', or 'fsdp'"),
    ("deepspeed_stage_2", r"strategy='deepspeed_stage_2' is not supported by fulmen \(DeepSpeed\)"),
    ("xla", r"strategy='xla' is not supported by fulmen \(XLA/TPU\)"),
    ("single_tpu", r"not supported by fulmen \(XLA/TPU\)"),
    ("ddp_notebook", r"fulmen does not fork processes.*Fix: use 'ddp' from a script, or 'ddp_spawn'\."),
    ("ddp_fork_find_unused_parameters_true", r"or 'ddp_spawn_find_unused_parameters_true'\."),
    ("fsdp_cpu_offload", r"does not offload to CPU\)\. Received: strategy='fsdp_cpu_offload'\. Fix: use strategy='fsdp'"),
])
def test_unsupported_strategy_names_raise_clearly(name, text):
    with pytest.raises(MisconfigurationException, match=text):
        pl.Trainer(strategy=name)


def test_unknown_strategy_name_still_says_unknown():
    with pytest.raises(MisconfigurationException, match=r"Unknown strategy\. Received: strategy='dpp'\. .*'single_device'"):
        pl.Trainer(strategy="dpp")


# --- profilers ----------------------------------------------------------------------------------
def test_default_profiler_is_a_pass_through_profiler():
    trainer = quiet_trainer()
    assert type(trainer.profiler) is PassThroughProfiler and isinstance(trainer.profiler, Profiler)
    with trainer.profiler.profile("user_block") as name:
        assert name == "user_block"


def test_xla_profiler_is_refused():
    with pytest.raises(MisconfigurationException, match=r"XLAProfiler is not supported by fulmen.*"
                                                         r"Received: profiler=XLAProfiler\(port=9012\)"):
        XLAProfiler()
    with pytest.raises(MisconfigurationException, match="XLAProfiler is not supported by fulmen"):
        pl.Trainer(profiler="xla")


# --- loggers ------------------------------------------------------------------------------------
def test_dummy_logger_swallows_every_call():
    logger = DummyLogger()
    assert logger.log_metrics({"a": 1.0}, step=0) is None and logger.log_hyperparams({"lr": 1}) is None
    assert logger.anything(1, key=2) is None and logger[0] is logger
    assert logger.name == "" and logger.version == ""
    experiment = logger.experiment
    assert isinstance(experiment, DummyExperiment)
    assert experiment.add_scalar("x", 1.0) is None and experiment[3].log({"a": 1}) is None
    experiment["key"] = 1  # item assignment is swallowed too
    with pytest.raises(AttributeError):
        logger.__no_such_dunder__  # noqa: B018


def test_dummy_logger_runs_in_a_fit(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=DummyLogger(), max_steps=2, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert trainer.global_step == 2 and isinstance(trainer.logger, DummyLogger)


def test_rank_zero_experiment_gives_a_dummy_on_other_ranks(monkeypatch):
    class WithBackend:
        @property
        @rank_zero_experiment
        def experiment(self):
            return "real backend"

    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert WithBackend().experiment == "real backend"
    monkeypatch.setenv("RANK", "1")
    assert isinstance(WithBackend().experiment, DummyExperiment)


def test_comet_and_neptune_loggers_refuse_to_be_built():
    with pytest.raises(ModuleNotFoundError, match="needs the `comet_ml` package"):
        CometLogger(api_key="k")
    with pytest.raises(RuntimeError, match=r"NeptuneLogger is not supported by fulmen.*Fix: use MLFlowLogger"):
        NeptuneLogger(project="p")


# --- plugins: cluster environments --------------------------------------------------------------
_ALL_VARS = (
    "RANK", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
    "SLURM_NODELIST", "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_NNODES", "LSB_JOBID", "LSB_DJOB_RANKFILE",
    "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE", "JSM_NAMESPACE_RANK", "STANDALONE_PORT",
)


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables; and whatever an environment exports (MASTER_ADDR...) is undone afterwards:
    set-then-delete makes monkeypatch remember each variable's original state, absent ones included."""
    for name in _ALL_VARS:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_lightning_environment(clean_env):
    env = envs.LightningEnvironment()
    assert env.detect() and not env.creates_processes_externally
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (0, 0, 0, 1)
    assert env.main_address == "127.0.0.1"
    clean_env.setenv("LOCAL_RANK", "2")
    clean_env.setenv("GROUP_RANK", "1")
    clean_env.setenv("MASTER_PORT", "29501")
    env = envs.LightningEnvironment()
    env.set_world_size(8)
    env.set_global_rank(6)
    assert env.creates_processes_externally and env.main_port == 29501
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (6, 2, 1, 8)
    clean_env.setenv("NODE_RANK", "3")  # NODE_RANK wins over GROUP_RANK
    assert env.node_rank() == 3


def test_torchelastic_environment(clean_env):
    assert not envs.TorchElasticEnvironment.detect()
    for name, value in {"TORCHELASTIC_RUN_ID": "abc", "RANK": "5", "LOCAL_RANK": "1", "GROUP_RANK": "2",
                        "WORLD_SIZE": "8", "MASTER_ADDR": "node0", "MASTER_PORT": "29400"}.items():
        clean_env.setenv(name, value)
    env = envs.TorchElasticEnvironment()
    assert env.detect() and env.creates_processes_externally
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (8, 5, 1, 2)
    assert (env.main_address, env.main_port) == ("node0", 29400)
    env.set_global_rank(0)  # torchrun fixed the rank: ignored
    assert env.global_rank() == 5
    env.validate_settings(num_devices=4, num_nodes=2)
    with pytest.raises(ValueError, match=r"torchrun started 8 processes, but the Trainer asks for 4"):
        env.validate_settings(num_devices=2, num_nodes=2)


def test_slurm_environment(clean_env):
    assert not envs.SLURMEnvironment.detect()
    for name, value in {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_PROCID": "6", "SLURM_LOCALID": "2",
                        "SLURM_NODEID": "1", "SLURM_NODELIST": "gpu[003-004]", "SLURM_JOB_ID": "1234567",
                        "SLURM_JOB_NAME": "train", "SLURM_NNODES": "2"}.items():
        clean_env.setenv(name, value)
    env = envs.SLURMEnvironment()
    assert env.detect() and env.creates_processes_externally and env.requeue_signal == signal.SIGUSR1
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (8, 6, 2, 1)
    assert env.main_address == "gpu003" and env.main_port == 15000 + 4567 and env.job_id() == 1234567
    env.validate_settings(num_devices=4, num_nodes=2)
    with pytest.raises(ValueError, match=r"SLURM runs 4 tasks per node.*Fix: set devices=4"):
        env.validate_settings(num_devices=2, num_nodes=2)
    clean_env.setenv("SLURM_JOB_NAME", "interactive")  # an interactive allocation is not a managed job
    assert not envs.SLURMEnvironment.detect() and envs.SLURMEnvironment.job_id() is None


def test_slurm_environment_rejects_ntasks_without_per_node(clean_env):
    clean_env.setenv("SLURM_NTASKS", "4")
    with pytest.raises(RuntimeError, match=r"Received: SLURM_NTASKS=4\. Fix: use `#SBATCH --ntasks-per-node=4`"):
        envs.SLURMEnvironment()


def test_kubeflow_environment(clean_env):
    with pytest.raises(NotImplementedError, match="cannot be detected"):
        envs.KubeflowEnvironment.detect()
    for name, value in {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "master-0", "MASTER_PORT": "23456"}.items():
        clean_env.setenv(name, value)
    env = envs.KubeflowEnvironment()
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (4, 3, 0, 3)
    assert (env.main_address, env.main_port) == ("master-0", 23456)


def test_lsf_environment(clean_env, tmp_path):
    import socket

    assert not envs.LSFEnvironment.detect()
    rankfile = tmp_path / "ranks"
    here = socket.gethostname()
    rankfile.write_text(f"launch\nnodeA\nnodeA\n{here}\n{here}\n")
    for name, value in {"LSB_JOBID": "4321", "LSB_DJOB_RANKFILE": str(rankfile), "JSM_NAMESPACE_LOCAL_RANK": "1",
                        "JSM_NAMESPACE_SIZE": "4", "JSM_NAMESPACE_RANK": "3"}.items():
        clean_env.setenv(name, value)
    env = envs.LSFEnvironment()
    assert env.detect() and env.creates_processes_externally
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (4, 3, 1, 1)
    assert (env.main_address, env.main_port) == ("nodeA", 10321)


def test_mpi_and_xla_environments_need_what_is_missing(clean_env):
    assert not envs.MPIEnvironment.detect()  # no mpi4py here
    with pytest.raises(ModuleNotFoundError, match="needs the `mpi4py` package"):
        envs.MPIEnvironment()
    assert not envs.XLAEnvironment.detect()
    with pytest.raises(MisconfigurationException, match="XLAEnvironment is not supported by fulmen"):
        envs.XLAEnvironment()


def test_plugins_fulmen_does_not_provide_fail_with_what_to_use_instead():
    with pytest.raises(ImportError, match=r"DeepSpeedPrecision is not provided by fulmen.*Fix: .*strategy='fsdp'"):
        from fulmen.plugins import DeepSpeedPrecision  # noqa: F401
    import fulmen.plugins

    assert not hasattr(fulmen.plugins, "NoSuchPlugin")
    assert fulmen.plugins.SLURMEnvironment is envs.SLURMEnvironment
