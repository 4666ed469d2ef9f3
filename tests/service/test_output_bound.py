"""A peer that opens a channel with a huge window and then reads nothing of what the
server sends cannot make the server hold its replies without bound (asyncssh ignores
its transport's flow control; transport/output_bound.py makes it stop reading)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import orjson
import pytest

from tests.service.conftest import Keys, Service, start_service, stop_service
from transport.output_bound import bound_output
from transport.protocol import HEADER, FrameDecoder
from transport.ssh_options import ssh_options_for_tier

BOUND = 4 * 1024 * 1024  # what test_limits allows a peer that does not read


class _Counting(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.replies = 0

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.replies += len(self.decoder.feed(data))


def _frame(obj: object) -> bytes:
    body = orjson.dumps(obj)
    return HEADER.pack(len(body)) + body


def _held_by_server(svc: Service) -> int:
    total = 0
    for conn in svc.server._connections:
        transport = conn._transport
        if transport is not None:
            total += transport.get_write_buffer_size()
    for session in svc.server._sessions:
        if session._chan is not None:
            total += session._chan.get_write_buffer_size()
        total += sum(len(b) for b in session._outbox)
    return total


@pytest.mark.parametrize("channels", [1, 4])
async def test_a_peer_with_a_huge_window_that_reads_nothing_is_bounded(
    tmp_path: Path, keys: Keys, channels: int
) -> None:
    svc = await start_service(tmp_path, keys)
    conn: asyncssh.SSHClientConnection | None = None
    try:
        conn = await asyncssh.connect(
            "127.0.0.1",
            svc.port,
            username="",
            client_keys=[keys.everything],
            known_hosts=None,
            agent_path=None,
            config=[],
            **ssh_options_for_tier(2, "client"),
        )
        chans = []
        sessions: list[_Counting] = []
        for _ in range(channels):
            chan, session = await conn.create_session(
                _Counting, subsystem="qssh-queue", encoding=None, window=1 << 30
            )
            chans.append(chan)
            sessions.append(session)
        conn._transport.pause_reading()  # read nothing more from the socket
        n = 60_000
        pings = b"".join(_frame({"id": i, "method": "ping"}) for i in range(n))  # ~2 MB
        for chan in chans:
            chan.write(pings)
        peak = 0
        for _ in range(30):  # about 6 s: the unbounded server held 21 MB per channel by then
            await asyncio.sleep(0.2)
            peak = max(peak, _held_by_server(svc))
        assert peak > 64 * 1024  # the peer really stopped reading
        assert peak < BOUND
        # and once it reads again, every ping of every channel is answered
        conn._transport.resume_reading()
        for _ in range(600):  # at most 60 s
            if all(session.replies >= n for session in sessions):
                break
            await asyncio.sleep(0.1)
        assert [session.replies for session in sessions] == [n] * channels
    finally:
        if conn is not None:
            conn.abort()
        await stop_service(svc)


async def test_without_a_transport_where_asyncssh_kept_it_nothing_is_changed() -> None:
    class NoTransport:
        def pause_writing(self) -> None:
            pass

    conn = NoTransport()
    assert bound_output(conn) is False  # type: ignore[arg-type]
    assert conn.pause_writing.__func__ is NoTransport.pause_writing  # type: ignore[attr-defined]
