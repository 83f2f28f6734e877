"""`self.log` with torchmetrics Metric objects: step values from forward, epoch values from compute(),
then reset(), as in Lightning; torchmetrics stays out of `import fulmen`."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from sklearn.metrics import accuracy_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torchmetrics = pytest.importorskip("torchmetrics")  # in the dev extra: CI always has it

import fulmen as pl  # noqa: E402
from fulmen.logging import LoggedMetric, LoggedValue  # noqa: E402
from fulmen.loggers import CSVLogger  # noqa: E402


def data(n: int, seed: int, batch_size: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(5, 3)
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro")
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro")
        self.seen: dict[str, list] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.seen["train"].append((self.current_epoch, logits.argmax(1).detach(), y))
        self.train_acc(logits, y)  # forward: updates the state and returns the batch value
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return nn.functional.cross_entropy(logits, y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.seen["val"].append((self.current_epoch, logits.argmax(1), y))
        self.val_acc.update(logits, y)  # update only: no step value, the epoch value still computes
        self.log("val_acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def read_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def sk_accuracy(seen, epoch=None) -> float:
    picked = [(p, y) for e, p, y in seen if epoch is None or e == epoch]
    return accuracy_score(torch.cat([y for _, y in picked]), torch.cat([p for p, _ in picked]))


def test_metric_epoch_values_equal_sklearn_over_all_samples(tmp_path):
    torch.manual_seed(0)
    model = Classifier()
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, logger=logger, max_epochs=2, log_every_n_steps=1, num_sanity_val_steps=0)
    # 50 samples in batches of 16: the last batch has 2, so a mean of batch accuracies would differ.
    trainer.fit(model, data(50, 0, 16), data(23, 1, 10))
    rows = read_rows(logger)

    train_epoch = [(int(r["epoch"]), float(r["train_acc_epoch"])) for r in rows if r.get("train_acc_epoch")]
    assert [e for e, _ in train_epoch] == [0, 1]
    for epoch, value in train_epoch:
        assert value == pytest.approx(sk_accuracy(model.seen["train"], epoch), abs=1e-6)
    val_epoch = [float(r["val_acc"]) for r in rows if r.get("val_acc")]
    assert len(val_epoch) == 2  # reset between runs: each value covers its own run only
    for epoch, value in enumerate(val_epoch):
        assert value == pytest.approx(sk_accuracy(model.seen["val"], epoch), abs=1e-6)
    assert trainer.callback_metrics["val_acc"].item() == pytest.approx(val_epoch[-1])

    # Step values are the per-batch accuracies forward returned.
    steps = [float(r["train_acc_step"]) for r in rows if r.get("train_acc_step")]
    batch_acc = [accuracy_score(y, p) for _, p, y in model.seen["train"]]
    assert steps == pytest.approx(batch_acc, abs=1e-6)
    assert "val_acc_step" not in rows[0]  # update() gives no step value
    # Each metric was reset after its epoch value was computed.
    assert model.train_acc._update_count == 0 and model.val_acc._update_count == 0


def test_validate_and_log_dict_with_a_metric_collection(tmp_path):
    class WithCollection(Classifier):
        def __init__(self):
            super().__init__()
            self.metrics = torchmetrics.MetricCollection({
                "acc": torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro"),
                "macro_acc": torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="macro"),
            })

        def validation_step(self, batch, batch_idx):
            x, y = batch
            preds = self.net(x).argmax(1)
            self.seen["val"].append((0, preds, y))
            self.metrics.update(preds, y)
            self.log_dict(self.metrics)

    model = WithCollection()
    result = quiet_trainer(tmp_path).validate(model, data(30, 2, 8), verbose=False)
    from sklearn.metrics import balanced_accuracy_score

    y = torch.cat([t for _, _, t in model.seen["val"]])
    p = torch.cat([q for _, q, _ in model.seen["val"]])
    assert result[0]["acc"] == pytest.approx(accuracy_score(y, p), abs=1e-6)
    assert result[0]["macro_acc"] == pytest.approx(balanced_accuracy_score(y, p), abs=1e-6)


def test_tensors_keep_the_tensor_path_and_core_does_not_import_torchmetrics(tmp_path):
    kinds: dict[str, type] = {}

    class Both(Classifier):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss)
            kinds.update({k: type(v) for k, v in self.trainer.run_state.results.values.items()})
            return loss

    quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(Both(), data(8, 0, 4))
    assert kinds == {"train_acc": LoggedMetric, "loss": LoggedValue}
    code = "import fulmen, fulmen.callbacks, fulmen.demos, sys; print('torchmetrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
