"""The temporary file that fulmen's atomic writes (checkpoints, `hparams.yaml`, `metrics.csv`) go through.

`tempfile.mkstemp` creates its file with mode 0600, whatever the umask, and `os.replace` keeps
that mode: a checkpoint written that way could be read by its owner only. `temp_file_beside`
gives the file the mode `open()` would have given it (0666 less the umask: 0644 by default), so
a colleague, a serving process or a backup job reads what fulmen writes as it reads any file.
"""

from __future__ import annotations

import os
import tempfile


def temp_file_beside(path: str | os.PathLike) -> tuple[int, str]:
    """An open descriptor and the name of a new temporary file in `path`'s directory, named after
    `path` and with the mode a normal file gets under the process's umask."""
    directory, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        os.remove(tmp)
        raise
    return fd, tmp


def current_umask() -> int:
    """The process's umask. Linux shows it in /proc (reading it does not change it); elsewhere it
    is read by setting it and putting it back, which leaves a moment when another thread creating
    a file would get the wrong mode."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
