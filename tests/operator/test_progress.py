"""Long work shows progress: percentage log lines when not on a terminal, a rich bar on
one; recovery and `wal compact` report as they read."""

from __future__ import annotations

import logging
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar import QppValidatorQueue, logs
from sidecar.wal import encode_frame, file_header, reserve_record, scan
from sidecar.wal._framing import PROGRESS_FRAMES
from tests.subprocesses import REPO, child_env, free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_percentage_lines_come_once_per_interval_and_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    report = logs.ProgressReport("reading x", logging.getLogger("t"), tty=False, clock=clock)
    with caplog.at_level("INFO", logger="t"):
        for done in range(0, 101, 10):
            clock.now += 0.7  # 2 s pass about every third call
            report(done, 100)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("reading x: ")
    assert messages[-1] == "reading x: 100% (100 of 100 bytes)"
    assert 3 <= len(messages) <= 5, messages


def test_a_short_job_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    report = logs.ProgressReport("x", logging.getLogger("t"), tty=False, clock=FakeClock())
    with caplog.at_level("INFO", logger="t"):
        report(5, 10)
        report(10, 10)
    assert caplog.records == []


def _big_log(path: Path, frames: int) -> Path:
    """A valid log of ``frames`` frames (id reservations), written directly: fast."""
    path.mkdir(parents=True, exist_ok=True)
    log = path / "v.wal"
    body = b"".join(encode_frame([reserve_record(i + 2)]) for i in range(frames))
    log.write_bytes(file_header() + body)
    return log


async def test_recovery_reports_its_progress(tmp_path: Path) -> None:
    _big_log(tmp_path, PROGRESS_FRAMES + 10)
    seen: list[tuple[int, int]] = []
    q = await QppValidatorQueue.open("v", tmp_path, progress=lambda d, t: seen.append((d, t)))
    await q.close()
    assert len(seen) >= 2
    assert seen[-1][0] == seen[-1][1]
    assert seen == sorted(seen)


async def test_wal_compact_prints_percentages_when_not_a_terminal(
    tmp_path: Path,
) -> None:
    path = _big_log(tmp_path, PROGRESS_FRAMES * 2 + 10)
    frames = scan(path.read_bytes()).frames
    assert frames > 2 * PROGRESS_FRAMES
    env = child_env()
    code = (
        "import sys; from sidecar import logs; logs.PROGRESS_EVERY = 0; "
        "from sidecar.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "wal", "compact", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "reading v.wal: " in ln]
    assert len(lines) >= 2, r.stderr
    assert " INFO sidecar.wal_cli: reading v.wal: " in lines[0]
    assert lines[-1].split("reading v.wal: ")[1].startswith("100% ("), lines[-1]


async def test_wal_compact_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    path = _big_log(tmp_path, PROGRESS_FRAMES + 10)
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli", "wal", "compact", str(path)],
        stdin=child, stdout=child, stderr=child, env=child_env(TERM="xterm"), cwd=REPO,
    )  # fmt: skip
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(60) == 0, out
    text = out.decode(errors="replace")
    assert "compacted" in text
    assert "\x1b[?25l" in text  # rich's live display took the terminal
    assert "reading v.wal" in text
    assert "INFO" not in text  # a bar, not log lines


def test_serve_shows_recovery_progress_on_a_terminal(tmp_path: Path) -> None:
    """A large log at start: on a terminal the daemon draws a bar while reading it."""
    _big_log(tmp_path / "d" / "queue", PROGRESS_FRAMES * 2).rename(
        tmp_path / "d" / "queue" / "alice.wal"
    )
    main, child = pty.openpty()
    args = ["--port", str(free_port()), "--data-dir", "d", "--metrics", ""]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli", "serve", *args],
        stdin=child, stdout=child, stderr=child, env=child_env(TERM="xterm"), cwd=tmp_path,
    )  # fmt: skip
    os.close(child)
    out = b""
    try:
        while b"ready in" not in out:
            chunk = os.read(main, 65536)  # the pty stays open while serve runs
            assert chunk, out
            out += chunk
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        os.close(main)
    assert rc == 0
    text = out.decode(errors="replace")
    assert "recovering the log" in text
    assert "\x1b[?25l" in text  # rich's live display
    assert f"restored 0 messages, next id {PROGRESS_FRAMES * 2 + 1}" in text
