"""Errors raised by entropy sources, health tests and the KME client.

`hardware/` does not import the queue, so these are its own types; the daemon maps
them to wire codes (all of them are `unavailable` to a queue client).
"""

from __future__ import annotations


class HardwareError(Exception):
    """Base of every error from `hardware/`."""


class SourceError(HardwareError):
    """An entropy source could not be opened or read."""


class SourcePermissionDenied(SourceError):
    """The device exists but this process may not open it (check group/udev rules)."""


class SourceTimeout(SourceError):
    """The source delivered fewer bytes than asked for within the timeout."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


class SourceDisconnected(SourceError):
    """The device went away (unplugged, EOF, I/O error) in the middle of a read."""


class HealthTestFailure(HardwareError):
    """A NIST SP 800-90B continuous health test failed; the output must not be used."""


class KMEError(HardwareError):
    """Base of every ETSI GS QKD 014 client error."""


class KMETLSError(KMEError):
    """TLS handshake failed: wrong CA, wrong client certificate, or not TLS."""


class KMETimeout(KMEError):
    """The KME did not answer in time."""


class KMEConnectionError(KMEError):
    """The KME could not be reached (refused, reset)."""


class KMEProtocolError(KMEError):
    """The KME answered with something that is not a valid ETSI 014 response."""


class KMEHTTPError(KMEError):
    """The KME answered with an HTTP error; `message`/`details` are the ETSI error body."""

    def __init__(self, status: int, message: str, details: list[object] | None = None) -> None:
        super().__init__(f"KME answered HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.details = details or []


class KMEBadRequest(KMEHTTPError):
    """HTTP 400: the request was wrong, or the KME has not enough keys."""


class KMEUnauthorized(KMEHTTPError):
    """HTTP 401: the SAE is not allowed (client certificate / SAE ID mismatch)."""


class KMEUnavailable(KMEHTTPError):
    """HTTP 503: the KME is temporarily out of service."""
