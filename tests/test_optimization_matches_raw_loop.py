"""The optimization step does exactly the arithmetic of a raw PyTorch loop, no more, no less:
automatic optimization (SGD with momentum, max_steps, gradient accumulation, gradient clipping,
LBFGS with its re-evaluated closure), manual optimization with two optimizers, the step hooks
(on_before_optimizer_step, an overridden optimizer_step, on_train_batch_start returning -1) and
training_step returning None.

Each test builds the same network twice (same seed), feeds both the same batches (a DataLoader
shuffled by a seeded generator) and compares every parameter bit for bit with `torch.equal`.
Every `configure_optimizers` form and scheduler stepping are in test_configure_optimizers.py.
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

from helpers import assert_same_weights, assert_weights_changed, quiet_trainer, seeded_loader


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
    trainer.fit(model, seeded_loader())

    raw_steps = _raw_fit(raw, _sgd(raw.parameters()), seeded_loader(), epochs=3)
    assert raw_steps == 30
    assert trainer.global_step == 30 and trainer.current_epoch == 3
    assert model.training_step_calls == 30
    assert_weights_changed(model.net, initial)
    assert_same_weights(model.net, raw)


def test_max_steps_matches_raw_loop_prefix(tmp_path):
    # max_steps=7 stops in the middle of the first epoch, after exactly 7 optimizer steps.
    net = _net()
    raw = copy.deepcopy(net)
    model = Regressor(net)
    trainer = quiet_trainer(tmp_path, max_steps=7)
    trainer.fit(model, seeded_loader())
    assert trainer.global_step == 7 and model.training_step_calls == 7

    opt = _sgd(raw.parameters())
    for i, (x, y) in enumerate(seeded_loader()):
        if i == 7:
            break
        opt.zero_grad()
        F.mse_loss(raw(x), y).backward()
        opt.step()
    assert_same_weights(model.net, raw)


def test_accumulate_grad_batches_matches_raw_loop(tmp_path):
    # 10 batches, accumulate 3: windows [0,1,2] [3,4,5] [6,7,8] [9] -> 4 steps per epoch,
    # the last one on the final (partial) window, the loss always divided by 3.
    net = _net()
    raw = copy.deepcopy(net)
    model = Regressor(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=3)
    trainer.fit(model, seeded_loader())

    raw_steps = _raw_fit(raw, _sgd(raw.parameters()), seeded_loader(), epochs=2, accumulate=3)
    assert raw_steps == 8
    assert trainer.global_step == 8
    assert model.training_step_calls == 20
    assert_same_weights(model.net, raw)


@pytest.mark.parametrize(("algorithm", "value"), [("norm", 0.05), ("value", 0.01)])
def test_gradient_clipping_matches_torch_clip_functions(tmp_path, algorithm, value):
    net = _net()
    raw = copy.deepcopy(net)
    model = Regressor(net)
    trainer = quiet_trainer(tmp_path, max_epochs=2, gradient_clip_val=value, gradient_clip_algorithm=algorithm)
    trainer.fit(model, seeded_loader())
    _raw_fit(raw, _sgd(raw.parameters()), seeded_loader(), epochs=2, clip=(algorithm, value))
    assert_same_weights(model.net, raw)

    # The threshold is small enough that clipping really changes the gradients: training
    # without it ends elsewhere.
    unclipped = copy.deepcopy(_net())
    _raw_fit(unclipped, _sgd(unclipped.parameters()), seeded_loader(), epochs=2)
    assert not all(torch.equal(p, q) for p, q in zip(model.net.parameters(), unclipped.parameters()))


def test_lbfgs_closure_reevaluated_matches_raw_loop(tmp_path):
    def make_lbfgs(params):
        return torch.optim.LBFGS(params, lr=0.5, max_iter=4, history_size=4)

    net = _net()
    raw = copy.deepcopy(net)
    model = Regressor(net, make_lbfgs)
    loader_kwargs = dict(batch_size=20)  # 2 batches per epoch
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, seeded_loader(**loader_kwargs))

    opt = make_lbfgs(raw.parameters())
    raw_calls = 0
    loader = seeded_loader(**loader_kwargs)
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
    assert_same_weights(model.net, raw)


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
    trainer.fit(model, seeded_loader(_gan_data(), batch_size=6))  # 4 batches per epoch

    g_opt, d_opt, g_sched = _gan_optimizers(raw_g, raw_d)
    loader = seeded_loader(_gan_data(), batch_size=6)
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
    assert_same_weights(model.generator, raw_g)
    assert_same_weights(model.discriminator, raw_d)


def test_manual_backward_under_automatic_optimization_raises(tmp_path):
    class Wrong(Regressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.manual_backward(loss)
            return loss

    with pytest.raises(MisconfigurationException, match=r"manual_backward is for manual optimization") as exc:
        quiet_trainer(tmp_path, max_epochs=1).fit(Wrong(_net()), seeded_loader())
    assert "self.automatic_optimization = False" in str(exc.value)


def test_gradient_clip_val_with_manual_optimization_raises(tmp_path):
    generator, discriminator = _gan_nets()
    trainer = quiet_trainer(tmp_path, max_epochs=1, gradient_clip_val=1.0)
    with pytest.raises(MisconfigurationException, match=r"Received: gradient_clip_val=1.0 with automatic_optimization=False") as exc:
        trainer.fit(TinyGAN(generator, discriminator), seeded_loader(_gan_data(), batch_size=6))
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
    trainer.fit(model, seeded_loader())

    opt = _sgd(raw.parameters())
    expected = []
    for i, (x, y) in enumerate(seeded_loader()):
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
    assert_same_weights(model.net, raw)


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
    trainer.fit(model, seeded_loader())
    _raw_fit(raw, _sgd(raw.parameters()), seeded_loader(), epochs=2, skip=lambda i: i % 2 == 1)
    # As in Lightning 2.6, global_step counts optimizer_step calls (one per batch here), not
    # the real steps inside them: max_steps and "step" schedulers follow the same count.
    assert trainer.global_step == 20
    assert model.training_step_calls == 20
    assert_same_weights(model.net, raw)


def test_on_train_batch_start_minus_one_ends_the_epoch(tmp_path):
    class StopsEarly(Regressor):
        def on_train_batch_start(self, batch, batch_idx):
            return -1 if batch_idx == 2 else None

    net = _net()
    raw = copy.deepcopy(net)
    model = StopsEarly(net)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, seeded_loader())
    assert trainer.current_epoch == 3  # every epoch still ends normally
    assert model.training_step_calls == 6 and trainer.global_step == 6

    opt = _sgd(raw.parameters())
    loader = seeded_loader()
    for _ in range(3):
        for i, (x, y) in enumerate(loader):  # breaks after fetching batch 2, as fulmen does
            if i == 2:
                break
            opt.zero_grad()
            F.mse_loss(raw(x), y).backward()
            opt.step()
    assert_same_weights(model.net, raw)


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
            trainer.fit(model, seeded_loader())
    none_warnings = [w for w in record if "training_step returned None" in str(w.message)]
    assert len(none_warnings) == 1  # once, not once per batch
    assert "Skips.training_step returned None, so this batch is skipped" in str(none_warnings[0].message)
    assert model.training_step_calls == 10
    assert_same_weights(model.net, initial)
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
        trainer.fit(model, seeded_loader())
    _raw_fit(raw, _sgd(raw.parameters()), seeded_loader(), epochs=2, skip=lambda i: i % 2 == 1)
    assert_same_weights(model.net, raw)
    # As in Lightning 2.6, the optimizer step is still called (it has no gradients to apply),
    # so global_step counts every batch.
    assert trainer.global_step == 20
