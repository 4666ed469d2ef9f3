"""The real daemon and real client processes for the fault tests.

Every child writes to a file, never to a pipe the test must drain: a killed daemon
or a slow reader cannot lose or block output that way, and a line that reached the
file before a SIGKILL is still there after it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from tests.subprocesses import REPO, START_TIMEOUT, Operator, child_env, log_messages

NIGHTLY = os.environ.get("QSSH_NIGHTLY") == "1"


def rss_kib(pid: int) -> int:
    """Resident memory of a live process, from /proc/PID/status (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Serve:
    """One ``qssh-sidecar serve`` incarnation; output appended to ``log``."""

    def __init__(
        self,
        workdir: Path,
        data_dir: Path,
        port: int,
        *,
        prefix: Sequence[str] = (),
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = workdir / "serve.log"
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        self.data_dir = data_dir
        self.port = port
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *prefix,
                    sys.executable,
                    "-m",
                    "sidecar.cli",
                    "serve",
                    "--data-dir",
                    str(data_dir),
                    "--port",
                    str(port),
                    "--metrics",
                    "",
                    *extra,
                ],
                cwd=workdir,
                env=env or child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """What this run printed, each log line reduced to its message."""
        with self.log.open("rb") as f:
            f.seek(self.offset)
            return log_messages(f.read().decode(errors="replace"))

    def wait_line(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.output())
            if m:
                return m
            if self.proc.poll() is not None or time.monotonic() > deadline:
                m = rx.search(self.output())
                if m:
                    return m
                raise AssertionError(
                    f"serve (rc={self.proc.returncode}) printed no {pattern!r}:\n"
                    + self.output()[-3000:]
                )
            time.sleep(0.02)

    def wait_ready(self) -> int:
        """Wait for ``ready``; the next message id recovery found."""
        self.wait_line(r"^ready in ")
        return int(self.wait_line(r"next id (\d+)").group(1))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"serve did not stop within {timeout}s of SIGTERM") from None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)


class Worker:
    """A ``tests.faults.worker`` process; its journal is a file."""

    def __init__(
        self, role: str, tag: int, port: int, op: Operator, workdir: Path, stop: Path
    ) -> None:
        self.role = role
        self.tag = tag
        self.journal = workdir / f"{role}-{tag}.journal"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.worker",
                role,
                str(tag),
                str(port),
                str(op.key),
                str(op.known_hosts),
                str(self.journal),
                str(stop),
            ],
            cwd=REPO,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"{role}-{tag}.stderr").open("ab"),
        )

    def lines(self) -> list[list[str]]:
        if not self.journal.exists():
            return []
        return [ln.split() for ln in self.journal.read_text().splitlines() if ln]

    def journal_bytes(self) -> int:
        return self.journal.stat().st_size if self.journal.exists() else 0

    def count(self, word: str) -> int:
        return sum(1 for f in self.lines() if f[0] == word)

    def finish(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.role} {self.tag} did not stop") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def cleanup(*groups: list[Serve] | list[Worker]) -> Iterator[None]:
    try:
        yield
    finally:
        for group in groups:
            for p in group:
                if p.proc.poll() is None:
                    p.proc.kill()
                    p.proc.wait(10)


def wal_dump(log_path: Path) -> list[dict[str, object]]:
    """Every record of the log, through ``qssh-sidecar wal dump`` (a real subprocess).

    No log file at all is no records (the checker then reports every ack as lost)."""
    if not log_path.exists():
        return []
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "wal", "dump", str(log_path)],
        env=child_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return [orjson.loads(line) for line in done.stdout.splitlines() if line]


def live_messages(records: list[dict[str, object]]) -> dict[int, dict[str, object]]:
    """message id -> message, for every submit not followed by its consume."""
    live: dict[int, dict[str, object]] = {}
    for rec in records:
        if rec["type"] == "submit":
            mid = int(rec["message_id"])  # type: ignore[call-overload]
            assert mid not in live, f"message id {mid} logged twice"
            live[mid] = rec["message"]  # type: ignore[assignment]
        elif rec["type"] == "consume":
            live.pop(int(rec["message_id"]), None)  # type: ignore[call-overload]
    return live


def log_path(data_dir: Path, instance: str = "alice") -> Path:
    return data_dir / "queue" / f"{instance}.wal"
