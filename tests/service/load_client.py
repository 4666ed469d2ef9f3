"""A queue client process for the SIGKILL test: prints what the server acknowledged.

    python -m tests.service.load_client PORT KEY KNOWN_HOSTS producer|consumer TAG

A producer prints ``ACK <message_id>`` after each sync submit is acknowledged; a
consumer prints ``LEASED <message_id>`` before it acks a lease and ``CONSUMED
<message_id>`` once the ack is acknowledged.
Runs until the server goes away (or 10 000 operations, a bound for safety).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import transport.ssh_algorithms  # noqa: F401
from sidecar.errors import SidecarError
from transport.client import QueueClient

MAX_OPERATIONS = 10_000
WINDOW = 16


async def produce(client: QueueClient, tag: int) -> None:
    sequence = iter(range(MAX_OPERATIONS))

    async def worker() -> None:
        for n in sequence:
            number = tag * 1_000_000 + n
            message = {
                "kind": "block_import",
                "block_hash": f"{number:064x}",
                "block_number": number,
                "timestamp": n,
            }
            result = await client.submit(message, "sync")
            print(f"ACK {result['message_id']}", flush=True)

    await asyncio.gather(*(worker() for _ in range(WINDOW)))


async def consume(client: QueueClient) -> None:
    for _ in range(MAX_OPERATIONS):
        lease = await client.lease(timeout=30, wait=1)
        if lease is None:
            continue
        print(f"LEASED {lease['message_id']}", flush=True)
        await client.ack(lease["lease_id"])
        print(f"CONSUMED {lease['message_id']}", flush=True)


async def main() -> int:
    port, key, known_hosts, role, tag = sys.argv[1:6]
    try:
        async with QueueClient.connect(
            "127.0.0.1",
            int(port),
            username=None,
            client_keys=[key],
            known_hosts=Path(known_hosts),
        ) as client:
            print("READY", flush=True)
            if role == "producer":
                await produce(client, int(tag))
            else:
                await consume(client)
    except SidecarError as exc:
        print(f"STOPPED {exc.code}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
