"""Helpers for running ``qssh-sidecar serve`` as a real subprocess."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.subprocesses import START_TIMEOUT, child_env, log_message

STOP_TIMEOUT = 30.0


class NotifySocket:
    """The systemd side of sd_notify: a real AF_UNIX datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, predicate: str, timeout: float = START_TIMEOUT) -> str:
        """The first datagram (seen or new) containing ``predicate``."""
        deadline = time.monotonic() + timeout
        for m in self.messages:
            if predicate in m:
                return m
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            self.messages.append(data)
            if predicate in data:
                return data
        raise AssertionError(f"no {predicate!r} from the daemon; got {self.messages!r}")

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """A running ``serve`` subprocess with its stdout collected in a thread."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, prefix: list[str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "sidecar.cli", "serve", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._seen = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _pump(self, stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._seen:
                into.append(log_message(line.rstrip("\n")))
                self._seen.notify_all()

    def wait_line(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.lines + self.errors:  # status lines, then warnings
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._alive_readers()):
                    raise AssertionError(
                        f"no line matching {pattern!r}; stdout={self.lines!r} "
                        f"stderr={self.errors[-20:]!r}"
                    )
                self._seen.wait(min(left, 0.5))

    def _alive_readers(self) -> bool:
        return any(t.is_alive() for t in self._readers)

    def wait_ready(self) -> None:
        self.wait_line(r"^ready in ")

    def port(self, what: str) -> int:
        pats = {
            "ssh": r"^listening \S+:(\d+) ",
            "metrics": r"^metrics http://127\.0\.0\.1:(\d+)/",
            "node_http": r"^node endpoint http://127\.0\.0\.1:(\d+)/",
        }
        return int(self.wait_line(pats[what]).group(1))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"serve did not exit within {timeout}s of signal {sig}") from None
        for t in self._readers:
            t.join(5)
        return rc

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    started: list[Daemon] = []

    def _spawn(args: list[str], prefix: list[str] | None = None, **env: str) -> Daemon:
        d = Daemon(args, child_env(**env), tmp_path, prefix)
        started.append(d)
        return d

    yield _spawn
    for d in started:
        d.kill()


# Root ignores file modes; without these capabilities the kernel enforces them again.
AS_FILE_MODES_APPLY = (
    ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
)


def run_serve(
    args: list[str], cwd: Path, timeout: float = 60.0, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "sidecar.cli", "serve", *args],
        env=child_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---- node JSON-RPC clients (line mode and HTTP on a unix socket, HTTP on TCP) ----------


def rpc_line(sock_path: Path, body: bytes) -> Any:
    """One newline-delimited JSON-RPC exchange on the node's unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(sock_path))
        s.sendall(body.rstrip(b"\n") + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return orjson.loads(buf)


def call_line(sock_path: Path, method: str, params: object = None, req_id: int = 1) -> Any:
    req: dict[str, object] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        req["params"] = params
    return rpc_line(sock_path, orjson.dumps(req))


def _http_exchange(s: socket.socket, body: bytes, content_type: str) -> tuple[int, bytes]:
    s.sendall(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
        + content_type.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, payload = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, payload


def http_unix(
    sock_path: Path, body: bytes, content_type: str = "application/json"
) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(sock_path))
        return _http_exchange(s, body, content_type)


def http_tcp(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        return _http_exchange(s, body, content_type)
