"""``serve`` under a fake systemd: READY, watchdog, STATUS, SIGTERM flush, restart, SIGHUP."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import asyncssh

import transport.ssh_algorithms  # noqa: F401 - registers ssh-falcon512
from tests.subprocesses import Operator, free_port

from .harness import NotifySocket, call_line

ASYNC_COUNT = 25


def _block(n: int) -> dict[str, Any]:
    return {"BlockImport": {"block_hash": [n % 256] * 32, "block_number": n, "timestamp": 1000 + n}}


def _gossip(n: int) -> dict[str, Any]:
    return {"Gossip": {"topic": f"t{n}", "data": list(f"payload {n}".encode())}}


def test_ready_watchdog_sigterm_flush_and_restart(
    tmp_path: Path, notify_socket: NotifySocket, spawn: Any
) -> None:
    args = ["--port", str(free_port()), "--data-dir", "d", "--metrics", ""]
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "100000"}
    d = spawn(args, **env)

    ready = notify_socket.wait_for("READY=1")
    assert "STATUS=depth 0" in ready
    assert "tier 2" in ready
    assert d.wait_line(r"^host key \S+: ssh-falcon512 SHA256:\S+ \(new\)$")  # no QRNG here
    for _ in range(3):  # pings keep coming at WATCHDOG_USEC/2
        notify_socket.messages = [m for m in notify_socket.messages if m != "WATCHDOG=1"]
        assert notify_socket.wait_for("WATCHDOG=1") == "WATCHDOG=1"

    sock = tmp_path / "d" / "node.sock"
    ids = [
        call_line(sock, "qssh_submitMessage", [_gossip(n)])["result"] for n in range(ASYNC_COUNT)
    ]
    ids.append(call_line(sock, "qssh_submitMessage", [_block(7)])["result"])
    assert call_line(sock, "qssh_getQueueDepth")["result"] == ASYNC_COUNT + 1
    status = notify_socket.wait_for(f"STATUS=depth {ASYNC_COUNT + 1} ")
    assert f"critical 1, high 0, normal {ASYNC_COUNT}, low 0" in status

    assert d.stop(signal.SIGTERM) == 0
    assert "STOPPING=1" in notify_socket.wait_for("STOPPING=1")
    assert d.lines[-1].startswith("stopped in ")

    d2 = spawn(args, **env)
    d2.wait_ready()
    assert d2.wait_line(r"restored (\d+) messages").group(1) == str(ASYNC_COUNT + 1)
    assert d2.wait_line(r"^host key \S+: ssh-falcon512 SHA256:\S+$")  # the same key, loaded
    popped = []
    for _ in range(ASYNC_COUNT + 2):
        item = call_line(sock, "qssh_popMessage")["result"]
        if item is None:
            break
        popped.append(item)
    assert len(popped) == ASYNC_COUNT + 1
    assert popped[0]["message"] == _block(7)  # critical first
    assert sorted(p["message_id"] for p in popped) == sorted(ids)
    gossip = sorted(popped[1:], key=lambda p: p["message_id"])
    assert [p["message"] for p in gossip] == [_gossip(n) for n in range(ASYNC_COUNT)]
    assert all(p["submitted_by"] == "node:alice" and p["persisted"] for p in popped)
    assert d2.stop(signal.SIGINT) == 0


def test_sighup_reloads_authorized_keys(
    tmp_path: Path, notify_socket: NotifySocket, spawn: Any
) -> None:
    d = spawn(
        ["--port", str(free_port()), "--data-dir", "d", "--metrics", ""],
        NOTIFY_SOCKET=str(notify_socket.path),
    )
    d.wait_ready()
    auth = tmp_path / "d" / "authorized_keys"
    new_key = asyncssh.generate_private_key("ssh-falcon512", comment="consumer-2")
    with auth.open("a") as f:
        f.write('roles="consumer" ' + new_key.export_public_key().decode())
    d.proc.send_signal(signal.SIGHUP)
    assert d.wait_line(r"^reloaded .*authorized_keys: (\d+) keys").group(1) == "2"
    assert "RELOADING=1" in notify_socket.wait_for("RELOADING=1")
    assert d.stop() == 0


def test_an_authorized_keys_file_named_on_the_command_line_is_never_written(
    spawn: Any, tmp_path: Path
) -> None:
    """Embedded defaults make a local operator key; they must not add it to a file the
    operator named (it would grant a new key every role behind their back)."""
    auth = tmp_path / "my_authorized_keys"
    user = asyncssh.generate_private_key("ssh-falcon512")
    auth.write_text('roles="consumer" ' + user.export_public_key().decode())
    before = auth.read_bytes()
    args = ["--port", str(free_port()), "--data-dir", "d", "--metrics", ""]
    d = spawn([*args, "--authorized-keys", str(auth)])
    d.wait_ready()
    assert d.stop() == 0
    assert auth.read_bytes() == before
    assert not (tmp_path / "d" / "operator").exists()
    assert not any("local operator key" in line for line in d.lines)


def test_a_skipped_authorized_keys_line_is_reported_once_at_start(
    spawn: Any, tmp_path: Path
) -> None:
    auth = tmp_path / "my_authorized_keys"
    user = asyncssh.generate_private_key("ssh-falcon512")
    auth.write_text('roles="consumer" ' + user.export_public_key().decode() + "not a key\n")
    args = ["--port", str(free_port()), "--data-dir", "d", "--metrics", ""]
    d = spawn([*args, "--authorized-keys", str(auth)])
    d.wait_ready()
    assert d.stop() == 0
    skipped = [e for e in d.lines + d.errors if "my_authorized_keys:2: skipped" in e]
    assert len(skipped) == 1, skipped


def test_a_reload_that_leaves_no_keys_is_a_warning(spawn: Any, tmp_path: Path) -> None:
    d = spawn(["--port", str(free_port()), "--data-dir", "d", "--metrics", ""])
    d.wait_ready()
    auth = tmp_path / "d" / "authorized_keys"
    classical = asyncssh.generate_private_key("ssh-ed25519")  # skipped: not post-quantum
    auth.write_text('roles="consumer" ' + classical.export_public_key().decode())
    d.proc.send_signal(signal.SIGHUP)
    line = d.wait_line(r"reloaded \S+authorized_keys: 0 keys: every login is refused").string
    assert line in d.errors  # a warning (stderr), not a status line
    assert d.stop() == 0


def test_second_daemon_on_the_same_data_dir_is_refused(spawn: Any, tmp_path: Path) -> None:
    d = spawn(["--port", str(free_port()), "--data-dir", "d", "--metrics", ""])
    d.wait_ready()
    other = spawn(["--port", str(free_port()), "--data-dir", "d", "--metrics", ""])
    assert other.proc.wait(60) == 2
    other.stop()
    assert any("in use by another qssh-sidecar" in e for e in other.errors)
    assert d.stop() == 0


async def test_sigterm_with_an_ssh_client_connected_keeps_its_async_submits(
    tmp_path: Path, spawn: Any
) -> None:
    args = ["--port", str(free_port()), "--data-dir", "d", "--metrics", ""]
    d = spawn(args)
    d.wait_ready()
    gossip = {"kind": "gossip", "topic": "x", "data": "aGk="}
    async with Operator.of(tmp_path / "d").connect(d.port("ssh")) as c:
        results = await c.submit_batch([gossip] * 40, mode="async")
        assert all(r["mode"] == "async" for r in results)
        d.proc.send_signal(signal.SIGTERM)  # while this connection is still open
        rc = await asyncio.to_thread(d.stop)
    assert rc == 0
    d2 = spawn(args)
    d2.wait_ready()
    assert d2.wait_line(r"restored (\d+) messages").group(1) == "40"
    assert d2.stop() == 0
