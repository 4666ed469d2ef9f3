"""Queue core benchmark: prints one JSON object.

Everything runs in one process, baselines interleaved with what they are compared to
(SPEC §8: a lone fsync costs very different amounts on an idle and a busy VM), and
each figure is the median of several rounds.

    python bench/queue.py [--dir DIR] [--rounds N] [--quick]

Figures:
* serial: one caller, sync submit after sync submit, vs a raw os.write+os.fdatasync loop
  appending records of the same size (the physical limit), alternating op by op;
  ratio = raw time / ours, per round, median over rounds.
* concurrent: 1, 16 and 256 callers doing sync submits; acknowledged submits per second.
* async: submit_async calls per second (memory only).
* recovery: time to open a log holding 1M submit records (replay, load, reserve).
* compaction: time of compact_wal() with 100k live messages.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib `queue` module: drop its directory from the path
# before anything imports `queue`, and put the repository root there instead.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(Path(_HERE).parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402

from sidecar import QppValidatorQueue, QueueMessage, QueueMessageWithProvenance  # noqa: E402
from sidecar.state import Limits  # noqa: E402
from sidecar.wal import (  # noqa: E402
    FRAME_HEADER_SIZE,
    WriteAheadLog,
    encode_frame,
    reserve_record,
    submit_record,
)

NAME = "bench"
BIG = Limits(max_messages=10_000_000, max_bytes=1 << 34)


def _msg(i: int) -> QueueMessage:
    return QueueMessage.create(
        "block_import", block_hash=i.to_bytes(32, "big"), block_number=i, timestamp=i
    )


def _record_size(msg: QueueMessage) -> int:
    item = QueueMessageWithProvenance(msg, 10**6, time.time(), "bench", persisted=True)
    return len(encode_frame([submit_record(item)]))


async def serial_pair(
    q: QppValidatorQueue, msg: QueueMessage, raw_path: str, size: int, n: int
) -> tuple[float, float]:
    """Seconds per op of (raw write+fdatasync, our serial sync submit).

    The two alternate op by op, so both see the same disk and CPU conditions (on a
    shared VM a lone fsync costs very different amounts from one moment to the next).
    """
    record = b"x" * size
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    raw = ours = 0.0
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            t1 = time.perf_counter()
            await q.submit_sync(msg, submitted_by="bench")
            t2 = time.perf_counter()
            raw += t1 - t0
            ours += t2 - t1
    finally:
        os.close(fd)
        os.unlink(raw_path)
    return raw / n, ours / n


async def concurrent_submit(
    q: QppValidatorQueue, msg: QueueMessage, callers: int, per: int
) -> float:
    async def caller() -> None:
        for _ in range(per):
            await q.submit_sync(msg, submitted_by="bench")

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return callers * per / (time.perf_counter() - started)


async def async_submit(q: QppValidatorQueue, msg: QueueMessage, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await q.submit_async(msg, submitted_by="bench")
    return n / (time.perf_counter() - started)


async def drain(q: QppValidatorQueue) -> None:
    """Empty the queue (memory only for async messages) and compact the log."""
    while (h := await q.pop()) is not None:
        h.consume()
    await q.compact_wal()


def write_log(path: str, n: int) -> None:
    """A log of `n` submit records, in frames as group commit writes them."""
    if os.path.exists(path):
        os.unlink(path)
    wal, _ = WriteAheadLog.open(path)
    wal.append_and_sync(encode_frame([reserve_record(n + 1)]))
    now = time.time()
    chunk: list[bytes] = []
    for i in range(1, n + 1):
        item = QueueMessageWithProvenance(_msg(i), i, now, "bench", persisted=True)
        chunk.append(submit_record(item))
        if len(chunk) == 256:
            wal.append(encode_frame(chunk))
            chunk = []
    if chunk:
        wal.append(encode_frame(chunk))
    wal.sync()
    wal.close()


async def recovery(d: str, n: int) -> tuple[float, int]:
    started = time.perf_counter()
    q = await QppValidatorQueue.open(NAME, d, limits=BIG)
    seconds = time.perf_counter() - started
    depth = q.depth()["total"]
    # leave the log as it was (close writes nothing: every message is logged)
    await q.close()
    return seconds, depth


async def compaction(d: str, n: int) -> tuple[float, int, int]:
    write_log(os.path.join(d, f"{NAME}.wal"), n)
    q = await QppValidatorQueue.open(NAME, d, limits=BIG)
    # consume half so the rewrite has something to drop
    for _ in range(n // 2):
        h = await q.pop()
        assert h is not None
        h.consume()
    result = await q.compact_wal()
    await q.close()
    return result["seconds"], result["bytes_before"], result["bytes_after"]


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", help="where to put the logs (default: a temp dir on /var/tmp)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="qssh-bench-", dir=args.dir or "/var/tmp")
    try:
        return await _run(base, args.rounds, args.quick)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _run(base: str, rounds: int, quick: bool) -> dict[str, Any]:
    msg = _msg(1)
    size = _record_size(msg)
    n_serial = 200 if quick else 500
    d = os.path.join(base, "q")
    q = await QppValidatorQueue.open(NAME, d, limits=BIG)
    ours: list[float] = []
    raw: list[float] = []
    conc: dict[int, list[float]] = {1: [], 16: [], 256: []}
    asyn: list[float] = []
    per_caller = {1: 300, 16: 100, 256: 20} if quick else {1: 600, 16: 300, 256: 60}
    for _ in range(rounds):
        # interleaved: baseline, ours, concurrency levels, async — every round
        r, o = await serial_pair(q, msg, os.path.join(base, "raw"), size, n_serial)
        raw.append(r)
        ours.append(o)
        for callers, per in per_caller.items():
            conc[callers].append(await concurrent_submit(q, msg, callers, per))
        asyn.append(await async_submit(q, msg, 50_000 if quick else 200_000))
        await drain(q)
    await q.close()
    shutil.rmtree(d)

    n_recovery = 100_000 if quick else 1_000_000
    rd = os.path.join(base, "r")
    os.makedirs(rd)
    write_log(os.path.join(rd, f"{NAME}.wal"), n_recovery)
    rec = [await recovery(rd, n_recovery) for _ in range(max(1, min(rounds, 3)))]
    log_bytes = os.path.getsize(os.path.join(rd, f"{NAME}.wal"))  # noqa: ASYNC240
    shutil.rmtree(rd)

    n_compact = 20_000 if quick else 100_000
    comp = []
    for i in range(max(1, min(rounds, 3))):
        cd = os.path.join(base, f"c{i}")
        os.makedirs(cd)
        comp.append(await compaction(cd, n_compact))
        shutil.rmtree(cd)

    serial_med, raw_med = statistics.median(ours), statistics.median(raw)
    ratios = [r / o for r, o in zip(raw, ours, strict=True)]
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "dir": base},
        "rounds": rounds,
        "record_bytes": size,
        "frame_header_bytes": FRAME_HEADER_SIZE,
        "serial_sync_submit_us": round(serial_med * 1e6, 1),
        "raw_write_fdatasync_us": round(raw_med * 1e6, 1),
        "serial_ratio_vs_raw": round(statistics.median(ratios), 3),
        "serial_ratio_rounds": [round(r, 3) for r in ratios],
        "concurrent_acks_per_s": {str(c): round(statistics.median(v)) for c, v in conc.items()},
        "async_submits_per_s": round(statistics.median(asyn)),
        "recovery": {
            "records": n_recovery,
            "log_bytes": log_bytes,
            "seconds_median": round(statistics.median(r[0] for r in rec), 3),
            "restored": rec[0][1],
        },
        "compaction": {
            "live_records": n_compact // 2,
            "records_before": n_compact,
            "seconds_median": round(statistics.median(c[0] for c in comp), 3),
            "bytes_before": comp[0][1],
            "bytes_after": comp[0][2],
        },
        "targets": {
            "serial_ratio_vs_raw": ">= 0.9",
            "acks_per_s_16": ">= 10000",
            "acks_per_s_256": ">= 50000",
            "async_per_s": ">= 150000",
            "recovery_1m_s": "< 3",
        },
    }


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(asyncio.run(main()), option=orjson.OPT_INDENT_2).decode() + "\n")
