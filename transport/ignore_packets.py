"""No ``SSH_MSG_IGNORE`` packet before every packet while the cipher is AEAD.

asyncssh (2.24) sends an empty ``SSH_MSG_IGNORE`` packet before every encrypted packet
after the key exchange. That is RFC 4251 §9.3.1's countermeasure against the
chosen-plaintext attack on CBC mode, where the next packet's IV is the last ciphertext
block an attacker has seen. The ciphers we negotiate are AEAD only (``aes256-gcm``,
``chacha20-poly1305``: each packet's nonce comes from its sequence number, nothing is
chained), so the packet protects nothing there; being empty it hides no length either,
and OpenSSH does not send it. It doubled the packets of every request and reply: one
more encryption and one more packet to receive, decrypt and dispatch on each side,
about a fifth of the CPU of a small request (docs/benchmarks.md).

`skip_ignore_packets(conn)` leaves out the one that asyncssh inserts, on that
connection, while the cipher it sends with is AEAD; with any other cipher it is sent
as before. An ``SSH_MSG_IGNORE`` sent on purpose (not from inside another packet's
send) is never left out. What is sent is otherwise unchanged: the same packets, and
the sequence numbers count the packets sent, as they always do.
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE

__all__ = ["AEAD_CIPHERS", "skip_ignore_packets"]

AEAD_CIPHERS = frozenset(
    {
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
    }
)

_SEND_PACKET = "send_packet"  # asyncssh's SSHConnection method every packet goes through


def skip_ignore_packets(
    conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection,
) -> bool:
    """On `conn`, no ignore packet before each packet while its send cipher is AEAD.

    asyncssh sends its ignore packet by calling ``send_packet`` from inside
    ``send_packet``: that nested call, and only that one, is left out. False (and
    nothing changed) if asyncssh has no ``send_packet`` any more: every packet is then
    sent as asyncssh sends it."""
    send = getattr(conn, _SEND_PACKET, None)
    if send is None:
        return False
    sending = False

    def send_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
        nonlocal sending
        if sending:
            if pkttype == MSG_IGNORE and conn.get_extra_info("send_cipher") in AEAD_CIPHERS:
                return
            send(pkttype, *args, handler=handler)
            return
        sending = True
        try:
            send(pkttype, *args, handler=handler)
        finally:
            sending = False

    setattr(conn, _SEND_PACKET, send_packet)
    return True
