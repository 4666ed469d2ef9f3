"""What a write+fdatasync costs when it appends, and when it writes over zeros written
ahead (what the live log does, docs/wal-format.md "Zeros written ahead"). Prints JSON.

Two files at a time (a third file's writes change both), alternating in slices of 40
write+fdatasync each, medians over the slices:
  - raw_append: appending records of one framed submit record (the raw loop of
    bench/queue_core.py);
  - batch_append / batch_over_zeros: a 16-record batch's frame, appended, or written
    over zeros made durable beforehand;
  - record_over_zeros: the raw record written over zeros.

    python bench/fsync_ahead.py [--dir DIR] [--slices 25]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RECORD = 233  # bytes of one framed submit record (bench/queue_core.py's message)
BATCH = 3517  # bytes of one frame of 16 such records
PER_SLICE = 40


def _open(path: Path, zeros: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if zeros:
        os.write(fd, bytes(zeros))
        os.fdatasync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _slice(fd: int, data: bytes) -> float:
    started = time.perf_counter()
    for _ in range(PER_SLICE):
        os.write(fd, data)
        os.fdatasync(fd)
    return (time.perf_counter() - started) / PER_SLICE * 1e6


def pair(directory: Path, size: int, over_zeros: bool, slices: int) -> tuple[float, float]:
    """(µs per raw append, µs per write of `size` bytes), alternating slice by slice."""
    zeros = (size * PER_SLICE * slices + (1 << 20)) if over_zeros else 0
    raw_fd = _open(directory / "raw", 0)
    other_fd = _open(directory / "other", zeros)
    raw: list[float] = []
    other: list[float] = []
    try:
        for _ in range(slices):
            raw.append(_slice(raw_fd, b"r" * RECORD))
            other.append(_slice(other_fd, b"b" * size))
    finally:
        os.close(raw_fd)
        os.close(other_fd)
        (directory / "raw").unlink()
        (directory / "other").unlink()
    return statistics.median(raw), statistics.median(other)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", help="where to write (default: a temp dir on /var/tmp)")
    parser.add_argument("--slices", type=int, default=25)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(dir=args.dir or "/var/tmp"))
    try:
        cases = {
            "batch_append": (BATCH, False),
            "batch_over_zeros": (BATCH, True),
            "record_over_zeros": (RECORD, True),
        }
        out: dict[str, object] = {"benchmark": "fsync_ahead", "unit": "us per write+fdatasync"}
        for name, (size, zeros) in cases.items():
            raw, other = pair(base, size, zeros, args.slices)
            out[name] = {"raw_append": round(raw, 1), name: round(other, 1)}
            out[f"{name}_vs_raw_append"] = round(other / raw, 2)
        print(json.dumps(out, indent=1))
    finally:
        os.rmdir(base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
