"""Log recovery on real files: torn tail, mid-log corruption (refuse / salvage), leftovers."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
from pathlib import Path

import pytest

from sidecar import LogCorrupt, QppValidatorQueue
from sidecar.cli import SUBCOMMANDS
from sidecar.wal import (
    FILE_HEADER_SIZE,
    TEMP_SUFFIX,
    WriteAheadLog,
    consume_record,
    decode_frame_at,
    encode_frame,
    file_header,
    scan,
)
from tests.core.helpers import block


async def _log_with(tmp_path: Path, n: int) -> str:
    q = await QppValidatorQueue.open("v", tmp_path)
    for i in range(n):
        await q.submit_sync(block(i), submitted_by="t")
    await q.close()
    return str(tmp_path / "v.wal")


def _frame_offsets(data: bytes) -> list[int]:

    offsets, off = [], FILE_HEADER_SIZE
    while off < len(data):
        offsets.append(off)
        found = decode_frame_at(data, off)
        assert found is not None
        off = found[0]
    return offsets


async def test_torn_tail_is_cut_with_a_warning_and_earlier_records_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = await _log_with(tmp_path, 5)
    good = os.path.getsize(path)
    frame = encode_frame([consume_record(1)])
    with open(path, "ab") as f:
        f.write(frame[: len(frame) - 3])  # an unfinished write
    with caplog.at_level(logging.WARNING, logger="sidecar.wal"):
        q = await QppValidatorQueue.open("v", tmp_path)
    assert "torn tail" in caplog.text
    assert q.depth()["total"] == 5  # the torn consume never happened
    assert q.recovery is not None
    assert q.recovery.torn_bytes == len(frame) - 3
    await q.close()
    data = Path(path).read_bytes()
    assert scan(data).clean
    assert len(data) > good


async def test_a_zero_filled_tail_is_space_written_ahead_cut_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = await _log_with(tmp_path, 3)
    good = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    with caplog.at_level(logging.WARNING, logger="sidecar.wal"):
        q = await QppValidatorQueue.open("v", tmp_path)
    assert "torn" not in caplog.text
    assert q.recovery is not None
    assert q.recovery.torn_bytes == 0
    assert q.depth()["total"] == 3
    await q.close()
    data = Path(path).read_bytes()
    assert scan(data).clean
    assert scan(data).preallocated == 0
    assert len(data) > good  # the reservation written at open, nothing of the zeros


async def test_mid_log_corruption_refuses_to_open_and_changes_nothing(tmp_path: Path) -> None:
    path = await _log_with(tmp_path, 6)
    data = bytearray(Path(path).read_bytes())
    second = _frame_offsets(bytes(data))[2]
    data[second + 20] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(LogCorrupt) as info:
        await QppValidatorQueue.open("v", tmp_path)
    assert info.value.offset == second
    assert str(second) in info.value.message
    assert "salvage" in info.value.message
    assert Path(path).read_bytes() == bytes(data)
    assert not [p for p in os.listdir(tmp_path) if ".corrupt-" in p]


async def test_salvage_keeps_every_valid_record_and_sets_the_bad_file_aside(tmp_path: Path) -> None:
    path = await _log_with(tmp_path, 6)
    data = bytearray(Path(path).read_bytes())
    offsets = _frame_offsets(bytes(data))
    damaged = offsets[3]  # the frame holding message id 3 (frame 0 is the reservation)
    data[damaged + 20] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    q = await QppValidatorQueue.open("v", tmp_path, salvage=True)
    ids = sorted(i.message_id for i in q._state.ready_items())
    assert ids == [1, 2, 4, 5, 6]  # everything but the damaged frame
    aside = [p for p in os.listdir(tmp_path) if ".corrupt-" in p]
    assert len(aside) == 1
    assert (tmp_path / aside[0]).read_bytes() == bytes(data)
    new = await q.submit_sync(block(99), submitted_by="t")
    assert new > 6
    await q.close()
    assert scan(Path(path).read_bytes()).clean


async def test_leftover_compaction_temp_file_is_removed(tmp_path: Path) -> None:
    path = await _log_with(tmp_path, 2)
    Path(path + TEMP_SUFFIX).write_bytes(file_header() + b"half a compaction")
    q = await QppValidatorQueue.open("v", tmp_path)
    assert q.depth()["total"] == 2
    assert not os.path.exists(path + TEMP_SUFFIX)
    await q.close()


async def test_not_a_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v.wal").write_bytes(b"hello, this is not a log at all")
    with pytest.raises(LogCorrupt, match="bad magic"):
        await QppValidatorQueue.open("v", tmp_path)


def test_append_is_rolled_back_when_reopened_log_is_reused(tmp_path: Path) -> None:
    wal, rec = WriteAheadLog.open(str(tmp_path / "x.wal"))
    assert rec.created
    wal.append_and_sync(encode_frame([consume_record(7)]))
    wal.close()
    wal2, rec2 = WriteAheadLog.open(str(tmp_path / "x.wal"))
    assert rec2.records == 1
    assert rec2.replayed is not None
    assert rec2.replayed.consumes == 1
    wal2.close()


async def test_the_corruption_refusal_names_only_commands_that_exist(tmp_path: Path) -> None:
    path = await _log_with(tmp_path, 6)
    data = bytearray(Path(path).read_bytes())
    data[_frame_offsets(bytes(data))[2] + 20] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(LogCorrupt) as info:
        await QppValidatorQueue.open("v", tmp_path)
    # the core says what salvage does; each command-line tool adds its own command
    # (tests/core/test_wal_cli.py, the daemon's start error)
    assert "salvage keeps every valid record" in info.value.message
    named = re.findall(r"\b(serve|wal \w+)((?: --[a-z-]+)+)", info.value.message)
    for command, flags in named:
        assert set(flags.split()) <= _options(command), (command, flags)


def _options(command: str) -> set[str]:
    """Every option the ``qssh-sidecar`` subcommand ``command`` accepts."""
    name, *rest = command.split()
    parser = argparse.ArgumentParser()
    importlib.import_module(SUBCOMMANDS[name][0]).configure(parser)
    if rest:  # a nested subcommand such as ``wal compact``
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[rest[0]]
    return set(parser._option_string_actions)
