"""One transport write for a channel write: the SSH packets it makes leave together.

asyncssh (2.24) sends an ``SSH_MSG_IGNORE`` packet before every encrypted packet after
the key exchange, each with its own transport write, so every reply or request went
out as two ``send`` system calls and, on loopback, two segments each waking the
receiver. `write_as_one` gathers the packets of one ``chan.write`` and hands them to
the transport at once: the same bytes in the same order, one system call. The SSH
stream is unchanged. (On an AEAD cipher `transport.ignore_packets` now leaves that
ignore packet out; a write still makes several packets when it is larger than one
packet, or when a non-AEAD cipher keeps the ignore packet.)
"""

from __future__ import annotations

from typing import Any

import asyncssh

__all__ = ["write_as_one"]

_TRANSPORT = "_transport"  # asyncssh's SSHConnection keeps its asyncio transport here


class _Gathering:
    """Stands in for the connection's transport during one channel write."""

    __slots__ = ("_transport", "parts")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def write_as_one(
    conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection,
    chan: asyncssh.SSHClientChannel[bytes] | asyncssh.SSHServerChannel[bytes],
    data: bytes,
) -> None:
    """``chan.write(data)``, its packets written to the socket in one call."""
    transport = getattr(conn, _TRANSPORT, None)
    if transport is None or isinstance(transport, _Gathering):
        chan.write(data)
        return
    gathering = _Gathering(transport)
    setattr(conn, _TRANSPORT, gathering)
    try:
        chan.write(data)
    finally:
        # asyncssh drops its transport when the connection is torn down meanwhile:
        # then it stays dropped, and what was gathered goes nowhere, as it would have
        if getattr(conn, _TRANSPORT, None) is gathering:
            setattr(conn, _TRANSPORT, transport)
            if gathering.parts:
                transport.write(b"".join(gathering.parts))
