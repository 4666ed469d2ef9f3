"""What every test that starts a real child process needs: the repo root, the child's
environment, a free loopback port, whether something listens on it, and the local
operator key a first ``qssh-sidecar serve`` makes under its data dir."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transport.client import QueueClient

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0


def child_env(**extra: str) -> dict[str, str]:
    """This environment with the repo importable, unbuffered output, and no systemd
    notify socket inherited from whatever runs the tests."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_python(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` from the repo root in `child_env`, its output captured as text;
    the exit status is the caller's to check."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


# sidecar/logs.py's text format: time, level, logger, then the message
_LOG_PREFIX = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)


def log_message(line: str) -> str:
    """The message of one log line (text or JSON format); other lines unchanged."""
    if line.startswith('{"ts": '):
        try:
            return str(json.loads(line)["msg"])
        except (ValueError, KeyError):
            return line
    return _LOG_PREFIX.sub("", line, count=1)


def log_messages(text: str) -> str:
    """``log_message`` of every line of ``text``."""
    return "\n".join(log_message(line) for line in text.split("\n"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_listening(port: int, timeout: float = 1.0) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Operator:
    """The local operator key the daemon makes on first start (all roles)."""

    key: Path
    known_hosts: Path

    @classmethod
    def of(cls, data_dir: Path) -> Operator:
        return cls(data_dir / "operator" / "id_falcon512", data_dir / "operator" / "known_hosts")

    def connect(self, port: int, **kwargs: Any) -> Any:
        """``QueueClient.connect`` to the daemon on ``port`` as this operator."""
        return QueueClient.connect(
            "127.0.0.1",
            port,
            username="operator",
            client_keys=[self.key],
            known_hosts=self.known_hosts,
            **kwargs,
        )
