"""Child process for tests/core/test_memory.py: measures RSS growth in a fresh interpreter.

    python tests/core/memory_child.py messages N      # N validated 300-byte messages kept
    python tests/core/memory_child.py fill DIR BYTES  # a queue filled to max_bytes=BYTES

Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson

from sidecar import QppValidatorQueue, QueueFull, QueueLimits, QueueMessage


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


def main() -> None:
    if sys.argv[1] == "messages":
        result = messages(int(sys.argv[2]))
    else:
        result = asyncio.run(fill(sys.argv[2], int(sys.argv[3])))
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
