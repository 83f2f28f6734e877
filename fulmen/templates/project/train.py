"""Run {{project_name}}: the Trainer and the command line (the experiment itself is config.yaml).

    python train.py fit --config config.yaml
    python train.py fit --config config.yaml --trainer.max_epochs=5 --model.lr=1e-3
    python train.py test --config config.yaml --ckpt_path best_or_a_path.ckpt
    python train.py fit --config config.yaml --print_config      # the complete configuration

Every run writes lightning_logs/version_N/ under trainer.default_root_dir with the TensorBoard
events, checkpoints and the config it ran with (config.yaml); `fulmen report` turns it into a page.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # model.py and data.py are found also when train.py is imported
    sys.path.insert(0, str(HERE))

from fulmen.cli import LightningCLI  # noqa: E402

from data import SyntheticDataModule  # noqa: E402
from model import Classifier  # noqa: E402

# Trainer settings used when neither the config file nor the command line sets them. The
# callbacks (what is monitored, the patience) are part of the experiment: they are in config.yaml.
TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": 20}


def main(args: list[str] | None = None) -> LightningCLI:
    # Subclass mode: config.yaml names the classes (class_path), so `fulmen fit --config
    # config.yaml` runs it too, and a config may name a subclass of Classifier instead.
    return LightningCLI(Classifier, SyntheticDataModule, subclass_mode_model=True, subclass_mode_data=True,
                        trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=42, args=args)


if __name__ == "__main__":
    main()
