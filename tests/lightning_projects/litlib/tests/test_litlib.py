import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.model_summary import ModelSummary

from litlib import EpochCounter, GradNormLogger, LitAutoEncoder, RandomDataModule


def test_fast_dev_run(make_trainer):
    trainer = make_trainer(fast_dev_run=2)
    trainer.fit(LitAutoEncoder(), datamodule=RandomDataModule())
    assert trainer.global_step == 2
    assert trainer.state.finished


def test_epochs_are_counted(make_trainer):
    counter = EpochCounter()
    make_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[counter],
                 enable_checkpointing=False).fit(LitAutoEncoder(), datamodule=RandomDataModule())
    assert counter.completed == [0, 1, 2]
    assert counter.total == 3


def test_checkpoint_round_trip_keeps_hparams(make_trainer, tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_last=True)
    model = LitAutoEncoder(code=3, betas=(0.8, 0.95))
    make_trainer(max_epochs=2, limit_train_batches=3, callbacks=[checkpoint]).fit(model, datamodule=RandomDataModule())
    restored = LitAutoEncoder.load_from_checkpoint(checkpoint.best_model_path)
    assert restored.hparams.code == 3 and restored.hparams.betas == (0.8, 0.95)
    assert isinstance(restored.hparams.betas, tuple)
    saved = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
    assert saved.keys() == restored.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in restored.state_dict().items())
    assert (tmp_path / "ckpt" / "last.ckpt").exists()


def test_grad_norms_are_logged(make_trainer, tmp_path):
    logger = CSVLogger(tmp_path, name="norms")
    make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=logger, log_every_n_steps=1,
                 callbacks=[GradNormLogger()]).fit(LitAutoEncoder(), datamodule=RandomDataModule())
    header = (tmp_path / "norms" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "grad_2.0_norm_total" in header
    assert "grad_2.0_norm/encoder.0.weight" in header


def test_bad_norm_type_is_refused():
    with pytest.raises(MisconfigurationException, match="norm_type"):
        GradNormLogger(norm_type=0)


def test_summary_counts_parameters():
    model = LitAutoEncoder()
    summary = ModelSummary(model, max_depth=1)
    assert summary.total_parameters == sum(p.numel() for p in model.parameters())
    assert summary.trainable_parameters == summary.total_parameters


def test_predict_returns_codes(make_trainer):
    predictions = make_trainer().predict(LitAutoEncoder(code=5), datamodule=RandomDataModule())
    assert len(predictions) == 2 and predictions[0].shape == (8, 5)


def test_lightning_version_gate():
    import litlib

    assert litlib._PL_GREATER_EQUAL_2_0
    assert pl.__version__.startswith("2.")
