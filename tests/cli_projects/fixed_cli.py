"""LightningCLI with fixed model and datamodule classes, before/after hooks on every subcommand,
and LightningCLI's other arguments as JSON in $CLI_KWARGS (e.g. parser_kwargs, save_config_kwargs)."""

import json
import os

from models import Data, Model, report

from fulmen.cli import LightningCLI


class CLI(LightningCLI):
    events: list = []

    def before_instantiate_classes(self):
        self.events.append("before_instantiate_classes")

    def after_instantiate_classes(self):
        self.events.append("after_instantiate_classes")

    def before_fit(self):
        self.events.append(f"before_fit:{self.trainer.global_step}")

    def after_fit(self):
        self.events.append(f"after_fit:{self.trainer.global_step}")

    def after_validate(self):
        self.events.append(f"after_validate:{sorted(self.trainer.callback_metrics)}")

    def after_test(self):
        self.events.append(f"after_test:{sorted(self.trainer.callback_metrics)}")

    def before_predict(self):
        self.events.append("before_predict")


kwargs = {"trainer_defaults": {"enable_progress_bar": False, "enable_model_summary": False},
          **json.loads(os.environ.get("CLI_KWARGS", "{}"))}
cli = CLI(Model, Data, **kwargs)
report(cli, events=CLI.events, seed=cli.config[cli.subcommand]["seed_everything"])
