"""Strangers abusing the SSH port before authentication, from many loopback addresses.

    python -m tests.faults.abuser PORT JOURNAL SECONDS MODE:COUNT:ADDR[,ADDR...] ...

Each MODE:COUNT:ADDRS starts COUNT connection slots spread over the source addresses:

  idle       connect and send nothing; reconnect when the server closes it
  slowloris  send the version line one byte every 0.5 s; reconnect when closed
  banner     send junk lines as fast as the server takes them; reconnect when closed

Every slot reconnects after a short pause, so the attack lasts SECONDS. Counts go to
JOURNAL as ``WORD value`` lines when it ends: connections made, refused (closed by the
server before its version line), closed later, failed connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections import Counter

RECONNECT_PAUSE = 0.05


async def open_from(addr: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(addr, 0))


async def slot(mode: str, addr: str, port: int, until: float, counts: Counter[str]) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.wait_for(open_from(addr, port), 5)
        except (OSError, TimeoutError):
            counts["connect_failed"] += 1
            await asyncio.sleep(RECONNECT_PAUSE)
            continue
        counts["connected"] += 1
        try:
            first = await asyncio.wait_for(reader.read(1), 0.5)
        except TimeoutError:
            first = b"?"  # nothing yet; not refused
        except OSError:
            first = b""
        if not first:
            counts["refused"] += 1
        else:
            await run(mode, reader, writer, until)
            counts["closed_later"] += 1
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await asyncio.sleep(RECONNECT_PAUSE)


async def run(
    mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, until: float
) -> None:
    """Misbehave until the server closes the connection or the attack ends."""
    junk = b"X" * 200 + b"\r\n"
    version = b"SSH-2.0-slowloris\r\n"
    sent = 0
    while time.monotonic() < until:
        try:
            if mode == "idle":
                data = await asyncio.wait_for(reader.read(4096), until - time.monotonic())
                if not data:
                    return
                continue
            if mode == "slowloris":
                writer.write(version[sent % len(version) : sent % len(version) + 1])
                sent += 1
                await writer.drain()
                await asyncio.sleep(0.5)
            else:
                writer.write(junk * 20)
                await writer.drain()
            if reader.at_eof():
                return
            with contextlib.suppress(TimeoutError):
                if not await asyncio.wait_for(reader.read(4096), 0.001) and reader.at_eof():
                    return
        except (OSError, TimeoutError):
            return


async def main(port: int, journal: str, seconds: float, specs: list[str]) -> None:
    until = time.monotonic() + seconds
    counts: Counter[str] = Counter()
    tasks = []
    for spec in specs:
        mode, count, addrs = spec.split(":")
        sources = addrs.split(",")
        for i in range(int(count)):
            addr = sources[i % len(sources)]
            tasks.append(asyncio.create_task(slot(mode, addr, port, until, counts)))
    await asyncio.gather(*tasks)
    with open(journal, "w") as f:
        for word, n in sorted(counts.items()):
            f.write(f"{word} {n}\n")
        f.flush()
        os.fsync(f.fileno())


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4:]))
