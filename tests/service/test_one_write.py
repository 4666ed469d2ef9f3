"""A request and its reply each leave as ONE socket write: asyncssh puts an ignore
packet before every encrypted packet, and `transport.coalesce.write_as_one` hands
both to the transport together (the SSH stream is the same, one system call)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.service.conftest import Keys, gossip, start_service
from tests.service.rawchannel import RawChannel
from transport import event_loop
from transport.coalesce import write_as_one
from transport.protocol import HEADER


class _Writes:
    """Stands between an asyncssh connection and its transport and counts the writes
    (and keeps their sizes). A stand-in, not a patched method: uvloop's transports
    cannot be patched."""

    def __init__(self, conn: Any) -> None:
        self.sizes: list[int] = []
        self._conn = conn
        self._transport = conn._transport
        conn._transport = self

    def write(self, data: bytes) -> None:
        self.sizes.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def remove(self) -> None:
        if self._conn._transport is self:
            self._conn._transport = self._transport


def _frame(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return HEADER.pack(len(body)) + body


async def _reply(raw: RawChannel, request_id: int) -> dict[str, Any]:
    for _ in range(20):  # skips pushed events (bounded)
        reply = await raw.recv()
        assert reply is not None
        if reply.get("id") == request_id:
            return reply
    raise AssertionError("no reply")


@pytest.mark.parametrize("loop_name", event_loop.NAMES)
def test_a_channel_write_leaves_as_one_transport_write(
    tmp_path: Path, keys: Keys, loop_name: str
) -> None:
    assert event_loop.run(_one_write(tmp_path, keys), loop_name) == loop_name


async def _one_write(tmp_path: Path, keys: Keys) -> str:
    svc = await start_service(tmp_path, keys)
    raw = await RawChannel.open(svc.port, keys.everything)
    counters: list[_Writes] = []
    try:
        await asyncio.sleep(0.2)  # let the server's notices after the handshake go out
        (server_conn,) = svc.server._connections
        client_out = _Writes(raw.conn)
        server_out = _Writes(server_conn)
        counters += [client_out, server_out]

        raw.chan.write(_frame({"id": 1, "method": "ping", "params": {}}))  # asyncssh alone
        assert "result" in await _reply(raw, 1)
        assert len(client_out.sizes) == 2  # the ignore packet, then the data packet

        client_out.sizes.clear()
        server_out.sizes.clear()
        frame = _frame({"id": 2, "method": "submit", "params": {"message": gossip(2)}})
        write_as_one(raw.conn, raw.chan, frame)
        reply = await _reply(raw, 2)
        assert reply["result"]["message_id"] >= 1  # the server read a valid SSH stream
        assert len(client_out.sizes) == 1
        assert client_out.sizes[0] > len(frame)  # both packets in it
        assert len(server_out.sizes) == 1  # the reply too: one write
        return event_loop.running()
    finally:
        for counter in counters:
            counter.remove()
        raw.conn.abort()
        await svc.server.close()
        await svc.queue.close()
