"""Directories and small files that survive a power cut, by the POSIX rules.

A file's data is durable once the file is fsync'd; a new name in a directory (a file, a
subdirectory, a rename) once that directory is fsync'd. The log keeps its own rules in
:mod:`sidecar.wal`; this module is for what surrounds it: the data dir and log dir
themselves, key files' directories, ``authorized_keys``, ``known_hosts``.
``tests/faults/test_power_cut.py`` runs the daemon's whole data dir on a filesystem
that forgets whatever these rules do not cover.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

DIR_MODE = 0o700


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def make_dirs(path: str | os.PathLike[str], mode: int = DIR_MODE) -> None:
    """``mkdir -p`` whose new directories are durable: each one's parent is fsync'd."""
    target = Path(path).absolute()
    missing: list[Path] = []
    for candidate in (target, *target.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        # made meanwhile by someone else: its parent is fsync'd below all the same
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=mode)
        fsync_dir(directory.parent)
    if not target.is_dir():
        raise NotADirectoryError(f"{target} is not a directory")


def append_text(path: str | os.PathLike[str], text: str, mode: int = 0o600) -> None:
    """Append ``text`` and fsync it; a file this call creates is made durable by name too."""
    path = Path(path)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def replace_file(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Make ``path`` hold ``data``, all or nothing, durably (temp file, fsync, rename,
    directory fsync)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # independent of the umask
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
