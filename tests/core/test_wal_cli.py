"""`qssh-sidecar wal verify|dump|compact` run as a real subprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from sidecar import QppValidatorQueue
from sidecar.errors import Unavailable
from sidecar.wal import FILE_HEADER_SIZE, consume_record, encode_frame
from tests.core.helpers import block, gossip
from tests.subprocesses import run_python


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "sidecar.cli", "wal", *args)


async def _make_log(tmp_path: Path) -> Path:
    q = await QppValidatorQueue.open("v", tmp_path)
    for i in range(10):
        await q.submit_sync(block(i), submitted_by="t")
    for _ in range(6):
        (await q.pop()).consume()  # type: ignore[union-attr]
    await q.submit_async(gossip(1), submitted_by="t")
    await q.close()
    return tmp_path / "v.wal"


async def test_verify_clean_log_exits_zero(tmp_path: Path) -> None:
    path = await _make_log(tmp_path)
    res = _cli("verify", str(path))
    assert res.returncode == 0, res.stderr
    assert "clean" in res.stdout
    assert "5 live messages" in res.stdout
    report = orjson.loads(_cli("verify", "--json", str(path)).stdout.splitlines()[0])
    assert report["status"] == "clean"
    assert report["live_messages"] == 5


async def test_verify_reports_a_torn_tail(tmp_path: Path) -> None:
    path = await _make_log(tmp_path)
    with open(path, "ab") as f:
        f.write(encode_frame([consume_record(1)])[:-5])
    res = _cli("verify", str(path))
    assert res.returncode == 1
    assert "torn tail" in res.stderr


async def test_verify_reports_corruption_with_offset(tmp_path: Path) -> None:
    path = await _make_log(tmp_path)
    data = bytearray(path.read_bytes())
    data[FILE_HEADER_SIZE + 60] ^= 0x55  # inside an early frame; later frames are fine
    path.write_bytes(bytes(data))
    res = _cli("verify", str(path))
    assert res.returncode == 2
    assert "CORRUPT" in res.stderr
    assert "offset" in res.stderr
    assert "salvage" in res.stderr


def test_verify_refuses_a_file_that_is_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "x.wal"
    path.write_bytes(b"just some text, not a write-ahead log\n")
    res = _cli("verify", str(path))
    assert res.returncode == 2
    assert "bad magic" in res.stderr


async def test_dump_prints_every_record_as_ndjson(tmp_path: Path) -> None:
    path = await _make_log(tmp_path)
    res = _cli("dump", str(path))
    assert res.returncode == 0, res.stderr
    records = [orjson.loads(line) for line in res.stdout.splitlines()]
    types = [r["type"] for r in records]
    assert types.count("submit") == 11
    assert types.count("consume") == 6
    assert all(r["persisted"] for r in records if r["type"] == "submit")


async def test_compact_keeps_live_messages_and_ids(tmp_path: Path) -> None:
    path = await _make_log(tmp_path)
    before = path.stat().st_size
    res = _cli("compact", str(path))
    assert res.returncode == 0, res.stderr
    assert path.stat().st_size < before
    assert _cli("verify", str(path)).returncode == 0
    q = await QppValidatorQueue.open("v", tmp_path)
    assert q.depth()["total"] == 5
    new = await q.submit_sync(block(99), submitted_by="t")
    assert new > 11
    await q.close()


async def test_compact_keeps_a_live_message_with_its_provenance_and_dedup_key(
    tmp_path: Path,
) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    await q.submit_sync(block(0), submitted_by="c")  # id 1, popped below
    first = await q.submit_once(block(1), submitted_by="a", dedup_id="k", mode="sync")
    await q.submit_sync(gossip(2), submitted_by="b", broadcast=True)
    (await q.pop()).consume()  # type: ignore[union-attr]
    await q.close()
    res = _cli("compact", str(tmp_path / "v.wal"))
    assert res.returncode == 0, res.stderr
    records = [orjson.loads(line) for line in _cli("dump", str(tmp_path / "v.wal")).stdout.split()]
    kept = {r["message_id"]: r for r in records if r["type"] == "submit"}
    assert set(kept) == {2, 3}
    assert kept[2]["dedup"] == ["a", "k"]
    assert kept[3]["submitted_by"] == "b"
    assert kept[3]["broadcast"] is True
    assert kept[3]["message"] == gossip(2).to_json()
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        again = await q.submit_once(block(1), submitted_by="a", dedup_id="k", mode="sync")
        assert again.duplicate
        assert again.message_id == first.message_id


async def test_compact_keeps_dedup_keys_and_broadcasts_of_consumed_messages(
    tmp_path: Path,
) -> None:
    # as online compaction does: a consumed message's dedup key still answers, and a
    # consumed broadcast message the peer lacks is still relayed to it
    q = await QppValidatorQueue.open("v", tmp_path, peers=("p",))
    once = await q.submit_once(block(1), submitted_by="a", dedup_id="k", mode="sync")
    sent = await q.submit_sync(gossip(2), submitted_by="b", broadcast=True)
    while (handle := await q.pop()) is not None:
        handle.consume()
    await q.close()
    res = _cli("compact", str(tmp_path / "v.wal"))
    assert res.returncode == 0, res.stderr
    async with await QppValidatorQueue.open("v", tmp_path, peers=("p",)) as q:
        assert q.depth()["total"] == 0
        assert [item.message_id for item in q.relay_take("p", 10)] == [sent]
        again = await q.submit_once(block(1), submitted_by="a", dedup_id="k", mode="sync")
        assert again.duplicate
        assert again.message_id == once.message_id


async def test_compact_refuses_a_log_in_use(tmp_path: Path) -> None:
    path = await _make_log(tmp_path)
    q = await QppValidatorQueue.open("v", tmp_path)
    try:
        res = _cli("compact", str(path))
        assert res.returncode == 3
        assert "in use" in res.stderr
    finally:
        await q.close()


async def test_verify_of_a_log_in_use_exits_3_and_leaves_no_lock_file_when_idle(
    tmp_path: Path,
) -> None:
    path = await _make_log(tmp_path)
    q = await QppValidatorQueue.open("v", tmp_path)
    try:
        res = _cli("verify", str(path))
        assert res.returncode == 3, res.stdout
        assert "in use by pid" in res.stderr
    finally:
        await q.close()
    assert _cli("verify", str(path)).returncode == 0


async def test_compact_salvage_sets_a_corrupt_log_aside(tmp_path: Path) -> None:
    path = await _make_log(tmp_path)
    data = bytearray(path.read_bytes())
    data[FILE_HEADER_SIZE + 60] ^= 0x55
    path.write_bytes(bytes(data))
    refused = _cli("compact", str(path))
    assert refused.returncode == 2
    hint = f"sets the damaged file aside: `qssh-sidecar wal compact --salvage {path}`"
    assert hint in refused.stderr
    assert "serve --salvage" not in refused.stderr
    res = _cli("compact", "--salvage", str(path))
    assert res.returncode == 0, res.stderr
    assert "kept as" in res.stdout
    assert _cli("verify", str(path)).returncode == 0
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert aside[0].read_bytes() == bytes(data)


async def test_compact_through_a_symlink_to_a_live_log_is_refused(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path / "data")
    try:
        for i in range(5):
            await q.submit_sync(block(i), submitted_by="t")
        real = tmp_path / "data" / "v.wal"
        link = tmp_path / "alice.wal"
        link.symlink_to(real)
        before = real.read_bytes()
        res = _cli("compact", str(link))
        assert res.returncode == 3, (res.stdout, res.stderr)
        assert "in use" in res.stderr
        assert link.is_symlink()
        assert real.read_bytes() == before
        res = _cli("verify", str(link))
        assert res.returncode == 3, (res.stdout, res.stderr)
        assert "in use by pid" in res.stderr
    finally:
        await q.close()


async def test_compact_through_a_symlink_rewrites_the_file_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    real = await _make_log(tmp_path / "data")
    link = tmp_path / "alice.wal"
    link.symlink_to(real)
    res = _cli("compact", str(link))
    assert res.returncode == 0, res.stderr
    assert link.is_symlink()
    assert link.resolve() == real
    assert _cli("verify", str(real)).returncode == 0
    q = await QppValidatorQueue.open("v", tmp_path / "data")
    try:
        assert q.depth()["total"] == 5
    finally:
        await q.close()


async def test_compact_refuses_a_log_with_another_hard_link(tmp_path: Path) -> None:
    real = await _make_log(tmp_path / "data")
    other = tmp_path / "alice.wal"
    other.hardlink_to(real)
    before = real.read_bytes()
    res = _cli("compact", str(other))
    assert res.returncode == 2
    assert "2 hard links" in res.stderr
    assert real.read_bytes() == before


def test_compact_and_verify_of_a_directory_exit_2_and_change_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "adir"
    folder.mkdir()
    for action in ("compact", "verify", "dump"):
        res = _cli(action, str(folder))
        assert res.returncode == 2, (action, res.stderr)
        assert "Traceback" not in res.stderr
        assert f"{folder}: a directory" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]  # no adir.lock


def test_compact_salvage_refuses_a_file_that_is_not_a_log(tmp_path: Path) -> None:
    wrong = tmp_path / "host_key"  # the operator typed the wrong file
    content = b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + b"A" * 400 + b"\n"
    wrong.write_bytes(content)
    res = _cli("compact", "--salvage", str(wrong))
    assert res.returncode == 2, res.stdout
    assert "not a log; nothing salvaged" in res.stderr
    assert "compacted" not in res.stdout
    assert wrong.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host_key"]


async def test_compact_leaves_no_lock_file(tmp_path: Path) -> None:
    path = await _make_log(tmp_path)
    assert (tmp_path / "v.wal.lock").exists()  # the queue's, left by its close
    (tmp_path / "v.wal.lock").unlink()
    assert _cli("compact", str(path)).returncode == 0
    assert not (tmp_path / "v.wal.lock").exists()
    assert _cli("verify", str(path)).returncode == 0


async def test_a_symlinked_log_keeps_its_link_and_its_lock_through_compaction(
    tmp_path: Path,
) -> None:
    """The queue opens the file the link names: its compaction replaces that file and
    keeps the link, so a second open of the same data dir is still refused."""
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    store.mkdir()
    await (await QppValidatorQueue.open("v", store)).close()
    (data / "v.wal").symlink_to(store / "v.wal")
    q = await QppValidatorQueue.open("v", data)
    try:
        for i in range(5):
            await q.submit_sync(block(i), submitted_by="t")
        await q.compact_wal()
        assert (data / "v.wal").is_symlink()
        with pytest.raises(Unavailable):
            await QppValidatorQueue.open("v", data)
        assert _cli("compact", str(data / "v.wal")).returncode == 3  # in use
    finally:
        await q.close()
