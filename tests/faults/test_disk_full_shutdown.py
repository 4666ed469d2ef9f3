"""A full disk at shutdown and at start, on a real small tmpfs (needs root to mount it).

- SIGTERM with async messages held and the disk full: the flush waits (bounded) for
  space; space freed in time means every message is written and kept (exit 0);
  otherwise exit 4 and one log line with the exact number of async messages lost.
- Start-up on a full disk exits 3 (not 2, which is a configuration error).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import transport.ssh_algorithms  # noqa: F401
from sidecar.daemon.app import EXIT_ASYNC_LOST, EXIT_NO_SPACE
from tests.subprocesses import Operator, free_port

from .harness import Serve
from .test_enospc import fill, try_mount_tmpfs

ASYNC = 40
# 40 x 40 KB: more than the zeros the log keeps written ahead (1 MiB), so that the
# shutdown's one frame of async messages cannot fit in them
ASYNC_DATA = base64.b64encode(os.urandom(30_000)).decode()
SPACE_WAIT = 2  # durability.shutdown_timeout for these daemons, seconds


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    why_not = try_mount_tmpfs(mnt)
    if why_not is not None:
        pytest.skip(f"needs a small real filesystem to fill: {why_not}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], timeout=30, check=False)


def serve(tmp_path: Path, data: Path, port: int) -> Serve:
    config = tmp_path / "sidecar.toml"
    config.write_text(f"[durability]\nshutdown_timeout = {SPACE_WAIT}\n[metrics]\nlisten = ''\n")
    return Serve(tmp_path, data, port, extra=["--config", str(config)])


async def hold_async_messages(serve_: Serve, data: Path) -> None:
    await asyncio.to_thread(serve_.wait_ready)
    async with Operator.of(data).connect(serve_.port) as c:
        for i in range(ASYNC):
            message = {"kind": "gossip", "topic": f"t{i}", "data": ASYNC_DATA}
            reply = await c.submit(message, "async")
            assert reply["mode"] == "async"


def lost_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "async messages lost" in line]


async def test_sigterm_on_a_full_disk_that_stays_full_exits_4_with_the_count_lost(
    tmp_path: Path, small_disk: Path
) -> None:
    data, port = small_disk / "data", free_port()
    d = serve(tmp_path, data, port)
    try:
        await hold_async_messages(d, data)
        fill(small_disk)
        began = time.monotonic()
        rc = await asyncio.to_thread(d.stop, 60.0)
        waited = time.monotonic() - began
    finally:
        if d.proc.poll() is None:
            d.kill()
    out = d.output()
    assert rc == EXIT_ASYNC_LOST, out[-2000:]
    lines = lost_lines(out)
    assert len(lines) == 1, out[-2000:]
    assert re.search(rf"\b{ASYNC} async messages lost\b", lines[0]), lines[0]
    assert waited >= SPACE_WAIT * 0.9  # it did wait for space before giving up
    print(f"exit {rc} after {waited:.1f}s: {lines[0]}")


async def test_sigterm_on_a_full_disk_keeps_everything_when_space_returns_in_time(
    tmp_path: Path, small_disk: Path
) -> None:
    data, port = small_disk / "data", free_port()
    d = serve(tmp_path, data, port)
    try:
        await hold_async_messages(d, data)
        filler = fill(small_disk)
        d.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert d.proc.poll() is None  # still waiting for space
        filler.unlink()
        rc = await asyncio.to_thread(d.proc.wait, 60)
    finally:
        if d.proc.poll() is None:
            d.kill()
    assert rc == 0, d.output()[-2000:]
    assert not lost_lines(d.output())
    again = serve(tmp_path, data, port)
    try:
        await asyncio.to_thread(again.wait_ready)
        assert again.wait_line(r"restored (\d+) messages").group(1) == str(ASYNC)
    finally:
        assert again.stop() == 0


async def test_start_on_a_full_disk_exits_3_with_one_line(tmp_path: Path, small_disk: Path) -> None:
    data = small_disk / "data"
    first = serve(tmp_path, data, free_port())
    try:
        await asyncio.to_thread(first.wait_ready)
    finally:
        assert first.stop() == 0
    fill(small_disk)
    d = serve(tmp_path, data, free_port())
    rc = await asyncio.to_thread(d.proc.wait, 60)
    out = d.output()
    assert rc == EXIT_NO_SPACE, out[-2000:]
    assert rc != 2
    errors = [line for line in out.splitlines() if line.startswith("qssh-sidecar:")]
    assert len(errors) == 1, out
    assert "no space left" in errors[0].lower()
    assert os.path.isdir(data)
