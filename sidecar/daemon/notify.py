"""systemd's notify protocol (sd_notify) without libsystemd.

One datagram per notification to the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a path, or an abstract name written ``@name``). Without that variable every call
is a no-op, so the daemon behaves the same outside systemd. The watchdog pinger is
an asyncio task: if the event loop stalls, the pings stop and systemd restarts us,
which is the point of pinging from the loop rather than from a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False if not under systemd or it failed."""
        if self._address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        payload = "\n".join(assignments).encode()
        try:
            self._sock.sendto(payload, self._address)
        except OSError as e:
            # The manager went away or the socket is full: not fatal for the queue.
            log.warning("sd_notify to %r failed: %s", self._address, e)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    async def watchdog_pings(self) -> None:
        """Ping at half the watchdog interval until cancelled (no-op without a watchdog)."""
        if self.watchdog_interval is None or self._address is None:
            return
        period = self.watchdog_interval / 2
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(period)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET=%r: not a path or @abstract name", value)
    return None


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # the watchdog is meant for another process (e.g. our parent shell)
    return int(usec) / 1_000_000
