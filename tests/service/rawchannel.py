"""A raw ``qssh-queue`` channel: write any bytes, read frames back."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
import orjson

from transport.protocol import HEADER, FrameDecoder
from transport.ssh_options import ssh_options_for_tier


class _Collector(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.decoder = FrameDecoder(64 * 1024 * 1024)
        self.frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        for body in self.decoder.feed(data):
            self.frames.put_nowait(orjson.loads(body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.frames.put_nowait(None)


class RawChannel:
    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        chan: asyncssh.SSHClientChannel[bytes],
        s: _Collector,
    ) -> None:
        self.conn = conn
        self.chan = chan
        self.session = s

    @classmethod
    async def open(cls, port: int, key: asyncssh.SSHKey, known_hosts: Any = None) -> RawChannel:
        conn = await asyncssh.connect(
            "127.0.0.1",
            port,
            username="",
            client_keys=[key],
            known_hosts=known_hosts,
            agent_path=None,
            config=[],
            **ssh_options_for_tier(2, "client"),  # type: ignore[arg-type]
        )
        return await cls.open_on(conn)

    @classmethod
    async def open_on(cls, conn: asyncssh.SSHClientConnection) -> RawChannel:
        """Another ``qssh-queue`` channel on an existing connection."""
        session = _Collector()
        chan, _ = await conn.create_session(lambda: session, subsystem="qssh-queue", encoding=None)
        return cls(conn, chan, session)

    def send_raw(self, data: bytes) -> None:
        self.chan.write(data)

    def send_body(self, body: bytes) -> None:
        self.chan.write(HEADER.pack(len(body)) + body)

    def send(self, obj: Any) -> None:
        self.send_body(orjson.dumps(obj))

    async def recv(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The next frame, or None when the channel closed."""
        return await asyncio.wait_for(self.session.frames.get(), timeout)

    async def wait_closed(self, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self.session.closed.wait(), timeout)

    async def close(self) -> None:
        self.conn.close()
        await self.conn.wait_closed()
