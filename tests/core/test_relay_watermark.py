"""Relay keys at the receiver live until the sender's low watermark passes them, not for
the dedup window: a batch whose reply was lost is stored once however long the link
stays down, across crashes of either end and compaction (docs/relay.md)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sidecar import DedupLimits, QppValidatorQueue, QueueFull, Submitted
from sidecar.dedup import relay_key
from sidecar.messages import QueueMessageWithProvenance
from sidecar.wal import WriteAheadLog, record_to_dict, watermark_record
from tests.core.helpers import ManualClock, block
from tests.core.simfs import SimDisk

WINDOW = DedupLimits(window=1.0)


def _crash_image(disk: SimDisk) -> SimDisk:
    return SimDisk({p: bytes(i.durable) for p, i in disk.names.items()})


async def _deliver(
    sender: QppValidatorQueue, receiver: QppValidatorQueue, *, reply_lost: bool = False
) -> list[Submitted]:
    """One relay request from sidecar "alice" to "bob", as the link and the service
    make it: the low watermark first (logged with the batch), then each item once."""
    items = sender.relay_take("bob", 64)
    await receiver.relay_watermark("alice", sender.relay_low_watermark("bob"))
    results = [await _store(receiver, i) for i in items]
    if reply_lost:
        sender.relay_give_back("bob", items)
    else:
        await sender.relay_done("bob", items)
    return results


async def _store(receiver: QppValidatorQueue, item: QueueMessageWithProvenance) -> Submitted:
    principal, dedup_id = relay_key("alice", item.message_id)
    return await receiver.submit_once(
        item.message,
        submitted_by=principal,
        dedup_id=dedup_id,
        mode="sync",
        origin=("alice", item.message_id),
    )


async def _stored(q: QppValidatorQueue) -> list[int | None]:
    out = []
    while (h := await q.pop()) is not None:
        out.append(h.consume().origin_id)
    return out


async def test_a_resend_after_a_lost_reply_past_the_window_is_stored_once(tmp_path: Path) -> None:
    wall = ManualClock()
    sender = await QppValidatorQueue.open("alice", tmp_path / "a", peers=["bob"])
    receiver = await QppValidatorQueue.open("bob", tmp_path / "b", dedup=WINDOW, wall_clock=wall)
    mid = await sender.submit_sync(block(1), submitted_by="v", broadcast=True)
    first = await _deliver(sender, receiver, reply_lost=True)
    wall.advance(3600.0)  # the link stays down for an hour, far past the window
    again = await _deliver(sender, receiver)
    assert first == [Submitted(first[0].message_id, False)]
    assert again == [Submitted(first[0].message_id, True)]
    assert await _stored(receiver) == [mid]
    await sender.close()
    await receiver.close()


async def test_the_pin_survives_a_receiver_crash_and_compaction_then_the_watermark_frees_it() -> (
    None
):
    wall = ManualClock()
    sender = await QppValidatorQueue.open("alice", "/a", layer=SimDisk(), peers=["bob"])
    disk = SimDisk()
    receiver = await QppValidatorQueue.open("bob", "/b", layer=disk, dedup=WINDOW, wall_clock=wall)
    first = await sender.submit_sync(block(1), submitted_by="v", broadcast=True)
    await _deliver(sender, receiver, reply_lost=True)
    await receiver.compact_wal()
    # power cut at the receiver; it comes back long after the window
    wall.advance(3600.0)
    receiver = await QppValidatorQueue.open(
        "bob", "/b", layer=_crash_image(disk), dedup=WINDOW, wall_clock=wall
    )
    assert receiver.relay_floor("alice") == first
    (again,) = await _deliver(sender, receiver)
    assert again.duplicate
    # the next batch's watermark passes the first message: its key is gone for good
    second = await sender.submit_sync(block(2), submitted_by="v", broadcast=True)
    (new,) = await _deliver(sender, receiver)
    assert not new.duplicate
    assert receiver.relay_floor("alice") == second
    assert ("peer:alice", f"relay:{first}") not in receiver._dedup.entries()
    assert await _stored(receiver) == [first, second]
    await sender.close()
    await receiver.close()


async def test_a_sender_crash_resends_and_the_receiver_answers_duplicate() -> None:
    wall = ManualClock()
    disk = SimDisk()
    sender = await QppValidatorQueue.open("alice", "/a", layer=disk, peers=["bob"])
    receiver = await QppValidatorQueue.open(
        "bob", "/b", layer=SimDisk(), dedup=WINDOW, wall_clock=wall
    )
    mids = [await sender.submit_sync(block(i), submitted_by="v", broadcast=True) for i in (1, 2)]
    await _deliver(sender, receiver, reply_lost=True)
    # the sender dies before logging the relay; it restarts after the window
    sender = await QppValidatorQueue.open("alice", "/a", layer=_crash_image(disk), peers=["bob"])
    wall.advance(3600.0)
    assert [r.duplicate for r in await _deliver(sender, receiver)] == [True, True]
    assert await _stored(receiver) == mids
    await sender.close()
    await receiver.close()


async def test_the_watermark_counts_held_and_in_flight_messages(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("alice", tmp_path, peers=["bob"]) as q:
        held = await q.submit_sync(block(1), submitted_by="v", broadcast=True)
        sent = await q.submit_sync(block(2), submitted_by="v", broadcast=True)
        assert q.relay_take("bob", 64, lambda i: "tier" if i.message_id == held else None)
        assert q.relay_low_watermark("bob") == held  # held and in flight both count
        await q.relay_done("bob", [i for i, _ in q._relay.retained() if i.message_id == sent])
        assert q.relay_low_watermark("bob") == held
        q.relay_unhold("bob")
        await q.relay_done("bob", q.relay_take("bob", 64))
        # nothing lacking: the next id (nothing below it will ever be sent)
        assert q.relay_low_watermark("bob") == sent + 1


async def test_the_floor_never_goes_down_and_survives_a_restart(tmp_path: Path) -> None:
    wall = ManualClock()
    async with await QppValidatorQueue.open("bob", tmp_path, wall_clock=wall) as q:
        await q.relay_watermark("alice", 10)
        assert q.relay_floor("alice") == 10
        await q.relay_watermark("alice", 4)  # a stale request: the floor never goes down
        assert q.relay_floor("alice") == 10
    async with await QppValidatorQueue.open("bob", tmp_path, wall_clock=wall) as q2:
        assert q2.relay_floor("alice") == 10


async def _relayed(q: QppValidatorQueue, peer: str, oid: int) -> Submitted:
    principal, dedup_id = relay_key(peer, oid)
    return await q.submit_once(
        block(oid), submitted_by=principal, dedup_id=dedup_id, mode="sync", origin=(peer, oid)
    )


async def _mine(q: QppValidatorQueue, dedup_id: str) -> Submitted:
    return await q.submit_once(block(9000), submitted_by="v", dedup_id=dedup_id, mode="sync")


async def test_keys_pinned_behind_a_held_message_never_fill_the_producers_index(
    tmp_path: Path,
) -> None:
    """The reviewer's case: alice's watermark stays at 1 (message 1 held for the tier)
    while 2, 3, ... go through. Bob pins them all, in their own count: neither alice's
    relay nor bob's own producers' dedup_id submits run into dedup.max_entries."""
    wall = ManualClock()
    limits = DedupLimits(window=1.0, max_entries=3)
    async with await QppValidatorQueue.open("bob", tmp_path, dedup=limits, wall_clock=wall) as q:
        await q.relay_watermark("alice", 1)
        for oid in range(2, 12):
            assert not (await _relayed(q, "alice", oid)).duplicate
        wall.advance(3600.0)  # pinned: past the window, still known
        assert (await _relayed(q, "alice", 2)).duplicate
        assert [(await _mine(q, d)).duplicate for d in ("x1", "x2", "x3")] == [False] * 3
        with pytest.raises(QueueFull, match="dedup index holds 3 ids"):
            await _mine(q, "x4")  # the producers' own bound, theirs alone
        assert q._dedup.count() == 3
        assert q._dedup.count("peer:alice") == 10


async def test_a_peer_at_its_key_bound_is_refused_alone_until_its_watermark_moves(
    tmp_path: Path,
) -> None:
    wall = ManualClock()
    limits = DedupLimits(window=1.0, max_entries=2, max_peer_keys=3)
    async with await QppValidatorQueue.open("bob", tmp_path, dedup=limits, wall_clock=wall) as q:
        for peer in ("alice", "carol"):
            await q.relay_watermark(peer, 1)
        for oid in (2, 3, 4):
            await _relayed(q, "alice", oid)
        wall.advance(3600.0)
        depth = q.depth()
        with pytest.raises(
            QueueFull, match=r"peer alice holds 3 relay keys \(relay.max_peer_keys = 3\)"
        ):
            await _relayed(q, "alice", 5)  # refused (the sender retries), never dropped
        assert q.depth() == depth  # nothing stored
        assert (await _relayed(q, "alice", 3)).duplicate  # known keys are still answered
        # another peer and the local producers keep their own bounds
        assert [(await _relayed(q, "carol", oid)).duplicate for oid in (2, 3, 4)] == [False] * 3
        assert [(await _mine(q, d)).duplicate for d in ("x1", "x2")] == [False, False]
        # the message at alice's watermark is always taken: the next watermark frees the rest
        assert not (await _relayed(q, "alice", 1)).duplicate
        assert q._dedup.count("peer:alice") == 4  # max_peer_keys + 1 at most
        await q.relay_watermark("alice", 5)
        assert q._dedup.count("peer:alice") == 0
        assert not (await _relayed(q, "alice", 5)).duplicate
        assert q._dedup.count("peer:carol") == 3
        assert q._dedup.count() == 2


async def test_the_per_peer_accounting_survives_compaction_and_a_crash() -> None:
    wall = ManualClock()
    limits = DedupLimits(window=1.0, max_entries=2, max_peer_keys=3)
    disk = SimDisk()

    async def reopen(layer: SimDisk) -> QppValidatorQueue:
        return await QppValidatorQueue.open("bob", "/b", layer=layer, dedup=limits, wall_clock=wall)

    q = await reopen(disk)
    await q.relay_watermark("alice", 1)
    for oid in (2, 3, 4):
        await _relayed(q, "alice", oid)
    await _mine(q, "x1")
    await q.compact_wal()
    await _mine(q, "x2")  # after the compaction: in the log's tail
    q = await reopen(_crash_image(disk))  # a power cut
    assert (q._dedup.count(), q._dedup.count("peer:alice")) == (2, 3)
    with pytest.raises(QueueFull, match="dedup index holds 2 ids"):
        await _mine(q, "x3")
    wall.advance(3600.0)  # long after the window: the producers' keys expired, alice's not
    with pytest.raises(QueueFull, match="peer alice holds 3 relay keys"):
        await _relayed(q, "alice", 5)
    assert (await _relayed(q, "alice", 4)).duplicate
    assert not (await _mine(q, "x3")).duplicate
    assert not (await _relayed(q, "carol", 2)).duplicate
    await q.relay_watermark("alice", 5)  # alice's held message went through at last
    assert not (await _relayed(q, "alice", 5)).duplicate
    await q.close()


async def test_the_log_holds_the_watermark_also_after_compaction(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("bob", tmp_path) as q:
        await q.relay_watermark("alice", 7)
        await q.relay_watermark("alice", 7)  # no change: nothing logged
        await q.compact_wal()
    wal, rec = WriteAheadLog.open(str(tmp_path / "bob.wal"))
    wal.close()
    assert rec.replayed is not None
    assert rec.replayed.watermarks == {"peer:alice": 7}
    named = record_to_dict(orjson.loads(watermark_record("peer:alice", 7)))
    assert named == {"type": "watermark", "principal": "peer:alice", "watermark": 7}
