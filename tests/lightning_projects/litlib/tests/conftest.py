import pytest
from pytorch_lightning import Trainer


@pytest.fixture
def trainer_kwargs(tmp_path):
    return dict(default_root_dir=tmp_path, accelerator="cpu", devices=1, enable_progress_bar=False,
                enable_model_summary=False, logger=False)


@pytest.fixture
def make_trainer(trainer_kwargs):
    def make(**overrides):
        return Trainer(**{**trainer_kwargs, **overrides})
    return make
