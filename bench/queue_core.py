"""Queue core benchmark: prints one JSON object.

Everything runs in one process, baselines interleaved with what they are compared to
(SPEC §8: a lone fsync costs very different amounts on an idle and a busy VM), and
each figure is the median of several rounds (see bench/stats.py, bench/baselines.py).

    python bench/queue_core.py [--dir DIR] [--rounds N] [--quick]

Figures:
* serial: one caller, sync submit after sync submit, vs a raw os.write+os.fdatasync loop
  appending records of the same size (the physical limit), alternating op by op; then
  the same against persist-queue's durable SQLite queue putting items of the same size;
  ratio = baseline time / ours, per round, median over rounds.
* cycle: one message's durable life, alternating op by op: ours submit_sync + lease + ack
  vs persist-queue put + get + ack.
* concurrent: 1, 16 and 256 callers doing sync submits; acknowledged submits per second;
  16 threads putting into persist-queue in the same rounds.
* 16 callers vs the raw loop: a raw write+fdatasync loop (one writer, records of our
  framed record's size, a file in the same directory) and 16 callers doing sync
  submits, alternating in 10 slices per round (5 with --quick; 40 raw ops, then 25
  submits per caller), so both see the same disk and CPU; ratio = our submits/s / the
  loop's ops/s over the round's slices.
* async: submit_async calls per second (memory only).
* recovery: time to open a log holding 1M submit records (replay, load, reserve).
* compaction: time of compact_wal() keeping 100k live messages (dropping 50k consumed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.baselines import PersistQueueSQLite, RawAppendLog
from bench.stats import dumps, median, per_round_ratios
from sidecar import QppValidatorQueue, QueueMessage, QueueMessageWithProvenance
from sidecar.state import QueueLimits
from sidecar.wal import (
    FRAME_HEADER_SIZE,
    WriteAheadLog,
    encode_frame,
    reserve_record,
    submit_record,
)

NAME = "bench"
BIG = QueueLimits(max_messages=10_000_000, max_bytes=1 << 34)


def _msg(i: int) -> QueueMessage:
    return QueueMessage.create(
        "block_import", block_hash=i.to_bytes(32, "big"), block_number=i, timestamp=i
    )


def _record_size(msg: QueueMessage) -> int:
    item = QueueMessageWithProvenance(msg, 10**6, time.time(), "bench", persisted=True)
    return len(encode_frame([submit_record(item)]))


async def serial_pair(
    q: QppValidatorQueue, msg: QueueMessage, baseline: Callable[[], object], n: int
) -> tuple[float, float]:
    """Seconds per op of (one durable baseline op, our serial sync submit).

    The two alternate op by op, so both see the same disk and CPU conditions (on a
    shared VM a lone fsync costs very different amounts from one moment to the next).
    """
    t_base = t_ours = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        baseline()
        t1 = time.perf_counter()
        await q.submit_sync(msg, submitted_by="bench")
        t2 = time.perf_counter()
        t_base += t1 - t0
        t_ours += t2 - t1
    return t_base / n, t_ours / n


async def cycle_pair(
    q: QppValidatorQueue, msg: QueueMessage, pq: PersistQueueSQLite, item: bytes, n: int
) -> tuple[float, float]:
    """Seconds per durable message life of (persist-queue put+get+ack, ours
    submit_sync+lease+ack), alternating op by op. Run on an empty queue."""
    t_pq = t_ours = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        pq.put_get_ack(item)
        t1 = time.perf_counter()
        await q.submit_sync(msg, submitted_by="bench")
        lease = await q.lease(30)
        assert lease is not None
        await q.ack(lease)
        t2 = time.perf_counter()
        t_pq += t1 - t0
        t_ours += t2 - t1
    return t_pq / n, t_ours / n


async def concurrent_submit(
    q: QppValidatorQueue, msg: QueueMessage, callers: int, per: int
) -> float:
    async def caller() -> None:
        for _ in range(per):
            await q.submit_sync(msg, submitted_by="bench")

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return callers * per / (time.perf_counter() - started)


async def beside_raw_loop(
    q: QppValidatorQueue, msg: QueueMessage, log: RawAppendLog, slices: int
) -> tuple[float, float]:
    """(seconds per op of the raw write+fdatasync loop, our 16 callers' submits/s),
    the two alternating slice by slice (a round's disk can change a lot in a second)."""
    raw_ops, per_caller = 40, 25
    t_raw = t_ours = 0.0
    for _ in range(slices):
        t0 = time.perf_counter()
        for _ in range(raw_ops):
            log.append_sync()
        t1 = time.perf_counter()
        await concurrent_submit(q, msg, 16, per_caller)
        t_raw += t1 - t0
        t_ours += time.perf_counter() - t1
    return t_raw / (raw_ops * slices), 16 * per_caller * slices / t_ours


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


async def compaction(d: str, live: int) -> tuple[float, int, int]:
    """compact_wal() of a log holding `live` live messages plus half as many consumed."""
    consumed = live // 2
    write_log(os.path.join(d, f"{NAME}.wal"), live + consumed)
    q = await QppValidatorQueue.open(NAME, d, limits=BIG)
    for _ in range(consumed):
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
    return await run(args.dir, args.rounds, args.quick)


async def run(directory: str | None, rounds: int, quick: bool) -> dict[str, Any]:
    base = tempfile.mkdtemp(prefix="qssh-bench-", dir=directory or "/var/tmp")
    try:
        return await _run(base, rounds, quick)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _run(base: str, rounds: int, quick: bool) -> dict[str, Any]:
    msg = _msg(1)
    size = _record_size(msg)
    n_serial = 200 if quick else 500
    n_cycle = 100 if quick else 300
    d = os.path.join(base, "q")
    q = await QppValidatorQueue.open(NAME, d, limits=BIG)
    pq = PersistQueueSQLite(Path(base, "persistqueue"))
    pq_settings = pq.settings()
    ours: list[float] = []
    raw: list[float] = []
    pq_put: list[float] = []
    ours_pq: list[float] = []
    cyc_ours: list[float] = []
    cyc_pq: list[float] = []
    conc: dict[int, list[float]] = {1: [], 16: [], 256: []}
    raw_loop: list[float] = []
    conc16_beside_loop: list[float] = []
    pq_conc: list[float] = []
    asyn: list[float] = []
    per_caller = {1: 300, 16: 100, 256: 20} if quick else {1: 600, 16: 300, 256: 60}
    pq_per_thread = 20 if quick else 50
    item = b"x" * size  # what persist-queue stores: as many bytes as our log record
    warm = RawAppendLog(Path(base, "raw"), size)
    try:  # warm-up, not recorded: the first few hundred fsyncs of a fresh file cost more
        await serial_pair(q, msg, warm.append_sync, 200)
        await serial_pair(q, msg, lambda: pq.put(item), 200)
    finally:
        warm.close()
    await drain(q)
    for _ in range(rounds):
        # interleaved: baselines and ours, every case, every round
        log = RawAppendLog(Path(base, "raw"), size)
        try:
            r, o = await serial_pair(q, msg, log.append_sync, n_serial)
        finally:
            log.close()
        raw.append(r)
        ours.append(o)
        p, o = await serial_pair(q, msg, lambda: pq.put(item), n_serial)
        pq_put.append(p)
        ours_pq.append(o)
        await drain(q)
        p, o = await cycle_pair(q, msg, pq, item, n_cycle)
        cyc_pq.append(p)
        cyc_ours.append(o)
        for callers, per in per_caller.items():
            conc[callers].append(await concurrent_submit(q, msg, callers, per))
        log = RawAppendLog(Path(base, "raw"), size)
        try:
            r, o = await beside_raw_loop(q, msg, log, 5 if quick else 10)
        finally:
            log.close()
        raw_loop.append(r)
        conc16_beside_loop.append(o)
        pq_conc.append(pq.concurrent_puts(16, pq_per_thread, item))
        asyn.append(await async_submit(q, msg, 50_000 if quick else 200_000))
        await drain(q)
    await q.close()
    pq.close()
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

    vs_raw = per_round_ratios(raw, ours)
    vs_pq = per_round_ratios(pq_put, ours_pq)
    cyc_vs_pq = per_round_ratios(cyc_pq, cyc_ours)
    conc16_vs_pq = per_round_ratios(conc[16], pq_conc)
    conc16_vs_raw = per_round_ratios(conc16_beside_loop, [1 / r for r in raw_loop])
    return {
        "ratios": {
            "serial_sync_submit_vs_raw_fdatasync": round(median(vs_raw), 3),
            "serial_sync_submit_vs_persistqueue_put": round(median(vs_pq), 3),
            "submit_lease_ack_vs_persistqueue_put_get_ack": round(median(cyc_vs_pq), 3),
            "sync_submit_16_callers_vs_persistqueue_put_16_threads": round(median(conc16_vs_pq), 3),
            "sync_submit_16_callers_vs_raw_fdatasync_loop": round(median(conc16_vs_raw), 3),
        },
        "rounds": rounds,
        "record_bytes": size,
        "frame_header_bytes": FRAME_HEADER_SIZE,
        "serial_sync_submit_us": round(median(ours) * 1e6, 1),
        "raw_write_fdatasync_us": round(median(raw) * 1e6, 1),
        "persistqueue_put_us": round(median(pq_put) * 1e6, 1),
        "serial_sync_submit_us_beside_persistqueue": round(median(ours_pq) * 1e6, 1),
        "serial_ratio_vs_raw": round(median(vs_raw), 3),
        "serial_ratio_rounds": [round(r, 3) for r in vs_raw],
        "submit_lease_ack_us": round(median(cyc_ours) * 1e6, 1),
        "persistqueue_put_get_ack_us": round(median(cyc_pq) * 1e6, 1),
        "concurrent_acks_per_s": {str(c): round(median(v)) for c, v in conc.items()},
        "raw_write_fdatasync_loop_us": round(median(raw_loop) * 1e6, 1),
        "sync_submits_per_s_16_callers_beside_raw_loop": round(median(conc16_beside_loop)),
        "sync_submit_16_vs_raw_loop_rounds": [round(r, 3) for r in conc16_vs_raw],
        "persistqueue_puts_per_s_16_threads": round(median(pq_conc)),
        "async_submits_per_s": round(median(asyn)),
        "recovery": {
            "records": n_recovery,
            "log_bytes": log_bytes,
            "seconds_median": round(median(r[0] for r in rec), 3),
            "restored": rec[0][1],
        },
        "compaction": {
            "live_records": n_compact,
            "consumed_records_dropped": n_compact // 2,
            "seconds_median": round(median(c[0] for c in comp), 3),
            "bytes_before": comp[0][1],
            "bytes_after": comp[0][2],
        },
        "persistqueue": pq_settings,
        "ratio_meaning": "baseline time / our time for the same work: > 1 means ours is faster",
        "targets": {
            "serial_ratio_vs_raw": ">= 0.9",
            "acks_per_s_16": ">= 10000",
            "sync_submit_16_callers_vs_raw_fdatasync_loop": ">= 8",
            "acks_per_s_256": ">= 50000",
            "async_per_s": ">= 150000",
            "recovery_1m_s": "< 3",
        },
    }


if __name__ == "__main__":
    sys.stdout.buffer.write(dumps(asyncio.run(main())))
