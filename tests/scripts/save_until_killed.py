"""Writers for the crash-safe-write tests, started from a fork server so that each one costs a
fork, not a Python start-up with torch imported.

    python save_until_killed.py MODE TARGET

The server imports torch and fulmen once, then serves one command per line on stdin:

    fork ROUND   fork a writer; answer "pid <pid>", wait until the writer dies (the test kills
                 it with SIGKILL), then answer "died <signal number>"

MODE "atomic_save" (or "atomic_save_background": with `background=True`): the writer saves a ~40 MB dict to the file TARGET with
`fulmen.checkpoint.atomic_save`, back to back, forever: {"value": v, "w": 10M float32 equal to v},
with v = ROUND * 100_000 + i for its i-th save, so that later saves hold larger values.

MODE "model_checkpoint": the writer fits a model of ~8 MB with a
`ModelCheckpoint(dirpath=TARGET, save_top_k=2, every_n_train_steps=1)` ranking by the logged
global step, starting with `ckpt_path="last"`: every round resumes from the newest intact
checkpoint of the previous one, and every step writes a checkpoint and deletes an older one.
"""

import os
import sys
import traceback
import warnings

import torch

from fulmen.checkpoint import atomic_save

mode, target = sys.argv[1], sys.argv[2]


def write_forever(round_: int) -> None:
    # Created here, in the writer: the server must not start torch's thread pool before forking.
    weights = torch.empty(10_000_000)
    for i in range(sys.maxsize):
        value = round_ * 100_000 + i
        weights.fill_(float(value))
        atomic_save({"value": value, "w": weights}, target, background=mode == "atomic_save_background")


def train_forever(round_: int) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    import fulmen as pl
    from fulmen.callbacks import ModelCheckpoint

    class Big(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2000, 1000)  # 2M parameters, 8 MB

        def training_step(self, batch, batch_idx):
            self.log("progress", float(self.global_step))
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-6)

    torch.manual_seed(round_)
    data = DataLoader(TensorDataset(torch.randn(64, 2000)), batch_size=8)
    checkpoints = ModelCheckpoint(dirpath=target, monitor="progress", mode="max", save_top_k=2, every_n_train_steps=1)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[checkpoints], num_sanity_val_steps=0,
    )
    warnings.simplefilter("ignore")  # e.g. 'ckpt_path="last": no checkpoint found' in the first round
    trainer.fit(Big(), data, ckpt_path="last")


def serve() -> None:
    for line in sys.stdin:
        command, round_ = line.split()
        assert command == "fork", command
        pid = os.fork()
        if pid == 0:  # the writer
            code = 0
            try:
                torch.set_num_threads(1)
                (write_forever if mode.startswith("atomic_save") else train_forever)(int(round_))
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)  # never return into the server's loop
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"died {os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)}", flush=True)


if __name__ == "__main__":
    if mode == "model_checkpoint":
        import fulmen  # noqa: F401

        # Import once here what the writers' first steps would (the first optimizer imports
        # torch._dynamo, about a second), without starting torch's thread pool before forking.
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    serve()
