"""The daemon runs on uvloop by default and on the standard library's loop when told
(config ``event_loop`` or ``--event-loop``); both serve, notify systemd and stop
cleanly. ``service.event_loop`` in ``stats`` names the loop that really runs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import transport.ssh_algorithms  # noqa: F401 - registers ssh-falcon512
from sidecar import QppValidatorQueue
from sidecar.daemon import config
from sidecar.daemon.config import ConfigError
from tests import event_loops
from tests.core.helpers import block
from tests.subprocesses import Operator, child_env, free_port, run_python
from transport import event_loop

from .harness import NotifySocket, call_line


def _load(tmp_path: Path, text: str) -> config.DaemonConfig:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(p)


def test_uvloop_is_the_default_and_asyncio_can_be_chosen(tmp_path: Path) -> None:
    assert config.load(None).event_loop == "uvloop"
    assert _load(tmp_path, 'instance = "bob"\n').event_loop == "uvloop"
    assert _load(tmp_path, 'event_loop = "asyncio"\n').event_loop == "asyncio"
    from_file = _load(tmp_path, 'event_loop = "uvloop"\n')
    assert config.override(from_file, event_loop_name="asyncio").event_loop == "asyncio"
    assert config.override(from_file).event_loop == "uvloop"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('event_loop = "trio"\n', "event_loop: 'trio' is not one of uvloop, asyncio"),
        ("event_loop = 1\n", "event_loop: expected a string, got 1"),
    ],
)
def test_an_unknown_event_loop_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)
    with pytest.raises(ConfigError, match="--event-loop: 'x' is not one of"):
        config.override(config.load(None), event_loop_name="x")


@pytest.mark.parametrize("name", event_loop.NAMES)
def test_run_runs_on_the_named_loop(name: str) -> None:
    async def which() -> str:
        return event_loop.running()

    assert event_loop.run(which(), name) == name


def test_run_refuses_an_unknown_loop_without_leaving_the_coroutine_unawaited() -> None:
    async def never() -> None:
        raise AssertionError("not run")

    coro = never()
    with pytest.raises(ValueError, match="event loop must be one of"):
        event_loop.run(coro, "trio")
    assert coro.cr_frame is None  # closed, so no "never awaited" warning


async def test_these_tests_run_on_the_selected_loop() -> None:
    assert event_loop.running() == event_loops.selected()


async def _stats(data_dir: Path, port: int) -> dict[str, Any]:
    async with Operator.of(data_dir).connect(port) as client:
        stats: dict[str, Any] = await client.stats()
        result = await client.submit({"kind": "gossip", "topic": "t", "data": "aGk="}, "sync")
        assert result["message_id"] >= 1
        return stats


@pytest.mark.parametrize(
    ("file_text", "flags", "expected"),
    [
        (None, [], "uvloop"),
        ('event_loop = "asyncio"\n', [], "asyncio"),
        ('event_loop = "asyncio"\n', ["--event-loop", "uvloop"], "uvloop"),
    ],
    ids=["default", "config-asyncio", "flag-over-config"],
)
def test_the_daemon_runs_on_the_configured_loop_and_stops_cleanly(
    tmp_path: Path,
    notify_socket: NotifySocket,
    spawn: Any,
    file_text: str | None,
    flags: list[str],
    expected: str,
) -> None:
    args = ["--port", str(free_port()), "--data-dir", "d", "--metrics", "", *flags]
    if file_text is not None:
        (tmp_path / "c.toml").write_text(file_text)
        args += ["--config", str(tmp_path / "c.toml")]
    d = spawn(args, NOTIFY_SOCKET=str(notify_socket.path))
    assert "READY=1" in notify_socket.wait_for("READY=1")
    stats = asyncio.run(_stats(tmp_path / "d", d.port("ssh")))
    assert stats["service"]["event_loop"] == expected
    assert call_line(tmp_path / "d" / "node.sock", "qssh_getQueueDepth")["result"] == 1
    d.proc.send_signal(signal.SIGHUP)
    assert d.wait_line(r"^reloaded .*authorized_keys")
    assert d.stop(signal.SIGTERM) == 0
    assert "STOPPING=1" in notify_socket.wait_for("STOPPING=1")
    assert d.lines[-1].startswith("stopped in ")


def test_qssh_queue_runs_on_either_loop(tmp_path: Path, spawn: Any) -> None:
    d = spawn(["--port", str(free_port()), "--data-dir", "d", "--metrics", ""])
    port = d.port("ssh")
    d.wait_ready()
    operator = Operator.of(tmp_path / "d")
    for name in event_loop.NAMES:
        done = subprocess.run(
            [
                sys.executable, "-m", "transport.client_cli", "-p", str(port),
                "-i", str(operator.key), "-o", f"UserKnownHostsFile={operator.known_hosts}",
                "--event-loop", name, "operator@127.0.0.1", "stats", "--json",
            ],
            env=child_env(QSSH_HOME=str(tmp_path / "home")),
            capture_output=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["service"]["event_loop"] == "uvloop"
    assert d.stop() == 0


def test_the_fsync_thread_and_a_compaction_hand_back_to_uvloop(tmp_path: Path) -> None:
    """Every batch through the worker thread (its `call_soon_threadsafe` hand-back) and a
    compaction's jobs (`run_in_executor`) on the daemon's loop; all acknowledged submits
    are there after reopening."""

    async def run() -> str:
        q = await QppValidatorQueue.open("v", tmp_path, inline_lone_sync=False)
        serial = [await q.submit_sync(block(i), submitted_by="t") for i in range(10)]
        together = await asyncio.gather(
            *(q.submit_sync(block(i), submitted_by="t") for i in range(50))
        )
        handle = await q.pop()
        assert handle is not None
        popped = handle.consume().message_id
        await q.compact_wal()
        await q.close()
        q = await QppValidatorQueue.open("v", tmp_path)
        kept = {i.message_id for i in q._state.ready_items()}
        assert kept == {*serial, *together} - {popped}
        await q.close()
        return event_loop.running()

    assert event_loop.run(run(), "uvloop") == "uvloop"


_WITHOUT_UVLOOP = """
import sys
sys.modules["uvloop"] = None  # as if uvloop were not installed
from sidecar.daemon import serve_cli  # the daemon and the client load without it
from transport import client_cli, event_loop
async def main():
    return event_loop.running()
print(event_loop.run(main(), "asyncio"))
try:
    event_loop.run(main())
except ValueError as exc:
    print(exc)
"""


def test_without_uvloop_asyncio_still_runs_and_the_default_says_why_not() -> None:
    done = run_python("-c", _WITHOUT_UVLOOP)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "asyncio",
        'uvloop is not installed: install it, or choose event loop "asyncio"',
    ]


_CLI_WITHOUT_UVLOOP = """
import sys
sys.modules["uvloop"] = None
from {module} import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("sidecar.cli", ["serve", "--data-dir", "{tmp}"]),
        ("transport.client_cli", ["-p", "1", "127.0.0.1", "ping"]),
    ],
)
def test_without_uvloop_the_default_loop_exits_2_with_the_reason(
    tmp_path: Path, module: str, argv: list[str]
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path / "data")) for a in argv]
    done = run_python("-c", _CLI_WITHOUT_UVLOOP.format(module=module, argv=argv))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "uvloop is not installed" in done.stderr
    assert "Traceback" not in done.stderr
