"""The log file: open with recovery, append a frame, sync, rewrite (compaction).

Blocking, free of asyncio: the queue shell runs these calls in a worker thread; the
crash simulator runs them inline.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.errors import LogCorrupt, LogFailed
from sidecar.wal._files import (
    FileLayer,
    LogBytes,
    LogHandle,
    OsFileLayer,
    release,
    release_below,
)
from sidecar.wal._framing import (
    FILE_HEADER_SIZE,
    Scan,
    check_file_header,
    encode_frame,
    file_header,
    scan,
)
from sidecar.wal._records import Replayed, Replayer, replay

log = logging.getLogger("sidecar.wal")

TEMP_SUFFIX = ".compact-tmp"
CORRUPT_SUFFIX = ".corrupt-"
# records per frame when rewriting a log (keeps frames far below the size cap)
_REWRITE_FRAME_RECORDS = 4096
# On ext4 (data=ordered) the log's own fsync commits the journal, and with it waits for
# the data of every file written meanwhile: a compaction's temp file fsync'd only at
# the end made one batch wait for hundreds of MB (0.17 s at 1M messages), and closing
# the replaced file (freeing a GB of blocks in one go) did too. So the temp file is
# made durable as it grows, and the replaced file is cut down a piece at a time.
COMPACT_SYNC_BYTES = 8 << 20
RETIRE_CUT_BYTES = 32 << 20


class WriteFailed(LogFailed):
    """A write failed and was rolled back: nothing of that batch is in the log."""


class FsyncFailed(LogFailed):
    """fsync failed: the log's durable content is unknown; the queue must stop."""


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{name}: {exc.strerror or exc}"


@dataclass
class Recovery:
    """What opening the log found and did."""

    path: str
    created: bool = False
    records: int = 0
    frames: int = 0
    torn_bytes: int = 0  # cut from the tail
    salvaged_to: str | None = None  # damaged original kept here
    removed_temp: bool = False  # a leftover compaction temp file was removed
    replayed: Replayed | None = None


class WriteAheadLog:
    def __init__(self, layer: FileLayer, path: str, handle: LogHandle, size: int) -> None:
        self.layer = layer
        self.path = path
        self._handle = handle
        self.size = size
        self._capture: list[bytes] | None = None  # frames fsync'd during a compaction
        self._capture_lock = threading.Lock()
        # replaced by a compaction, not closed yet, with their sizes
        self._retired: list[tuple[LogHandle, int]] = []
        self._begun: Compaction | None = None  # the temp file being written, if any
        self.compact_sync_bytes = COMPACT_SYNC_BYTES
        self.retire_cut_bytes = RETIRE_CUT_BYTES
        self.dir = os.path.dirname(os.path.abspath(path))

    # -- open and recover ----------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str,
        *,
        layer: FileLayer | None = None,
        salvage: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[WriteAheadLog, Recovery]:
        """Open and recover ``path``; ``progress(bytes_read, total)`` while reading it."""
        layer = layer or OsFileLayer()
        rec = Recovery(path=path)
        directory = os.path.dirname(os.path.abspath(path))
        temp = path + TEMP_SUFFIX
        if layer.exists(temp):
            # The rename of a compaction never happened: the old log is authoritative.
            log.warning("%s: removing leftover compaction file %s", path, temp)
            layer.unlink(temp)
            layer.fsync_dir(directory)
            rec.removed_temp = True
        data = layer.read(path)
        if data is None:
            _write_new_log(layer, path, [])
            rec.created = True
            rec.replayed = Replayed()
            return cls(layer, path, layer.open_append(path), FILE_HEADER_SIZE), rec

        size = len(data)
        try:
            problem = check_file_header(data)
            if problem is not None:
                if not salvage:
                    raise LogCorrupt(
                        f"{path}: {problem}; refusing to open. Move the file away, or: "
                        + salvage_hint(),
                        path=path,
                        offset=0,
                        next_valid_offset=None,
                    )
                result = scan(b"\0" * FILE_HEADER_SIZE + data, salvage=True)
                if result.frames + result.salvaged_frames == 0:
                    # no header and not one valid frame: some other file (a host key
                    # typed for the log?) that salvage would replace with an empty log
                    raise LogCorrupt(
                        f"{path}: {problem}, and holds no valid frame: not a log; nothing "
                        "salvaged, the file is unchanged",
                        path=path,
                        offset=0,
                        next_valid_offset=None,
                    )
                return cls._salvage(layer, path, data, result, rec)
            if salvage:
                result = scan(data, salvage=True, progress=progress)
                replayed = None if result.corrupt else replay(result.records, path=path)
            else:
                result, replayed = _scan_and_replay(data, path, progress)
            if progress is not None:
                progress(size, size)
            if result.corrupt:
                if not salvage:
                    raise LogCorrupt(
                        f"{path}: corrupt record at byte offset {result.bad_offset}, followed "
                        f"by valid records (next at offset {result.next_valid_offset}); "
                        "refusing to open. Run `qssh-sidecar wal verify` to inspect; "
                        + salvage_hint(),
                        path=path,
                        offset=result.bad_offset or 0,
                        next_valid_offset=result.next_valid_offset,
                    )
                return cls._salvage(layer, path, data, result, rec)
        finally:
            release(data)
        assert replayed is not None
        rec.records = result.record_count
        rec.frames = result.frames
        rec.replayed = replayed
        handle = layer.open_append(path)
        if result.torn_tail:
            rec.torn_bytes = size - result.valid_end
            log.warning(
                "%s: torn tail of %d bytes at offset %d (an unfinished write at a crash); "
                "truncating it",
                path,
                rec.torn_bytes,
                result.valid_end,
            )
        if result.valid_end < size:  # a torn tail, or zeros written ahead of a log not closed
            handle.truncate(result.valid_end)
            handle.sync()
        return cls(layer, path, handle, result.valid_end), rec

    @classmethod
    def _salvage(
        cls, layer: FileLayer, path: str, data: LogBytes, result: Scan, rec: Recovery
    ) -> tuple[WriteAheadLog, Recovery]:
        aside = f"{path}{CORRUPT_SUFFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        n = 0
        while layer.exists(aside if n == 0 else f"{aside}.{n}"):
            n += 1
        aside = aside if n == 0 else f"{aside}.{n}"
        out = layer.create(aside)
        try:
            out.write(bytes(data))
            out.sync()
        finally:
            out.close()
        replayed = replay(result.records, path=path)
        _write_new_log(layer, path, [orjson.dumps(r) for r in result.records])
        log.warning(
            "%s: salvaged %d valid records; the damaged file is kept as %s",
            path,
            len(result.records),
            aside,
        )
        rec.records = result.record_count
        rec.frames = result.frames + result.salvaged_frames
        rec.salvaged_to = aside
        rec.replayed = replayed
        content = layer.read(path)
        size = 0 if content is None else len(content)
        release(content)
        return cls(layer, path, layer.open_append(path), size), rec

    # -- append --------------------------------------------------------------------------
    def append(self, frame: bytes) -> None:
        """Write one frame; on failure cut the file back and raise WriteFailed."""
        try:
            self._handle.write(frame)
        except OSError as exc:
            try:
                self._handle.truncate(self.size)
            except OSError as exc2:
                raise FsyncFailed(
                    f"{self.path}: write failed ({_describe(exc)}) and rolling it back failed "
                    f"({_describe(exc2)}); the queue has stopped, restart to recover"
                ) from exc2
            raise WriteFailed(
                f"{self.path}: write of {len(frame)} bytes failed ({_describe(exc)}); "
                "nothing of this batch was logged"
            ) from exc
        self.size += len(frame)

    def sync(self) -> None:
        try:
            self._handle.sync()
        except OSError as exc:
            raise FsyncFailed(
                f"{self.path}: fsync failed ({_describe(exc)}); the queue has stopped and "
                "will not retry (the kernel may have dropped the data). Restart to recover "
                "from what is on disk"
            ) from exc

    def append_and_sync(self, frame: bytes) -> None:
        self.append(frame)
        self.sync()
        if self._capture is not None:
            with self._capture_lock:  # catch_up() may be taking the list in another thread
                if self._capture is not None:
                    self._capture.append(frame)

    # -- compaction while the log is in use -----------------------------------------------
    # 1. `start_capture()` where the caller's view of the log is exact (between batches);
    # 2. `begin_compacted()`, `add_compacted(records)` piece by piece and
    #    `seal_compacted()` write and fsync a temp file from that snapshot, off the event
    #    loop, while frames go on being appended (and captured) here;
    # 3. `catch_up()`, off the loop, appends the frames captured so far (whole frames,
    #    each with its checksum) to the temp file and fsyncs it; `finish_compacted()`
    #    between batches appends the few captured since, fsyncs and renames over the log.
    # A crash before the rename leaves the old log, which holds everything; after it,
    # the new one does. Frames are captured once fsync'd, so nothing not durable in the
    # old log is carried over. Replaying a record twice changes nothing, so the snapshot
    # may be read later than the capture started (it is then partly newer): whatever it
    # lacks or holds that is stale, the captured frames after it put right.

    def start_capture(self) -> None:
        self._capture = []

    def begin_compacted(self) -> Compaction:
        """Create the temp file; raises WriteFailed (the old log stays in use)."""
        temp = self.path + TEMP_SUFFIX
        try:
            out = self.layer.create(temp)
            try:
                out.write(file_header())
            except BaseException:
                out.close()
                raise
        except OSError as exc:
            self._abandon(temp)
            raise self._compaction_failed(exc) from exc
        self._begun = Compaction(temp, out, FILE_HEADER_SIZE)
        return self._begun

    def add_compacted(self, c: Compaction, records: Iterable[bytes]) -> None:
        """Add records to the temp file (whole frames are written as they fill up, and
        made durable every `compact_sync_bytes`); raises WriteFailed."""
        try:
            for r in records:
                c.pending.append(r)
                if len(c.pending) >= _REWRITE_FRAME_RECORDS:
                    self._write_pending(c)
        except OSError as exc:
            self.abandon_compacted(c)
            raise self._compaction_failed(exc) from exc

    def seal_compacted(self, c: Compaction) -> None:
        """Write what is left of the snapshot and fsync the temp file."""
        try:
            if c.pending:
                self._write_pending(c)
            c.handle.sync()
        except OSError as exc:
            self.abandon_compacted(c)
            raise self._compaction_failed(exc) from exc

    def _write_pending(self, c: Compaction) -> None:
        frame = encode_frame(c.pending)
        c.pending = []
        c.handle.write(frame)
        c.size += len(frame)
        if c.size - c.synced >= self.compact_sync_bytes:
            c.handle.sync()
            c.synced = c.size

    def write_compacted(self, records: Iterable[bytes]) -> Compaction:
        """The snapshot written in one go: `begin_compacted`, `add_compacted`,
        `seal_compacted`."""
        c = self.begin_compacted()
        self.add_compacted(c, records)
        self.seal_compacted(c)
        return c

    def _compaction_failed(self, exc: OSError) -> WriteFailed:
        return WriteFailed(
            f"{self.path}: compaction failed ({_describe(exc)}); the old log is kept"
        )

    def catch_up(self, c: Compaction) -> int:
        """Append and fsync the frames captured so far, while the log goes on (so that
        the swap has little left to do); how many."""
        with self._capture_lock:
            tail, self._capture = self._capture or [], []
        try:
            self._write_tail(c, tail)
        except OSError as exc:
            self.abandon_compacted(c)
            raise self._compaction_failed(exc) from exc
        return len(tail)

    @staticmethod
    def _write_tail(c: Compaction, tail: list[bytes]) -> None:
        for frame in tail:
            c.handle.write(frame)
            c.size += len(frame)
        c.handle.sync()

    def finish_compacted(self, c: Compaction) -> int:
        """Catch up and swap (call between batches); how many frames were caught up."""
        with self._capture_lock:
            tail, self._capture = self._capture or [], None
        try:
            self._write_tail(c, tail)
            c.handle.close()
        except OSError as exc:
            with contextlib.suppress(OSError):
                c.handle.close()
            self._abandon(c.temp)
            raise self._compaction_failed(exc) from exc
        self._begun = None
        self._swap_in(c.temp, c.size)
        return len(tail)

    def abandon_compacted(self, c: Compaction | None) -> None:
        """Give up a compaction: the old log stays in use. With `c` None, the one
        `begin_compacted` made last if any (its caller may not have seen it, when
        cancelled while it ran)."""
        self._capture = None
        c, self._begun = c or self._begun, None
        if c is not None:
            with contextlib.suppress(OSError):
                c.handle.close()
            self._abandon(c.temp)

    def _abandon(self, temp: str) -> None:
        self._capture = None
        try:
            if self.layer.exists(temp):
                self.layer.unlink(temp)
        except OSError:
            pass

    def _swap_in(self, temp: str, size: int) -> None:
        try:
            self.layer.rename(temp, self.path)
            self.layer.fsync_dir(self.dir)
            new_handle = self.layer.open_append(self.path)
        except OSError as exc:
            raise FsyncFailed(
                f"{self.path}: compaction rename/directory fsync failed ({_describe(exc)}); "
                "the queue has stopped, restart to recover"
            ) from exc
        # Closing the replaced file frees its blocks (the rename unlinked it), which
        # takes a while for a large log: `close_retired()` does it after the swap.
        self._retired.append((self._handle, self.size))
        self._handle, self.size = new_handle, size

    def close_retired(self) -> None:
        """Close the files replaced by compactions (call off the event loop), each cut
        down `retire_cut_bytes` at a time first (the rename unlinked them: nothing of
        the log is lost)."""
        retired, self._retired = self._retired, []
        for handle, size in retired:
            with contextlib.suppress(OSError):
                for cut in range(size - self.retire_cut_bytes, 0, -self.retire_cut_bytes):
                    handle.truncate(cut)
            with contextlib.suppress(OSError):
                handle.close()

    # -- compaction ----------------------------------------------------------------------
    def rewrite(self, records: Iterable[bytes]) -> None:
        """Replace the log with `records`: temp file, fsync, rename, fsync directory.

        A failure before the rename leaves the old log in use (raises WriteFailed);
        a failure after it is fatal (FsyncFailed).
        """
        temp = self.path + TEMP_SUFFIX
        try:
            size = _write_file(self.layer, temp, records)
        except OSError as exc:
            self._abandon(temp)
            raise self._compaction_failed(exc) from exc
        self._swap_in(temp, size)
        self.close_retired()

    def close(self) -> None:
        self.close_retired()
        self._handle.close()


@dataclass
class Compaction:
    """A compacted log being written: its temp file, open, and its size so far."""

    temp: str
    handle: LogHandle
    size: int
    synced: int = 0  # bytes made durable so far
    pending: list[bytes] = field(default_factory=list)  # records not yet in a frame


def _scan_and_replay(
    data: LogBytes, path: str, progress: Callable[[int, int], None] | None
) -> tuple[Scan, Replayed]:
    """Scan and replay in one pass: each frame is folded into the live set as it is
    read, and the pages of a mapped log already read are let go."""
    replayer = Replayer(path)
    released = 0

    def fold(records: list[list[Any]], end: int) -> None:
        nonlocal released
        replayer.feed(records)
        released = release_below(data, end, released)

    return scan(data, progress=progress, sink=fold), replayer.out


def _write_records(out: LogHandle, records: Iterable[bytes]) -> int:
    size = FILE_HEADER_SIZE
    out.write(file_header())
    chunk: list[bytes] = []
    for r in records:
        chunk.append(r)
        if len(chunk) >= _REWRITE_FRAME_RECORDS:
            frame = encode_frame(chunk)
            out.write(frame)
            size += len(frame)
            chunk = []
    if chunk:
        frame = encode_frame(chunk)
        out.write(frame)
        size += len(frame)
    return size


def _write_file(layer: FileLayer, path: str, records: Iterable[bytes]) -> int:
    out = layer.create(path)
    try:
        size = _write_records(out, records)
        out.sync()
    finally:
        out.close()
    return size


def _write_new_log(layer: FileLayer, path: str, records: list[bytes]) -> None:
    temp = path + TEMP_SUFFIX
    _write_file(layer, temp, records)
    layer.rename(temp, path)
    layer.fsync_dir(os.path.dirname(os.path.abspath(path)))


def salvage_hint(command: str | None = None) -> str:
    """What salvage does, and (for a command-line tool) the command that runs it."""
    hint = "salvage keeps every valid record and sets the damaged file aside"
    return hint if command is None else f"{hint}: `qssh-sidecar {command}`"
