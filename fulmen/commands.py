"""The `fulmen` command (also `python -m fulmen`): reads the first argument and hands over to the
module that does the work, importing it only then, so that `fulmen run` starts without torch."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

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


def command_as_typed(program: str, *args: str, cwd: str | os.PathLike | None = None) -> str:
    """`program args` as it runs when typed in a shell in `cwd` (default: the current folder).

    The README's set-up makes a virtual environment without activating it, so a bare `tensorboard`
    or `fulmen` is not on PATH there: when this Python runs from a virtual environment whose `bin`
    holds `program` and PATH finds another one or none, the command names it by path
    (`.venv/bin/tensorboard`; relative when the environment is in this folder or the one above). Every
    command fulmen prints for the user to type goes through here.

    Example:
        >>> command_as_typed("tensorboard", "--logdir", "lightning_logs/")  # doctest: +SKIP
        '.venv/bin/tensorboard --logdir lightning_logs/'
    """
    head = program
    bin_dir = inactive_venv_bin(program, cwd)
    if bin_dir is not None:
        head = os.path.join(bin_dir, program)
    elif program == "python" and shutil.which("python") is None:  # Debian and macOS may have only python3
        head = "python3" if shutil.which("python3") else sys.executable
    return " ".join(shlex.quote(part) for part in (head, *args))


def inactive_venv_bin(program: str = "python", cwd: str | os.PathLike | None = None) -> str | None:
    """The `bin` folder of this Python's virtual environment as typed from `cwd` (`.venv/bin`,
    `../.venv/bin` when it is in the folder above, else absolute) when it holds `program` and PATH does not lead there; else None."""
    if sys.prefix == sys.base_prefix:
        return None
    bin_dir = Path(sys.prefix).absolute() / ("Scripts" if os.name == "nt" else "bin")
    found = shutil.which(program)
    if not (bin_dir / program).exists() or (found is not None and Path(found).absolute().parent == bin_dir):
        return None
    where = Path(cwd if cwd is not None else os.getcwd()).absolute()
    relative = os.path.relpath(bin_dir, where)
    up = relative.startswith(os.pardir)
    if up and Path(relative).parent.parent != Path(os.pardir):  # not in this folder nor beside it
        return str(bin_dir)
    # `.venv/bin/x` has a slash, so the shell does not search PATH; a venv named here needs `./`
    return relative if os.sep in relative or relative.startswith(os.pardir) else os.path.join(os.curdir, relative)


def main(argv: list[str] | None = None) -> int:
    """The `fulmen` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE, end="", file=sys.stdout if argv else sys.stderr)  # no command is a usage error, as in argparse
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
            from fulmen.template import new_project

            target = new_project(rest[0])
            print(f"Created {target}/ (model.py, data.py, train.py, config.yaml, test_project.py).\n"
                  f"Next: {_next_steps(target)}")
            return 0
        if command == "run":
            from fulmen.alias import run

            return run(rest)
        if command in SUBCOMMANDS:
            return _run_lightning_cli(argv)
    except CLIError as err:  # a bad command line or config; the message is printed
        return int(err.code)
    print(f"fulmen: unknown command {command!r}.\n{_USAGE}", file=sys.stderr, end="")
    return 2


def _run_lightning_cli(argv: list[str]) -> int:
    """`fulmen fit|validate|test|predict ...`: LightningCLI with the classes named in the config.

    jsonargparse reports a bad option, value or class_path itself (usage, message, status 2). A
    setting the Trainer or the checkpoint loader rejects (`--trainer.precision=13`, a missing
    `--ckpt_path` file) raises fulmen's MisconfigurationException, whose message already says the
    fix: the command prints it as one error line with status 2 instead of a traceback. (A
    train.py script calling LightningCLI shows the traceback, as in Lightning.)
    """
    from fulmen.cli import LightningCLI
    from fulmen.errors import MisconfigurationException

    if os.getcwd() not in sys.path:  # class_path: model.Classifier refers to ./model.py
        sys.path.insert(0, os.getcwd())
    # LightningCLI reads sys.argv (and warns when args= comes beside a command line): the
    # command line it reads is this command's, also when main() is called in process.
    saved_argv, sys.argv = sys.argv, ["fulmen", *argv]
    try:
        LightningCLI(parser_kwargs={"prog": "fulmen"})
    except MisconfigurationException as err:
        print(f"fulmen: error: {err}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv
    return 0


def _next_steps(project: Path) -> str:
    """The commands to type after `fulmen new`: train, then the project's tests (when pytest is installed)."""
    import importlib.util

    python = command_as_typed("python", cwd=project)
    steps = f"cd {shlex.quote(str(project))} && {python} train.py fit --config config.yaml"
    if importlib.util.find_spec("pytest") is not None:
        return f"{steps} && {python} -m pytest"
    return f"{steps}   (the tests need pytest: {command_as_typed('pip', 'install', 'pytest', cwd=project)})"
