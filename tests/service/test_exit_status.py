"""The ``qssh-queue`` subsystem channel ends with an exit-status, as SSH clients expect.

OpenSSH-family clients exit 255 when a channel closes without one. asyncssh is the
client here (stock OpenSSH cannot negotiate with us); it reports what the server sent.
"""

from __future__ import annotations

from tests.service.conftest import Service, gossip
from tests.service.rawchannel import RawChannel
from transport.protocol import HEADER
from transport.server import EXIT_CLEAN, EXIT_PROTOCOL_ERROR, EXIT_SHUTDOWN


async def test_a_clean_session_ends_with_exit_status_0(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    raw.send({"id": 1, "method": "ping"})
    raw.send({"id": 2, "method": "submit", "params": {"message": gossip(1), "mode": "sync"}})
    raw.send({"id": 3, "method": "depth"})
    raw.chan.write_eof()
    replies = [await raw.recv() for _ in range(3)]
    assert sorted(r["id"] for r in replies if r is not None) == [1, 2, 3]
    assert all(r is not None and "result" in r for r in replies)
    await raw.wait_closed()
    assert raw.chan.get_exit_status() == EXIT_CLEAN == 0
    await raw.close()


async def test_a_protocol_error_ends_with_a_non_zero_exit_status(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    raw.send_raw(HEADER.pack(0xFFFFFFFF) + b"{")
    reply = await raw.recv()
    assert reply is not None
    assert reply["error"]["code"] == "too_large"
    await raw.wait_closed()
    assert raw.chan.get_exit_status() == EXIT_PROTOCOL_ERROR != 0
    await raw.close()


async def test_a_server_shutdown_ends_with_its_own_exit_status(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    raw.send({"id": 1, "method": "ping"})
    assert await raw.recv() is not None
    await service.server.close()
    await raw.wait_closed()
    assert raw.chan.get_exit_status() == EXIT_SHUTDOWN not in (0, EXIT_PROTOCOL_ERROR)
    await raw.close()
