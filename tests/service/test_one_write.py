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
from transport.coalesce import write_as_one
from transport.protocol import HEADER


class _Writes:
    """Counts the writes to one asyncio transport (and keeps their sizes)."""

    def __init__(self, transport: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        real = transport.write

        def write(data: bytes) -> None:
            self.sizes.append(len(data))
            real(data)

        monkeypatch.setattr(transport, "write", write)


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


async def test_a_channel_write_leaves_as_one_transport_write(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = await start_service(tmp_path, keys)
    raw = await RawChannel.open(svc.port, keys.everything)
    try:
        await asyncio.sleep(0.2)  # let the server's notices after the handshake go out
        (server_conn,) = svc.server._connections
        client_out = _Writes(raw.conn._transport, monkeypatch)
        server_out = _Writes(server_conn._transport, monkeypatch)

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
    finally:
        monkeypatch.undo()
        raw.conn.abort()
        await svc.server.close()
        await svc.queue.close()
