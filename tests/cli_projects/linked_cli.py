"""add_arguments_to_parser: arguments linked at parse time and at instantiation, and an
optimizer and scheduler group handed to the model as dicts (link_to)."""

import torch
from models import Data, InitDictModel, report

from fulmen.cli import LightningCLI


class CLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.batch_size", "model.batch_size")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_optimizer_args(torch.optim.Adam, link_to="model.optimizer_init")
        parser.add_lr_scheduler_args(torch.optim.lr_scheduler.StepLR, link_to="model.scheduler_init")


cli = CLI(InitDictModel, Data, trainer_defaults={"enable_progress_bar": False, "enable_model_summary": False})
report(cli, out_features=cli.model.layer.out_features, optimizer_init=cli.model.optimizer_init,
       scheduler_init=cli.model.scheduler_init)
