"""`fulmen new NAME`: a ready project folder (model, data, train script, config, test) from the template.

The template lives in fulmen/templates/project; `{{project_name}}` in its files becomes NAME, and
`{{activate_line}}` the command that activates fulmen's virtual environment when it is not active
(so that the commands the project's README shows run as typed).
"""

from __future__ import annotations

import os
from pathlib import Path

from fulmen.errors import CLIError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "project"


def new_project(name: str, parent: str | Path = ".") -> Path:
    """Create the folder `parent/name` from fulmen/templates/project and return its path."""
    if not name.isidentifier():
        raise CLIError(f"a project name must be a Python identifier. Received: {name!r}. Fix: e.g. "
                       f"{''.join(c if c.isalnum() else '_' for c in name).lstrip('0123456789') or 'my_project'}.")
    target = Path(parent) / name
    if target.exists() and any(target.iterdir()):
        raise CLIError(f"{target} already exists and is not empty. Fix: choose another name or folder.")
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(TEMPLATE_DIR.iterdir()):
        if source.is_file() and not source.name.startswith(("_", ".")):
            text = source.read_text(encoding="utf-8").replace("{{project_name}}", name)
            text = text.replace("{{activate_line}}\n", _activate_line(target))
            (target / source.name).write_text(text, encoding="utf-8")
    return target


def _activate_line(project: Path) -> str:
    """The README's first command when fulmen runs from a virtual environment that is not active:
    activating it makes `python`, `fulmen` and `tensorboard` below run as written."""
    from fulmen.commands import inactive_venv_bin

    bin_dir = inactive_venv_bin("python", project)
    if bin_dir is None:
        return ""
    command = f"source {os.path.join(bin_dir, 'activate')}"
    return f"{command:<66}# the environment fulmen is installed in\n"
