"""Child process for test_sigkill.py: sync submits, pops, leases, acks, compactions.

Prints one line per acknowledged operation, flushed *after* the call returned:
``S <id> <block_number>`` submit acked, ``C <id>`` consumed (pop returned or ack returned).
The parent SIGKILLs this process at a random moment.
"""

from __future__ import annotations

import asyncio
import random
import sys

from sidecar import QppValidatorQueue, QueueMessage


async def main(persist_dir: str, seed: int) -> None:
    rng = random.Random(seed)
    q = await QppValidatorQueue.open("killed", persist_dir)
    out = sys.stdout
    out.write("R\n")
    out.flush()
    n = 0

    async def submitter() -> None:
        nonlocal n
        while True:
            n += 1
            number = seed * 1_000_000 + n
            msg = QueueMessage.create(
                "block_import",
                block_hash=number.to_bytes(32, "big"),
                block_number=number,
                timestamp=n,
            )
            mid = await q.submit_sync(msg, submitted_by="child")
            out.write(f"S {mid} {number}\n")
            out.flush()

    async def consumer() -> None:
        while True:
            if rng.random() < 0.03:
                await q.compact_wal()  # a kill may land mid-compaction too
            if rng.random() < 0.5:
                h = await q.pop()
                if h is not None:
                    out.write(f"C {h.consume().message_id}\n")
                    out.flush()
            else:
                lease = await q.lease(timeout=30)
                if lease is not None:
                    await q.ack(lease)
                    out.write(f"C {lease.message_id}\n")
                    out.flush()
            await asyncio.sleep(0)

    await asyncio.gather(*(submitter() for _ in range(4)), consumer())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
