"""Stop reading a connection while the peer is not reading what we send.

asyncssh (2.24) ignores its transport's flow control: ``SSHConnection.pause_writing``
does nothing. The channels' own flow control (``pause_writing`` of a session) fires
only when the peer's SSH window runs out, and the peer sets that window. So a peer that
opens a channel with a window of a gigabyte, stops reading its socket and keeps
sending requests had every reply pile up in our transport's buffer: about 21 MB per
channel, measured. `bound_output(conn)` makes the transport's flow control act on the
connection: above the transport's high-water mark (64 KiB by default) we stop reading
it, so the peer's further requests wait in its own socket, and we read again once what
we wrote has drained to the low-water mark. What we still hold is then bounded by the
requests already read, which the channel limits bound (frame size, requests in flight).
"""

from __future__ import annotations

from typing import Any

import asyncssh

__all__ = ["bound_output"]

_TRANSPORT = "_transport"  # asyncssh's SSHConnection keeps its asyncio transport here


def bound_output(conn: asyncssh.SSHServerConnection | asyncssh.SSHClientConnection) -> bool:
    """Pause reading `conn` while its transport's write buffer is over the high-water
    mark. False (and nothing changed) if asyncssh no longer keeps the transport where
    we look; then only the channels' own flow control applies."""
    transport: Any = getattr(conn, _TRANSPORT, None)
    if transport is None or not hasattr(transport, "pause_reading"):
        return False

    def pause_writing() -> None:
        if not transport.is_closing():
            transport.pause_reading()

    def resume_writing() -> None:
        if not transport.is_closing():
            transport.resume_reading()

    # the transport calls these on its protocol, the connection: instance attributes
    # take the place of asyncssh's no-op methods
    conn.pause_writing = pause_writing  # type: ignore[method-assign]
    conn.resume_writing = resume_writing  # type: ignore[method-assign]
    return True
