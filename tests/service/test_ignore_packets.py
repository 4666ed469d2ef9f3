"""No ``SSH_MSG_IGNORE`` before each packet on an AEAD cipher (`transport.ignore_packets`):
a request and its reply are one SSH packet each, the stream stays valid SSH, and with a
non-AEAD cipher asyncssh's ignore packet is still sent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

from tests.service.conftest import Keys, gossip, start_service
from transport.ignore_packets import AEAD_CIPHERS, skip_ignore_packets
from transport.ssh_options import ssh_options_for_tier


def _sent(conn: Any) -> int:
    """Packets `conn` has sent (asyncssh's send sequence number counts them)."""
    return int(conn._send_seq)


async def test_a_request_and_its_reply_are_one_packet_each(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys)
    try:
        async with svc.connect() as client:
            await client.ping()
            (server_conn,) = svc.server._connections
            assert client.conn.get_extra_info("send_cipher") in AEAD_CIPHERS
            for n in range(5):
                client_before, server_before = _sent(client.conn), _sent(server_conn)
                result = await client.submit(gossip(n), "sync")
                assert result["message_id"] >= 1  # each side read a valid SSH stream
                assert _sent(client.conn) - client_before == 1
                assert _sent(server_conn) - server_before == 1
    finally:
        await svc.server.close()
        await svc.queue.close()


class _Echo(asyncssh.SSHServerSession[bytes]):
    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def shell_requested(self) -> bool:
        return True

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self._chan.write(data)


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return _Echo()


class _Reader(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.received.put_nowait(data)


@pytest.mark.parametrize(
    ("cipher", "packets_per_write"),
    [("aes256-gcm@openssh.com", 1), ("chacha20-poly1305@openssh.com", 1), ("aes256-ctr", 2)],
)
async def test_only_an_aead_cipher_goes_without_the_ignore_packet(
    keys: Keys, cipher: str, packets_per_write: int
) -> None:
    cipher_options = {"encryption_algs": [cipher], "mac_algs": ["hmac-sha2-256-etm@openssh.com"]}
    options = {**ssh_options_for_tier(2, "server"), **cipher_options}
    listener = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=_Server, server_host_keys=[keys.host], **options
    )
    try:
        port = listener.sockets[0].getsockname()[1]
        conn = await asyncssh.connect(
            "127.0.0.1",
            port,
            username="x",
            known_hosts=None,
            agent_path=None,
            config=[],
            client_keys=None,
            **{
                **ssh_options_for_tier(2, "client"),
                **{k: options[k] for k in ("encryption_algs", "mac_algs")},
            },
        )
        async with conn:
            skip_ignore_packets(conn)
            chan, reader = await conn.create_session(_Reader, encoding=None)
            assert conn.get_extra_info("send_cipher") == cipher
            for n in range(3):
                before = _sent(conn)
                chan.write(b"hello %d" % n)
                assert await asyncio.wait_for(reader.received.get(), 20) == b"hello %d" % n
                assert _sent(conn) - before == packets_per_write
            before = _sent(conn)
            conn.send_packet(MSG_IGNORE, String(b"on purpose"))  # never left out
            assert _sent(conn) - before == 1
    finally:
        listener.close()
        await listener.wait_closed()


def test_without_send_packet_nothing_is_changed() -> None:
    class OtherAsyncssh:  # a future asyncssh that sends its packets some other way
        pass

    conn = OtherAsyncssh()
    assert skip_ignore_packets(conn) is False  # type: ignore[arg-type]
    assert vars(conn) == {}
