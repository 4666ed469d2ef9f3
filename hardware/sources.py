"""Entropy sources: one small interface, three kinds of device.

All reads are blocking with a deadline; async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import httpx
import serial

from hardware.errors import (
    SourceDisconnected,
    SourceError,
    SourcePermissionDenied,
    SourceTimeout,
)

ONERNG_START = (b"cmd0\n", b"cmdO\n")  # noise mode "avalanche + no whitening", start
ONERNG_STOP = b"cmdo\n"
# A pty has no modem lines, so DTR cannot be seen by the simulator on the other side;
# on a pty we send this line instead (see docs/hardware.md, "Simulators").
PTY_DTR_EMULATION = b"\x00DTR1\n"
PTY_DTR_DROP = b"\x00DTR0\n"


@runtime_checkable
class EntropySource(Protocol):
    path: str

    def open(self) -> None: ...

    def read(self, n: int, timeout: float) -> bytes:
        """Exactly `n` bytes, or SourceTimeout / SourceDisconnected / SourceError."""
        ...

    def describe(self) -> dict[str, object]: ...

    def close(self) -> None: ...


def _open_error(path: str, exc: OSError) -> SourceError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SourcePermissionDenied(f"permission denied opening {path}")
    if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return SourceDisconnected(f"{path} is not present ({exc.strerror})")
    return SourceError(f"cannot open {path}: {exc.strerror or exc}")


def _read_exactly(
    path: str, n: int, timeout: float, read_some: Callable[[int, float], bytes]
) -> bytes:
    """Exactly ``n`` bytes from ``read_some(want, wait)`` (``b""``: nothing yet) by the
    deadline, waiting at most half a second per call so the deadline is kept."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SourceTimeout(f"{path}: {len(buf)} of {n} bytes within {timeout:.1f}s", len(buf))
        buf += read_some(n - len(buf), min(left, 0.5))
    return bytes(buf)


class SerialSource:
    """USB-serial RNG (TrueRNG, OneRNG, Infinite Noise, simulators) through pyserial."""

    def __init__(self, path: str, handshake: str = "none", baudrate: int = 115200) -> None:
        self.path = path
        self.handshake = handshake
        self.baudrate = baudrate
        self._port: serial.Serial | None = None

    def open(self) -> None:
        try:
            port = serial.Serial()
            port.port = self.path
            port.baudrate = self.baudrate
            port.timeout = 0
            port.dtr = False  # applied on open; TrueRNG streams only while DTR is set
            port.open()
        except OSError as exc:  # pyserial's SerialException is an OSError with errno set
            raise _open_error(self.path, exc) from exc
        self._port = port
        try:
            if self.handshake == "dtr":
                self._set_dtr(True)
            elif self.handshake == "onerng":
                for cmd in ONERNG_START:
                    port.write(cmd)
                port.flush()
        except (OSError, serial.SerialException) as exc:
            self.close()
            raise SourceDisconnected(f"{self.path}: handshake failed: {exc}") from exc

    def _set_dtr(self, on: bool) -> None:
        assert self._port is not None
        try:
            self._port.dtr = on
        except OSError as exc:
            if exc.errno != errno.ENOTTY:
                raise
            self._port.write(PTY_DTR_EMULATION if on else PTY_DTR_DROP)
            self._port.flush()

    def read(self, n: int, timeout: float) -> bytes:
        port = self._port
        if port is None:
            raise SourceError(f"{self.path} is not open")

        def read_some(want: int, wait: float) -> bytes:
            try:  # setting the timeout reconfigures the port: it fails once unplugged
                port.timeout = wait
                return bytes(port.read(want))
            except (serial.SerialException, OSError) as exc:
                raise SourceDisconnected(f"{self.path}: disconnected mid-read: {exc}") from exc

        return _read_exactly(self.path, n, timeout, read_some)

    def describe(self) -> dict[str, object]:
        return {"type": "serial", "path": self.path, "handshake": self.handshake}

    def close(self) -> None:
        port = self._port
        if port is None:
            return
        try:
            if self.handshake == "onerng":
                port.write(ONERNG_STOP)
                port.flush()
            elif self.handshake == "dtr":
                self._set_dtr(False)
        except (OSError, serial.SerialException):
            pass  # already gone; closing is best effort
        self._port = None
        with contextlib.suppress(OSError, serial.SerialException):
            port.close()


class CharDeviceSource:
    """A character device such as /dev/qrandom0 (Quantis PCIe) or /dev/hwrng."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise _open_error(self.path, exc) from exc

    def read(self, n: int, timeout: float) -> bytes:
        fd = self._fd
        if fd is None:
            raise SourceError(f"{self.path} is not open")

        def read_some(want: int, wait: float) -> bytes:
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return b""
            try:
                chunk = os.read(fd, want)
            except BlockingIOError:
                return b""
            except OSError as exc:
                raise SourceDisconnected(f"{self.path}: read failed: {exc.strerror}") from exc
            if not chunk:
                raise SourceDisconnected(f"{self.path}: end of data after {n - want} bytes")
            return chunk

        return _read_exactly(self.path, n, timeout, read_some)

    def describe(self) -> dict[str, object]:
        return {"type": "char", "path": self.path}

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class RemoteSource:
    """A configured remote entropy endpoint: `GET url?bytes=n` answers raw bytes."""

    def __init__(self, url: str, verify: bool | str = True) -> None:
        self.path = url
        self._verify = verify
        self._client: httpx.Client | None = None

    def open(self) -> None:
        self._client = httpx.Client(verify=self._verify)

    def read(self, n: int, timeout: float) -> bytes:
        if self._client is None:
            raise SourceError(f"{self.path} is not open")
        try:
            resp = self._client.get(self.path, params={"bytes": n}, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise SourceTimeout(f"{self.path}: no answer within {timeout:.1f}s", 0) from exc
        except httpx.HTTPError as exc:
            raise SourceDisconnected(f"{self.path}: {exc}") from exc
        if resp.status_code != 200:
            raise SourceError(f"{self.path}: HTTP {resp.status_code}")
        if len(resp.content) < n:
            raise SourceTimeout(f"{self.path}: short answer {len(resp.content)} of {n}", 0)
        return resp.content[:n]

    def describe(self) -> dict[str, object]:
        return {"type": "remote", "url": self.path}

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
