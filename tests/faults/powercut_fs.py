"""A FUSE filesystem that forgets everything not made durable, like a power cut.

    python -m tests.faults.powercut_fs BACKING MOUNTPOINT

Files live in memory as the running system sees them. What the POSIX durability
rules say survives a power cut is copied to BACKING, and only that:

* a file's data, when the file is fsync'd/fdatasync'd (FUSE ``fsync``);
* a directory's entries (creates, mkdirs, renames, unlinks in it), when that
  directory is fsync'd (FUSE ``fsyncdir``). A new file or subdirectory whose parent
  was never fsync'd is gone after a cut, with everything under it; a rename not
  followed by a directory fsync is undone.

Directories nest, so the daemon's whole data dir can live here. Renaming a directory
and hard links are refused (the daemon does neither).

A power cut is killing this process (SIGKILL: nothing runs) and unmounting; a new
process mounted on the same BACKING starts from the durable state. Single-threaded
(``nothreads``), ``direct_io`` and zero attribute/entry timeouts, so the kernel keeps
no cache of its own that could hide what was lost.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from fuse import FUSE, FuseOSError, Operations

NAMESPACE = "namespace.json"


@dataclass
class Inode:
    number: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""  # what survives a cut
    mtime: float = field(default_factory=time.time)
    is_dir: bool = False


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class PowerCutFS(Operations):  # type: ignore[misc]
    """The filesystem; see the module docstring."""

    def __init__(self, backing: str) -> None:
        self.backing = backing
        self.inodes: dict[int, Inode] = {}
        self.names: dict[str, int] = {}  # path -> inode, as the running system sees it
        self.durable_names: dict[str, int] = {}  # path -> inode, as a cut would leave it
        self.handles: dict[int, int] = {}  # open file handle -> inode
        self.next_fh = 1
        self.next_ino = 1
        self._load()

    # -- the durable state in BACKING ----------------------------------------------------
    def _load(self) -> None:
        os.makedirs(self.backing, exist_ok=True)
        # inode numbers are never reused: a data file of a file lost in a cut stays
        numbers = [int(n[4:]) for n in os.listdir(self.backing) if n[4:].isdigit()]
        self.next_ino = max(numbers, default=0) + 1
        path = os.path.join(self.backing, NAMESPACE)
        if not os.path.exists(path):
            return
        with open(path, "rb") as f:
            saved = orjson.loads(f.read())
        entries = saved["names"]
        for name in sorted(entries, key=lambda n: n.count("/")):  # parents first
            number, mode, is_dir = entries[name]
            if parent_of(name) != "/" and parent_of(name) not in self.names:
                continue  # its directory's entry was never durable: lost with it
            ino = self.inodes.get(number)
            if ino is None:
                blob = os.path.join(self.backing, f"ino-{number}")
                durable = b""
                if os.path.exists(blob):
                    with open(blob, "rb") as f:
                        durable = f.read()
                ino = Inode(number, mode, bytearray(durable), durable, is_dir=is_dir)
                self.inodes[number] = ino
            self.names[name] = number
            self.durable_names[name] = number
        self.next_ino = max(self.next_ino, saved["next_ino"])

    def _persist_data(self, ino: Inode) -> None:
        new = bytes(ino.data)
        blob = os.path.join(self.backing, f"ino-{ino.number}")
        old = ino.durable
        if len(new) >= len(old) and new.startswith(old) and os.path.exists(blob):
            with open(blob, "ab") as f:  # the common case: an append
                f.write(new[len(old) :])
                f.flush()
                os.fsync(f.fileno())
        else:
            tmp = blob + ".tmp"
            with open(tmp, "wb") as f:
                f.write(new)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, blob)
            self._sync_backing_dir()
        ino.durable = new

    def _persist_names(self) -> None:
        names = {
            n: (i, self.inodes[i].mode, self.inodes[i].is_dir)
            for n, i in self.durable_names.items()
        }
        path = os.path.join(self.backing, NAMESPACE)
        with open(path + ".tmp", "wb") as f:
            f.write(orjson.dumps({"names": names, "next_ino": self.next_ino}))
            f.flush()
            os.fsync(f.fileno())
        os.rename(path + ".tmp", path)
        self._sync_backing_dir()

    def _sync_backing_dir(self) -> None:
        fd = os.open(self.backing, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- helpers -------------------------------------------------------------------------
    def _inode(self, path: str, fh: int | None = None) -> Inode:
        if fh is not None and fh in self.handles:
            return self.inodes[self.handles[fh]]
        number = self.names.get(path)
        if number is None:
            raise FuseOSError(errno.ENOENT)
        return self.inodes[number]

    def _handle(self, number: int) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = number
        return fh

    def _children(self, directory: str, names: dict[str, int]) -> dict[str, int]:
        return {n: i for n, i in names.items() if parent_of(n) == directory}

    def _check_parent(self, path: str) -> None:
        parent = parent_of(path)
        if parent != "/" and not self._inode(parent).is_dir:
            raise FuseOSError(errno.ENOTDIR)

    # -- FUSE operations -------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        now = time.time()
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2, "st_size": 0,
                    "st_atime": now, "st_mtime": now, "st_ctime": now}  # fmt: skip
        ino = self._inode(path, fh)
        kind, links = (stat.S_IFDIR, 2) if ino.is_dir else (stat.S_IFREG, 1)
        return {"st_mode": kind | ino.mode, "st_nlink": links, "st_size": len(ino.data),
                "st_atime": ino.mtime, "st_mtime": ino.mtime, "st_ctime": ino.mtime}  # fmt: skip

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *(n.rsplit("/", 1)[1] for n in self._children(path, self.names))]

    def statfs(self, path: str) -> dict[str, int]:
        blocks = {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19}
        return {**blocks, "f_bavail": 1 << 19, "f_files": 1 << 16, "f_ffree": 1 << 15}

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        self._check_parent(path)
        number = self.next_ino
        self.next_ino += 1
        self.inodes[number] = Inode(number, stat.S_IMODE(mode))
        self.names[path] = number
        return self._handle(number)

    def open(self, path: str, flags: int) -> int:
        return self._handle(self._inode(path).number)

    def release(self, path: str, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() makes nothing durable

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._inode(path, fh).data[offset : offset + size])

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        ino = self._inode(path, fh)
        if offset > len(ino.data):
            ino.data.extend(b"\0" * (offset - len(ino.data)))
        ino.data[offset : offset + len(data)] = data
        ino.mtime = time.time()
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        ino = self._inode(path, fh)
        if length < len(ino.data):
            del ino.data[length:]
        else:
            ino.data.extend(b"\0" * (length - len(ino.data)))
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self._persist_data(self._inode(path, fh))
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        """This directory's entries become what a cut leaves; no other directory's."""
        for name in self._children(path, self.durable_names):
            del self.durable_names[name]
        self.durable_names.update(self._children(path, self.names))
        self._persist_names()
        return 0

    def unlink(self, path: str) -> int:
        if self._inode(path).is_dir:
            raise FuseOSError(errno.EISDIR)
        del self.names[path]
        return 0

    def rename(self, old: str, new: str) -> int:
        if self._inode(old).is_dir:
            raise FuseOSError(errno.EPERM)  # would move every path below it
        if new in self.names and self._inode(new).is_dir:
            raise FuseOSError(errno.EISDIR)
        self._check_parent(new)
        self.names[new] = self.names.pop(old)
        return 0

    def link(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EPERM)

    def chmod(self, path: str, mode: int) -> int:
        if path != "/":
            self._inode(path).mode = stat.S_IMODE(mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str, times: tuple[float, float] | None = None) -> int:
        if path != "/":
            self._inode(path).mtime = times[1] if times else time.time()
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        if path in self.names:
            raise FuseOSError(errno.EEXIST)
        self._check_parent(path)
        number = self.next_ino
        self.next_ino += 1
        self.inodes[number] = Inode(number, stat.S_IMODE(mode), is_dir=True)
        self.names[path] = number
        return 0

    def rmdir(self, path: str) -> int:
        if not self._inode(path).is_dir:
            raise FuseOSError(errno.ENOTDIR)
        if self._children(path, self.names):
            raise FuseOSError(errno.ENOTEMPTY)
        del self.names[path]
        return 0

    def opendir(self, path: str) -> int:
        return 0

    def releasedir(self, path: str, fh: int) -> int:
        return 0


def main() -> int:
    backing, mountpoint = sys.argv[1:3]
    FUSE(
        PowerCutFS(backing),
        mountpoint,
        foreground=True,
        nothreads=True,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
