"""MLFlowLogger read back through MLflow's own client; WandbLogger read back from its offline run files;
several loggers at once."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional as F
from torch.utils.data import DataLoader

import fulmen as pl
from fulmen.callbacks import ModelCheckpoint
from fulmen.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from fulmen.saving import load_hparams_from_yaml
from helpers import quiet_trainer, random_regression

mlflow = pytest.importorskip("mlflow")  # in the [dev] extra, so CI always runs these
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:validation_step is defined but there is no validation data")


class Regressor(pl.LightningModule):
    def __init__(self, lr: float = 0.1, sizes: dict | None = None, fail_at: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at is not None and self.global_step == self.hparams.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        loss = F.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader():
    return DataLoader(random_regression(16), batch_size=4)  # 4 batches an epoch


def mlflow_trainer(tmp_path, logger, **kwargs):
    options = dict(max_epochs=3, log_every_n_steps=1, num_sanity_val_steps=0)
    options.update(kwargs)
    return quiet_trainer(tmp_path, logger=logger, **options)


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def artifact_files(client, run_id, path=None):
    out = []
    for info in client.list_artifacts(run_id, path):
        out += artifact_files(client, run_id, info.path) if info.is_dir else [info.path]
    return sorted(out)


def test_mlflow_params_metrics_checkpoints_and_status_read_back(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    logger = MLFlowLogger(experiment_name="exp", run_name="first", tracking_uri=uri, tags={"team": "fulmen"},
                          log_model="all")
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=2, filename="{epoch}")
    trainer = mlflow_trainer(tmp_path, logger, callbacks=[checkpoint], enable_checkpointing=True)
    model = Regressor(lr=0.05, sizes={"hidden": 8, "out": 1})
    trainer.fit(model, loader(), loader())

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("exp")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [logger.run_id]
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.05", "sizes/hidden": "8", "sizes/out": "1", "fail_at": "None"}
    assert run.data.tags["team"] == "fulmen" and run.data.tags["mlflow.runName"] == "first"
    # every training step logged at its step, with the value fulmen sent
    train = history(client, logger.run_id, "train_loss")
    assert [step for step, _ in train] == list(range(12))
    val = history(client, logger.run_id, "val_loss")
    assert [step for step, _ in val] == [3, 7, 11]
    assert val[-1][1] == pytest.approx(trainer.logged_metrics["val_loss"])
    assert [v for _, v in history(client, logger.run_id, "epoch")][-1] == 2
    # checkpoints live in the run's directory, and every one written was uploaded with its metadata
    assert checkpoint.dirpath == os.path.join(str(tmp_path / "mlruns"), experiment.experiment_id, logger.run_id,
                                              "checkpoints")
    files = artifact_files(client, logger.run_id)
    for epoch in range(3):
        assert f"epoch={epoch}/epoch={epoch}.ckpt" in files
        assert f"epoch={epoch}/metadata.yaml" in files and f"epoch={epoch}/aliases.txt" in files
    best = Path(checkpoint.best_model_path).stem
    local = client.download_artifacts(logger.run_id, best, str(tmp_path / "download"))
    assert "best" in Path(local, "aliases.txt").read_text()
    meta = yaml.safe_load(Path(local, "metadata.yaml").read_text())
    assert meta["original_filename"] == f"{best}.ckpt" and meta["Checkpoint"]["monitor"] == "val_loss"
    assert meta["score"] == pytest.approx(float(checkpoint.best_model_score))
    # the uploaded checkpoint is the file ModelCheckpoint wrote
    assert Path(local, f"{best}.ckpt").read_bytes() == Path(checkpoint.best_model_path).read_bytes()


def test_mlflow_log_model_true_uploads_the_kept_checkpoints_at_the_end(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    seen_during_fit = []

    class Peek(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            seen_during_fit.extend(artifact_files(MlflowClient(uri), trainer.logger.run_id))

    logger = MLFlowLogger(tracking_uri=uri, log_model=True)
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=1, filename="{epoch}")
    trainer = mlflow_trainer(tmp_path, logger, callbacks=[checkpoint, Peek()], enable_checkpointing=True)
    trainer.fit(Regressor(), loader(), loader())
    assert seen_during_fit == []
    files = artifact_files(MlflowClient(uri), logger.run_id)
    best = Path(checkpoint.best_model_path).stem
    assert files == sorted([f"{best}/{best}.ckpt", f"{best}/metadata.yaml", f"{best}/aliases.txt"])


def test_mlflow_failed_run_is_marked_failed_and_prefix_applies(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    logger = MLFlowLogger(tracking_uri=uri, prefix="train")
    with pytest.raises(RuntimeError, match="boom"):
        mlflow_trainer(tmp_path, logger).fit(Regressor(fail_at=5), loader())
    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FAILED"
    assert [s for s, _ in history(client, logger.run_id, "train-train_loss")] == [0, 1, 2, 3, 4]
    assert "train_loss" not in run.data.metrics


def test_mlflow_run_id_continues_an_existing_run(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    first = MLFlowLogger(tracking_uri=uri)
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    second = MLFlowLogger(tracking_uri=uri, run_id=first.run_id)
    second.log_metrics({"a": 2.0}, step=1)
    second.finalize("success")
    client = MlflowClient(uri)
    assert history(client, first.run_id, "a") == [(0, 1.0), (1, 2.0)]
    assert second.name == first.name == first.experiment_id
    assert second.version == first.run_id
    assert second.save_dir == str(tmp_path / "mlruns")


def test_mlflow_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fulmen\[mlflow\]'"):
        MLFlowLogger()


def test_tensorboard_csv_and_mlflow_together_get_the_same_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"file:{tmp_path / 'mlruns'}"
    tb, csv_logger = TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")
    ml = MLFlowLogger(tracking_uri=uri)
    trainer = mlflow_trainer(tmp_path, [tb, csv_logger, ml], max_epochs=2)
    trainer.fit(Regressor(lr=0.02), loader(), loader())

    mlflow_train = history(MlflowClient(uri), ml.run_id, "train_loss")
    with open(Path(csv_logger.log_dir, "metrics.csv"), newline="") as f:
        csv_train = [(int(r["step"]), float(r["train_loss"])) for r in csv.DictReader(f) if r.get("train_loss")]
    events = EventAccumulator(tb.log_dir)
    events.Reload()
    tb_train = [(e.step, e.value) for e in events.Scalars("train_loss")]
    assert [s for s, _ in mlflow_train] == [s for s, _ in csv_train] == [s for s, _ in tb_train] == list(range(8))
    for (_, a), (_, b), (_, c) in zip(mlflow_train, csv_train, tb_train):
        assert a == pytest.approx(b, rel=1e-6) and a == pytest.approx(c, rel=1e-6)
    assert load_hparams_from_yaml(Path(csv_logger.log_dir, "hparams.yaml"))["lr"] == 0.02
    assert MlflowClient(uri).get_run(ml.run_id).data.params["lr"] == "0.02"
    assert MlflowClient(uri).get_run(ml.run_id).info.status == "FINISHED"


# --- Weights & Biases, offline ----------------------------------------------------------------


def wandb_records(save_dir: Path) -> list:
    """Every record of the offline runs under `save_dir`, read from wandb's transaction log (`run-*.wandb`:
    LevelDB's log format, 32 KiB blocks of 7-byte-headed chunks, after a 7-byte W&B header)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    out = []
    for path in sorted(save_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:  # a block's tail too short for a header is padding
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if length == 0 and kind == 0:
                pos += left
                continue
            if pos + 7 + length > len(data):  # still being written
                break
            buf += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a full record, or the last chunk of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(buf)
                out.append(record)
                buf = b""
    return out


def finished_records(save_dir: Path, runs: int = 1) -> list:
    """`wandb_records` once every run's exit record is on disk: wandb's background process
    may still be writing the log for a moment after `finish()` returns."""
    deadline = time.monotonic() + 60
    while True:
        records = wandb_records(save_dir)
        if len(of_type(records, "exit")) >= runs or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def of_type(records, kind):
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def history_rows(records):
    rows = []
    for history in of_type(records, "history"):
        rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in history.item})
    return rows


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": tmp_path / "cfg",
                        "WANDB_CACHE_DIR": tmp_path / "cache", "WANDB_DATA_DIR": tmp_path / "data",
                        "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off"}.items():
        monkeypatch.setenv(name, str(value))


def test_wandb_offline_run_has_config_metrics_checkpoints_and_exit_code(tmp_path, wandb_env):
    from fulmen.loggers import WandbLogger

    save_dir = tmp_path / "wb"
    logger = WandbLogger(project="proj", name="first", save_dir=save_dir, offline=True, log_model="all")
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=-1, filename="{epoch}")
    trainer = mlflow_trainer(tmp_path, logger, max_epochs=2, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(Regressor(lr=0.05, sizes={"hidden": 8}), loader(), loader())

    records = finished_records(save_dir)
    (run,) = of_type(records, "run")
    assert run.project == "proj" and run.display_name == "first" and run.run_id == logger.version
    config = {}
    for update in [u for c in of_type(records, "config") for u in c.update] + list(run.config.update):
        config[update.key or "/".join(update.nested_key)] = json.loads(update.value_json)
    assert config["lr"] == 0.05 and config["sizes"] == {"hidden": 8}
    rows = history_rows(records)
    train = [(r["trainer/global_step"], r["train_loss"]) for r in rows if "train_loss" in r]
    assert [s for s, _ in train] == list(range(8))
    val = [(r["trainer/global_step"], r["val_loss"]) for r in rows if "val_loss" in r]
    assert [s for s, _ in val] == [3, 7] and val[-1][1] == pytest.approx(trainer.logged_metrics["val_loss"])
    (exit_record,) = of_type(records, "exit")
    assert exit_record.exit_code == 0
    # each checkpoint written became a version of the run's model artifact, with its file
    artifacts = of_type(records, "artifact")
    assert len(artifacts) == 2 and {a.name for a in artifacts} == {f"model-{logger.version}"}
    assert all(a.type == "model" for a in artifacts)
    assert all("model.ckpt" in [e.path for e in a.manifest.contents] for a in artifacts)
    assert checkpoint.dirpath == os.path.join(str(save_dir), "proj", logger.version, "checkpoints")


def test_wandb_failed_run_exits_with_code_1(tmp_path, wandb_env):
    from fulmen.loggers import WandbLogger

    save_dir = tmp_path / "wb"
    logger = WandbLogger(save_dir=save_dir, offline=True, prefix="p")
    with pytest.raises(RuntimeError, match="boom"):
        mlflow_trainer(tmp_path, logger).fit(Regressor(fail_at=2), loader())
    records = finished_records(save_dir)
    assert [e.exit_code for e in of_type(records, "exit")] == [1]
    assert [r["trainer/global_step"] for r in history_rows(records) if "p-train_loss" in r] == [0, 1]


def test_wandb_missing_package_names_the_extra(monkeypatch):
    from fulmen.loggers import WandbLogger

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fulmen\[wandb\]'"):
        WandbLogger()
