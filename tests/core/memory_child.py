"""Child process for tests/core/test_memory.py: measures RSS growth in a fresh interpreter.

    python tests/core/memory_child.py messages N      # N validated 300-byte messages kept
    python tests/core/memory_child.py fill DIR BYTES  # a queue filled to max_bytes=BYTES
    python tests/core/memory_child.py recover DIR N   # open a log of N submits, most consumed

Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson

from sidecar import QppValidatorQueue, QueueFull, QueueLimits, QueueMessage
from sidecar.wal import consume_record, encode_frame, file_header

FRAME = 256  # submit records per frame; each followed by a frame consuming as many


def rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def gossip(i: int) -> bytes:
    """About 300 canonical bytes, distinct data per message."""
    data = (i.to_bytes(8, "big") * 26)[:195]
    return orjson.dumps({"kind": "gossip", "topic": "t", "data": base64.b64encode(data).decode()})


def messages(n: int) -> dict[str, float]:
    gc.collect()
    before = rss()
    kept = [QueueMessage.from_json(gossip(i)) for i in range(n)]
    grown = rss() - before
    return {"per_message": grown / n, "encoded_size": kept[0].encoded_size}


async def fill(directory: str, max_bytes: int) -> dict[str, float]:
    q = await QppValidatorQueue.open("m", directory, limits=QueueLimits(10**9, max_bytes))
    gc.collect()
    before = rss()
    full = False
    i = 0

    async def caller() -> None:
        nonlocal full, i
        while not full:
            i += 1
            try:
                await q.submit_sync(QueueMessage.from_json(gossip(i)), submitted_by="t")
            except QueueFull:
                full = True

    await asyncio.gather(*(caller() for _ in range(64)))
    grown = rss() - before
    stats = q.stats()
    await q.close()
    return {
        "rss_growth": grown,
        "accounted": stats["bytes"],
        "depth": stats["depth"]["total"],
        "max_bytes": max_bytes,
    }


def write_log(path: str, submits: int, live: int) -> int:
    """`submits` submit records in frames of FRAME, each frame followed by one consuming
    the oldest messages so that `live` stay; returns the number of records."""
    now = time.time()
    records = 0
    oldest = 1
    with open(path, "wb") as f:
        f.write(file_header())
        for first in range(1, submits + 1, FRAME):
            ids = range(first, min(submits + 1, first + FRAME))
            text = [gossip(i).decode() for i in ids]
            f.write(
                encode_frame(
                    [
                        orjson.dumps(["S", i, 50, now, "t", "sync", True, False, False, 0, t])
                        for i, t in zip(ids, text, strict=True)
                    ]
                )
            )
            consumed = range(oldest, max(oldest, ids[-1] + 1 - live))
            if consumed:
                f.write(encode_frame([consume_record(i) for i in consumed]))
                oldest = consumed[-1] + 1
            records += len(ids) + len(consumed)
    return records


async def recover(directory: str, submits: int) -> dict[str, float]:
    """Python memory (tracemalloc) while a log is recovered: its peak, and what the
    recovered queue holds once open."""
    os.makedirs(directory, exist_ok=True)
    records = write_log(os.path.join(directory, "m.wal"), submits, live=1000)
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    q = await QppValidatorQueue.open("m", directory)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    depth = q.depth()["total"]
    await q.close()
    return {
        "records": records,
        "depth": depth,
        "log_bytes": os.path.getsize(os.path.join(directory, "m.wal")),
        "held": held - start,
        "peak": peak - start,
    }


def main() -> None:
    if sys.argv[1] == "messages":
        result = messages(int(sys.argv[2]))
    elif sys.argv[1] == "recover":
        result = asyncio.run(recover(sys.argv[2], int(sys.argv[3])))
    else:
        result = asyncio.run(fill(sys.argv[2], int(sys.argv[3])))
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
