"""The callbacks that change what trains: GradientAccumulationScheduler (steps per epoch, its
argument checks), BackboneFinetuning (freeze, unfreeze with the right learning rate, resume before
and after the unfreeze), StochasticWeightAveraging (the average of the epoch-start weights,
batch-norm statistics recomputed, also over several training loaders), WeightAveraging and
EMAWeightAveraging (hand-computed averages, used for validation, checkpoint layout and resume)
and ModelPruning (exact, permanent sparsity; global pruning over epochs with the lottery ticket).
Each is checked by counting optimizer steps or comparing weights with hand-computed values.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fulmen as pl
from fulmen.callbacks import (
    BackboneFinetuning,
    EMAWeightAveraging,
    GradientAccumulationScheduler,
    LambdaCallback,
    ModelPruning,
    StochasticWeightAveraging,
    WeightAveraging,
)
from fulmen.errors import MisconfigurationException

from helpers import SmallRegressor, quiet_trainer, sum_loader


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# --- GradientAccumulationScheduler -------------------------------------------------------------------
@pytest.mark.parametrize("customised", [False, True])
def test_accumulation_scheduler_steps_per_epoch(tmp_path, customised):
    steps: list[int] = []

    class Counting(SmallRegressor):
        pass

    if customised:  # takes the hook-by-hook step path instead of the plain one
        Counting.on_before_optimizer_step = lambda self, optimizer: steps.append(self.trainer.current_epoch)
    trainer = quiet_trainer(tmp_path, callbacks=[GradientAccumulationScheduler({1: 2, 2: 4})], max_epochs=3)
    per_epoch: list[int] = []
    trainer.callbacks.append(LambdaCallback(on_train_epoch_end=lambda t, m: per_epoch.append(t.global_step)))
    trainer.fit(Counting(), sum_loader(n=32))  # 8 batches per epoch
    assert per_epoch == [8, 12, 14]
    assert trainer.accumulate_grad_batches == 4
    if customised:
        assert steps == [0] * 8 + [1] * 4 + [2] * 2


def test_accumulation_scheduler_checks_arguments(tmp_path):
    with pytest.raises(TypeError):
        GradientAccumulationScheduler({})
    with pytest.raises(MisconfigurationException, match="factors"):
        GradientAccumulationScheduler({0: 0})
    with pytest.raises(ValueError, match="Both"):
        quiet_trainer(tmp_path, callbacks=[GradientAccumulationScheduler({0: 2})], accumulate_grad_batches=3,
                      max_steps=1).fit(SmallRegressor(), sum_loader())


# --- BackboneFinetuning ----------------------------------------------------------------------------------
class WithBackbone(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)


def test_backbone_finetuning_freezes_then_unfreezes_with_the_right_lr(tmp_path):
    seen: list[tuple] = []

    def record(trainer, module, batch, batch_idx):
        if batch_idx == 0:
            opt = trainer.optimizers[0]
            seen.append((trainer.current_epoch, module.backbone[0].weight.requires_grad,
                         [round(g["lr"], 10) for g in opt.param_groups]))

    model = WithBackbone()
    start = params(model.backbone)
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=2, backbone_initial_ratio_lr=0.1)
    trainer = quiet_trainer(tmp_path, callbacks=[finetuning, LambdaCallback(on_train_batch_start=record)],
                            max_epochs=2)
    trainer.fit(model, sum_loader(n=8))
    assert seen == [(0, False, [0.1]), (1, False, [0.1])]
    assert all(torch.equal(a, b) for a, b in zip(start, params(model.backbone)))  # frozen: untouched
    ckpt = tmp_path / "epoch2.ckpt"
    trainer.save_checkpoint(ckpt)

    # Resume for 3 more epochs: unfrozen at epoch 2 with lr 0.1 * 0.1, then doubled each epoch.
    seen.clear()
    trainer = quiet_trainer(tmp_path, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=2,
                                                                    backbone_initial_ratio_lr=0.1),
                                                 LambdaCallback(on_train_batch_start=record)], max_epochs=5)
    trainer.fit(WithBackbone(), sum_loader(n=8), ckpt_path=ckpt)
    assert seen == [(2, True, [0.1, 0.01]), (3, True, [0.1, 0.02]), (4, True, [0.1, 0.04])]
    assert not torch.equal(start[0], trainer.lightning_module.backbone[0].weight)
    ckpt2 = tmp_path / "epoch5.ckpt"
    trainer.save_checkpoint(ckpt2)
    state = torch.load(ckpt2, weights_only=True)
    assert len(state["optimizer_states"][0]["param_groups"]) == 2
    groups = state["callbacks"]["BackboneFinetuning"]["internal_optimizer_metadata"][0]
    assert [g["params"] for g in groups] == [["head.weight", "head.bias"], ["backbone.0.weight", "backbone.0.bias"]]

    # Resuming after the unfreeze puts the second group back, with its lr, before the optimizer state loads.
    seen.clear()
    trainer = quiet_trainer(tmp_path, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=2,
                                                                    backbone_initial_ratio_lr=0.1),
                                                 LambdaCallback(on_train_batch_start=record)], max_epochs=6)
    trainer.fit(WithBackbone(), sum_loader(n=8), ckpt_path=ckpt2)
    assert seen == [(5, True, [0.1, 0.08])]


def test_backbone_finetuning_needs_a_backbone(tmp_path):
    with pytest.raises(MisconfigurationException, match="backbone"):
        quiet_trainer(tmp_path, callbacks=[BackboneFinetuning()], max_steps=1).fit(SmallRegressor(), sum_loader())


# --- StochasticWeightAveraging ----------------------------------------------------------------------------
def test_swa_weights_are_the_average_of_the_epoch_start_weights(tmp_path):
    snapshots: dict[int, list[torch.Tensor]] = {}
    recorder = LambdaCallback(on_train_epoch_start=lambda t, m: snapshots.__setitem__(t.current_epoch, params(m)))
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2, annealing_epochs=1)
    model = SmallRegressor(hidden=3)
    trainer = quiet_trainer(tmp_path, callbacks=[recorder, swa], max_epochs=4)
    trainer.fit(model, sum_loader(n=16))
    # swa_epoch_start=2 (1-based): the weights at the start of epochs 1, 2 and 3 are averaged.
    expected = [torch.stack([snapshots[e][i] for e in (1, 2, 3)]).mean(0) for i in range(len(snapshots[0]))]
    for got, want in zip(model.parameters(), expected):
        torch.testing.assert_close(got.detach(), want)
    assert type(trainer.lr_scheduler_configs[0].scheduler).__name__ == "SWALR"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)
    assert swa.n_averaged.item() == 3


def test_swa_recomputes_batch_norm_statistics_for_the_averaged_weights(tmp_path):
    torch.manual_seed(0)
    model = SmallRegressor(hidden=3, batch_norm=True)
    data = sum_loader(n=16)
    trainer = quiet_trainer(tmp_path, callbacks=[StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1)],
                            max_epochs=2)
    trainer.fit(model, data)
    x = torch.cat([b[0] for b in data])
    with torch.no_grad():
        features = model.net[0](x)
    bn = model.net[1]
    torch.testing.assert_close(bn.running_mean, features.mean(0))
    assert bn.momentum == 0.1  # restored after the cumulative pass
    assert model.training


# --- WeightAveraging / EMAWeightAveraging --------------------------------------------------------------------
def test_ema_equals_hand_computed_average_and_is_used_for_validation(tmp_path):
    after_steps: list[list[torch.Tensor]] = []
    in_validation: list[list[torch.Tensor]] = []

    class Recording(SmallRegressor):
        def validation_step(self, batch, batch_idx):
            if batch_idx == 0:
                in_validation.append(params(self))
            return super().validation_step(batch, batch_idx)

    decay = 0.5
    recorder = LambdaCallback(on_train_batch_end=lambda t, m, o, b, i: after_steps.append(params(m)))
    model = Recording()
    trainer = quiet_trainer(tmp_path, callbacks=[recorder, EMAWeightAveraging(decay=decay)], max_epochs=2,
                            limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, sum_loader(), sum_loader(n=4))

    def ema(snapshots):
        avg = [p.clone() for p in snapshots[0]]
        for snap in snapshots[1:]:
            avg = [decay * a + (1 - decay) * s for a, s in zip(avg, snap)]
        return avg

    for got, want in zip(in_validation[0], ema(after_steps[:3])):  # validation after epoch 0 sees the EMA
        torch.testing.assert_close(got, want)
    for got, want in zip(model.parameters(), ema(after_steps)):  # and the module ends with it
        torch.testing.assert_close(got.detach(), want)


def test_weight_averaging_mean_and_checkpoint_layout(tmp_path):
    after_steps: list[list[torch.Tensor]] = []
    current: list[list[torch.Tensor]] = []
    recorder = LambdaCallback(on_train_batch_end=lambda t, m, o, b, i: after_steps.append(params(m)))
    averaging = WeightAveraging()
    model = SmallRegressor()
    trainer = quiet_trainer(tmp_path, callbacks=[recorder, averaging], max_epochs=1, limit_train_batches=4)

    def save(t, m):
        current.append(params(m))
        t.save_checkpoint(tmp_path / "mid.ckpt")

    trainer.callbacks.append(LambdaCallback(on_train_epoch_end=save))
    trainer.fit(model, sum_loader())
    mean = [torch.stack(ps).mean(0) for ps in zip(*after_steps)]
    for got, want in zip(model.parameters(), mean):
        torch.testing.assert_close(got.detach(), want)
    state = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    torch.testing.assert_close(state["state_dict"]["net.0.weight"], mean[0])
    torch.testing.assert_close(state["current_model_state"]["net.0.weight"], current[0][0])
    assert state["averaging_state"]["n_averaged"].item() == 4


# --- ModelPruning ------------------------------------------------------------------------------------------------------
def test_pruning_sparsity_is_exact_and_permanent(tmp_path):
    model = SmallRegressor(hidden=10)
    first = model.net[0]
    pruning = ModelPruning("l1_unstructured", parameters_to_prune=[(first, "weight")], amount=0.5,
                           use_lottery_ticket_hypothesis=False)
    trainer = quiet_trainer(tmp_path, callbacks=[pruning], max_epochs=1, limit_train_batches=2)
    trainer.fit(model, sum_loader())
    assert (first.weight == 0).sum().item() == 20  # exactly half of the 40 weights
    assert not hasattr(first, "weight_orig") and not hasattr(first, "weight_mask")  # made permanent
    assert isinstance(first.weight, nn.Parameter)


def test_pruning_global_over_epochs_with_lottery_ticket_and_checkpoint(tmp_path):
    model = SmallRegressor(hidden=6)
    initial = model.net[0].weight.detach().clone()
    pruning = ModelPruning("l1_unstructured", amount=lambda epoch: 0.25, parameter_names=["weight"],
                           make_pruning_permanent=True)
    saved: list = []
    trainer = quiet_trainer(tmp_path, callbacks=[pruning], max_epochs=2, limit_train_batches=2)
    trainer.callbacks.append(LambdaCallback(on_train_epoch_end=lambda t, m: saved.append(
        t.save_checkpoint(tmp_path / f"e{t.current_epoch}.ckpt"))))
    trainer.fit(model, sum_loader())
    weights = [model.net[0].weight, model.net[2].weight]
    assert sum(w.numel() for w in weights) == 30  # 24 + 6
    zeros = sum((w == 0).sum().item() for w in weights)
    # 25% of 30 = 7.5 -> 8 after epoch 0 (torch rounds), then 25% of the 22 left = 5.5 -> 6 more.
    assert zeros == 8 + 6
    kept = model.net[0].weight != 0
    torch.testing.assert_close(model.net[0].weight[kept], initial[kept])  # lottery ticket: initial values
    state = torch.load(tmp_path / "e0.ckpt", weights_only=True)["state_dict"]
    assert "net.0.weight" in state and "net.0.weight_orig" not in state
    assert (state["net.0.weight"] == 0).sum() + (state["net.2.weight"] == 0).sum() == 8


def test_pruning_rejects_bad_arguments():
    with pytest.raises(MisconfigurationException, match="pruning_fn"):
        ModelPruning("l3_magic")
    with pytest.raises(MisconfigurationException, match="pruning_dim"):
        ModelPruning("ln_structured", use_global_unstructured=False)
    with pytest.raises(MisconfigurationException, match="unstructured"):
        ModelPruning("random_structured", pruning_dim=0)


def test_ema_checkpoint_resumes_with_current_and_averaged_weights(tmp_path):
    ckpt = tmp_path / "ema.ckpt"
    saver = LambdaCallback(on_train_epoch_end=lambda t, m: t.save_checkpoint(ckpt))  # before the average is copied in
    trainer = quiet_trainer(tmp_path, callbacks=[EMAWeightAveraging(decay=0.5), saver], max_epochs=1,
                            limit_train_batches=3)
    trainer.fit(SmallRegressor(), sum_loader())
    state = torch.load(ckpt, weights_only=True)
    assert not torch.equal(state["current_model_state"]["net.0.weight"], state["state_dict"]["net.0.weight"])

    seen: dict[str, list[torch.Tensor]] = {}
    resumed = EMAWeightAveraging(decay=0.5)
    recorder = LambdaCallback(on_train_start=lambda t, m: seen.update(
        module=params(m), average=[p.detach().clone() for p in resumed._average_model.module.parameters()]))
    trainer = quiet_trainer(tmp_path, callbacks=[resumed, recorder], max_epochs=2, limit_train_batches=3)
    trainer.fit(SmallRegressor(), sum_loader(), ckpt_path=ckpt)
    torch.testing.assert_close(seen["module"][0], state["current_model_state"]["net.0.weight"])
    torch.testing.assert_close(seen["average"][0], state["state_dict"]["net.0.weight"])
    assert resumed._latest_update_step == 6


def test_swa_batch_norm_pass_reads_several_training_loaders_and_a_step_without_batch_idx(tmp_path):
    """With a dict of training loaders the batch-norm pass gets the combined batches, as training_step does."""
    class TwoLoaders(SmallRegressor):
        def training_step(self, batch):  # no batch_idx, a dict of two batches
            return sum(super(TwoLoaders, self).training_step(part, 0) for part in batch.values())

    torch.manual_seed(0)
    model = TwoLoaders(hidden=3, batch_norm=True)
    a, b = sum_loader(n=16), sum_loader(n=8, seed=1)
    trainer = quiet_trainer(tmp_path, callbacks=[StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1)],
                            max_epochs=2)
    trainer.fit(model, {"a": a, "b": b})
    # max_size_cycle: 4 combined batches, all of a and b read twice; momentum=None makes the running
    # mean the plain average of the 8 batch means the pass saw.
    with torch.no_grad():
        batch_means = [model.net[0](x).mean(0) for pair in zip(a, list(b) * 2) for x, _ in pair]
    torch.testing.assert_close(model.net[1].running_mean, torch.stack(batch_means).mean(0))
    assert model.training
