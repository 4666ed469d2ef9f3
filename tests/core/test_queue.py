"""The queue API over real files: order, modes, consumption, leases, limits, ids."""

from __future__ import annotations

import asyncio
import copy
import itertools
import pickle
from pathlib import Path

import pytest

from sidecar import (
    AlreadyConsumed,
    LogFailed,
    Mode,
    NotFound,
    QppAsyncSubmit,
    QppSyncSubmit,
    QppValidatorQueue,
    QueueFull,
    QueueLimits,
    Unavailable,
)
from sidecar.queue import FIRST_ID_BLOCK, ID_BLOCK, _next_block
from sidecar.state import message_cost
from tests.core.helpers import ManualClock, block, gossip, telemetry, tx
from tests.core.simfs import SimDisk


async def test_higher_priority_first_then_fifo_by_id(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        order = [telemetry(1), gossip(2), block(3), tx(4), block(5), gossip(6)]
        ids = [await q.submit(m, submitted_by="t") for m in order]
        popped = []
        while (h := await q.pop()) is not None:
            popped.append(h.consume().message_id)
        assert popped == [ids[2], ids[4], ids[3], ids[1], ids[5], ids[0]]


async def test_default_modes_and_provenance(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        await q.submit(block(1), submitted_by="alice-key")
        await q.submit(gossip(2), submitted_by="bob-key", mode="default")
        await q.submit(
            gossip(3), submitted_by="bob-key", mode=Mode.SYNC, upgraded=True, broadcast=True
        )
        items = [(await q.pop()).consume() for _ in range(3)]  # type: ignore[union-attr]
        b, g_async, g_sync = items[0], items[1], items[2]  # FIFO within normal priority
        assert (b.mode, b.persisted, b.submitted_by) == (Mode.SYNC, True, "alice-key")
        assert (g_sync.mode, g_sync.persisted, g_sync.upgraded, g_sync.broadcast) == (
            Mode.SYNC,
            True,
            True,
            True,
        )
        assert (g_async.mode, g_async.persisted) == (Mode.ASYNC, False)
        assert b.created_at > 0
        assert b.delivery_count == 0


async def test_sync_and_async_execute_forms(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        a = await QppSyncSubmit.execute(q, block(1), submitted_by="t")
        b = await QppAsyncSubmit.execute(q, gossip(1), submitted_by="t")
        assert b > a
        assert q.depth()["total"] == 2


async def test_popped_message_is_not_delivered_after_restart(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    for i in range(3):
        await q.submit_sync(block(i), submitted_by="t")
    first = (await q.pop()).consume()  # type: ignore[union-attr]
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    ids = [i.message_id for i in q._state.ready_items()]
    assert first.message_id not in ids
    assert len(ids) == 2
    await q.close()


async def test_async_messages_are_logged_on_close_and_restored(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    mid = await q.submit_async(gossip(1), submitted_by="t")
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    item = (await q.pop()).consume()  # type: ignore[union-attr]
    assert item.message_id == mid
    assert item.persisted
    assert item.mode is Mode.ASYNC
    await q.close()


async def test_async_messages_are_lost_on_crash_and_their_ids_never_reused() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    lost = [await q.submit_async(gossip(i), submitted_by="t") for i in range(5)]
    kept = await q.submit_sync(block(1), submitted_by="t")
    image = {p: bytes(i.durable) for p, i in disk.names.items()}  # power cut, no close
    q2 = await QppValidatorQueue.open("v", "/d", layer=SimDisk(image))
    assert [i.message_id for i in q2._state.ready_items()] == [kept]
    new = await q2.submit_async(gossip(9), submitted_by="t")
    assert new > max([*lost, kept])
    await q2.close()


async def test_ids_keep_increasing_across_restart_and_compaction(tmp_path: Path) -> None:
    seen: list[int] = []
    for _ in range(3):
        q = await QppValidatorQueue.open("v", tmp_path)
        seen.append(await q.submit_sync(block(1), submitted_by="t"))
        seen.append(await q.submit_async(gossip(1), submitted_by="t"))
        while (h := await q.pop()) is not None:
            h.consume()
        await q.compact_wal()
        seen.append(await q.submit_sync(block(2), submitted_by="t"))
        await q.close()
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


async def test_pop_returns_a_noclone_handle(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        await q.submit_sync(block(1), submitted_by="t")
        h = await q.pop()
        assert h is not None
        with pytest.raises(TypeError):
            copy.copy(h)
        with pytest.raises(TypeError):
            pickle.dumps(h)
        h.consume()
        with pytest.raises(AlreadyConsumed):
            h.consume()
        assert await q.pop() is None


async def test_lease_ack_release_and_expiry(tmp_path: Path) -> None:
    clock = ManualClock()
    async with await QppValidatorQueue.open("v", tmp_path, clock=clock) as q:
        a = await q.submit_sync(block(1), submitted_by="t")
        lease = await q.lease(timeout=30)
        assert lease is not None
        assert lease.message_id == a
        assert lease.item.delivery_count == 0
        assert await q.lease(timeout=30) is None  # leased messages are not handed out twice
        await q.release(lease)
        again = await q.lease(timeout=0.01)
        assert again is not None
        assert again.message_id == a
        assert again.item.delivery_count == 1
        clock.advance(0.03)
        third = await q.lease(timeout=30)
        assert third is not None
        assert third.item.delivery_count == 2
        with pytest.raises(AlreadyConsumed):
            await q.ack(again)  # stale handle: the lease expired
        await q.ack(third.lease_id)
        with pytest.raises(AlreadyConsumed):
            await q.ack(third)  # a message is acked at most once
        with pytest.raises(NotFound):
            await q.ack(10_000)
        assert q.depth()["total"] == 0
        assert q.redeliveries == 1
    q = await QppValidatorQueue.open("v", tmp_path)
    assert q.depth()["total"] == 0  # the ack was durable
    await q.close()


async def test_unacked_lease_comes_back_after_restart(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    mid = await q.submit_sync(block(1), submitted_by="t")
    assert await q.lease(timeout=30) is not None
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    lease = await q.lease(timeout=30)
    assert lease is not None
    assert lease.message_id == mid
    await q.close()


async def test_a_lease_id_from_before_a_restart_never_acks_a_later_lease(
    tmp_path: Path,
) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    await q.submit_sync(telemetry(1), submitted_by="t")
    old = await q.lease(timeout=30)
    assert old is not None
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    first = await q.submit_sync(block(2), submitted_by="t")
    new = await q.lease(timeout=30)
    assert new is not None
    assert new.message_id == first
    assert new.lease_id != old.lease_id
    with pytest.raises(AlreadyConsumed):
        await q.ack(old.lease_id)
    await q.ack(new)  # the stale ack took nothing from the live lease
    again = await q.lease(timeout=30)
    assert again is not None
    assert again.message_id == old.message_id
    await q.close()


async def test_queue_full_on_count_and_bytes_changes_nothing(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, limits=QueueLimits(max_messages=2)) as q:
        await q.submit_sync(block(1), submitted_by="t")
        await q.submit_async(gossip(1), submitted_by="t")
        with pytest.raises(QueueFull, match="limit 2"):
            await q.submit_sync(block(2), submitted_by="t")
        with pytest.raises(QueueFull):
            await q.submit_async(gossip(2), submitted_by="t")
        assert q.depth()["total"] == 2
    room = message_cost(tx(1, 200).encoded_size) + message_cost(tx(2, 300).encoded_size) - 1
    async with await QppValidatorQueue.open("w", tmp_path, limits=QueueLimits(max_bytes=room)) as q:
        await q.submit_sync(tx(1, 200), submitted_by="t")
        with pytest.raises(QueueFull, match="bytes"):
            await q.submit_sync(tx(2, 300), submitted_by="t")
        (await q.pop()).consume()  # type: ignore[union-attr]
        await q.submit_sync(tx(2, 300), submitted_by="t")  # room again after consuming


async def test_wait_available_wakes_on_submit_and_times_out(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        assert await q.wait_available(timeout=0.01) is False
        waiter = asyncio.create_task(q.wait_available(timeout=30))
        await asyncio.sleep(0)
        await q.submit_sync(block(1), submitted_by="t")
        assert await asyncio.wait_for(waiter, 10) is True


async def test_wait_available_wakes_when_a_lease_expires(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        await q.submit_sync(block(1), submitted_by="t")
        assert await q.lease(timeout=0.02) is not None
        assert await q.wait_available(timeout=30) is True


async def test_depth_and_stats(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path) as q:
        await q.submit_sync(block(1), submitted_by="t")
        await q.submit_async(telemetry(1), submitted_by="t")
        await q.lease(timeout=30)
        d = q.depth()
        assert d == {
            "total": 2,
            "ready": 1,
            "leased": 1,
            "critical": 0,
            "high": 0,
            "normal": 0,
            "low": 1,
        }
        s = q.stats()
        assert s["durable_messages"] == 1
        assert s["log_bytes"] > 0
        assert s["fatal"] is None


async def test_closed_queue_refuses_work(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    await q.close()
    with pytest.raises(Unavailable):
        await q.submit_sync(block(1), submitted_by="t")
    with pytest.raises(Unavailable):
        await q.pop()


async def test_a_second_process_cannot_open_the_same_log(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    with pytest.raises(Unavailable, match="in use"):
        await QppValidatorQueue.open("v", tmp_path)
    await q.close()


async def test_compaction_racing_with_submits_and_acks_loses_nothing(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    for i in range(200):
        await q.submit_sync(tx(i, 200), submitted_by="t")
    leases = [await q.lease(timeout=60) for _ in range(50)]

    async def submits() -> list[int]:
        return [await q.submit_sync(block(i), submitted_by="t") for i in range(100)]

    async def acks() -> None:
        for lease in leases:
            assert lease is not None
            await q.ack(lease)

    async def compactions() -> None:
        for _ in range(5):
            await q.compact_wal()
            await asyncio.sleep(0)

    new_ids, _, _ = await asyncio.gather(submits(), acks(), compactions())
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    ids = {i.message_id for i in q._state.ready_items()}
    assert set(new_ids) <= ids
    assert not ids & {lease.message_id for lease in leases if lease}
    assert len(ids) == 250
    await q.close()


async def test_automatic_compaction_when_mostly_consumed(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path, compact_bytes=64 * 1024)
    for i in range(300):
        await q.submit_sync(tx(i, 400), submitted_by="t")
        (await q.pop()).consume()  # type: ignore[union-attr]
    for _ in range(100):
        if q.compactions:
            break
        await asyncio.sleep(0.01)
    assert q.compactions >= 1
    assert q.stats()["log_bytes"] < 64 * 1024
    await q.close()


async def test_async_submits_past_the_reserved_ids_wait_for_a_durable_reservation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sidecar.queue.ID_BLOCK", 2)
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    ids = [await q.submit_async(gossip(i), submitted_by="t") for i in range(20)]
    assert ids == sorted(set(ids))
    image = {p: bytes(i.durable) for p, i in disk.names.items()}  # crash: async lost
    q2 = await QppValidatorQueue.open("v", "/d", layer=SimDisk(image))
    assert await q2.submit_async(gossip(0), submitted_by="t") > max(ids)
    await q2.close()


async def test_a_submit_waiting_for_ids_fails_instead_of_hanging_when_the_log_dies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sidecar.queue.ID_BLOCK", 2)
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    disk.fail_sync = lambda: True

    async def submit_many() -> None:
        for i in range(10):  # the third one waits for a new reservation, whose fsync fails
            await q.submit_async(gossip(i), submitted_by="t")

    with pytest.raises(LogFailed):
        await asyncio.wait_for(submit_many(), 10)
    with pytest.raises(LogFailed):
        await q.close()


async def test_a_restart_skips_at_most_one_small_block_of_ids(tmp_path: Path) -> None:
    ids = []
    for _ in range(4):
        q = await QppValidatorQueue.open("v", tmp_path)
        ids.append(await q.submit_sync(gossip(len(ids)), submitted_by="t"))
        ids.append(await q.submit_async(gossip(len(ids)), submitted_by="t"))
        await q.close()
    assert ids == sorted(set(ids))
    gaps = [b - a for a, b in itertools.pairwise(ids)]
    assert max(gaps) <= FIRST_ID_BLOCK, ids


def test_id_blocks_grow_while_ids_go_fast_and_shrink_while_they_go_slowly() -> None:
    size = FIRST_ID_BLOCK
    for _ in range(40):
        size = _next_block(size, 0.01)
    assert size == ID_BLOCK
    assert _next_block(size, 5.0) == ID_BLOCK
    for _ in range(40):
        size = _next_block(size, 60.0)
    assert size == FIRST_ID_BLOCK


async def test_compaction_is_logged_with_sizes_and_live_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    for i in range(5):
        await q.submit_sync(tx(i, 100), submitted_by="t")
    (await q.pop()).consume()  # type: ignore[union-attr]
    with caplog.at_level("INFO", logger="sidecar.queue"):
        result = await q.compact_wal()
    await q.close()
    line = f"[v] compacted {tmp_path / 'v.wal'}: {result['bytes_before']} -> "
    assert any(r.getMessage().startswith(line) for r in caplog.records), caplog.text
    assert "4 live messages kept" in caplog.text
