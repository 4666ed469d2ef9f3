"""A loopback TCP proxy that can pass, stall, reset or blackhole its connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from enum import Enum


class Mode(Enum):
    PASS = "pass"  # forward both ways
    STALL = "stall"  # hold the bytes (TCP backpressure), deliver them later
    BLACKHOLE = "blackhole"  # read and drop everything, both ways


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = Mode.PASS
        self._resume = asyncio.Event()
        self._resume.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    def set(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.STALL:
            self._resume.clear()
        else:
            self._resume.set()

    def reset(self) -> None:
        """Every open connection ends with a TCP RST, both ways."""
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(10_000_000):  # bounded: a test connection moves far fewer chunks
            data = await reader.read(65536)
            if not data:
                return
            await self._resume.wait()
            if self.mode is Mode.BLACKHOLE:
                continue
            writer.write(data)
            await writer.drain()
