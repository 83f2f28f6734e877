"""LightningCLI with no classes: the config names the model and datamodule (class_path)."""

from models import report

from fulmen.cli import LightningCLI

cli = LightningCLI(trainer_defaults={"enable_progress_bar": False, "enable_model_summary": False})
report(cli)
