"""The hot path: the plain training step, batch prefetching, and torch.compile'd modules.

The plain step (taken when nothing between training_step and the optimizer step is customised)
must give bit-identical weights to the full, hook-by-hook step. Prefetching must hand out the
same batches in the same order. Timing is measured by bench/, never here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.data import prefetch
from fulmen.dataloading import prepare_loader
from fulmen.loop import _device_batches


def regression_data(n: int = 40, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g))


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class NoOpBackwardHook(pl.Callback):
    """Overrides a step hook without changing anything: forces the full, hook-by-hook step."""

    def __init__(self) -> None:
        self.calls = 0

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls += 1


def fit(tmp_path, callbacks=(), **kwargs):
    model = Regressor()
    trainer = quiet_trainer(tmp_path, callbacks=list(callbacks), max_epochs=3, **kwargs)
    trainer.fit(model, DataLoader(regression_data(), batch_size=8))
    return trainer, model


def test_plain_step_is_taken_when_nothing_is_customised(tmp_path):
    trainer, _ = fit(tmp_path)
    assert trainer._hooks.plain_step is True
    hooked, _ = fit(tmp_path, callbacks=[NoOpBackwardHook()])
    assert hooked._hooks.plain_step is False


def test_plain_and_full_steps_give_bit_identical_weights(tmp_path):
    for accumulate in (1, 3):
        plain_trainer, plain = fit(tmp_path, accumulate_grad_batches=accumulate)
        hook = NoOpBackwardHook()
        full_trainer, full = fit(tmp_path, callbacks=[hook], accumulate_grad_batches=accumulate)
        assert plain_trainer._hooks.plain_step and not full_trainer._hooks.plain_step
        assert hook.calls == 15  # 5 batches x 3 epochs went through the full step
        assert plain_trainer.global_step == full_trainer.global_step == 3 * -(-5 // accumulate)
        for a, b in zip(plain.parameters(), full.parameters()):
            assert torch.equal(a, b)


def test_clipping_or_a_grad_scaler_take_the_full_step(tmp_path):
    clipped, _ = fit(tmp_path, gradient_clip_val=0.5)
    assert clipped._hooks.plain_step is False
    scaled, _ = fit(tmp_path, precision="16-mixed")
    assert scaled._hooks.plain_step is False


def test_prefetch_hands_out_every_batch_in_order_with_one_batch_lookahead():
    events: list[str] = []

    def transfer(batch):
        events.append(f"move {batch}")
        return batch * 10

    out = []
    for index, batch in prefetch(enumerate(range(4)), transfer):
        events.append(f"use {index}")
        out.append((index, batch))
    assert out == [(0, 0), (1, 10), (2, 20), (3, 30)]
    # Batch i+1 is moved before batch i is used: on CUDA that copy overlaps step i.
    assert events == ["move 0", "move 1", "use 0", "move 2", "use 1", "move 3", "use 2", "use 3"]


def test_cpu_batches_without_transfer_hooks_are_not_touched(tmp_path):
    trainer, _ = fit(tmp_path)
    assert trainer.run_state.transfer_is_noop
    batches = [(torch.ones(2), torch.zeros(2)), (torch.ones(3), torch.zeros(3))]
    got = list(_device_batches(trainer, enumerate(batches), 0))
    assert [i for i, _ in got] == [0, 1]
    assert all(batch is original for (_, batch), original in zip(got, batches))


def test_a_cuda_trainer_pins_dataloader_memory(tmp_path):
    trainer = quiet_trainer(tmp_path)
    trainer._device = torch.device("cuda", 0)  # only the decision is tested here; no GPU is used
    loader = DataLoader(regression_data(), batch_size=8)
    assert prepare_loader(trainer, loader, train=True).pin_memory is True
    cpu_loader = DataLoader(regression_data(), batch_size=8)
    assert prepare_loader(quiet_trainer(tmp_path), cpu_loader, train=True).pin_memory is False


def test_a_torch_compiled_module_trains_and_checkpoints(tmp_path):
    torch._dynamo.reset()
    model = Regressor()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=True)
    trainer.fit(torch.compile(model), DataLoader(regression_data(), batch_size=8))

    # The Trainer trains the module itself, with its calls compiled.
    assert trainer.lightning_module is model and model._compiled_call_impl is not None
    assert trainer.global_step == 10
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # Checkpoint keys are the module's own, without torch.compile's `_orig_mod.` prefix.
    path = trainer.checkpoint_callback.best_model_path
    state = torch.load(path, weights_only=True)["state_dict"]
    assert sorted(state) == sorted(Regressor().state_dict())
    restored = Regressor.load_from_checkpoint(path)
    x = regression_data()[:][0]
    with torch.no_grad():
        assert torch.allclose(restored(x), model.net(x))


def _bench_bytecodes():
    """bench/bytecodes.py, the counter the benchmark prints (bench/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "bytecodes.py"
    spec = importlib.util.spec_from_file_location("fulmen_bench_bytecodes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("config", "budget"),
    [("plain (workload b)", 300), ("self.log every step + TensorBoard (workload a)", 500)],
)
def test_fulmen_executes_a_bounded_number_of_bytecodes_per_step(config, budget, monkeypatch):
    """A deterministic overhead guard instead of a timing: the Python bytecodes run in fulmen's own
    frames per training step (set-up cancels out). About 250 and 430 on CPython 3.11 today; a hook
    call or a check added to every batch shows up here as tens more."""
    monkeypatch.setenv("FULMEN_DOCTOR", "0")
    bytecodes = _bench_bytecodes()
    kwargs, log = bytecodes.CONFIGS[config]
    per_step = bytecodes.per_step(kwargs, log)
    assert 50 < per_step <= budget, per_step
