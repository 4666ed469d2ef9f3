"""Lease ids on the wire: ``"<n>.<token>"``, bound to the key that took the lease.

The core numbers leases in sequence, so a bare number is easy to guess. On the wire a
lease id carries a token, an HMAC-SHA256 (truncated to 128 bits) of the number and
the holder's key fingerprint under a secret made at server start. Only a client with
the same key can name the lease: on the connection that took it, or on a new one
after a reconnect. For any other key the id names nothing (``not_found``, the same
answer as for a lease that never existed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from sidecar.errors import NotFound
from transport.protocol import ProtocolError

__all__ = ["LeaseTokens"]

WIRE_FORM = re.compile(r"([1-9][0-9]{0,18})\.([A-Za-z0-9_-]{22})")
SECRET_BYTES = 32


class LeaseTokens:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(SECRET_BYTES)

    def _token(self, n: int, fingerprint: str) -> str:
        mac = hmac.new(self._secret, f"{n}\n{fingerprint}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:16]).decode().rstrip("=")

    def wire(self, n: int, fingerprint: str) -> str:
        """The id lease ``n`` is delivered with to the key ``fingerprint``."""
        return f"{n}.{self._token(n, fingerprint)}"

    def resolve(self, wire: object, fingerprint: str) -> int:
        """The lease number ``wire`` names for this key. ``bad_request`` if it is not
        in the wire form; ``not_found`` if it was not given to this key."""
        m = WIRE_FORM.fullmatch(wire) if isinstance(wire, str) else None
        if m is None:
            raise ProtocolError(
                "'lease_id' must be the string a lease was delivered with (\"<n>.<token>\")"
            )
        n = int(m.group(1))
        if not hmac.compare_digest(m.group(2), self._token(n, fingerprint)):
            raise NotFound(f"no lease {n}")
        return n
