"""Dependency injection: the module takes OptimizerCallable/LRSchedulerCallable arguments, set in
the config (`model.optimizer: {class_path: torch.optim.SGD, init_args: {lr: ...}}`)."""

from models import Data, InjectedModel, report

from fulmen.cli import LightningCLI

cli = LightningCLI(InjectedModel, Data, trainer_defaults={"enable_progress_bar": False, "enable_model_summary": False})
report(cli)
