"""Misbehaving clients of the queue service, one per process.

    python -m tests.faults.hostile MODE PORT KEY JOURNAL

MODE is one of:
  noread    open a qssh-queue channel, stop reading, and send ping requests forever
  channels  open 1000 qssh-queue channels on one connection and hold them
  bigframe  send a 4 GiB length prefix (then more bytes), again on new channels
  garbage   complete the SSH handshake, then send random bytes on a channel, repeatedly
  tcpjunk   send random bytes to the TCP port before any SSH handshake, repeatedly
            (from 127.0.0.2: a stranger's address)

Progress goes to JOURNAL (one ``WORD value`` line per event, written as it happens).
It runs until killed, or a bound on rounds/time is reached.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import sys
import time
from typing import Any

import asyncssh
import orjson

import transport.ssh_algorithms  # noqa: F401  (registers ssh-falcon512)
from transport.protocol import FrameDecoder
from transport.ssh_options import ssh_options_for_tier

MAX_SECONDS = 600.0
SUBSYSTEM = "qssh-queue"
STRANGER = "127.0.0.2"


class Journal:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, word: str, value: object = "") -> None:
        os.write(self.fd, f"{word} {value}\n".encode())


class Session(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.decoder = FrameDecoder(64 * 1024 * 1024)
        self.replies: list[dict[str, Any]] = []
        self.closed = asyncio.Event()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        for body in self.decoder.feed(data):
            self.replies.append(orjson.loads(body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def connect(port: int, key: str) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username="operator",
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=[],
        **ssh_options_for_tier(2, "client"),
    )


async def channel(
    conn: asyncssh.SSHClientConnection,
) -> tuple[asyncssh.SSHClientChannel[bytes], Session]:
    session = Session()
    chan, _ = await conn.create_session(lambda: session, subsystem=SUBSYSTEM, encoding=None)
    return chan, session


def ping(n: int) -> bytes:
    body = orjson.dumps({"id": n, "method": "ping"})
    return struct.pack(">I", len(body)) + body


async def noread(port: int, key: str, journal: Journal, deadline: float) -> None:
    conn = await connect(port, key)
    chan, _ = await channel(conn)
    chan.pause_reading()  # never look at a reply again
    sent = 0
    while time.monotonic() < deadline:
        if chan.get_write_buffer_size() > 1 << 20:
            await asyncio.sleep(0.05)  # the server stopped reading us: good
            journal.write("BLOCKED", sent)
            continue
        chan.write(b"".join(ping(sent + i) for i in range(1000)))
        sent += 1000
        journal.write("SENT", sent)
        await asyncio.sleep(0)


async def channels(port: int, key: str, journal: Journal, deadline: float) -> None:
    conn = await connect(port, key)
    held = []
    for _ in range(1000):
        try:
            held.append(await channel(conn))
            journal.write("OPENED", len(held))
        except asyncssh.ChannelOpenError as exc:
            journal.write("REFUSED", exc.reason.replace(" ", "_"))
    journal.write("HOLDING", len(held))
    while time.monotonic() < deadline:
        await asyncio.sleep(1)


async def bigframe(port: int, key: str, journal: Journal, deadline: float) -> None:
    conn = await connect(port, key)
    while time.monotonic() < deadline:
        chan, session = await channel(conn)
        chan.write(struct.pack(">I", 2**32 - 1) + os.urandom(4096))
        try:
            await asyncio.wait_for(session.closed.wait(), 30)
        except TimeoutError:
            journal.write("NOT_CLOSED")
            continue
        codes = [r.get("error", {}).get("code") for r in session.replies]
        journal.write("CLOSED", ",".join(str(c) for c in codes))


async def garbage(port: int, key: str, journal: Journal, deadline: float) -> None:
    conn = await connect(port, key)
    rng = random.Random(os.getpid())
    while time.monotonic() < deadline:
        chan, session = await channel(conn)
        for _ in range(64):
            chan.write(rng.randbytes(rng.randrange(1, 8192)))
        chan.write_eof()
        try:
            await asyncio.wait_for(session.closed.wait(), 30)
        except TimeoutError:
            chan.close()
            journal.write("OPEN_AFTER_EOF", len(session.replies))
            continue
        codes = sorted({str(r.get("error", {}).get("code")) for r in session.replies})
        journal.write("ROUND", f"{len(session.replies)}:{','.join(codes)}")


async def tcpjunk(port: int, journal: Journal, deadline: float) -> None:
    rng = random.Random(os.getpid())
    while time.monotonic() < deadline:
        # from a stranger's address: the server penalizes the address (PerSourcePenalties),
        # which must not be the one the good client and the other hostiles use
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(STRANGER, 0))
        try:
            writer.write(rng.randbytes(rng.randrange(1, 65536)))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 30)
            journal.write("DROPPED", len(data))
        except (OSError, TimeoutError) as exc:
            journal.write("DROPPED", type(exc).__name__)
        finally:
            writer.close()


async def main() -> None:
    mode, port_text, key, path = sys.argv[1:5]
    port = int(port_text)
    journal = Journal(path)
    deadline = time.monotonic() + MAX_SECONDS
    journal.write("START", mode)
    if mode == "noread":
        await noread(port, key, journal, deadline)
    elif mode == "channels":
        await channels(port, key, journal, deadline)
    elif mode == "bigframe":
        await bigframe(port, key, journal, deadline)
    elif mode == "garbage":
        await garbage(port, key, journal, deadline)
    elif mode == "tcpjunk":
        await tcpjunk(port, journal, deadline)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    asyncio.run(main())
