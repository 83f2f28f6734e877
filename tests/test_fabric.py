"""fulmen.fabric.Fabric in one process: a raw PyTorch loop converted to Fabric trains the same weights
bit for bit; the wrappers behave like Lightning's; precision, init contexts, logging, callbacks and
the errors Lightning raises."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fulmen.fabric import Fabric, is_wrapped, seed_everything
from fulmen.fabric.wrappers import _FabricDataLoader, _FabricModule, _FabricOptimizer, _unwrap_objects
from fulmen.loggers.base import Logger


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    return TensorDataset(torch.randn(40, 6, generator=g), torch.randn(40, 2, generator=g))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))


def _loader(ds: TensorDataset) -> DataLoader:
    return DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(7))


def _raw_loop(epochs: int = 3) -> nn.Module:
    model, ds = _model(), _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = _loader(ds)
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
    return model


def _fabric_loop(epochs: int = 3, **fabric_kwargs) -> tuple[Fabric, _FabricModule]:
    fabric = Fabric(accelerator="cpu", devices=1, **fabric_kwargs)
    fabric.launch()
    model, ds = _model(), _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(_loader(ds))
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
    return fabric, model


def test_converted_raw_loop_trains_bit_identical_weights():
    raw = _raw_loop()
    _, model = _fabric_loop()
    raw_params = dict(raw.named_parameters())
    for name, param in model.module.named_parameters():
        assert torch.equal(param, raw_params[name]), name
    assert not torch.equal(raw[0].weight, _model()[0].weight)  # it did train


def test_setup_returns_lightning_like_wrappers():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    module = _model()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    model, opt = fabric.setup(module, optimizer)
    assert isinstance(model, _FabricModule) and model.module is module and model._original_module is module
    assert isinstance(opt, _FabricOptimizer) and isinstance(opt, torch.optim.SGD) and opt.optimizer is optimizer
    assert is_wrapped(model) and is_wrapped(opt) and not is_wrapped(module)
    assert model.state_dict().keys() == module.state_dict().keys()  # the user's keys, no wrapper prefix
    assert opt.param_groups is optimizer.param_groups
    model(torch.randn(4, 6)).sum().backward()
    opt.step()
    assert opt.state_dict()["state"][0]["momentum_buffer"].shape == (16, 6)
    assert torch.equal(opt.state_dict()["state"][0]["momentum_buffer"], optimizer.state_dict()["state"][0]["momentum_buffer"])
    opt.zero_grad()
    assert module[0].weight.grad is None
    # Attributes reach the user's module, both ways.
    model.custom_flag = 5
    assert module.custom_flag == 5 and model.custom_flag == 5
    assert _unwrap_objects({"m": model, "o": [opt]}) == {"m": module, "o": [optimizer]}
    # One module, no optimizers: the module alone.
    assert isinstance(fabric.setup(nn.Linear(1, 1)), _FabricModule)


class _Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3, 3)

    def forward(self, x):
        return self.net(x)

    def generate(self, x, scale=1.0):
        return self(x) * scale  # calls the real forward from inside


def test_compiled_module_is_set_up_inside_and_compiled_again():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    module = nn.Linear(3, 1)
    model, opt = fabric.setup(torch.compile(module, backend="eager"), torch.optim.SGD(module.parameters(), lr=0.1))
    assert model.module is module and type(model._forward_module).__name__ == "OptimizedModule"
    x = torch.randn(2, 3)
    assert torch.equal(model(x), module(x))
    kept = fabric.setup_module(torch.compile(nn.Linear(3, 1), backend="eager"), _reapply_compile=False)
    assert type(kept.module).__name__ == "OptimizedModule"


def test_mark_forward_method_and_its_errors():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    model = fabric.setup(_Generator())
    model.mark_forward_method("generate")
    x = torch.randn(2, 3)
    assert torch.equal(model.generate(x, scale=2.0), model.module.net(x) * 2.0)
    model.mark_forward_method(model.module.forward.__self__.generate)
    with pytest.raises(ValueError, match="forward already runs through"):
        model.mark_forward_method("forward")
    with pytest.raises(AttributeError, match="not a method of _Generator"):
        model.mark_forward_method("nope")
    with pytest.raises(TypeError, match="takes a method or its name"):
        model.mark_forward_method(3)


def test_bf16_mixed_autocast_gives_bf16_compute_and_float32_weights():
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    fabric.launch()
    model = fabric.setup(nn.Linear(4, 3))
    assert model.module.weight.dtype == torch.float32
    x = torch.randn(2, 4)
    with fabric.autocast():
        y = model.module(x)  # a raw op under Fabric's autocast
    assert y.dtype == torch.bfloat16
    out = model(x)  # through the wrapper: computed in bf16, returned in the default dtype (as Lightning)
    expected = F.linear(x.bfloat16(), model.module.weight.bfloat16(), model.module.bias.bfloat16())
    assert out.dtype == torch.float32 and torch.equal(out, expected.float())


def test_64_true_init_contexts_and_inputs():
    fabric = Fabric(accelerator="cpu", precision="64-true")
    fabric.launch()
    with fabric.init_module():
        layer = nn.Linear(3, 2)
    with fabric.init_tensor():
        t = torch.randn(2)
    assert layer.weight.dtype == torch.float64 and t.dtype == torch.float64
    assert torch.get_default_dtype() == torch.float32  # restored
    model = fabric.setup(nn.Linear(3, 2))
    assert model.module.weight.dtype == torch.float64
    assert model(torch.randn(1, 3)).dtype == torch.float32  # float32 in, converted, back in the default dtype
    assert (model.dtype, model.device) == (torch.float64, fabric.device)  # as Lightning's wrapper has them
    assert (fabric.setup(nn.ReLU()).dtype, fabric.setup(nn.ReLU()).device) == (torch.float32, fabric.device)


def test_init_module_empty_init_skips_weight_init():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    t = torch.zeros(4, 3)
    with fabric.init_module(empty_init=True):
        nn.init.kaiming_uniform_(t)  # what nn.Linear's reset_parameters calls
        nn.init.normal_(t)
        layer = nn.Linear(4, 2)
    assert torch.equal(t, torch.zeros(4, 3)) and layer.weight.shape == (2, 4)
    with fabric.init_module(empty_init=False):
        nn.init.kaiming_uniform_(t)
    assert t.abs().sum() > 0


def test_16_mixed_scales_the_loss_and_clip_unscales_once():
    from fulmen.plugins.precision import MixedPrecision

    # A small initial scale: float16 gradients under the default 2**16 would overflow on this model.
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    fabric = Fabric(accelerator="cpu", plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    fabric.launch()
    module = nn.Linear(4, 1)
    model, opt = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    assert fabric._precision.scaler is scaler
    x = torch.randn(8, 4)
    loss = model(x).float().pow(2).mean()
    with pytest.raises(RuntimeError, match=r"Fix: call fabric.backward\(loss\)"):
        loss.backward(retain_graph=True)
    opt.zero_grad()
    fabric.backward(loss)
    scaled = module.weight.grad.clone()
    norm = fabric.clip_gradients(model, opt, max_norm=1e9)
    assert torch.allclose(module.weight.grad * scaler.get_scale(), scaled)  # unscaled in place
    assert torch.allclose(norm, torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in module.parameters()])))
    before = module.weight.detach().clone()
    opt.step()  # does not unscale a second time
    assert torch.allclose(module.weight, before - 0.1 * module.weight.grad)


def test_clip_gradients_by_value_and_norm():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    module = nn.Linear(4, 1)
    model, opt = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    fabric.backward((model(torch.randn(8, 4)) * 100).sum())
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in module.parameters()]))
    norm = fabric.clip_gradients(model, opt, max_norm=1.0)
    assert torch.allclose(norm, total)
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in module.parameters()]))
    assert torch.allclose(clipped, torch.tensor(1.0), atol=1e-5)
    assert fabric.clip_gradients(model, opt, clip_val=0.01) is None
    assert max(p.grad.abs().max() for p in module.parameters()) <= 0.01


class _Recorder(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.calls.append((metrics, step))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class _Callback:
    def __init__(self) -> None:
        self.seen = []

    def on_train_epoch_end(self, results):  # takes only `results`: other kwargs are filtered out
        self.seen.append(results)

    def on_after_optimizer_step(self, strategy, optimizer):
        self.seen.append(("stepped", type(optimizer).__name__))

    not_a_hook = 3


def test_log_and_log_dict_reach_every_logger_as_numbers():
    first, second = _Recorder(), _Recorder()
    fabric = Fabric(accelerator="cpu", loggers=[first, second])
    assert fabric.logger is first and fabric.loggers == [first, second]
    fabric.log("loss", torch.tensor(0.5), step=3)
    fabric.log_dict({"a": 1, "b": torch.tensor(2.0)})
    for logger in (first, second):
        assert logger.calls == [({"loss": 0.5}, 3), ({"a": 1, "b": 2.0}, None)]
        assert isinstance(logger.calls[0][0]["loss"], float)


def test_call_reaches_callbacks_with_the_arguments_they_take():
    callback = _Callback()
    fabric = Fabric(accelerator="cpu", callbacks=callback)
    fabric.launch()
    fabric.call("on_train_epoch_end", results={"acc": 1.0}, unused="dropped")
    fabric.call("not_defined_anywhere", 1)
    with pytest.warns(UserWarning, match="not callable"):
        fabric.call("not_a_hook")
    module = nn.Linear(2, 1)
    model, opt = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    fabric.backward(model(torch.randn(2, 2)).sum())
    opt.step()
    assert callback.seen == [{"acc": 1.0}, ("stepped", "SGD")]


def test_properties_and_collectives_on_one_device(capsys):
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric.launch()
    assert (fabric.global_rank, fabric.local_rank, fabric.node_rank, fabric.world_size) == (0, 0, 0, 1)
    assert fabric.is_global_zero and fabric.device == torch.device("cpu")
    assert fabric.strategy.name == "single_device" and type(fabric.accelerator).__name__ == "CPUAccelerator"
    assert fabric.broadcast({"x": 1}) == {"x": 1}
    assert torch.equal(fabric.all_gather(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))
    assert torch.equal(fabric.all_reduce(3), torch.tensor(3))
    assert torch.equal(fabric.all_reduce({"a": torch.tensor(2.0)}, reduce_op="sum")["a"], torch.tensor(2.0))
    fabric.barrier()
    with fabric.rank_zero_first():
        fabric.print("hello", 1)
    assert capsys.readouterr().out == "hello 1\n"
    assert fabric.to_device({"t": torch.ones(1)})["t"].device == fabric.device
    with fabric.no_backward_sync(fabric.setup(nn.Linear(1, 1))):
        pass


def test_setup_dataloaders_moves_batches_and_counts_epochs():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    ds = _data()
    loader = DataLoader(ds, batch_size=10)
    wrapped = fabric.setup_dataloaders(loader)
    assert isinstance(wrapped, _FabricDataLoader) and wrapped.dataloader is loader  # one device: no sampler change
    assert len(wrapped) == 4 and wrapped.batch_size == 10 and wrapped.dataset is ds and wrapped.device == fabric.device
    batches = list(wrapped)
    assert len(batches) == 4 and torch.equal(batches[0][0], ds.tensors[0][:10])
    assert wrapped._progress.epoch == 1
    a, b = fabric.setup_dataloaders(DataLoader(ds), DataLoader(ds), move_to_device=False)
    assert a.device is None and b.device is None


def test_seed_everything_is_fulmens_and_seeds_workers(monkeypatch):
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    assert Fabric.seed_everything(5) == 5
    import os

    assert os.environ["PL_GLOBAL_SEED"] == "5" and os.environ["PL_SEED_WORKERS"] == "1"
    assert seed_everything(6) == 6


def test_errors_lightning_raises():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    with pytest.raises(RuntimeError, match="launch\\(\\) was called a second time"):
        fabric.launch()
    module = nn.Linear(2, 1)
    model, opt = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="already set up by Fabric"):
        fabric.setup(model)
    with pytest.raises(ValueError, match="already set up by Fabric"):
        fabric.setup_module(model)
    with pytest.raises(ValueError, match="optimizer passed to setup_optimizers\\(\\) was already set up"):
        fabric.setup_optimizers(opt)
    with pytest.raises(ValueError, match="needs at least one optimizer"):
        fabric.setup_optimizers()
    with pytest.raises(ValueError, match="clips by value or by norm, not both"):
        fabric.clip_gradients(model, opt, clip_val=1.0, max_norm=1.0)
    with pytest.raises(ValueError, match="needs clip_val .* or max_norm"):
        fabric.clip_gradients(model, opt)
    with pytest.raises(TypeError, match="needs a module set up by Fabric"):
        fabric.no_backward_sync(module)
    with pytest.raises(ValueError, match="needs at least one DataLoader"):
        fabric.setup_dataloaders()
    with pytest.raises(TypeError, match="takes torch DataLoaders only"):
        fabric.setup_dataloaders([1, 2])
    loader = fabric.setup_dataloaders(DataLoader(_data()))
    with pytest.raises(ValueError, match="DataLoader was already set up"):
        fabric.setup_dataloaders(loader)
    with pytest.raises(TypeError, match="not its result"):
        Fabric(accelerator="cpu").launch(3)
    with pytest.raises(TypeError, match="takes no arguments"):
        Fabric(accelerator="cpu").launch(lambda: None)


def test_launch_runs_the_function_and_returns_its_result():
    fabric = Fabric(accelerator="cpu")
    assert fabric.launch(lambda f, a, b=0: (f.world_size, a, b), 1, b=2) == (1, 1, 2)


def test_run_override_launches_first():
    class MyFabric(Fabric):
        def run(self, x):
            return self._launched, x

    assert MyFabric(accelerator="cpu").run(4) == (True, 4)


def test_parallel_strategy_needs_launch_and_ddp_spawn_is_refused():
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
    with pytest.raises(RuntimeError, match="Fix: call fabric.launch\\(\\)"):
        fabric.setup(nn.Linear(1, 1))
    with pytest.raises(RuntimeError, match="no fabric.launch\\(\\) yet"):
        fabric.barrier()
    from fulmen.errors import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="strategy='ddp_spawn'"):
        Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")


def test_a_module_built_on_the_meta_device_gets_memory_and_initial_values_at_setup():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model = fabric.setup(model)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert torch.equal(model.module[1].running_var, torch.ones(4))  # reset_parameters ran: real values
    assert model(torch.randn(2, 3)).shape == (2, 4)

    class Scale(nn.Module):  # a parameter, and no reset_parameters to give it a value
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(2))

    with torch.device("meta"):
        bare = Scale()
    with pytest.raises(TypeError, match=r"needs reset_parameters\(\).*Scale has none.*Fix: define Scale\.reset_parameters"):
        fabric.setup(bare)
