"""A Lightning-on-Ray Train script, written against `lightning.pytorch` and `ray.train.lightning` as a
user would; tests/test_ray.py runs it on fulmen through the drop-in runner:

    python -m fulmen run tests/scripts/ray_train_fit.py OUT_DIR

It starts one local Ray cluster (127.0.0.1, 2 CPUs) and trains twice on 2 CPU workers (gloo):
"plain", uninterrupted, and "killed", where worker 1 SIGKILLs itself in the middle of the second
epoch on the first attempt and Ray, with FailureConfig(max_failures=1), restarts the group from the
last reported checkpoint. OUT_DIR receives, per run, the sample indices each worker trained on, the
final weights (rank 0) and `<run>.json` (Ray's Result: metrics, checkpoint path, error).
"""

import json
import os
import signal
import sys
import time

import ray
import torch
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.lightning import (
    RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback, prepare_trainer,
)
from ray.train.torch import TorchTrainer
from torch.utils.data import DataLoader, Dataset

import lightning.pytorch as pl

SAMPLES, BATCH, EPOCHS = 64, 8, 3


class Numbered(Dataset):
    """Samples of a fixed linear problem, each carrying its own index so a worker can tell which it saw."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(SAMPLES, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def __len__(self):
        return SAMPLES

    def __getitem__(self, i):
        return i, self.x[i], self.y[i]


class Regressor(pl.LightningModule):
    def __init__(self, out_dir, run, kill, storage):
        super().__init__()
        self.out_dir, self.run, self.kill, self.storage = out_dir, run, kill, storage
        self.layer = torch.nn.Linear(4, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        index, x, y = batch
        self.seen.extend((self.current_epoch, int(i)) for i in index)
        marker = os.path.join(self.out_dir, f"{self.run}.killed")
        if self.kill and self.global_rank == 1 and self.current_epoch == 1 and batch_idx == 2 \
                and not os.path.exists(marker):
            self.dump_seen()
            open(marker, "w").close()  # only the first attempt dies
            wait_until_recorded(self.storage, epoch=0)
            os.kill(os.getpid(), signal.SIGKILL)
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def on_train_end(self):
        self.dump_seen()

    def dump_seen(self):
        attempt = "resumed" if os.path.exists(os.path.join(self.out_dir, f"{self.run}.killed")) else "first"
        name = f"{self.run}-seen-rank{self.global_rank}-{attempt}-{os.getpid()}.json"
        with open(os.path.join(self.out_dir, name), "w") as f:
            json.dump(self.seen, f)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.02, momentum=0.9)


def wait_until_recorded(storage, epoch):
    """Wait until Ray's controller has recorded the checkpoint of `epoch` (it collects reports on its
    next poll, every 2 s, and writes its snapshot then): a worker dying sooner would lose it, and the
    retry would start from scratch instead of from that checkpoint."""
    snapshot = os.path.join(storage, "checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with open(snapshot) as f:
                if json.load(f)["latest_checkpoint_result"]["metrics"]["epoch"] >= epoch:
                    return
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not written yet, or being written
        time.sleep(0.2)


def train_func(config):
    pl.seed_everything(0)
    model = Regressor(config["out_dir"], config["run"], config["kill"], config["storage"])
    trainer = pl.Trainer(
        max_epochs=EPOCHS, devices="auto", accelerator="cpu", strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()], callbacks=[RayTrainReportCallback()],
        enable_progress_bar=False, enable_checkpointing=False, logger=False,
    )
    trainer = prepare_trainer(trainer)
    place = {"trainer": type(trainer).__module__, "world_size": trainer.world_size,
             "global_rank": trainer.global_rank, "sampler": trainer.distributed_sampler_kwargs,
             "alias": os.environ.get("FULMEN_ALIAS")}
    with open(os.path.join(config["out_dir"], f"{config['run']}-place-{os.getpid()}.json"), "w") as f:
        json.dump(place, f)  # what this Ray worker process runs, and where it sits in the group
    loader = DataLoader(Numbered(), batch_size=BATCH, shuffle=True)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            trainer.fit(model, loader, ckpt_path=os.path.join(ckpt_dir, "checkpoint.ckpt"))
    else:
        trainer.fit(model, loader)
    if trainer.global_rank == 0:
        torch.save(model.state_dict(), os.path.join(config["out_dir"], f"{config['run']}-final.pt"))


def main(out_dir):
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024**2,
             _node_ip_address="127.0.0.1")
    storage = os.path.join(out_dir, "ray_results")
    for run, kill in (("plain", False), ("killed", True)):
        trainer = TorchTrainer(
            train_func,
            train_loop_config={"out_dir": out_dir, "run": run, "kill": kill, "storage": os.path.join(storage, run)},
            scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
            run_config=RunConfig(name=run, storage_path=storage,
                                 failure_config=FailureConfig(max_failures=1)),
        )
        result = trainer.fit()
        with open(os.path.join(out_dir, f"{run}.json"), "w") as f:
            json.dump({"metrics": result.metrics, "checkpoint": result.checkpoint and result.checkpoint.path,
                       "error": repr(result.error) if result.error else None}, f, default=str)
    ray.shutdown()


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
