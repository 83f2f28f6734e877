"""run=False: LightningCLI builds the objects from `args=` (a list, then a dict) and runs nothing;
the script calls fit itself. Prints one JSON line per CLI."""

import json
import os

from models import Data, Model

from fulmen.cli import LightningCLI

root = os.environ["CLI_ROOT"]
quiet = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False,
         "enable_checkpointing": False, "default_root_dir": root}

as_list = LightningCLI(Model, Data, run=False, trainer_defaults=quiet,
                       args=["--trainer.max_steps=3", "--model.lr=0.25", "--data.batch_size=2", "--seed_everything=5"])
before = as_list.trainer.global_step
as_list.trainer.fit(as_list.model, as_list.datamodule)
print(json.dumps({"kind": "list", "subcommand": as_list.subcommand, "before": before,
                  "after": as_list.trainer.global_step, "lr": as_list.model.hparams.lr,
                  "batch_size": as_list.datamodule.batch_size, "seed": as_list.config["seed_everything"]}))

as_dict = LightningCLI(Model, Data, run=False, trainer_defaults=quiet, save_config_callback=None,
                       args={"trainer": {"max_epochs": 2, "limit_train_batches": 1, "limit_val_batches": 0},
                             "model": {"width": 32, "tag": "from-dict"}, "seed_everything": 9})
as_dict.trainer.fit(as_dict.model, as_dict.datamodule)
print(json.dumps({"kind": "dict", "after": as_dict.trainer.global_step, "tag": as_dict.model.hparams.tag,
                  "max_epochs": as_dict.trainer.max_epochs, "seed": as_dict.config["seed_everything"],
                  "callbacks": [type(c).__name__ for c in as_dict.trainer.callbacks]}))

# A dict names the subcommand as a config does, when run=True.
ran = LightningCLI(Model, Data, trainer_defaults=quiet, save_config_callback=None,
                   args={"fit": {"trainer": {"max_steps": 2, "limit_val_batches": 0}, "model": {"lr": 0.5}}})
print(json.dumps({"kind": "dict-fit", "subcommand": ran.subcommand, "after": ran.trainer.global_step,
                  "lr": ran.trainer.optimizers[0].param_groups[0]["lr"]}))
