"""One training run that tests/test_distributed.py starts as several real processes (torchrun,
`devices=N` from plain python, ddp_spawn, SLURM-style variables) and reads back.

Each rank writes `<out>/rank<R>.json` with what it saw: the sample indices of every batch, its
parameters after fit, the metrics, the checkpoint paths, and its predictions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

import fulmen as pl
from fulmen.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from fulmen.loggers import CSVLogger
from fulmen.strategies import DDPStrategy, FSDPStrategy

N_SAMPLES, FEATURES = 64, 4


class TwoRankBatches(Sampler):
    """One process's batches of `batch_size` made of what two ranks with half the batch each train on
    together: under DDP, fulmen (as Lightning) shuffles the training data with a DistributedSampler
    (seed PL_GLOBAL_SEED, reseeded by set_epoch), rank r reading every second index from r."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.n, self.half, self.epoch = n, batch_size // 2, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // (2 * self.half)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)) + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        shards = [order[0::2], order[1::2]]
        for j in range(len(self)):
            yield shards[0][j * self.half:(j + 1) * self.half] + shards[1][j * self.half:(j + 1) * self.half]


class Indexed(Dataset):
    """Sample i is (i, x_i, y_i), so each rank can report exactly which samples it trained on."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(N_SAMPLES, FEATURES, generator=g), torch.randn(N_SAMPLES, 1, generator=g)

    def __len__(self) -> int:
        return N_SAMPLES

    def __getitem__(self, i: int):
        return i, self.x[i], self.y[i]


class Net(pl.LightningModule):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh(), nn.Linear(8, 1))
        self.seen: list[list[int]] = []

    def forward(self, x):
        return self.body(x)

    def on_train_start(self):
        wrapper = self.trainer.strategy.model
        if hasattr(wrapper, "register_comm_hook"):  # DDP: count the backward passes whose gradients are synced
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            def counting_hook(state, bucket):
                self.synced_buckets += 1
                return allreduce_hook(None, bucket)

            self.synced_buckets = 0
            wrapper.register_comm_hook(None, counting_hook)

    def training_step(self, batch, batch_idx):
        idx, x, y = batch
        if self.args.fail_rank is not None and self.global_rank == self.args.fail_rank and self.global_step == 3:
            raise RuntimeError(f"planted failure on rank {self.global_rank}")
        if self.args.user_stop_step is not None and self.global_rank == 1 and self.global_step == self.args.user_stop_step:
            self.trainer.should_stop = True  # one rank alone decides to stop, mid-epoch
        if self.args.preempt_step is not None and self.global_rank == 0 and self.global_step == self.args.preempt_step:
            os.kill(os.getpid(), signal.SIGTERM)  # a preemption notice that reaches rank 0 only
        if self.args.step_sleep:
            time.sleep(self.args.step_sleep)
        self.seen.append([int(i) for i in idx])
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, sync_dist=True, on_step=True, on_epoch=True)
        # A value that differs by rank, reduced across ranks: its epoch value is the global mean.
        self.log("rank_value", x.new_tensor(float(self.global_rank)), sync_dist=True, on_epoch=True, on_step=False)
        self.log("rank_sum", x.new_tensor(float(self.global_rank + 1)), sync_dist=True, reduce_fx="sum",
                 on_epoch=True, on_step=False)
        # Per step: the value every rank sees (and rank 0 logs) is the all-ranks mean at that step.
        self.log("rank_step", x.new_tensor(float(self.global_rank)), sync_dist=True, on_step=True, on_epoch=False)
        if self.args.stop_rank is not None:
            # Logged without sync_dist: only one rank's value falls, so only its EarlyStopping wants to stop.
            value = 1.0 / (1 + self.current_epoch) if self.global_rank == self.args.stop_rank else float(self.current_epoch)
            self.log("local_metric", x.new_tensor(value), on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        idx, x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        idx, x, _ = batch
        return {"idx": idx.tolist(), "pred": self(x).squeeze(-1).tolist()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class StopOnRank(EarlyStopping):
    """EarlyStopping that wants to stop on one rank only (its monitored value differs)."""


def strategy_of(args: argparse.Namespace):
    if args.strategy == "fsdp":
        return FSDPStrategy(state_dict_type=args.state_dict_type, timeout=dt.timedelta(seconds=args.timeout))
    if args.strategy in ("ddp", "ddp_spawn"):
        return DDPStrategy(start_method="spawn" if args.strategy == "ddp_spawn" else "popen",
                           timeout=dt.timedelta(seconds=args.timeout))
    return args.strategy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--stop-rank", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--state-dict-type", default="full")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--user-stop-step", type=int, default=None)
    parser.add_argument("--preempt-step", type=int, default=None)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--step-sleep", type=float, default=0.0)  # seconds per step: a slow model
    parser.add_argument("--empty-init", action="store_true")  # build under trainer.init_module(empty_init=True)
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    devices = args.devices if args.devices == "auto" else int(args.devices)
    callbacks = [
        ModelCheckpoint(dirpath=os.path.join(args.out, "ckpt"), save_top_k=-1, filename="{epoch}-{step}"),
        TQDMProgressBar(refresh_rate=100),  # on rank 0 only
    ]
    if args.stop_rank is not None:
        callbacks.append(StopOnRank(monitor="local_metric", patience=0, min_delta=0.0, mode="max", check_on_train_epoch_end=True))
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, num_nodes=args.num_nodes, strategy=strategy_of(args),
        max_epochs=args.epochs, max_steps=args.max_steps, accumulate_grad_batches=args.accumulate,
        logger=CSVLogger(args.out, name="logs"), callbacks=callbacks,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
        default_root_dir=args.out,
    )
    if args.empty_init:  # under FSDP: on the meta device, each rank's shards made at set-up
        with trainer.init_module(empty_init=True):
            model = Net(args)
        built_on_meta = all(p.is_meta for p in model.parameters())
    else:
        model, built_on_meta = Net(args), False
    data = Indexed()
    if devices == 1 and not args.shuffle:  # the one-process reference reads what two ranks read together
        train = DataLoader(data, batch_sampler=TwoRankBatches(len(data), args.batch_size))
    else:
        train = DataLoader(data, batch_size=args.batch_size, shuffle=args.shuffle)
    val = DataLoader(data, batch_size=8)
    trainer.fit(model, train, val, ckpt_path=args.resume)
    # Read before predict: as in Lightning, each run starts with empty callback_metrics.
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    predictions = trainer.predict(model, DataLoader(data, batch_size=5))  # 64 = 12 * 5 + 4: uneven on purpose

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)) if args.strategy == "fsdp" \
        else model.state_dict()
    report = {
        "rank": trainer.global_rank, "local_rank": trainer.local_rank, "node_rank": trainer.node_rank,
        "world_size": trainer.world_size, "strategy": trainer.strategy.name, "built_on_meta": built_on_meta,
        "seen": model.seen, "epochs_run": trainer.current_epoch, "global_step": trainer.global_step,
        "params": {k: v.detach().cpu().flatten().tolist() for k, v in state.items()},
        "callback_metrics": fit_metrics,
        "checkpoints": sorted(os.listdir(os.path.join(args.out, "ckpt"))) if os.path.isdir(os.path.join(args.out, "ckpt")) else [],
        "best_model_path": trainer.checkpoint_callback.best_model_path,
        "log_dir": trainer.log_dir,
        "progress_bar_enabled": trainer.progress_bar_callback.is_enabled,
        "predictions": predictions,
        "pid": os.getpid(),
        "synced_buckets": getattr(model, "synced_buckets", None),
        "batches_trained": len(model.seen),
    }
    with open(os.path.join(args.out, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    sys.exit(main())
