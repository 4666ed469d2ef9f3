"""The file operations the log needs, behind one interface.

The real implementation calls the OS. Tests substitute a layer that simulates a crash
(keeps only what was synced, plus an arbitrary part of the rest) or injects faults
(EIO on fsync, ENOSPC on write), so every durability rule is tested without mocks of
the log itself.
"""

from __future__ import annotations

import mmap
import os
from typing import Protocol

# A log's content as `FileLayer.read` gives it: bytes, or the file mapped read-only, so
# that reading a large log does not copy it into memory (`release_below` lets the pages
# already read go, `release` unmaps it).
LogBytes = bytes | mmap.mmap
# how much of a mapped log is read between two `release_below` calls worth making
_RELEASE_STEP = 16 * 1024 * 1024


def release_below(data: LogBytes, offset: int, released: int) -> int:
    """Drop the pages of a mapped log below `offset` from this process (they stay in the
    page cache; reading them again maps them back); returns the offset released so far.
    Nothing for bytes."""
    if not isinstance(data, mmap.mmap) or offset - released < _RELEASE_STEP:
        return released
    upto = offset - offset % mmap.PAGESIZE
    data.madvise(mmap.MADV_DONTNEED, released, upto - released)
    return upto


def release(data: LogBytes | None) -> None:
    """Unmap a mapped log (call once no view of it is left)."""
    if isinstance(data, mmap.mmap):
        data.close()


class LogHandle(Protocol):
    def write(self, data: bytes) -> None:
        """Write all of `data` at the end of the file, or raise OSError."""

    def sync(self) -> None:
        """fdatasync: make every write so far durable, or raise OSError."""

    def truncate(self, size: int) -> None: ...

    def close(self) -> None: ...


class FileLayer(Protocol):
    # True when calls may block on the disk (run them off the event loop)
    blocking: bool

    def open_append(self, path: str) -> LogHandle: ...

    def create(self, path: str) -> LogHandle:
        """Create or truncate `path` for writing."""

    def read(self, path: str) -> LogBytes | None:
        """Whole content, or None when the file does not exist; `release` it."""

    def rename(self, src: str, dst: str) -> None: ...

    def unlink(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...


class _OsHandle:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.lseek(self._fd, size, os.SEEK_SET)

    def close(self) -> None:
        os.close(self._fd)


class OsFileLayer:
    blocking = True

    def open_append(self, path: str) -> LogHandle:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        os.lseek(fd, 0, os.SEEK_END)
        return _OsHandle(fd)

    def create(self, path: str) -> LogHandle:
        return _OsHandle(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))

    def read(self, path: str) -> LogBytes | None:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    return b""
                try:
                    return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
                except OSError:  # a file system that cannot map files (some FUSE ones)
                    return f.read()
        except FileNotFoundError:
            return None

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)
