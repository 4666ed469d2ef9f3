"""The queue's relay backlog: what each peer lacks, durably, through crashes,
restarts, local consumption and compaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar import QppValidatorQueue, QueueFull, QueueLimits, SidecarError
from sidecar.messages import QueueMessageWithProvenance
from sidecar.relay_backlog import wire_size
from sidecar.wal import FILE_HEADER_SIZE, decode_frame_at
from tests.core.helpers import block, gossip, tx
from tests.core.simfs import SimDisk

PEERS = ("bob", "charlie")


def _ids(items: list[QueueMessageWithProvenance]) -> list[int]:
    return [i.message_id for i in items]


def _crash_image(disk: SimDisk) -> SimDisk:
    return SimDisk({p: bytes(i.durable) for p, i in disk.names.items()})


async def test_a_broadcast_message_waits_for_each_peer_and_nothing_else_does(
    tmp_path: Path,
) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        plain = await q.submit(block(1), submitted_by="t")
        wide = await q.submit(block(2), submitted_by="t", broadcast=True)
        relayed_in = await q.submit_sync(block(3), submitted_by="peer:x")  # broadcast=False
        assert {plain, relayed_in}.isdisjoint(_ids(q.relay_take("bob", 10)))
        assert _ids(q.relay_take("charlie", 10)) == [wide]


async def test_local_consumption_and_relay_are_independent(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        mid = await q.submit(block(1), submitted_by="t", broadcast=True)
        popped = await q.pop()
        assert popped is not None
        assert popped.consume().message_id == mid
        (item,) = q.relay_take("bob", 10)
        await q.relay_done("bob", [item])
        assert q.relay_backlog("bob").count == 0
        assert q.relay_backlog("charlie").count == 1
        assert q.relayed == {"bob": 1, "charlie": 0}


async def test_relay_marks_are_durable_and_unmarked_messages_come_back_after_a_crash() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk, peers=PEERS)
    first = await q.submit(block(1), submitted_by="t", broadcast=True)
    second = await q.submit(block(2), submitted_by="t", broadcast=True)
    taken = q.relay_take("bob", 10)
    await q.relay_done("bob", taken[:1])  # the link died before the second ack
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk), peers=PEERS)
    assert _ids(q2.relay_take("bob", 10)) == [second]
    assert _ids(q2.relay_take("charlie", 10)) == [first, second]
    await q2.close()


async def test_compaction_keeps_what_some_peer_still_lacks(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        mids = [await q.submit(block(n), submitted_by="t", broadcast=True) for n in range(3)]
        await q.submit(gossip(9), submitted_by="t", mode="sync")
        await q.relay_done("bob", q.relay_take("bob", 10))
        await q.relay_done("charlie", q.relay_take("charlie", 1))
        while (h := await q.pop()) is not None:
            h.consume()
        await q.compact_wal()
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q2:
        assert q2.depth()["total"] == 0  # consumed here stays consumed
        assert q2.relay_take("bob", 10) == []
        assert _ids(q2.relay_take("charlie", 10)) == mids[1:]
        await q2.compact_wal()  # a second compaction keeps the same
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q3:
        taken = q3.relay_take("charlie", 10)
        assert _ids(taken) == mids[1:]
        await q3.relay_done("charlie", taken)
        await q3.compact_wal()
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q4:
        assert q4.relay_backlog("charlie").count == 0
        assert q4.relay_backlog("bob").count == 0


async def test_a_live_message_every_peer_has_is_not_relayed_again_after_compaction(
    tmp_path: Path,
) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        await q.submit(block(1), submitted_by="t", broadcast=True)
        for peer in PEERS:
            await q.relay_done(peer, q.relay_take(peer, 10))
        await q.compact_wal()
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q2:
        assert q2.depth()["total"] == 1
        assert all(q2.relay_take(peer, 10) == [] for peer in PEERS)


async def test_id_order_and_a_broken_link_gives_its_messages_back_in_front(
    tmp_path: Path,
) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        mids = [await q.submit(tx(n), submitted_by="t", broadcast=True) for n in range(5)]
        first = q.relay_take("bob", 2)
        assert _ids(first) == mids[:2]
        assert _ids(q.relay_take("bob", 1)) == mids[2:3]
        q.relay_give_back("bob", first)
        assert _ids(q.relay_take("bob", 10)) == [*mids[:2], *mids[3:]]


async def test_a_held_message_stays_in_the_backlog_with_its_reason(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        big = await q.submit(tx(1), submitted_by="t", broadcast=True)
        small = await q.submit(tx(2), submitted_by="t", broadcast=True)

        def too_valuable(item: QueueMessageWithProvenance) -> str | None:
            return "needs tier 4, the session gives 3" if item.message_id == big else None

        assert _ids(q.relay_take("bob", 10, too_valuable)) == [small]
        backlog = q.relay_backlog("bob")
        assert backlog.count == 2
        assert backlog.held == {big: "needs tier 4, the session gives 3"}
        q.relay_unhold("bob")
        assert _ids(q.relay_take("bob", 10)) == [big]


async def test_async_broadcast_is_relayed_from_memory_and_lost_with_a_crash() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk, peers=PEERS)
    mid = await q.submit(gossip(1), submitted_by="t", mode="async", broadcast=True)
    assert _ids(q.relay_take("bob", 10)) == [mid]
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk), peers=PEERS)
    assert q2.relay_take("charlie", 10) == []
    await q2.close()


async def test_an_async_broadcast_consumed_here_is_written_by_a_graceful_close(
    tmp_path: Path,
) -> None:
    # consumed locally while charlie lacks it: the close writes it (submit + consume)
    # with bob's mark, so after the restart charlie gets it, bob not again, and it is
    # not delivered here again
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        mid = await q.submit(block(1), submitted_by="t", mode="async", broadcast=True)
        await q.relay_done("bob", q.relay_take("bob", 10))
        h = await q.pop()
        assert h is not None
        assert h.consume().message_id == mid
        assert q.relay_backlog("charlie").count == 1
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q2:
        assert q2.depth()["total"] == 0
        assert q2.relay_backlog("bob").count == 0
        assert _ids(q2.relay_take("charlie", 10)) == [mid]


async def test_async_close_records_of_one_message_share_a_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one record per frame if a group could be split: the consume must not be torn off
    monkeypatch.setattr("sidecar.queue._CLOSE_FRAME_BYTES", 1)
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        mids = [
            await q.submit(block(n), submitted_by="t", mode="async", broadcast=True)
            for n in range(3)
        ]
        while (h := await q.pop()) is not None:
            h.consume()
    data = (tmp_path / "v.wal").read_bytes()
    offset, frames = FILE_HEADER_SIZE, []
    while (frame := decode_frame_at(data, offset)) is not None:
        offset, records = frame
        frames.append(records)
    assert offset == len(data)
    for mid in mids:  # its submit, consume and bob's and charlie's (none) marks together
        (frame,) = [f for f in frames if f[0][:2] == ["S", mid]]
        assert [r[0] for r in frame] == ["S", "C"]
        assert frame[1] == ["C", mid]
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q2:
        assert _ids(q2.relay_take("bob", 10)) == mids


async def test_marks_of_async_broadcasts_survive_compaction_and_a_graceful_close(
    tmp_path: Path,
) -> None:
    # compaction keeps no marks of an unlogged message: the close writes them with it
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        first = await q.submit(block(1), submitted_by="t", mode="async", broadcast=True)
        second = await q.submit(block(2), submitted_by="t", mode="async", broadcast=True)
        await q.relay_done("bob", q.relay_take("bob", 10))
        taken = q.relay_take("charlie", 10)  # charlie acknowledges the second only
        q.relay_give_back("charlie", taken[:1])
        await q.relay_done("charlie", taken[1:])  # every peer has it: no longer retained
        assert q.relay_low_watermark("bob") > second
        await q.compact_wal()
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q2:
        assert q2.depth()["total"] == 2
        assert q2.relay_backlog("bob").count == 0  # bob refuses ids below its watermark
        assert _ids(q2.relay_take("charlie", 10)) == [first]


async def test_an_async_broadcast_made_durable_by_a_sync_retry_keeps_its_marks() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk, peers=PEERS)
    sub = await q.submit_once(
        block(1), submitted_by="t", dedup_id="k", mode="async", broadcast=True
    )
    await q.relay_done("bob", q.relay_take("bob", 10))
    await q.compact_wal()
    again = await q.submit_once(block(1), submitted_by="t", dedup_id="k", mode="sync")
    assert again.duplicate  # answered once the message is logged
    q2 = await QppValidatorQueue.open("v", "/d", layer=_crash_image(disk), peers=PEERS)
    assert q2.depth()["total"] == 1
    assert q2.relay_backlog("bob").count == 0
    assert _ids(q2.relay_take("charlie", 10)) == [sub.message_id]
    await q2.close()


async def test_take_with_a_byte_budget_takes_what_fits_and_at_least_one(
    tmp_path: Path,
) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, peers=PEERS) as q:
        mids = [await q.submit(block(n), submitted_by="t", broadcast=True) for n in range(5)]
        size = wire_size(q.relay_take("charlie", 1)[0])  # the blocks are all this size
        assert _ids(q.relay_take("bob", 10, max_bytes=2 * size + 1)) == mids[:2]
        assert _ids(q.relay_take("bob", 10, max_bytes=1)) == mids[2:3]  # one anyway
        assert _ids(q.relay_take("bob", 10, max_bytes=10 * size)) == mids[3:]
        assert q.relay_low_watermark("bob") == mids[0]  # all in flight, none skipped


async def test_a_relay_mark_rolled_back_gives_the_batch_back() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk, peers=PEERS)
    mids = [await q.submit(block(n), submitted_by="t", broadcast=True) for n in range(3)]
    taken = q.relay_take("bob", 10)
    disk.fail_write = lambda data: 0  # ENOSPC: the batch is rolled back, not fatal
    with pytest.raises(SidecarError):
        await q.relay_done("bob", taken)
    disk.fail_write = None
    assert q.failed is None
    assert q.relay_backlog("bob").in_flight == 0
    again = q.relay_take("bob", 10)  # not in flight for the rest of the process
    assert _ids(again) == mids
    await q.relay_done("bob", again)
    assert q.relay_backlog("bob").count == 0
    await q.close()


async def test_relayed_in_provenance_survives_restart(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        await q.submit_once(
            block(1), submitted_by="peer:alice", dedup_id="alice/7", origin=("alice", 7)
        )
    async with await QppValidatorQueue.open("v", tmp_path) as q2:
        h = await q2.pop()
        assert h is not None
        item = h.consume()
        assert (item.submitted_by, item.origin, item.origin_id) == ("peer:alice", "alice", 7)
        assert item.to_json()["origin"] == "alice"


async def test_a_consumed_message_a_peer_lacks_counts_against_the_limits(
    tmp_path: Path,
) -> None:
    limits = QueueLimits(max_messages=2)
    async with await QppValidatorQueue.open("v", tmp_path, peers=("bob",), limits=limits) as q:
        first = await q.submit(block(1), submitted_by="t", broadcast=True)
        popped = await q.pop()
        assert popped is not None
        popped.consume()
        await q.submit(block(2), submitted_by="t")
        with pytest.raises(QueueFull):  # bob still lacks the first: it is held here
            await q.submit(block(3), submitted_by="t")
    async with await QppValidatorQueue.open("v", tmp_path, peers=("bob",), limits=limits) as q2:
        with pytest.raises(QueueFull):  # the same after a restart
            await q2.submit(block(3), submitted_by="t")
        (item,) = q2.relay_take("bob", 10)
        assert item.message_id == first
        await q2.relay_done("bob", [item])
        await q2.submit(block(3), submitted_by="t")  # bob has it: the room is back
