"""sd_notify against a real AF_UNIX datagram socket, path and abstract names."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from sidecar.daemon.notify import SystemdNotifier


def _recv(sock: socket.socket) -> str:
    sock.settimeout(5)
    return sock.recv(4096).decode()


def test_ready_reaches_a_path_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "n.sock"))
        n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
        assert n.ready("depth 0; tier 2")
        assert _recv(s) == "READY=1\nSTATUS=depth 0; tier 2"
        n.close()


def test_abstract_socket_name_with_at_sign() -> None:
    name = f"qssh-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        n = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert n.status("hello")
        assert _recv(s) == "STATUS=hello"
        n.close()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    n = SystemdNotifier({})
    assert not n.enabled
    assert not n.ready("x")
    assert n.watchdog_interval is None


def test_watchdog_interval_is_read_from_usec() -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000"})
    assert n.watchdog_interval == 3.0


def test_watchdog_meant_for_another_pid_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}
    assert SystemdNotifier(env).watchdog_interval is None


async def test_watchdog_pings_arrive(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "w.sock"))
        s.setblocking(False)
        n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "w.sock"), "WATCHDOG_USEC": "20000"})
        task = asyncio.create_task(n.watchdog_pings())
        loop = asyncio.get_running_loop()
        got = [await asyncio.wait_for(loop.sock_recv(s, 100), 10) for _ in range(3)]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert got == [b"WATCHDOG=1"] * 3
        n.close()


def test_a_vanished_manager_is_not_fatal(tmp_path: Path) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready("x") is False
