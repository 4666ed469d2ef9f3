"""What the daemon writes: time, level and logger on every line; JSON on request; each
event said once."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.subprocesses import child_env, free_port

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)


def _raw_lines(tmp_path: Path, *extra: str) -> tuple[list[str], list[str], int]:
    """Run serve to ready, stop it; every raw stdout and stderr line."""
    args = ["--port", str(free_port()), "--data-dir", "d", "--metrics", "", *extra]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli", "serve", *args],
        cwd=tmp_path,
        env=child_env(),
        stdout=(tmp_path / "out").open("wb"),
        stderr=(tmp_path / "err").open("wb"),
    )
    try:
        deadline = time.monotonic() + 60
        while b"ready in" not in (tmp_path / "out").read_bytes():
            assert proc.poll() is None, (tmp_path / "err").read_text()
            assert time.monotonic() < deadline, "serve never got ready"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = (tmp_path / "out").read_text().splitlines()
    err = (tmp_path / "err").read_text().splitlines()
    return out, err, rc


def test_every_text_line_has_time_level_and_logger_and_no_event_is_said_twice(
    tmp_path: Path,
) -> None:
    out, err, rc = _raw_lines(tmp_path)
    assert rc == 0, err
    assert out
    assert all(TEXT_LINE.match(line) for line in out + err), out + err
    messages = [line.split(": ", 1)[1] for line in out]
    assert len(messages) == len(set(messages)), messages
    assert not [m for m in messages if "restored" in m and m.startswith("[")]  # queue's own
    assert sum("listening" in m for m in messages) == 1
    assert sum(m.startswith("tier ") for m in messages) == 1


def test_log_format_json_is_one_object_per_line(tmp_path: Path) -> None:
    out, err, rc = _raw_lines(tmp_path, "--log-format", "json", "-v")
    assert rc == 0, err
    entries: list[dict[str, Any]] = [json.loads(line) for line in out + err]
    assert all(set(e) >= {"ts", "level", "logger", "msg"} for e in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]) for e in entries)
    status = [e for e in entries if e["logger"] == "sidecar.daemon"]
    assert status[-1]["msg"].startswith("stopped in ")
    assert any(e["level"] == "DEBUG" for e in entries)  # -v: one level more than INFO
