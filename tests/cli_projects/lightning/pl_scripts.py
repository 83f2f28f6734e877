"""Three LightningCLI entry points as Lightning's documentation writes them, each a function of
its `args`, and a driver: `python pl_scripts.py SPEC.json` runs each (name, args) in SPEC with
--print_config and prints {name: printed config} as JSON."""

import contextlib
import io
import json
import sys

from pl_models import Data, Model
from pytorch_lightning.cli import LightningCLI


class LinkedCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.batch_size", "model.batch_size")


def fixed(args):
    LinkedCLI(Model, Data, args=args, trainer_defaults={"max_epochs": 2, "enable_progress_bar": False})


def any_classes(args):
    LightningCLI(args=args, seed_everything_default=42)


def subclasses(args):
    LightningCLI(Model, Data, subclass_mode_model=True, subclass_mode_data=True, args=args)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    sys.argv[1:] = []  # `args=` stands for the command line
    printed = {}
    for name, function, args in spec:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            globals()[function](args)
        printed[name] = out.getvalue()
    print(json.dumps(printed))
