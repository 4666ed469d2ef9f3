"""`submit_once` over the real queue: one copy per (principal, dedup_id) in the window,
through crashes, graceful restarts and compaction; the window and the count limit."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from sidecar import DedupLimits, LogFailed, QppValidatorQueue, QueueFull, QueueLimits, Submitted
from sidecar.wal import SUBMIT, WriteAheadLog, record_to_dict, scan
from tests.core.helpers import ManualClock, block, gossip, tx
from tests.core.simfs import SimDisk


def _crash_image(disk: SimDisk) -> SimDisk:
    return SimDisk({p: bytes(i.durable) for p, i in disk.names.items()})


async def _ids(q: QppValidatorQueue) -> list[int]:
    out = []
    while (h := await q.pop()) is not None:
        out.append(h.consume().message_id)
    return out


async def test_a_second_submit_with_the_same_dedup_id_stores_nothing(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        first = await q.submit_once(block(1), submitted_by="alice", dedup_id="b-1")
        again = await q.submit_once(block(1), submitted_by="alice", dedup_id="b-1")
        assert first == Submitted(first.message_id, False)
        assert again == Submitted(first.message_id, True)
        assert q.depth()["total"] == 1


async def test_the_key_is_per_principal(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        a = await q.submit_once(block(1), submitted_by="alice", dedup_id="same")
        b = await q.submit_once(block(1), submitted_by="bob", dedup_id="same")
        assert not a.duplicate
        assert not b.duplicate
        assert a.message_id != b.message_id


async def test_a_sync_key_survives_a_crash_right_after_its_fsync() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    first = await q.submit_once(tx(1), submitted_by="alice", dedup_id="t-1")
    # power cut: the reply may never have reached the client, which retries
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk))
    again = await q2.submit_once(tx(1), submitted_by="alice", dedup_id="t-1")
    assert again == Submitted(first.message_id, True)
    assert await _ids(q2) == [first.message_id]
    await q2.close()


async def test_an_async_key_is_lost_with_its_message_on_a_crash() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    await q.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="async")
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk))
    retry = await q2.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="async")
    assert not retry.duplicate  # the message was lost too, so storing it again is right
    await q2.close()


async def test_a_graceful_close_keeps_async_keys_held_and_consumed(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    held = await q.submit_once(gossip(1), submitted_by="a", dedup_id="held", mode="async")
    gone = await q.submit_once(gossip(2), submitted_by="a", dedup_id="gone", mode="async")
    popped = await q.pop()
    assert popped is not None
    assert popped.consume().message_id == held.message_id
    await q.close()
    async with await QppValidatorQueue.open("v", tmp_path) as q2:
        assert (await q2.submit_once(gossip(1), submitted_by="a", dedup_id="held")).duplicate
        again = await q2.submit_once(gossip(2), submitted_by="a", dedup_id="gone")
        assert again == Submitted(gone.message_id, True)
        assert await _ids(q2) == [gone.message_id]


async def test_keys_survive_compaction_after_their_messages_are_consumed(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        first = await q.submit_once(block(1), submitted_by="a", dedup_id="k")
        assert await _ids(q) == [first.message_id]
        await q.compact_wal()
    _wal, rec = WriteAheadLog.open(str(tmp_path / "v.wal"))
    _wal.close()
    assert rec.replayed is not None
    assert rec.replayed.dedup == {
        ("a", "k"): (first.message_id, pytest.approx(rec.replayed.dedup[("a", "k")][1]))
    }
    async with await QppValidatorQueue.open("v", tmp_path) as q2:
        assert (await q2.submit_once(block(1), submitted_by="a", dedup_id="k")).duplicate
        assert q2.depth()["total"] == 0


async def test_an_expired_key_is_a_new_submit(tmp_path: Path) -> None:
    limits = DedupLimits(window=0.2)
    wall = ManualClock()
    async with await QppValidatorQueue.open("v", tmp_path, dedup=limits, wall_clock=wall) as q:
        first = await q.submit_once(block(1), submitted_by="a", dedup_id="k")
        wall.advance(0.3)
        later = await q.submit_once(block(1), submitted_by="a", dedup_id="k")
        assert not later.duplicate
        assert later.message_id > first.message_id
        await q.compact_wal()
    # a restart with the window over drops the key from the log as well
    async with await QppValidatorQueue.open("v", tmp_path, dedup=limits, wall_clock=wall) as q2:
        wall.advance(0.3)
        assert not (await q2.submit_once(block(1), submitted_by="a", dedup_id="k")).duplicate


async def test_a_new_key_at_the_count_limit_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    limits = DedupLimits(max_entries=2)
    async with await QppValidatorQueue.open("v", tmp_path, dedup=limits) as q:
        await q.submit_once(block(1), submitted_by="a", dedup_id="1")
        await q.submit_once(block(2), submitted_by="a", dedup_id="2")
        with pytest.raises(QueueFull, match="dedup index holds 2"):
            await q.submit_once(block(3), submitted_by="a", dedup_id="3")
        assert (await q.submit_once(block(2), submitted_by="a", dedup_id="2")).duplicate
        await q.submit(block(4), submitted_by="a")  # without a dedup_id nothing changes
        assert q.depth()["total"] == 3
    # the limit holds after a restart too: the keys came back from the log
    async with await QppValidatorQueue.open("v", tmp_path, dedup=limits) as q2:
        with pytest.raises(QueueFull):
            await q2.submit_once(block(3), submitted_by="a", dedup_id="3")


async def test_concurrent_submits_with_one_key_store_one_copy(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        results = await asyncio.gather(
            *(q.submit_once(tx(1), submitted_by="a", dedup_id="k") for _ in range(5))
        )
        assert len({r.message_id for r in results}) == 1
        assert sorted(r.duplicate for r in results) == [False, True, True, True, True]
        assert q.depth()["total"] == 1


async def test_a_failed_submit_frees_its_key(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, limits=QueueLimits(max_messages=1)) as q:
        await q.submit(block(1), submitted_by="a")
        with pytest.raises(QueueFull, match="queue holds 1 messages"):
            await q.submit_once(block(2), submitted_by="a", dedup_id="k")
        assert await _ids(q) != []
        assert not (await q.submit_once(block(2), submitted_by="a", dedup_id="k")).duplicate


async def test_the_log_holds_the_key_in_the_submit_record(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        await q.submit_once(block(1), submitted_by="a", dedup_id="k")
    records = scan((tmp_path / "v.wal").read_bytes()).records
    (submit,) = [r for r in records if r[0] == SUBMIT]
    assert record_to_dict(submit)["dedup"] == ["a", "k"]


async def test_a_sync_retry_of_an_async_key_is_answered_once_its_message_is_logged() -> None:
    """The first submit was async (memory only); a sync retry with the same key is
    answered as a duplicate only once that message is in the log, as sync promises:
    after a power cut the message and its key are both there."""
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    first = await q.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="async")
    again = await q.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="sync")
    assert again == Submitted(first.message_id, True)
    once_more = await q.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="sync")
    assert once_more == again  # durable now: nothing more to write
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk))
    retry = await q2.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="async")
    assert retry == Submitted(first.message_id, True)
    assert await _ids(q2) == [first.message_id]
    await q2.close()
    # the original queue, closed gracefully, does not write that message a second time
    await q.close()
    q3 = await QppValidatorQueue.open("v", "/d", layer=disk)
    assert await _ids(q3) == [first.message_id]
    await q3.close()


async def test_a_sync_retry_after_the_async_message_was_consumed_logs_its_key() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    first = await q.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="async")
    assert await _ids(q) == [first.message_id]
    again = await q.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="sync")
    assert again == Submitted(first.message_id, True)
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk))
    retry = await q2.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="sync")
    assert retry == Submitted(first.message_id, True)  # delivered once, never again
    assert await _ids(q2) == []
    await q2.close()


async def test_a_message_popped_while_its_sync_retry_is_written_stays_consumed() -> None:
    """The pop's consume record is queued after the retry's submit record, so the log
    says submitted, then consumed: the message never comes back."""
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    first = await q.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="async")
    retry = asyncio.create_task(
        q.submit_once(gossip(1), submitted_by="alice", dedup_id="g-1", mode="sync")
    )
    await asyncio.sleep(0)  # the retry's record is queued, not yet written
    popped = await q.pop()
    assert popped is not None
    assert popped.consume().message_id == first.message_id
    assert (await retry) == Submitted(first.message_id, True)
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk))
    assert await _ids(q2) == []
    await q2.close()
    await q.close()
    q3 = await QppValidatorQueue.open("v", "/d", layer=disk)
    assert await _ids(q3) == []
    await q3.close()


class _HeldDisk(SimDisk):
    blocking = True  # written from the committer's worker thread: a batch can be held


async def test_a_sync_retry_behind_another_whose_write_fails_writes_the_message_itself() -> None:
    """Two sync retries of an async key: the first one's write fails (a full disk); the
    second is answered only once the message is in the log, so a crash keeps it."""
    disk = _HeldDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk, inline_lone_sync=False)
    first = await q.submit_once(gossip(1), submitted_by="t", dedup_id="k", mode="async")
    entered, go = threading.Event(), threading.Event()
    calls: list[int] = []

    def fault(data: bytes) -> int | None:
        calls.append(len(data))
        if len(calls) == 1:  # the first retry's batch: held, then a short write
            entered.set()
            go.wait(10)
            return len(data) // 2
        return None

    disk.fail_write = fault
    a = asyncio.create_task(q.submit_once(gossip(1), submitted_by="t", dedup_id="k", mode="sync"))
    for _ in range(200):
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    assert entered.is_set()
    b = asyncio.create_task(q.submit_once(gossip(1), submitted_by="t", dedup_id="k", mode="sync"))
    await asyncio.sleep(0.05)  # b waits behind the batch in flight
    go.set()
    ra, rb = await asyncio.gather(a, b, return_exceptions=True)
    assert isinstance(ra, LogFailed), ra
    assert rb == Submitted(first.message_id, True), rb
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk))
    try:
        assert await _ids(q2) == [first.message_id]
    finally:
        await q2.close()
        await q.close()
