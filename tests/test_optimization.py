"""Tests for optimization: the training step against a raw PyTorch loop, every
`configure_optimizers` form, scheduler stepping, manual optimization and the step hooks.

Equivalence tests build the same network twice (same seed), feed both the same batches
(a DataLoader shuffled by a seeded generator) and compare every parameter bit for bit with
`torch.equal`: fulmen must do exactly the arithmetic of the raw loop, no more, no less.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl
from fulmen.errors import MisconfigurationException
from fulmen.optim import LightningOptimizer

from helpers import quiet_trainer

N_SAMPLES, BATCH = 40, 4  # 10 batches per epoch


def _dataset(n: int = N_SAMPLES, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def _loader(dataset: TensorDataset | None = None, batch_size: int = BATCH, seed: int = 1) -> DataLoader:
    """A shuffled loader whose order depends only on `seed`: two such loaders yield the same batches."""
    dataset = dataset if dataset is not None else _dataset()
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


class Regressor(pl.LightningModule):
    """Wraps a plain network; `make_optimizer(params)` builds what configure_optimizers returns."""

    def __init__(self, net: nn.Module, make_optimizer=_sgd):
        super().__init__()
        self.net = net
        self.make_optimizer = make_optimizer
        self.training_step_calls = 0

    def training_step(self, batch, batch_idx):
        self.training_step_calls += 1
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())


def _assert_same_weights(fulmen_net: nn.Module, raw_net: nn.Module) -> None:
    pairs = list(zip(fulmen_net.named_parameters(), raw_net.parameters()))
    assert len(pairs) == len(list(raw_net.parameters())) > 0
    for (name, p), q in pairs:
        assert torch.equal(p, q), f"parameter {name} differs from the raw loop by {(p - q).abs().max().item():.3g}"


def _assert_changed(net: nn.Module, initial: nn.Module) -> None:
    assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), initial.parameters())), "nothing trained"


def _epoch(loader: DataLoader):
    """One epoch of `(batch_idx, batch)` the way Lightning and fulmen iterate: exactly
    len(loader) batches, without asking the iterator for one more.

    This matters for reproducing the shuffle: an exhausted RandomSampler draws one more
    permutation from its generator, so a plain `for batch in loader` would shuffle the
    second and later epochs differently (checked against pytorch-lightning 2.6.6).
    """
    return zip(range(len(loader)), loader)


def _raw_fit(net, optimizer, loader, epochs, accumulate=1, clip=None, skip=None):
    """The reference: a plain PyTorch loop. Returns the number of optimizer steps taken.

    `clip` is ("norm" | "value", threshold); `skip(batch_idx)` -> True skips that batch entirely.
    """
    steps = 0
    n = len(loader)
    for _ in range(epochs):
        for i, (x, y) in _epoch(loader):
            if skip is not None and skip(i):
                continue
            if i % accumulate == 0:
                optimizer.zero_grad()
            loss = F.mse_loss(net(x), y)
            (loss / accumulate if accumulate > 1 else loss).backward()
            if (i + 1) % accumulate == 0 or i + 1 == n:
                if clip is not None:
                    kind, value = clip
                    if kind == "norm":
                        torch.nn.utils.clip_grad_norm_(net.parameters(), value)
                    else:
                        torch.nn.utils.clip_grad_value_(net.parameters(), value)
                optimizer.step()
                steps += 1
    return steps


# ==========================================================================================
# equivalence with a raw PyTorch loop
# ==========================================================================================
def test_sgd_momentum_matches_raw_loop_bitwise(tmp_path):
    net = _net()
    initial, raw = copy.deepcopy(net), copy.deepcopy(net)
    model = Regressor(net)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, _loader())

    raw_steps = _raw_fit(raw, _sgd(raw.parameters()), _loader(), epochs=3)
    assert raw_steps == 30
    assert trainer.global_step == 30 and trainer.current_epoch == 3
    assert model.training_step_calls == 30
    _assert_changed(model.net, initial)
    _assert_same_weights(model.net, raw)


def test_max_steps_matches_raw_loop_prefix(tmp_path):
    # max_steps=7 stops in the middle of the first epoch, after exactly 7 optimizer steps.
    net = _net()
    raw = copy.deepcopy(net)
    model = Regressor(net)
    trainer = quiet_trainer(tmp_path, max_steps=7)
    trainer.fit(model, _loader())
    assert trainer.global_step == 7 and model.training_step_calls == 7

    opt = _sgd(raw.parameters())
    for i, (x, y) in enumerate(_loader()):
        if i == 7:
            break
        opt.zero_grad()
        F.mse_loss(raw(x), y).backward()
        opt.step()
    _assert_same_weights(model.net, raw)


def test_accumulate_grad_batches_matches_raw_loop(tmp_path):
    # 10 batches, accumulate 3: windows [0,1,2] [3,4,5] [6,7,8] [9] -> 4 steps per epoch,
    # the last one on the final (partial) window, the loss always divided by 3.
    net = _net()
    raw = copy.deepcopy(net)
    model = Regressor(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=3)
    trainer.fit(model, _loader())

    raw_steps = _raw_fit(raw, _sgd(raw.parameters()), _loader(), epochs=2, accumulate=3)
    assert raw_steps == 8
    assert trainer.global_step == 8
    assert model.training_step_calls == 20
    _assert_same_weights(model.net, raw)


@pytest.mark.parametrize(("algorithm", "value"), [("norm", 0.05), ("value", 0.01)])
def test_gradient_clipping_matches_torch_clip_functions(tmp_path, algorithm, value):
    net = _net()
    raw = copy.deepcopy(net)
    model = Regressor(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2, gradient_clip_val=value, gradient_clip_algorithm=algorithm)
    trainer.fit(model, _loader())
    _raw_fit(raw, _sgd(raw.parameters()), _loader(), epochs=2, clip=(algorithm, value))
    _assert_same_weights(model.net, raw)

    # The threshold is small enough that clipping really changes the gradients: training
    # without it ends elsewhere.
    unclipped = copy.deepcopy(_net())
    _raw_fit(unclipped, _sgd(unclipped.parameters()), _loader(), epochs=2)
    assert not all(torch.equal(p, q) for p, q in zip(model.net.parameters(), unclipped.parameters()))


def test_lbfgs_closure_reevaluated_matches_raw_loop(tmp_path):
    def make_lbfgs(params):
        return torch.optim.LBFGS(params, lr=0.5, max_iter=4, history_size=4)

    net = _net()
    raw = copy.deepcopy(net)
    model = Regressor(net, make_lbfgs)
    loader_kwargs = dict(batch_size=20)  # 2 batches per epoch
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, _loader(**loader_kwargs))

    opt = make_lbfgs(raw.parameters())
    raw_calls = 0
    loader = _loader(**loader_kwargs)
    for _ in range(2):
        for _, (x, y) in _epoch(loader):
            def closure():
                nonlocal raw_calls
                raw_calls += 1
                opt.zero_grad()
                loss = F.mse_loss(raw(x), y)
                loss.backward()
                return loss

            opt.step(closure)
    assert trainer.global_step == 4  # one optimizer step per batch, however many closure calls
    assert raw_calls > 4  # LBFGS evaluates the closure several times per step
    assert model.training_step_calls == raw_calls
    _assert_same_weights(model.net, raw)


# ==========================================================================================
# configure_optimizers forms and schedulers
# ==========================================================================================
class LRProbe(pl.LightningModule):
    """A linear model that records the first optimizer's LR at each epoch and batch start."""

    def __init__(self, configure, script=None):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.configure = configure
        self.script = script  # per-epoch value logged as "score"
        self.epoch_lrs: list[float] = []
        self.batch_lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.script is not None:
            self.log("score", self.script[self.current_epoch], on_step=False, on_epoch=True)
        # Scaled down so that learning rates like 1.0 (easy to read in asserts) stay stable.
        return 1e-3 * F.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return self.configure(self)

    def _lr(self) -> float | None:
        optimizers = self.trainer.optimizers
        return optimizers[0].param_groups[0]["lr"] if optimizers else None

    def on_train_epoch_start(self):
        self.epoch_lrs.append(self._lr())

    def on_train_batch_start(self, batch, batch_idx):
        self.batch_lrs.append(self._lr())


def _small_loader() -> DataLoader:
    return _loader(_dataset(16), batch_size=4)  # 4 batches per epoch


def test_single_optimizer_and_list_of_one(tmp_path):
    for form in ("single", "list"):
        captured = {}

        def configure(m):
            captured["opt"] = torch.optim.SGD(m.parameters(), lr=0.1)
            return captured["opt"] if form == "single" else [captured["opt"]]

        model = LRProbe(configure)
        initial = copy.deepcopy(model.layer)
        trainer = quiet_trainer(tmp_path, max_epochs=2)
        trainer.fit(model, _small_loader())
        assert trainer.optimizers == [captured["opt"]]
        assert trainer.lr_scheduler_configs == [] and model.lr_schedulers() is None
        assert trainer.global_step == 8
        assert model.epoch_lrs == [0.1, 0.1]
        _assert_changed(model.layer, initial)


@pytest.mark.parametrize("form", ["tuple_of_lists", "dict_with_scheduler", "dict_with_config"])
def test_epoch_scheduler_steplr(tmp_path, form):
    # StepLR(step_size=2, gamma=0.1) stepped once per epoch: lr 1, 1, 0.1, 0.1, 0.01.
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
        if form == "tuple_of_lists":
            return [opt], [sched]
        if form == "dict_with_scheduler":
            return {"optimizer": opt, "lr_scheduler": sched}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=5)
    trainer.fit(model, _loader(_dataset(8), batch_size=4))  # 2 batches per epoch
    assert model.epoch_lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert model.batch_lrs == pytest.approx([1.0] * 4 + [0.1] * 4 + [0.01] * 2)
    assert len(trainer.lr_scheduler_configs) == 1
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "epoch" and config.frequency == 1
    assert model.lr_schedulers() is trainer.lr_scheduler_configs[0].scheduler
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 5


def test_step_scheduler_with_frequency_and_name(tmp_path):
    # interval "step", frequency 2: StepLR(step_size=1, gamma=0.5) halves the LR every second
    # optimizer step. 4 batches per epoch, 2 epochs -> LR seen at batch start: 1,1,.5,.5,.25,.25,.125,.125
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 2, "name": "halver"}}

    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, _small_loader())
    assert model.batch_lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1.0 / 16)
    config = trainer.lr_scheduler_configs[0]
    assert (config.name, config.interval, config.frequency) == ("halver", "step", 2)


def test_epoch_scheduler_with_frequency_two(tmp_path):
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "frequency": 2}}

    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=5)
    trainer.fit(model, _loader(_dataset(8), batch_size=8))
    assert model.epoch_lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_step_scheduler_counts_optimizer_steps_under_accumulation(tmp_path):
    # interval "step" follows optimizer steps, not batches: 8 batches, accumulate 2 -> 4 steps,
    # so a StepLR(step_size=1, gamma=0.5) halves the LR 4 times.
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2)
    trainer.fit(model, _loader(_dataset(16), batch_size=2))
    assert trainer.global_step == 4
    assert model.batch_lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1.0 / 16)


PLATEAU_SCRIPT = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("monitor_at", ["scheduler_config", "top_level"])
def test_reduce_on_plateau_steps_on_monitored_metric(tmp_path, monitor_at):
    # mode="min", patience=1: epoch 1 improves, epochs 2-3 do not -> the LR drops after epoch 3,
    # and again after epoch 5.
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=1)
        if monitor_at == "top_level":
            return {"optimizer": opt, "lr_scheduler": sched, "monitor": "score"}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "score"}}

    model = LRProbe(configure, script=PLATEAU_SCRIPT)
    trainer = quiet_trainer(tmp_path, max_epochs=len(PLATEAU_SCRIPT))
    trainer.fit(model, _loader(_dataset(8), batch_size=4))

    # The same decisions from a bare ReduceLROnPlateau fed the same values.
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="min", factor=0.1, patience=1)
    expected = []
    for value in PLATEAU_SCRIPT:
        expected.append(ref_opt.param_groups[0]["lr"])
        ref.step(value)
    assert expected == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01])
    assert model.epoch_lrs == pytest.approx(expected)
    config = trainer.lr_scheduler_configs[0]
    assert config.reduce_on_plateau and config.monitor == "score"


def test_reduce_on_plateau_on_validation_metric(tmp_path):
    class ValProbe(LRProbe):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.tensor(3.0))  # never improves after the first epoch

    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}

    model = ValProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=4, num_sanity_val_steps=0)
    trainer.fit(model, _loader(_dataset(8), batch_size=4), _loader(_dataset(8), batch_size=4))
    assert model.epoch_lrs == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_reduce_on_plateau_missing_monitor_strict_raises(tmp_path):
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_acc"}}

    model = LRProbe(configure, script=PLATEAU_SCRIPT)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with pytest.raises(MisconfigurationException, match=r"monitors 'val_acc', which was not logged") as exc:
        trainer.fit(model, _small_loader())
    assert "available: ['score']" in str(exc.value) and "'strict': False" in str(exc.value)


def test_reduce_on_plateau_missing_monitor_not_strict_warns_and_skips(tmp_path):
    def configure(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_acc", "strict": False}}

    model = LRProbe(configure, script=PLATEAU_SCRIPT)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    with pytest.warns(UserWarning, match=r"ReduceLROnPlateau skipped: 'val_acc' not in callback_metrics"):
        trainer.fit(model, _small_loader())
    assert trainer.current_epoch == 3
    assert model.epoch_lrs == [1.0, 1.0, 1.0]
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 0  # never stepped


def test_configure_optimizers_none_warns_and_trains_without_stepping(tmp_path):
    model = LRProbe(lambda m: None)
    initial = copy.deepcopy(model.layer)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="configure_optimizers returned None"):
        trainer.fit(model, _small_loader())
    assert trainer.optimizers == [] and trainer.lr_scheduler_configs == []
    assert trainer.current_epoch == 2
    _assert_same_weights(model.layer, initial)
    assert model.layer.weight.grad is not None  # training_step and backward did run


def test_configure_optimizers_none_still_ends_at_max_steps(tmp_path):
    # As Lightning (which steps a mock optimizer), each batch counts as a step, so max_steps ends the run.
    model = LRProbe(lambda m: None)
    trainer = quiet_trainer(tmp_path, max_steps=5)
    with pytest.warns(UserWarning, match="configure_optimizers returned None"):
        trainer.fit(model, _small_loader())
    assert trainer.global_step == 5
    assert model.batch_lrs == [None] * 5


def test_two_optimizers_under_automatic_optimization_raise(tmp_path):
    def configure(m):
        return [torch.optim.SGD(m.parameters(), lr=0.1), torch.optim.Adam(m.parameters())], []

    with pytest.raises(MisconfigurationException, match=r"configure_optimizers returned 2") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(LRProbe(configure), _small_loader())
    assert "automatic_optimization = False" in str(exc.value)


# ==========================================================================================
# malformed configure_optimizers returns
# ==========================================================================================
def _opt(m):
    return torch.optim.SGD(m.parameters(), lr=0.1)


def _steplr(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1)


def _with_scheduler_config(**config):
    def configure(m):
        opt = _opt(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _steplr(opt), **config}}

    return configure


def _scheduler_on_foreign_optimizer(m):
    foreign = torch.optim.SGD(m.parameters(), lr=0.1)
    return {"optimizer": _opt(m), "lr_scheduler": _steplr(foreign)}


def _plateau_without_monitor(m):
    opt = _opt(m)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)}


MALFORMED = {
    "string": (lambda m: "adam", r"Received: str \('adam'\)"),
    "two_letter_string": (lambda m: "ab", r"Received: str \('ab'\)"),
    "dict_without_optimizer": (
        lambda m: {"lr_scheduler": _steplr(_opt(m))}, r"dict without an 'optimizer' key. Received: keys \['lr_scheduler'\]"
    ),
    "dict_with_unknown_key": (
        lambda m: {"optimizer": _opt(m), "lr_schedular": None}, r"unknown keys \['lr_schedular'\]"
    ),
    "scheduler_dict_without_scheduler": (
        lambda m: {"optimizer": _opt(m), "lr_scheduler": {"interval": "step"}},
        r"needs a 'scheduler' key .* Received: keys \['interval'\]",
    ),
    "bad_interval": (_with_scheduler_config(interval="batch"), r"Received: interval='batch'"),
    "frequency_zero": (_with_scheduler_config(frequency=0), r"Received: frequency=0"),
    "scheduler_on_optimizer_not_returned": (_scheduler_on_foreign_optimizer, r"did not return"),
    "plateau_without_monitor": (_plateau_without_monitor, r"no 'monitor' was given. Received: monitor=None"),
    "non_optimizer_in_list": (lambda m: [_opt(m), "sgd"], r"Received: str"),
    "scheduler_in_optimizer_list": (lambda m: [_opt(m), _steplr(_opt(m))], r"Received: StepLR"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_configure_optimizers_raise_clear_error(tmp_path, case):
    configure, fragment = MALFORMED[case]
    model = LRProbe(configure)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    with pytest.raises(MisconfigurationException, match=fragment) as exc:
        trainer.fit(model, _small_loader())
    message = str(exc.value)
    assert "Received" in message and "Fix" in message, message
    assert trainer.global_step == 0 and model.batch_lrs == []  # rejected before the first step


# ==========================================================================================
# manual optimization
# ==========================================================================================
def _gan_data() -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    real = torch.randn(24, 2, generator=g) * 0.5 + torch.tensor([2.0, -1.0])
    noise = torch.randn(24, 2, generator=g)  # in the batch, so both loops see the same noise
    return TensorDataset(real, noise)


def _gan_nets():
    torch.manual_seed(0)
    return nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))


def _gan_optimizers(generator, discriminator):
    g_opt = torch.optim.SGD(generator.parameters(), lr=0.1, momentum=0.5)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=0.01)
    return g_opt, d_opt, torch.optim.lr_scheduler.StepLR(g_opt, step_size=1, gamma=0.5)


def _g_loss(generator, discriminator, noise):
    return F.softplus(-discriminator(generator(noise))).mean()


def _d_loss(generator, discriminator, real, noise):
    return F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(generator(noise).detach())).mean()


class TinyGAN(pl.LightningModule):
    def __init__(self, generator, discriminator):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.requires_grad_seen: list[tuple[bool, bool]] = []

    def training_step(self, batch, batch_idx):
        real, noise = batch
        g_opt, d_opt = self.optimizers()
        assert isinstance(g_opt, LightningOptimizer) and isinstance(g_opt.optimizer, torch.optim.SGD)

        self.toggle_optimizer(g_opt)
        self.requires_grad_seen.append(
            (self.generator.weight.requires_grad, self.discriminator[0].weight.requires_grad)
        )
        g_loss = _g_loss(self.generator, self.discriminator, noise)
        self.manual_backward(g_loss)
        g_opt.step()
        g_opt.zero_grad()
        self.untoggle_optimizer(g_opt)

        self.toggle_optimizer(d_opt)
        self.requires_grad_seen.append(
            (self.generator.weight.requires_grad, self.discriminator[0].weight.requires_grad)
        )
        d_loss = _d_loss(self.generator, self.discriminator, real, noise)
        self.manual_backward(d_loss)
        d_opt.step()
        d_opt.zero_grad()
        self.untoggle_optimizer(d_opt)
        self.log_dict({"g_loss": g_loss, "d_loss": d_loss})

    def on_train_epoch_end(self):
        self.lr_schedulers().step()  # under manual optimization the user steps schedulers

    def configure_optimizers(self):
        g_opt, d_opt, g_sched = _gan_optimizers(self.generator, self.discriminator)
        return [{"optimizer": g_opt, "lr_scheduler": g_sched}, {"optimizer": d_opt}]


def test_manual_optimization_two_optimizers_matches_raw_loop(tmp_path):
    generator, discriminator = _gan_nets()
    raw_g, raw_d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    model = TinyGAN(generator, discriminator)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, _loader(_gan_data(), batch_size=6))  # 4 batches per epoch

    g_opt, d_opt, g_sched = _gan_optimizers(raw_g, raw_d)
    loader = _loader(_gan_data(), batch_size=6)
    for _ in range(3):
        for _, (real, noise) in _epoch(loader):
            raw_d.requires_grad_(False)
            _g_loss(raw_g, raw_d, noise).backward()
            g_opt.step()
            g_opt.zero_grad()
            raw_d.requires_grad_(True)
            raw_g.requires_grad_(False)
            _d_loss(raw_g, raw_d, real, noise).backward()
            d_opt.step()
            d_opt.zero_grad()
            raw_g.requires_grad_(True)
        g_sched.step()

    assert trainer.global_step == 2 * 4 * 3  # every opt.step() counts
    assert trainer.current_epoch == 3
    # toggle_optimizer froze the other network; untoggle restored everything.
    assert model.requires_grad_seen[:2] == [(True, False), (False, True)]
    assert all(p.requires_grad for p in model.parameters())
    # The scheduler was stepped by the user only (3 times), not also by the Trainer.
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3
    _assert_same_weights(model.generator, raw_g)
    _assert_same_weights(model.discriminator, raw_d)


def test_manual_backward_under_automatic_optimization_raises(tmp_path):
    class Wrong(Regressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.manual_backward(loss)
            return loss

    with pytest.raises(MisconfigurationException, match=r"manual_backward is for manual optimization") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(Wrong(_net()), _loader())
    assert "self.automatic_optimization = False" in str(exc.value)


def test_gradient_clip_val_with_manual_optimization_raises(tmp_path):
    generator, discriminator = _gan_nets()
    trainer = quiet_trainer(tmp_path, max_epochs=1, gradient_clip_val=1.0)
    with pytest.raises(MisconfigurationException, match=r"Received: gradient_clip_val=1.0 with automatic_optimization=False") as exc:
        trainer.fit(TinyGAN(generator, discriminator), _loader(_gan_data(), batch_size=6))
    assert "self.clip_gradients" in str(exc.value)
    assert trainer.global_step == 0


# ==========================================================================================
# step hooks
# ==========================================================================================
def test_on_before_optimizer_step_sees_unclipped_gradients_before_the_step(tmp_path):
    class GradProbe(Regressor):
        def __init__(self, net):
            super().__init__(net)
            self.seen: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []

        def on_before_optimizer_step(self, optimizer):
            grads = [p.grad.clone() for p in self.parameters()]
            weights = [p.detach().clone() for p in self.parameters()]
            self.seen.append((grads, weights))

    net = _net()
    raw = copy.deepcopy(net)
    model = GradProbe(net)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=3, gradient_clip_val=0.01)
    trainer.fit(model, _loader())

    opt = _sgd(raw.parameters())
    expected = []
    for i, (x, y) in enumerate(_loader()):
        if i == 3:
            break
        opt.zero_grad()
        F.mse_loss(raw(x), y).backward()
        expected.append(([p.grad.clone() for p in raw.parameters()], [p.detach().clone() for p in raw.parameters()]))
        torch.nn.utils.clip_grad_norm_(raw.parameters(), 0.01)
        opt.step()

    assert len(model.seen) == 3
    for (grads, weights), (raw_grads, raw_weights) in zip(model.seen, expected):
        assert all(torch.equal(a, b) for a, b in zip(grads, raw_grads))  # before clipping
        assert all(torch.equal(a, b) for a, b in zip(weights, raw_weights))  # before the step
    assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in model.seen[0][0]])) > 0.01
    _assert_same_weights(model.net, raw)


def test_optimizer_step_override_skips_odd_batches(tmp_path):
    class EvenSteps(Regressor):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            if batch_idx % 2 == 0:
                optimizer.step(closure=optimizer_closure)
            else:
                optimizer_closure()  # still run training_step and backward, but do not step

    net = _net()
    raw = copy.deepcopy(net)
    model = EvenSteps(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, _loader())
    _raw_fit(raw, _sgd(raw.parameters()), _loader(), epochs=2, skip=lambda i: i % 2 == 1)
    # As in Lightning 2.6, global_step counts optimizer_step calls (one per batch here), not
    # the real steps inside them: max_steps and "step" schedulers follow the same count.
    assert trainer.global_step == 20
    assert model.training_step_calls == 20
    _assert_same_weights(model.net, raw)


def test_on_train_batch_start_minus_one_ends_the_epoch(tmp_path):
    class StopsEarly(Regressor):
        def on_train_batch_start(self, batch, batch_idx):
            return -1 if batch_idx == 2 else None

    net = _net()
    raw = copy.deepcopy(net)
    model = StopsEarly(net)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, _loader())
    assert trainer.current_epoch == 3  # every epoch still ends normally
    assert model.training_step_calls == 6 and trainer.global_step == 6

    opt = _sgd(raw.parameters())
    loader = _loader()
    for _ in range(3):
        for i, (x, y) in enumerate(loader):  # breaks after fetching batch 2, as fulmen does
            if i == 2:
                break
            opt.zero_grad()
            F.mse_loss(raw(x), y).backward()
            opt.step()
    _assert_same_weights(model.net, raw)


# ==========================================================================================
# training_step returning None
# ==========================================================================================
def test_training_step_returning_none_everywhere_leaves_weights_unchanged(tmp_path):
    class Skips(Regressor):
        def training_step(self, batch, batch_idx):
            self.training_step_calls += 1
            return None

    net = _net()
    initial = copy.deepcopy(net)
    model = Skips(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # None for every batch of the first epoch is the forgotten `return loss`: an error at its end.
        with pytest.raises(MisconfigurationException, match="returned None for every batch of the first epoch"):
            trainer.fit(model, _loader())
    none_warnings = [w for w in record if "training_step returned None" in str(w.message)]
    assert len(none_warnings) == 1  # once, not once per batch
    assert "Skips.training_step returned None, so this batch is skipped" in str(none_warnings[0].message)
    assert model.training_step_calls == 10
    _assert_same_weights(model.net, initial)
    assert all(p.grad is None for p in model.parameters())  # no backward ran
    assert all(not s for s in trainer.optimizers[0].state.values())  # no momentum buffer either


def test_training_step_returning_none_on_some_batches_skips_only_those(tmp_path):
    class SkipsOdd(Regressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return None if batch_idx % 2 else loss

    net = _net()
    raw = copy.deepcopy(net)
    model = SkipsOdd(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="training_step returned None"):
        trainer.fit(model, _loader())
    _raw_fit(raw, _sgd(raw.parameters()), _loader(), epochs=2, skip=lambda i: i % 2 == 1)
    _assert_same_weights(model.net, raw)
    # As in Lightning 2.6, the optimizer step is still called (it has no gradients to apply),
    # so global_step counts every batch.
    assert trainer.global_step == 20
