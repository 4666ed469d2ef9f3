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


class _PreallocatedHandle(_OsHandle):
    """The live log's handle: the file is kept `step` bytes of written zeros ahead of
    the log's end, so that appending a frame overwrites blocks that are already
    allocated and written. Its fdatasync then writes the data and nothing else; an
    append that grows the file also commits the file system's journal (the new size
    and blocks), which on ext4 made a batch's fsync 1.3-1.5 x slower.

    Zeros after the last frame are not a torn write (`_framing.scan`). Closing cuts
    them. Preallocating is best effort: when the zeros cannot be written (a full
    disk), the frame is appended as it would be without them."""

    __slots__ = ("_allocated", "_end", "_step")

    def __init__(self, fd: int, end: int, step: int) -> None:
        super().__init__(fd)
        self._end = end
        self._allocated = os.fstat(fd).st_size
        self._step = step

    # Invariant: _end <= _allocated (the file's size): zeros are only ever written at or
    # after the end of the last frame, never over one.
    def write(self, data: bytes) -> None:
        if self._end + len(data) > self._allocated:
            self._preallocate(self._end + len(data) + self._step)
        super().write(data)
        self._end += len(data)
        self._allocated = max(self._allocated, self._end)  # appended without zeros ahead

    def _preallocate(self, upto: int) -> None:
        try:
            while self._allocated < upto:
                n = min(upto - self._allocated, len(_ZEROS))
                self._allocated += os.pwrite(self._fd, _ZEROS[:n], self._allocated)
        except OSError:
            os.ftruncate(self._fd, self._end)  # the zeros written so far
            self._allocated = self._end

    def truncate(self, size: int) -> None:
        super().truncate(size)
        self._end = self._allocated = size

    def close(self) -> None:
        try:
            if self._allocated > self._end:
                os.ftruncate(self._fd, self._end)
        finally:
            super().close()


# zeros written ahead of the live log's end, and the most written in one call
PREALLOCATE_BYTES = 1 << 20
_ZEROS = memoryview(bytes(PREALLOCATE_BYTES))


class OsFileLayer:
    blocking = True
    preallocate = PREALLOCATE_BYTES  # zeros kept ahead of the live log (0: none)

    def __init__(self, preallocate: int = PREALLOCATE_BYTES) -> None:
        self.preallocate = preallocate

    def open_append(self, path: str) -> LogHandle:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        end = os.lseek(fd, 0, os.SEEK_END)
        return _PreallocatedHandle(fd, end, self.preallocate) if self.preallocate else _OsHandle(fd)

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
