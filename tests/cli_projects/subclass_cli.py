"""LightningCLI with subclass_mode_model/data: any subclass of Model and Data, named in the config."""

from models import Data, Model, report

from fulmen.cli import LightningCLI

cli = LightningCLI(Model, Data, subclass_mode_model=True, subclass_mode_data=True,
                   trainer_defaults={"enable_progress_bar": False, "enable_model_summary": False})
report(cli)
