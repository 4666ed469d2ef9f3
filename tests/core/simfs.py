"""An in-memory file layer that can crash like a real disk, and fault injection.

`SimDisk` keeps, per file, the bytes made durable by `sync` and the writes since then;
directory entries become durable with `fsync_dir`. `crash_image(rng)` returns what a
power cut could leave behind: durable bytes plus a prefix of the unsynced writes (the
last one possibly torn) or an arbitrary subset of them (holes read as zeros), and a
prefix of the directory operations since the last directory fsync.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass, field


class SimCrash(OSError):
    def __init__(self) -> None:
        super().__init__(errno.EIO, "simulated crash: the machine is off")


@dataclass
class Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    pending: list[tuple[str, int, bytes]] = field(default_factory=list)  # (op, offset/size, data)


class SimHandle:
    def __init__(self, disk: SimDisk, inode: Inode) -> None:
        self._disk = disk
        self._inode = inode
        self.closed = False

    def write(self, data: bytes) -> None:
        self._disk._step("write", len(data))
        fault = self._disk.fail_write
        if fault is not None:
            keep = fault(data)
            if keep is not None:
                # a short write before the error, like a filesystem running out of space
                self._inode.data.extend(data[:keep])
                self._inode.pending.append(("w", len(self._inode.data) - keep, bytes(data[:keep])))
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
        off = len(self._inode.data)
        self._inode.data.extend(data)
        self._inode.pending.append(("w", off, bytes(data)))
        self._disk._after("write")

    def sync(self) -> None:
        self._disk._step("sync", 0)
        self._disk.syncs += 1
        if self._disk.fail_sync is not None and self._disk.fail_sync():
            raise OSError(errno.EIO, "Input/output error (injected)")
        self._inode.durable = bytes(self._inode.data)
        self._inode.pending.clear()

    def truncate(self, size: int) -> None:
        self._disk._step("truncate", size)
        del self._inode.data[size:]
        self._inode.pending.append(("t", size, b""))

    def close(self) -> None:
        self.closed = True


class SimDisk:
    """The file layer (`sidecar.wal.FileLayer`) over simulated storage."""

    blocking = False

    def __init__(self, files: dict[str, bytes] | None = None, crash_at: int | None = None) -> None:
        self.names: dict[str, Inode] = {}
        for path, content in (files or {}).items():
            self.names[path] = Inode(bytearray(content), content)
        self.durable_names: dict[str, Inode] = dict(self.names)
        self.dir_ops: list[tuple[str, str, Inode | None]] = []  # since the last fsync_dir
        self.ops = 0
        self.syncs = 0
        self.writes = 0
        self.crash_at = crash_at
        self.crashed = False
        self.fail_sync: object | None = None  # callable() -> bool
        self.fail_write: object | None = None  # callable(data) -> bytes kept or None

    # -- crash points --------------------------------------------------------------------
    def _step(self, op: str, n: int) -> None:
        if self.crashed:
            raise SimCrash()
        self.ops += 1
        if op == "write":
            self.writes += 1
        if self.crash_at is not None and self.ops >= self.crash_at and op != "write":
            self.crashed = True
            raise SimCrash()

    def _after(self, op: str) -> None:
        # a crash "during" a write: the write is issued, nothing after it happens
        if self.crash_at is not None and self.ops >= self.crash_at:
            self.crashed = True
            raise SimCrash()

    # -- FileLayer -----------------------------------------------------------------------
    def open_append(self, path: str) -> SimHandle:
        if self.crashed:
            raise SimCrash()
        if path not in self.names:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        return SimHandle(self, self.names[path])

    def create(self, path: str) -> SimHandle:
        self._step("create", 0)
        inode = Inode()
        self.names[path] = inode
        self.dir_ops.append(("link", path, inode))
        return SimHandle(self, inode)

    def read(self, path: str) -> bytes | None:
        if self.crashed:
            raise SimCrash()
        inode = self.names.get(path)
        return None if inode is None else bytes(inode.data)

    def rename(self, src: str, dst: str) -> None:
        self._step("rename", 0)
        inode = self.names.pop(src)
        self.names[dst] = inode
        self.dir_ops.append(("rename", src + "\0" + dst, inode))

    def unlink(self, path: str) -> None:
        self._step("unlink", 0)
        del self.names[path]
        self.dir_ops.append(("unlink", path, None))

    def fsync_dir(self, path: str) -> None:
        self._step("fsync_dir", 0)
        self.durable_names = dict(self.names)
        self.dir_ops.clear()

    def exists(self, path: str) -> bool:
        if self.crashed:
            raise SimCrash()
        return path in self.names

    # -- what survives a power cut ----------------------------------------------------------
    def crash_image(self, rng: random.Random) -> dict[str, bytes]:
        names = dict(self.durable_names)
        for op, arg, inode in self.dir_ops[: rng.randint(0, len(self.dir_ops))]:
            if op == "link":
                names[arg] = inode  # type: ignore[assignment]
            elif op == "rename":
                src, dst = arg.split("\0")
                if src in names:
                    names[dst] = names.pop(src)
            else:
                names.pop(arg, None)
        return {path: _surviving_bytes(inode, rng) for path, inode in names.items()}


def _surviving_bytes(inode: Inode, rng: random.Random) -> bytes:
    data = bytearray(inode.durable)
    pending = inode.pending
    if not pending:
        return bytes(data)
    if rng.random() < 0.6:
        # a prefix of the unsynced operations, the last kept write possibly torn
        k = rng.randint(0, len(pending))
        for i, (op, off, chunk) in enumerate(pending[:k]):
            if op == "t":
                del data[off:]
                continue
            torn = i == k - 1 and chunk and rng.random() < 0.5
            _put(data, off, chunk[: rng.randint(0, len(chunk))] if torn else chunk)
    else:
        # an arbitrary subset of 512-byte sectors of the unsynced writes
        for op, off, chunk in pending:
            if op == "t":
                if rng.random() < 0.5:
                    del data[off:]
                continue
            for s in range(0, len(chunk), 512):
                if rng.random() < 0.5:
                    _put(data, off + s, chunk[s : s + 512])
    return bytes(data)


def _put(data: bytearray, off: int, chunk: bytes) -> None:
    if len(data) < off:
        data.extend(b"\0" * (off - len(data)))
    data[off : off + len(chunk)] = chunk
