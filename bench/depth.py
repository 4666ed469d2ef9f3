"""The queue at depth: RSS per message, submit rate, GC pauses, compaction, recovery.

    python bench/depth.py [--messages N] [--payload BYTES] [--dir DIR] [--no-redis]

One process fills a queue with N sync-submitted messages of a canonical size of about
--payload bytes (gossip, distinct data), measuring on the way, at depth 0, N/2 and N:

* RSS per queued message: (RSS at depth - RSS at depth 0) / depth, and the queue's own
  accounting (`stats()["bytes"]`, what `max_queue_bytes` limits) per message;
* sync submit rate of 16 callers (group commit) for a fixed number of submits;
* cyclic-GC pauses (every collection, timed through `gc.callbacks`).

At depth N it then runs `compact_wal()` while 16 callers keep submitting: the
compaction's duration, the worst submit latency meanwhile, and the peak RSS
(VmHWM, reset just before) over the RSS before. Last, a fresh subprocess opens the
log (recovery): its time and peak RSS.

Beside it, the same values RPUSHed into a Redis list: Redis's `used_memory` per value.
Run it with `nice`, alone: at 1M messages it takes a few GB and a few minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import orjson
import redis

from bench.baselines import RedisAlwaysServer
from bench.procmem import message_json, peak_rss_bytes, reset_peak_rss, rss_bytes
from bench.stats import dumps, percentile
from sidecar import QppValidatorQueue, QueueMessage
from sidecar.state import QueueLimits

NAME = "depth"
BIG = QueueLimits(max_messages=100_000_000, max_bytes=1 << 40)
CALLERS = 16


class GcPauses:
    """Every cyclic-GC collection's duration, by generation."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def take(self) -> dict[str, Any]:
        pauses, self.pauses = self.pauses, []
        full = [s for g, s in pauses if g == 2]
        return {
            "collections": len(pauses),
            "full_collections": len(full),
            "total_ms": round(sum(s for _, s in pauses) * 1e3, 1),
            "max_ms": round(max((s for _, s in pauses), default=0.0) * 1e3, 2),
        }


async def fill(q: QppValidatorQueue, start: int, count: int, payload: int) -> None:
    """`count` sync submits from 256 concurrent callers (group commit)."""
    callers = 256
    per, extra = divmod(count, callers)

    async def caller(first: int, n: int) -> None:
        for i in range(first, first + n):
            await q.submit_sync(QueueMessage.from_json(message_json(i, payload)), submitted_by="b")

    jobs = []
    at = start
    for c in range(callers):
        n = per + (1 if c < extra else 0)
        jobs.append(caller(at, n))
        at += n
    await asyncio.gather(*jobs)


async def submit_rate(q: QppValidatorQueue, count: int, payload: int) -> dict[str, float]:
    """Sync submits per second of CALLERS callers, and their latency percentiles."""
    latencies: list[float] = []
    msg = QueueMessage.from_json(message_json(0, payload))

    async def caller() -> None:
        for _ in range(count // CALLERS):
            t = time.perf_counter()
            await q.submit_sync(msg, submitted_by="b")
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    elapsed = time.perf_counter() - started
    return {
        "submits_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(percentile(latencies, 0.5) * 1e3, 3),
        "max_ms": round(max(latencies) * 1e3, 3),
    }


async def compaction_under_load(q: QppValidatorQueue, payload: int) -> dict[str, Any]:
    """compact_wal() while CALLERS callers keep submitting; the worst submit latency."""
    msg = QueueMessage.from_json(message_json(0, payload))
    latencies: list[float] = []
    done = False

    async def caller() -> None:
        while not done:
            t = time.perf_counter()
            await q.submit_sync(msg, submitted_by="b")
            latencies.append(time.perf_counter() - t)

    gc.collect()
    before = rss_bytes()
    reset_peak_rss()
    tasks = [asyncio.ensure_future(caller()) for _ in range(CALLERS)]
    await asyncio.sleep(0.2)
    latencies.clear()
    result = await q.compact_wal()
    await asyncio.sleep(0.2)
    done = True
    await asyncio.gather(*tasks)
    peak = peak_rss_bytes()
    return {
        "seconds": round(result["seconds"], 3),
        "swap_seconds": round(result.get("swap_seconds", result["seconds"]), 3),
        "caught_up_frames": result.get("caught_up_frames", 0),
        "caught_up_at_swap": result.get("caught_up_at_swap", 0),
        "live": result["live"],
        "bytes_before": result["bytes_before"],
        "bytes_after": result["bytes_after"],
        "submits_meanwhile": len(latencies),
        "worst_submit_ms": round(max(latencies, default=0.0) * 1e3, 1),
        "p99_submit_ms": round(percentile(latencies, 0.99) * 1e3, 2),
        "rss_before_mb": round(before / 2**20),
        "peak_rss_mb": round(peak / 2**20),
        "peak_over_before": round(peak / before, 3),
    }


def recovery_in_subprocess(directory: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--recover", directory],
        check=True,
        capture_output=True,
        timeout=600,
    ).stdout
    result: dict[str, Any] = orjson.loads(out)
    return result


async def recover(directory: str) -> dict[str, Any]:
    base = rss_bytes()
    reset_peak_rss()
    started = time.perf_counter()
    q = await QppValidatorQueue.open(NAME, directory, limits=BIG)
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    steady = rss_bytes()
    depth = q.depth()["total"]
    records = q.recovery.records if q.recovery else 0
    await q.close()
    return {
        "records": records,
        "restored": depth,
        "seconds": round(seconds, 3),
        "rss_before_open_mb": round(base / 2**20),
        "steady_rss_mb": round(steady / 2**20),
        "peak_rss_mb": round(peak / 2**20),
        "peak_over_steady": round((peak - base) / max(1, steady - base), 3),
    }


async def redis_used_memory(directory: Path, n: int, payload: int) -> dict[str, Any]:
    """used_memory per value of `n` values RPUSHed into one Redis list."""
    server = RedisAlwaysServer(directory)
    try:
        await server.wait()
        client = redis.Redis(port=server.port)
        before = int(client.info("memory")["used_memory"])
        batch = 10_000
        for start in range(0, n, batch):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + batch)):
                pipe.rpush("q", message_json(i, payload))
            pipe.execute()
        after = int(client.info("memory")["used_memory"])
        client.close()
    finally:
        server.stop()
    return {"values": n, "used_memory_per_value": round((after - before) / n, 1)}


async def run(
    directory: str | None, messages: int, payload: int, with_redis: bool
) -> dict[str, Any]:
    base = tempfile.mkdtemp(prefix="qssh-depth-", dir=directory or "/var/tmp")
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        d = os.path.join(base, "q")
        q = await QppValidatorQueue.open(NAME, d, limits=BIG)
        size = QueueMessage.from_json(message_json(0, payload)).encoded_size
        rate_n = max(CALLERS, min(50_000, messages // 10))
        await submit_rate(q, rate_n, payload)  # warm-up, drained below
        while (h := await q.pop()) is not None:
            h.consume()
        await q.compact_wal()
        gc.collect()
        pauses.take()
        rss0 = rss_bytes()
        at: dict[str, Any] = {}
        depth = 0
        for target in (0, messages // 2, messages):
            fill_started = time.perf_counter()
            await fill(q, depth, max(0, target - depth), payload)
            fill_seconds = time.perf_counter() - fill_started
            fill_gc = pauses.take()
            filled = max(0, target - depth)
            depth = q.depth()["total"]
            rss = rss_bytes()
            stats = q.stats()
            point: dict[str, Any] = {
                "depth": depth,
                "rss_mb": round(rss / 2**20),
                "rss_per_message": round((rss - rss0) / depth, 1) if depth else None,
                "accounted_per_message": round(stats["bytes"] / depth, 1) if depth else None,
                "fill_submits_per_s": round(filled / fill_seconds) if filled else None,
                "gc_while_filling": fill_gc,
            }
            # the rate's own submits stay queued (depth moves on by rate_n)
            point["sync_16"] = await submit_rate(q, rate_n, payload)
            point["gc_while_submitting"] = pauses.take()
            depth = q.depth()["total"]
            at[str(target)] = point
        compaction = await compaction_under_load(q, payload)
        compaction["gc"] = pauses.take()
        await q.close()
        gc.callbacks.remove(pauses)
        recovery = recovery_in_subprocess(d)
        redis = await redis_used_memory(Path(base), messages, payload) if with_redis else None
    finally:
        if pauses in gc.callbacks:
            gc.callbacks.remove(pauses)
        shutil.rmtree(base, ignore_errors=True)
    return {
        "messages": messages,
        "message_bytes": size,
        "at_depth": at,
        "compaction_at_depth": compaction,
        "recovery": recovery,
        "redis": redis,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--payload", type=int, default=300, help="canonical message bytes")
    parser.add_argument("--dir", default=None, help="where the log goes (default: /var/tmp)")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--recover", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recover:
        result = asyncio.run(recover(args.recover))
    else:
        result = asyncio.run(run(args.dir, args.messages, args.payload, not args.no_redis))
    sys.stdout.buffer.write(dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
