"""Tests for `fulmen.precision`: every precision string on CPU, against a raw PyTorch loop.

Each run is compared bit for bit (`torch.equal`) with the loop a user would write by hand for
that precision: `.to(dtype)` for "*-true", `torch.autocast` for "*-mixed", plus a GradScaler
for "16-mixed". Where this CPU build lacks a kernel for a dtype, only that case is skipped.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.errors import MisconfigurationException

from helpers import quiet_trainer

VALID = ["16-mixed", "16-true", "32-true", "64-true", "bf16-mixed", "bf16-true"]


def _cpu_kernel_or_skip(dtype: torch.dtype, autocast: bool) -> None:
    """Skip the calling test when this CPU build cannot run a Linear forward+backward in `dtype`."""
    layer = nn.Linear(2, 2)
    x = torch.randn(3, 2)
    try:
        if autocast:
            with torch.autocast("cpu", dtype=dtype):
                out = layer(x)
        else:
            layer, x = layer.to(dtype), x.to(dtype)
            out = layer(x)
        out.float().sum().backward()
    except RuntimeError as err:  # e.g. "addmm_impl_cpu_" not implemented for 'Half'
        pytest.skip(f"this CPU build has no {dtype} Linear kernel ({'autocast' if autocast else '.to(dtype)'}): {err}")


def _dataset(n: int = 20) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[0.5], [-1.0], [0.25], [1.5]]) + 0.3
    labels = (y.squeeze(1) > 0.3).long()  # an integer tensor: never cast
    return TensorDataset(x, y, labels)


def _loader() -> DataLoader:
    return DataLoader(_dataset(), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))  # 5 batches


def _epoch(loader):
    return zip(range(len(loader)), loader)  # as fulmen and Lightning iterate (see test_optimization_matches_raw_loop._epoch)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


class Probe(pl.LightningModule):
    """Trains `net` on (x, y, labels) with MSE and records what training_step sees."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.seen: list[dict] = []
        self.grad_dtypes: list[torch.dtype] = []
        self.val_seen: list[dict] = []
        self.epoch_losses: list[list[float]] = []

    def training_step(self, batch, batch_idx):
        x, y, labels = batch
        first = self.net[0](x)
        out = self.net[2](self.net[1](first))
        loss = F.mse_loss(out, y.to(out.dtype))
        self.seen.append({
            "x": x.dtype, "y": y.dtype, "labels": labels.dtype, "linear_out": first.dtype,
            "weight": self.net[0].weight.dtype, "autocast": torch.is_autocast_enabled("cpu"),
        })
        if batch_idx == 0:
            self.epoch_losses.append([])
        self.epoch_losses[-1].append(loss.item())
        return loss

    def on_after_backward(self):
        self.grad_dtypes.append(self.net[0].weight.grad.dtype)

    def configure_optimizers(self):
        return _sgd(self.parameters())


class ValProbe(Probe):
    def validation_step(self, batch, batch_idx):
        x, y, labels = batch
        self.val_seen.append({"x": x.dtype, "linear_out": self.net[0](x).dtype})


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert p.dtype == q.dtype, name
        assert torch.equal(p, q), f"{name} differs from the raw loop by {(p.double() - q.double()).abs().max().item():.3g}"


def _raw_true(net: nn.Module, dtype: torch.dtype, epochs: int) -> nn.Module:
    """The hand-written loop for "*-true": weights and float inputs in `dtype`."""
    net = net.to(dtype)
    opt = _sgd(net.parameters())
    loader = _loader()
    for _ in range(epochs):
        for _, (x, y, _labels) in _epoch(loader):
            x, y = x.to(dtype), y.to(dtype)
            opt.zero_grad()
            F.mse_loss(net(x), y).backward()
            opt.step()
    return net


# ==========================================================================================
# parsing
# ==========================================================================================
@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "32-true"), ("32-true", "32-true"), (32, "32-true"), ("32", "32-true"),
     ("64-true", "64-true"), (64, "64-true"), ("64", "64-true"),
     ("16-mixed", "16-mixed"), (16, "16-mixed"), ("16", "16-mixed"),
     ("bf16-mixed", "bf16-mixed"), ("bf16", "bf16-mixed"),
     ("16-true", "16-true"), ("bf16-true", "bf16-true")],
)
def test_precision_aliases(tmp_path, given, expected):
    kwargs = {} if given is None else {"precision": given}
    assert quiet_trainer(tmp_path, **kwargs).precision == expected


@pytest.mark.parametrize("bad", ["fp8", "16-bit", "float32", 8, "bf32-true"])
def test_unknown_precision_lists_valid_values(tmp_path, bad):
    with pytest.raises(MisconfigurationException, match=r"Unknown precision\. Received: precision=") as exc:
        quiet_trainer(tmp_path, precision=bad)
    message = str(exc.value)
    assert repr(bad) in message and "Fix" in message
    for valid in VALID:
        assert f"'{valid}'" in message, f"{valid} not listed in: {message}"


# ==========================================================================================
# "*-true": weights and inputs in the dtype
# ==========================================================================================
@pytest.mark.parametrize("precision", [None, "32-true", 32, "32"])
def test_32_true_is_plain_float32_training(tmp_path, precision):
    net = _net()
    raw = copy.deepcopy(net)
    model = Probe(net)
    kwargs = {} if precision is None else {"precision": precision}
    quiet_trainer(tmp_path, max_epochs=2, **kwargs).fit(model, _loader())
    assert model.seen[0] == {
        "x": torch.float32, "y": torch.float32, "labels": torch.int64, "linear_out": torch.float32,
        "weight": torch.float32, "autocast": False,
    }
    _assert_same_weights(model.net, _raw_true(raw, torch.float32, epochs=2))


def test_64_true_casts_weights_and_float_batch(tmp_path):
    net = _net()
    raw = copy.deepcopy(net)
    model = ValProbe(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2, precision="64-true", num_sanity_val_steps=1)
    trainer.fit(model, _loader(), DataLoader(_dataset(8), batch_size=4))
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model.seen[0] == {
        "x": torch.float64, "y": torch.float64, "labels": torch.int64, "linear_out": torch.float64,
        "weight": torch.float64, "autocast": False,
    }
    assert set(model.grad_dtypes) == {torch.float64}
    assert model.val_seen and all(v == {"x": torch.float64, "linear_out": torch.float64} for v in model.val_seen)
    _assert_same_weights(model.net, _raw_true(raw, torch.float64, epochs=2))


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-true", torch.bfloat16), ("16-true", torch.float16)])
def test_low_precision_true_casts_weights_and_batch(tmp_path, precision, dtype):
    _cpu_kernel_or_skip(dtype, autocast=False)
    net = _net()
    raw = copy.deepcopy(net)
    model = Probe(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2, precision=precision)
    trainer.fit(model, _loader())
    assert all(p.dtype == dtype for p in model.parameters())
    assert model.seen[0] == {
        "x": dtype, "y": dtype, "labels": torch.int64, "linear_out": dtype, "weight": dtype, "autocast": False,
    }
    assert trainer.global_step == 10
    assert all(torch.isfinite(torch.tensor(losses)).all() for losses in model.epoch_losses)
    assert not any(torch.equal(p, q.to(dtype)) for p, q in zip(model.parameters(), _net().parameters()))
    _assert_same_weights(model.net, _raw_true(raw, dtype, epochs=2))


# ==========================================================================================
# "*-mixed": float32 weights, forward under autocast
# ==========================================================================================
def test_bf16_mixed_runs_forward_under_autocast_with_float32_weights(tmp_path):
    _cpu_kernel_or_skip(torch.bfloat16, autocast=True)
    net = _net()
    raw = copy.deepcopy(net)
    model = ValProbe(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2, precision="bf16-mixed", num_sanity_val_steps=1)
    trainer.fit(model, _loader(), DataLoader(_dataset(8), batch_size=4))
    assert model.seen[0] == {
        "x": torch.float32, "y": torch.float32, "labels": torch.int64, "linear_out": torch.bfloat16,
        "weight": torch.float32, "autocast": True,
    }
    assert set(model.grad_dtypes) == {torch.float32}  # backward outside autocast, grads in the weights' dtype
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.val_seen and all(v["linear_out"] == torch.bfloat16 for v in model.val_seen)
    assert trainer._precision.scaler is None

    # bf16 needs no loss scaling: nothing precision-specific is saved.
    trainer.save_checkpoint(tmp_path / "bf16.ckpt")
    assert "MixedPrecision" not in torch.load(tmp_path / "bf16.ckpt", weights_only=True)

    opt = _sgd(raw.parameters())
    loader = _loader()
    for _ in range(2):
        for _, (x, y, _labels) in _epoch(loader):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.mse_loss(raw(x), y.to(torch.bfloat16))
            loss.backward()
            opt.step()
    _assert_same_weights(model.net, raw)


def _raw_16_mixed(net: nn.Module, epochs: int, scaler: torch.amp.GradScaler) -> nn.Module:
    """The AMP recipe from the PyTorch docs, on CPU."""
    opt = _sgd(net.parameters())
    loader = _loader()
    for _ in range(epochs):
        for _, (x, y, _labels) in _epoch(loader):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = F.mse_loss(net(x), y.to(torch.float16))
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
    return net


def test_16_mixed_uses_grad_scaler_and_matches_amp_recipe(tmp_path):
    _cpu_kernel_or_skip(torch.float16, autocast=True)
    net = _net()
    raw = copy.deepcopy(net)
    model = Probe(net)
    trainer = quiet_trainer(tmp_path, max_epochs=15, precision="16-mixed")
    trainer.fit(model, _loader())

    assert model.seen[0]["linear_out"] == torch.float16 and model.seen[0]["autocast"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert set(model.grad_dtypes) == {torch.float32}
    scaler = trainer._precision.scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()

    raw_scaler = torch.amp.GradScaler("cpu")
    _raw_16_mixed(raw, epochs=15, scaler=raw_scaler)
    _assert_same_weights(model.net, raw)
    # Same scaler history as the recipe, including the steps it skipped: the initial scale of
    # 2**16 overflows float16 gradients on this problem, so the scale was backed off.
    assert scaler.state_dict() == raw_scaler.state_dict()
    assert scaler.state_dict()["scale"] < 65536.0
    assert trainer.global_step == 75  # a skipped (overflowed) step still counts, as in Lightning

    # Converges on the toy regression: the mean epoch loss falls more than tenfold (about 5.0 -> 0.1).
    first, last = sum(model.epoch_losses[0]) / 5, sum(model.epoch_losses[-1]) / 5
    assert last < 0.1 * first, (first, last)


def test_16_mixed_scaler_state_saved_and_restored_on_resume(tmp_path):
    _cpu_kernel_or_skip(torch.float16, autocast=True)
    trainer = quiet_trainer(tmp_path, max_epochs=2, precision="16-mixed")
    trainer.fit(Probe(_net()), _loader())
    path = tmp_path / "amp.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["MixedPrecision"] == trainer._precision.scaler.state_dict()
    raw_scaler = torch.amp.GradScaler("cpu")
    _raw_16_mixed(_net(), epochs=2, scaler=raw_scaler)
    assert checkpoint["MixedPrecision"] == raw_scaler.state_dict()
    assert set(checkpoint["MixedPrecision"]) == {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}

    # Resume from a checkpoint with a distinctive scaler state.
    checkpoint["MixedPrecision"].update(scale=1024.0, _growth_tracker=3)
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)

    class SeesScaler(Probe):
        def on_train_start(self):
            self.scaler_at_start = self.trainer._precision.scaler.state_dict()

    model = SeesScaler(_net())
    resumed = quiet_trainer(tmp_path, max_epochs=3, precision="16-mixed")
    resumed.fit(model, _loader(), ckpt_path=edited)
    assert model.scaler_at_start["scale"] == 1024.0 and model.scaler_at_start["_growth_tracker"] == 3
    assert resumed.current_epoch == 3 and resumed.global_step == 15
    # One more epoch (5 steps, none overflowing) continued from the restored state.
    final = resumed._precision.scaler.state_dict()
    assert final["scale"] == 1024.0 and final["_growth_tracker"] == 8


def test_16_mixed_rejects_lbfgs(tmp_path):
    _cpu_kernel_or_skip(torch.float16, autocast=True)

    class WithLBFGS(Probe):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters())

    with pytest.raises(MisconfigurationException, match=r"Received: precision='16-mixed' with LBFGS") as exc:
        quiet_trainer(tmp_path, max_epochs=1, precision="16-mixed").fit(WithLBFGS(_net()), _loader())
    assert "Fix" in str(exc.value)
