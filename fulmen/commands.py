"""The `fulmen` command (also `python -m fulmen`): reads the first argument and hands over to the
module that does the work, importing it only then, so that `fulmen run` starts without torch."""

from __future__ import annotations

import os
import sys

from fulmen.errors import CLIError

SUBCOMMANDS = ("fit", "validate", "test", "predict")

_USAGE = """usage: fulmen {run,doctor,new,report,fit,validate,test,predict} ...

  run SCRIPT|-m MODULE [ARGS...]
                        run a Lightning program unchanged, on fulmen (docs: README, 'Run your Lightning
                        project on fulmen')

  doctor PATH...        check LightningModule code for common mistakes (docs/common_mistakes.md)
  new NAME              create a project: model.py, data.py, train.py, config.yaml, a test
  report RUN_DIR        write a self-contained HTML report of a run (curves, hparams, checkpoints)
  fit|validate|test|predict --config cfg.yaml
                        run the model and data classes named in the config (model.class_path)
  --version             print fulmen's version
"""


def main(argv: list[str] | None = None) -> int:
    """The `fulmen` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "--version":
            from fulmen.__about__ import __version__

            print(f"fulmen {__version__}")
            return 0
        if command == "doctor":
            from fulmen.doctor import main as doctor_main

            return doctor_main(rest)
        if command == "report":
            from fulmen.report import main as report_main

            return report_main(rest)
        if command == "new":
            if len(rest) != 1 or rest[0].startswith("-"):
                print("usage: fulmen new NAME   (creates the folder NAME in the current folder)", file=sys.stderr)
                return 2
            from fulmen.cli import new_project

            target = new_project(rest[0])
            print(f"Created {target}/ (model.py, data.py, train.py, config.yaml, test_project.py).\n"
                  f"Next: cd {target} && python train.py fit --config config.yaml && python -m pytest")
            return 0
        if command == "run":
            from fulmen.alias import run

            return run(rest)
        if command in SUBCOMMANDS:
            from fulmen.cli import FulmenCLI

            if os.getcwd() not in sys.path:  # class_path: model.Classifier refers to ./model.py
                sys.path.insert(0, os.getcwd())
            FulmenCLI(args=argv)
            return 0
    except CLIError as err:  # a bad command line or config; the message is printed
        return int(err.code)
    print(f"fulmen: unknown command {command!r}.\n{_USAGE}", file=sys.stderr, end="")
    return 2
