"""A queue client process that survives daemon restarts and writes down what it saw.

    python -m tests.faults.worker producer|consumer TAG PORT KEY KNOWN_HOSTS OUT STOP

It connects, works until the connection breaks, reconnects, and so on until the file
STOP exists (or a bound on operations/time is reached). Every event is one line in OUT,
written with ``os.write`` the moment it happens (so nothing sits in a buffer when the
test reads the file), stamped with ``time.monotonic_ns()`` (one clock for every process
on the machine, so the checker can order events of different processes):

    ACK <id> <number> <sent> <t> producer: sync submit of block <number> acknowledged
                                 (<sent>: when the request was sent)
    LEASED <id> <number> <sent> <t>  consumer: lease granted
    ACKING <id> <slot> <t>       consumer loop <slot>: about to send the ack (each loop
                                 has at most one ack in flight)
    CONSUMED <id> <slot> <t>     consumer: ack acknowledged
    ACKFAIL <id> <slot> <code> <t>  consumer: ack answered with an error / connection lost
    SUBFAIL <number> <code> <why> <t>  producer: submit failed; <why> is fsync (the log
                                 failed), lost (connection), closing, or other
    LEASEFAIL <slot> <code> <t>  consumer: lease request failed
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import asyncssh

import transport.ssh_algorithms  # noqa: F401  (registers ssh-falcon512)
from sidecar.errors import SidecarError, Unavailable
from transport.client import QueueClient

WINDOW = 4  # sync submits in flight per producer
CONSUMER_LOOPS = 4  # lease/ack loops per consumer, each with one ack in flight at most
MAX_OPERATIONS = 200_000
MAX_SECONDS = 1800.0
RECONNECT_PAUSE = 0.05


class Journal:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, *fields: object) -> None:
        line = " ".join(str(f) for f in (*fields, time.monotonic_ns()))
        os.write(self.fd, line.encode() + b"\n")


def block(number: int) -> dict[str, object]:
    return {
        "kind": "block_import",
        "block_hash": f"{number:064x}",
        "block_number": number,
        "timestamp": number,
    }


def reason(exc: SidecarError) -> str:
    """One word for why a request failed: the log failed, the link went, or else."""
    text = exc.message.lower()
    if "fsync" in text:
        return "fsync"
    if "connection" in text and "lost" in text:
        return "lost"
    if "shutting down" in text:
        return "closing"
    return "other"


class Worker:
    def __init__(self, argv: list[str]) -> None:
        role, tag, port, key, known_hosts, out, stop = argv
        self.role = role
        self.tag = int(tag)
        self.port = int(port)
        self.key = key
        self.known_hosts = Path(known_hosts)
        self.journal = Journal(Path(out))
        self.stop = Path(stop)
        self.ops = 0
        self.seq = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def done(self) -> bool:
        return self.stop.exists() or self.ops >= MAX_OPERATIONS or time.monotonic() > self.deadline

    async def run(self) -> None:
        self.journal.write("START", self.role)
        while not self.done():
            try:
                client = await QueueClient.connect(
                    "127.0.0.1",
                    self.port,
                    username="operator",
                    client_keys=[self.key],
                    known_hosts=self.known_hosts,
                    connect_timeout=10,
                )
            except (SidecarError, OSError, asyncssh.Error):
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            # every loop returns once the connection is gone, then we reconnect
            if self.role == "producer":
                await asyncio.gather(*(self.produce(client) for _ in range(WINDOW)))
            else:
                await asyncio.gather(*(self.consume(client, s) for s in range(CONSUMER_LOOPS)))
            with contextlib.suppress(OSError, TimeoutError, SidecarError, asyncssh.Error):
                await asyncio.wait_for(client.close(), 5)
        self.journal.write("STOP")

    async def produce(self, client: QueueClient) -> None:
        while not self.done():
            self.seq += 1
            self.ops += 1
            number = self.tag * 10_000_000 + self.seq
            sent = time.monotonic_ns()
            try:
                result = await client.submit(block(number), "sync")
            except SidecarError as exc:
                self.journal.write("SUBFAIL", number, exc.code, reason(exc))
                if isinstance(exc, Unavailable):
                    return
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            self.journal.write("ACK", result["message_id"], number, sent)

    async def consume(self, client: QueueClient, slot: int) -> None:
        while not self.done():
            self.ops += 1
            sent = time.monotonic_ns()
            try:
                lease = await client.lease(timeout=60, wait=0.3)
            except SidecarError as exc:
                self.journal.write("LEASEFAIL", slot, exc.code)
                if isinstance(exc, Unavailable):
                    return
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            if lease is None:
                continue
            mid = lease["message_id"]
            self.journal.write("LEASED", mid, lease["message"]["block_number"], sent)
            self.journal.write("ACKING", mid, slot)
            try:
                await client.ack(lease["lease_id"])
            except SidecarError as exc:
                self.journal.write("ACKFAIL", mid, slot, exc.code)
                if isinstance(exc, Unavailable):
                    return
                continue
            self.journal.write("CONSUMED", mid, slot)


def main() -> int:
    asyncio.run(Worker(sys.argv[1:]).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
