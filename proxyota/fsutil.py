"""Crash-safe file writes: temporary file, fsync, rename, fsync of the directory.

Used wherever a file must never be seen half-written (cache entries, keys, TUF metadata,
campaign state): after a crash either the old content or the new one is there, whole.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or creation in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, tmp_dir: Path | None = None,
                 exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    The temporary file is created with ``mode`` (never wider, whatever the umask says) in
    ``tmp_dir`` (default: next to ``path``; it must be on the same filesystem). With
    ``exclusive`` an existing ``path`` is never replaced (FileExistsError), even if it appears
    while writing. On any error the temporary file is removed.
    """
    directory = tmp_dir if tmp_dir is not None else path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if path exists
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
