"""Putting bytes on disk so that a crash after our 250 cannot lose them.

The order is the whole point: write the file and fsync it, rename it into place, then fsync
the directory that holds the new name. Both the Maildir target and the backup's spool use it.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_synced(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create `path` (it must not exist), write all of `data` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the names created or renamed in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
