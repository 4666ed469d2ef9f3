"""Bytes on disk: the file header, batch frames, and the torn-versus-corrupt rule.

This is the one place that decides what a torn write is and what corruption is
(see docs/wal-format.md):

* A frame is the unit of one write: every group-commit batch is one frame, and the
  next frame is written only after the previous one was fsync'd. So at a crash only
  the LAST frame can be incomplete.
* Scanning stops at the first frame that fails its checks. If only zero bytes follow,
  they are space the live log had written ahead of itself (`_files`): not damage, cut
  silently. Otherwise, if no valid frame follows anywhere after that offset, the rest
  is a torn tail (cut with a warning). If a valid frame follows, the damage is in the
  middle of the log: corruption.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import crc32c
import orjson

from sidecar.wal._files import LogBytes

FILE_MAGIC: Final = b"QSSHWAL\n"
FORMAT_VERSION: Final = 1
_FILE_HEAD = struct.Struct("<8sHH")  # magic, version, flags
FILE_HEADER_SIZE: Final = _FILE_HEAD.size + 4  # + crc32c of the above

FRAME_MAGIC: Final = b"QB"
_FRAME_HEAD = struct.Struct("<2sBBI")  # magic, version, reserved, body length
FRAME_HEADER_SIZE: Final = _FRAME_HEAD.size + 4  # + crc32c(head + body)
MAX_FRAME_BODY: Final = 1 << 30
_FRAME_PREFIX: Final = FRAME_MAGIC + bytes([FORMAT_VERSION])
_LIST_LEN: Final = list.__len__


def file_header() -> bytes:
    head = _FILE_HEAD.pack(FILE_MAGIC, FORMAT_VERSION, 0)
    return head + crc32c.crc32c(head).to_bytes(4, "little")


def check_file_header(data: LogBytes) -> str | None:
    """None when `data` starts with a valid header, else what is wrong."""
    if len(data) < FILE_HEADER_SIZE:
        return f"file is {len(data)} bytes, shorter than the {FILE_HEADER_SIZE}-byte header"
    magic, version, _flags = _FILE_HEAD.unpack_from(data)
    if magic != FILE_MAGIC:
        return "not a qssh-sidecar write-ahead log (bad magic)"
    if crc32c.crc32c(data[: _FILE_HEAD.size]) != int.from_bytes(
        data[_FILE_HEAD.size : FILE_HEADER_SIZE], "little"
    ):
        return "file header checksum mismatch"
    if version != FORMAT_VERSION:
        return f"unsupported log format version {version} (this build reads {FORMAT_VERSION})"
    return None


def encode_frame(records: list[bytes]) -> bytes:
    """One frame holding already-serialised records (orjson bytes of dicts)."""
    body = b"[" + b",".join(records) + b"]"
    head = _FRAME_HEAD.pack(FRAME_MAGIC, FORMAT_VERSION, 0, len(body))
    return head + crc32c.crc32c(body, crc32c.crc32c(head)).to_bytes(4, "little") + body


def decode_frame_at(data: LogBytes, offset: int) -> tuple[int, list[list[Any]]] | None:
    """(end offset, records) of a valid frame at `offset`, or None."""
    end_head = offset + FRAME_HEADER_SIZE
    if end_head > len(data) or data[offset : offset + 3] != _FRAME_PREFIX:
        return None
    _m, _v, _r, length = _FRAME_HEAD.unpack_from(data, offset)
    end = end_head + length
    if length > MAX_FRAME_BODY or end > len(data):
        return None
    mv = memoryview(data)
    crc = crc32c.crc32c(mv[end_head:end], crc32c.crc32c(mv[offset : offset + _FRAME_HEAD.size]))
    if crc != int.from_bytes(mv[offset + _FRAME_HEAD.size : end_head], "little"):
        return None
    try:
        records = orjson.loads(mv[end_head:end])
        # a list of non-empty lists (list.__len__ raises TypeError for anything else)
        if type(records) is not list or not all(map(_LIST_LEN, records)):
            return None
    except (orjson.JSONDecodeError, TypeError):
        return None
    return end, records


@dataclass
class Scan:
    """What a scan of a log file found."""

    records: list[list[Any]] = field(default_factory=list)  # empty when given to a sink
    record_count: int = 0
    frames: int = 0
    valid_end: int = FILE_HEADER_SIZE  # end of the longest valid prefix
    file_size: int = 0
    preallocated: int = 0  # zero bytes after the last frame (a log that was not closed)
    bad_offset: int | None = None  # first frame that failed its checks
    next_valid_offset: int | None = None  # a valid frame after it: corruption
    salvaged_frames: int = 0  # valid frames found after the damage (salvage only)

    @property
    def clean(self) -> bool:
        return self.bad_offset is None

    @property
    def torn_tail(self) -> bool:
        return self.bad_offset is not None and self.next_valid_offset is None

    @property
    def corrupt(self) -> bool:
        return self.next_valid_offset is not None


def _next_valid_frame(data: LogBytes, start: int) -> int | None:
    pos = data.find(_FRAME_PREFIX, start)
    while pos != -1:
        if decode_frame_at(data, pos) is not None:
            return pos
        pos = data.find(_FRAME_PREFIX, pos + 1)
    return None


def _all_zero(data: LogBytes, start: int) -> bool:
    step = 1 << 20
    for pos in range(start, len(data), step):
        chunk = data[pos : pos + step]
        if chunk.count(0) != len(chunk):
            return False
    return True


PROGRESS_FRAMES = 4096  # frames between two calls of scan's `progress`

# Receives each valid frame's records and the offset where that frame ends.
Sink = Callable[[list[list[Any]], int], None]


def scan(
    data: LogBytes,
    *,
    salvage: bool = False,
    progress: Callable[[int, int], None] | None = None,
    sink: Sink | None = None,
) -> Scan:
    """Read every frame of a log whose header was already checked.

    With `salvage`, keep going past damage and collect every valid frame after it.
    `progress(bytes_read, total)` is called every `PROGRESS_FRAMES` frames. With
    `sink`, each frame's records go to it as the frame is read (the valid prefix only:
    not with `salvage`) instead of into `records`, so that no caller needs to hold
    every record of a large log at once.
    """
    if sink is not None and salvage:
        raise ValueError("salvage collects the records: no sink")
    result = Scan(file_size=len(data))
    offset = FILE_HEADER_SIZE
    records = result.records
    keep = records.extend if sink is None else None
    count = 0
    while offset < len(data):
        frame = decode_frame_at(data, offset)
        if frame is None:
            break
        offset, batch = frame
        count += len(batch)
        if keep is not None:
            keep(batch)
        elif sink is not None:
            sink(batch, offset)
        result.frames += 1
        if progress is not None and result.frames % PROGRESS_FRAMES == 0:
            progress(offset, len(data))
    result.valid_end = offset
    result.record_count = count
    if offset >= len(data):
        return result
    if _all_zero(data, offset):
        result.preallocated = len(data) - offset
        return result
    result.bad_offset = offset
    result.next_valid_offset = _next_valid_frame(data, offset + 1)
    if salvage and result.next_valid_offset is not None:
        pos: int | None = result.next_valid_offset
        while pos is not None:
            frame = decode_frame_at(data, pos)
            if frame is None:
                pos = _next_valid_frame(data, pos + 1)
                continue
            pos, batch = frame
            records.extend(batch)
            result.record_count += len(batch)
            result.salvaged_frames += 1
            if pos >= len(data):
                break
    return result
