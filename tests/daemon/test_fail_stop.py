"""A failed fsync while serving: the submit is refused, the daemon exits 1 for a restart."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.subprocesses import child_env, free_port

from .harness import Daemon, call_line

pytestmark = pytest.mark.skipif(
    shutil.which("fiu-run") is None, reason="fiu-utils (fiu-run, fiu-ctrl) not installed"
)
BLOCK = {"BlockImport": {"block_hash": [1] * 32, "block_number": 1, "timestamp": 1}}


def test_fsync_failure_stops_the_daemon_and_restart_recovers(tmp_path: Path) -> None:
    args = ["--port", str(free_port()), "--data-dir", "d", "--metrics", ""]
    d = Daemon(args, child_env(), tmp_path, prefix=["fiu-run", "-x"])
    try:
        d.wait_ready()
        sock = tmp_path / "d" / "node.sock"
        assert call_line(sock, "qssh_submitMessage", [BLOCK])["result"] >= 1  # fsync works
        subprocess.run(
            ["fiu-ctrl", "-c", "enable name=posix/io/sync/*,failinfo=5", str(d.proc.pid)],
            check=True,
            timeout=30,
        )
        reply = call_line(sock, "qssh_submitMessage", [BLOCK])
        assert reply["error"]["code"] == -32000
        assert reply["error"]["data"]["code"] == "unavailable"
        assert "fsync failed" in reply["error"]["message"]
        assert d.proc.wait(60) == 1  # fail-stop: the service manager restarts us
    finally:
        d.kill()

    again = Daemon(args, child_env(), tmp_path)
    try:
        again.wait_ready()
        restored = int(again.wait_line(r"restored (\d+) messages").group(1))
        assert restored >= 1  # the acknowledged submit survived
        assert again.stop() == 0
    finally:
        again.kill()
