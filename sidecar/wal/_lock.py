"""One process per log: an advisory lock next to it (`<log>.lock`)."""

from __future__ import annotations

import contextlib
import fcntl
import os

from sidecar.errors import Unavailable


class LogLock:
    def __init__(self, log_path: str) -> None:
        # next to the file itself: a log reached through a symlink has one lock
        self.path = os.path.realpath(log_path) + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        # A holder may remove the file before letting go (`release(remove=True)`): a
        # lock taken on a file that is no longer the one at the path is let go and
        # taken again on the new one, so two processes never both hold "the" lock.
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "another process"
                os.close(fd)
                raise Unavailable(
                    f"{self.path}: the log is in use by pid {holder}; stop that process first"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise Unavailable(f"{self.path}: the lock file keeps being replaced; try again")
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def holder(self) -> str | None:
        """Who holds the lock now ("pid N"), without taking it or creating the file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip()
            return f"pid {pid}" if pid else "another process"
        finally:
            os.close(fd)
        return None

    def release(self, *, remove: bool = False) -> None:
        """Let go; with ``remove``, delete the lock file first (while still holding it)."""
        if self._fd is not None:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)
