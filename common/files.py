"""Secret files (keys, secrets, a DSN with its password): one way to write them.

Written in full under a temporary name in the same directory, fsynced, then moved into place, mode 0600:
a reader, or a crash at any moment, sees the old file or the new one, never an empty or a half-written
one. ``exclusive``: only if the file does not exist yet, so that of several processes making the same
secret at once, one wins and the others read its complete file (returns False for them).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private(path: Path, text: str, *, exclusive: bool = False) -> bool:
    """Write ``text`` to ``path`` atomically, fsynced, mode 0600. With ``exclusive``, False when the file
    existed already (it is left as it was)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        _fsync_directory(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
