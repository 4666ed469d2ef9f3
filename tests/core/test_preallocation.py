"""The live log is kept written zeros ahead of its end (so a batch's fdatasync writes data
only); zeros after the last frame are not a torn write, and closing cuts them."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import QppValidatorQueue
from sidecar.wal import (
    FILE_HEADER_SIZE,
    OsFileLayer,
    consume_record,
    encode_frame,
    file_header,
    scan,
)
from tests.core.helpers import block
from tests.subprocesses import run_python


def _tail(path: Path) -> tuple[int, int, bytes]:
    """(file size, end of the last valid frame, the bytes after it)."""
    data = path.read_bytes()
    result = scan(data)
    assert not result.corrupt
    assert not result.torn_tail
    return len(data), result.valid_end, data[result.valid_end :]


async def test_the_open_log_has_zeros_ahead_and_closing_cuts_them(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path, layer=OsFileLayer(preallocate=64 * 1024))
    for i in range(5):
        await q.submit_sync(block(i), submitted_by="t")
    size, end, tail = _tail(tmp_path / "v.wal")
    assert size >= 64 * 1024
    assert end < size <= end + 64 * 1024 + 1024
    assert tail == bytes(len(tail))
    assert scan((tmp_path / "v.wal").read_bytes()).preallocated == size - end
    await q.close()
    size, end, tail = _tail(tmp_path / "v.wal")
    assert size == end
    assert tail == b""
    q = await QppValidatorQueue.open("v", tmp_path)
    assert q.depth()["total"] == 5
    await q.close()


async def test_zeros_are_written_again_as_the_log_grows(tmp_path: Path) -> None:
    step = 4096
    q = await QppValidatorQueue.open("v", tmp_path, layer=OsFileLayer(preallocate=step))
    extended = 0
    last_size = 0
    for i in range(200):  # about 40 KB of frames: the zeros run out ten times or more
        await q.submit_sync(block(i), submitted_by="t")
        size, end, tail = _tail(tmp_path / "v.wal")
        assert end < size <= end + step + 1024  # ahead, never more than a step and a frame
        assert tail == bytes(len(tail))
        extended += size != last_size
        last_size = size
    assert extended >= 10
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    assert q.depth()["total"] == 200
    await q.close()


async def test_without_preallocation_the_file_ends_at_the_last_frame(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path, layer=OsFileLayer(preallocate=0))
    await q.submit_sync(block(1), submitted_by="t")
    size, end, _ = _tail(tmp_path / "v.wal")
    assert size == end
    await q.close()


_KILLED_WRITER = """
import asyncio, os, signal, sys
from sidecar import QppValidatorQueue
from tests.core.helpers import block

async def main():
    q = await QppValidatorQueue.open("v", sys.argv[1])
    for i in range(int(sys.argv[2])):
        mid = await q.submit_sync(block(i), submitted_by="t")
        print(mid, flush=True)  # acknowledged: durable
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_sigkilled_sidecar_leaves_zeros_that_the_next_open_cuts_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    done = run_python("-c", _KILLED_WRITER, str(tmp_path), "50", timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    acked = [int(line) for line in done.stdout.split()]
    assert len(acked) == 50
    path = tmp_path / "v.wal"
    size, end, tail = _tail(path)
    assert size > end
    assert tail == bytes(len(tail))

    verify = run_python("-m", "sidecar.cli", "wal", "verify", "--json", str(path))
    assert verify.returncode == 0, verify.stderr
    report = orjson.loads(verify.stdout.splitlines()[0])
    assert report["status"] == "clean"
    assert report["preallocated_bytes"] == size - end

    with caplog.at_level(logging.WARNING, logger="sidecar.wal"):
        q = await QppValidatorQueue.open("v", tmp_path)
    assert "torn" not in caplog.text
    assert q.recovery is not None
    assert q.recovery.torn_bytes == 0
    assert sorted(i.message_id for i in q._state.ready_items()) == acked
    await q.close()
    size, end, _ = _tail(path)
    assert size == end


_CAPPED_WRITER = """
import asyncio, os, resource, signal, sys
from sidecar import LogFailed, QppValidatorQueue
from tests.core.helpers import block

async def main():
    # a file may not grow past 200 kB: writes beyond fail with EFBIG, as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
    q = await QppValidatorQueue.open("v", sys.argv[1])
    refused = 0
    for i in range(2000):
        try:
            mid = await q.submit_sync(block(i), submitted_by="t")
        except LogFailed as exc:
            assert q.failed is None, exc  # a failed write is not fatal
            refused += 1
            if refused == 5:
                break
            continue
        print(mid, flush=True)
    assert refused == 5
    await q.close()

asyncio.run(main())
"""


async def test_when_the_zeros_cannot_be_written_frames_are_appended_and_kept(
    tmp_path: Path,
) -> None:
    """The zeros ahead fail first (the file may not grow 1 MiB), then the frames are
    appended without them until they fail too; every acknowledged one is kept."""
    done = run_python("-c", _CAPPED_WRITER, str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    acked = [int(line) for line in done.stdout.split()]
    assert len(acked) > 100
    size, end, _ = _tail(tmp_path / "v.wal")
    assert size == end <= 200_000
    q = await QppValidatorQueue.open("v", tmp_path)
    assert sorted(i.message_id for i in q._state.ready_items()) == acked
    await q.close()


# -- the rule, on bytes ----------------------------------------------------------------
records = st.lists(st.integers(1, 10**6).map(consume_record), min_size=1, max_size=4)


def _log(frames: list[list[bytes]]) -> tuple[bytes, int]:
    data = file_header() + b"".join(encode_frame(f) for f in frames)
    return data, len(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(records, max_size=5),
    torn=records,
    ahead=st.integers(0, 3000),
    sectors=st.lists(st.booleans(), max_size=16),
)
def test_a_frame_cut_anywhere_in_zeros_written_ahead_is_torn_or_nothing(
    frames: list[list[bytes]], torn: list[bytes], ahead: int, sectors: list[bool]
) -> None:
    """A crash while the next frame overwrote the zeros: any subset of its 64-byte pieces
    reached the disk. Everything before it is kept; nothing after it can look valid."""
    data, end = _log(frames)
    frame = encode_frame(torn)
    region = bytearray(len(frame) + ahead)
    for i, kept in enumerate(sectors):
        piece = frame[i * 64 : (i + 1) * 64]
        if kept and piece:
            region[i * 64 : i * 64 + len(piece)] = piece
    result = scan(data + bytes(region))
    assert not result.corrupt
    if bytes(region[: len(frame)]) == frame:  # every piece made it: a whole frame
        assert result.clean
        assert result.valid_end == end + len(frame)
        assert result.records[-len(torn) :] == [orjson.loads(r) for r in torn]
        assert result.preallocated == ahead
        return
    assert result.valid_end == end
    assert result.record_count == sum(len(f) for f in frames)
    if any(region):
        assert result.torn_tail
        assert result.preallocated == 0
    else:  # no piece made it: nothing was written, and nothing was acknowledged
        assert result.clean
        assert result.preallocated == len(region)


def test_zeros_then_a_valid_frame_are_still_corruption() -> None:
    data, end = _log([[consume_record(1)]])
    damaged = data + bytes(4096) + encode_frame([consume_record(2)])
    result = scan(damaged)
    assert result.corrupt
    assert result.bad_offset == end
    assert result.preallocated == 0


def test_an_empty_log_with_zeros_ahead_is_clean() -> None:
    data, end = _log([])
    assert end == FILE_HEADER_SIZE
    result = scan(data + bytes(1 << 20))
    assert result.clean
    assert result.preallocated == 1 << 20
    assert result.records == []
