"""A compaction reads its snapshot a chunk at a time while the queue goes on.

The live messages are pinned (changes go to an overlay, `sidecar/live.py`) instead of
copied between two batches; every submit, pop, ack and release made between chunks
is in the new log, and nothing consumed meanwhile comes back. The temp file is made
durable as it grows, and the replaced log is cut down before it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import LogFailed, QppValidatorQueue, Unavailable
from sidecar.live import DurableLive
from sidecar.messages import QueueMessageWithProvenance
from sidecar.wal import TEMP_SUFFIX
from tests.core.helpers import block
from tests.core.simfs import SimDisk
from tests.core.test_compaction_online import _HeldCompactionLayer

DIR = "/sim"
OPS = ("submit", "pop", "lease", "ack", "release", "wait")
# records per frame of a compacted log (4096 in use): a small log then takes many
# frames, and syncs every `compact_sync_bytes` as it grows, as a large one does
SMALL_FRAMES = 8
EXAMPLES = 3000 if os.environ.get("QSSH_NIGHTLY") == "1" else 300  # a few ms each


def _item(mid: int) -> QueueMessageWithProvenance:
    return QueueMessageWithProvenance(block(mid), mid, 0.0, "t")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "discard", "pin", "unpin"]), st.integers(0, 12)),
        max_size=60,
    )
)
def test_the_pinned_dict_stays_as_it_was_and_the_overlay_is_folded_back(
    ops: list[tuple[str, int]],
) -> None:
    live = DurableLive()
    model: dict[int, QueueMessageWithProvenance] = {}
    pinned_at: dict[int, QueueMessageWithProvenance] | None = None
    snapshot = None
    for op, mid in ops:
        if op == "add":
            item = _item(mid)
            live.add(item)
            model[mid] = item
        elif op == "discard":
            live.discard(mid)
            model.pop(mid, None)
        elif op == "pin" and not live.pinned:
            snapshot = live.pin()
            pinned_at = dict(model)
        elif op == "unpin":
            if snapshot is not None:
                assert pinned_at is not None
                seen = list(snapshot)  # read while pinned: exactly what was live then
                assert sorted(i.message_id for i in seen) == sorted(pinned_at)
                assert all(i is pinned_at[i.message_id] for i in seen)
                snapshot = None
            live.unpin()
        assert len(live) == len(model)
        for k in range(13):
            assert (k in live) == (k in model)
            assert live.get(k) is model.get(k)
    live.unpin()
    assert len(live) == len(model)
    assert all(live.get(k) is v for k, v in model.items())


async def _fill(q: QppValidatorQueue, n: int, start: int = 0) -> list[int]:
    return list(
        await asyncio.gather(*(q.submit_sync(block(start + i), submitted_by="t") for i in range(n)))
    )


async def test_a_deep_queue_is_snapshot_in_many_steps_with_work_between_them(
    tmp_path: Path,
) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    q.compaction_chunk = 50
    ids = await _fill(q, 2000)
    for _ in range(500):
        (await q.pop()).consume()  # type: ignore[union-attr]
    live = set(ids[500:])
    during = 0  # operations that completed while the snapshot was being read
    compaction = asyncio.create_task(q.compact_wal())
    n = 0
    while not compaction.done():
        mid = await q.submit_sync(block(10_000 + n), submitted_by="t")
        live.add(mid)
        during += q._durable_live.pinned
        popped = await q.pop()
        assert popped is not None
        live.discard(popped.consume().message_id)
        during += q._durable_live.pinned
        lease = await q.lease(timeout=60)
        assert lease is not None
        await q.ack(lease)
        live.discard(lease.message_id)
        during += q._durable_live.pinned
        n += 1
    result = await compaction
    assert result["snapshot_steps"] >= 1500 // 50  # not one step over the whole queue
    assert result["live"] >= 1500 - 2 * n  # each pinned message was read once
    assert during > 0, "nothing ran between the snapshot's steps"
    assert not q._durable_live.pinned
    await q.close()

    q = await QppValidatorQueue.open("v", tmp_path)
    assert {i.message_id for i in q._state.ready_items()} == live
    assert q.recovery is not None
    assert q.recovery.records < 2 * len(live) + 3 * n + 10
    await q.close()


async def _run_interleaved(
    initial: int, chunk: int, ops: list[tuple[str, int]], crash_at: int | None, seed: int
) -> None:
    """Compact over SimDisk while `ops` run (each after `wait` loop turns); crash at
    operation `crash_at` if given; recover; check what survived."""
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", DIR, layer=disk, compact_bytes=1 << 30)
    q.compaction_chunk = chunk
    wal = q._committer.wal  # type: ignore[union-attr]
    wal.compact_sync_bytes = 1024
    wal.retire_cut_bytes = 512
    acked = set(await _fill(q, initial))
    for _ in range(initial // 2):
        acked.discard((await q.pop()).consume().message_id)  # type: ignore[union-attr]
    consumed: set[int] = set()
    in_flight: set[int] = set()  # cut by the crash: either outcome is allowed
    if crash_at is not None:
        disk.crash_at = disk.ops + crash_at
    leases = []

    async def work() -> None:
        for n, (op, wait) in enumerate(ops):
            for _ in range(wait):
                await asyncio.sleep(0)
            if op == "submit":
                acked.add(await q.submit_sync(block(1000 + n), submitted_by="t"))
            elif op == "pop":
                held = {i.message_id for i in q._state.ready_items()}
                try:
                    h = await q.pop()
                except (LogFailed, Unavailable):
                    in_flight.update(held - {i.message_id for i in q._state.ready_items()})
                    raise
                if h is not None:
                    consumed.add(h.consume().message_id)
            elif op == "ack" and leases:
                lease = leases.pop()
                in_flight.add(lease.message_id)
                await q.ack(lease)
                in_flight.discard(lease.message_id)
                consumed.add(lease.message_id)
            elif op == "release" and leases:
                await q.release(leases.pop())
            elif op != "wait":
                lease = await q.lease(timeout=60)
                if lease is not None:
                    leases.append(lease)

    try:
        results = await asyncio.gather(q.compact_wal(), work(), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, (LogFailed, Unavailable)):
                raise r
        if crash_at is None:
            assert all(not isinstance(r, BaseException) for r in results), results
            assert results[0]["live"] >= 0  # type: ignore[index]
            await q.close()
    finally:
        if crash_at is not None:
            with contextlib.suppress(LogFailed, Unavailable):
                await q.close()
    files = disk.crash_image(random.Random(seed)) if crash_at is not None else None
    if files is None:
        files = {p: bytes(i.durable) for p, i in disk.names.items()}
    q = await QppValidatorQueue.open("v", DIR, layer=SimDisk(files))
    recovered = {i.message_id for i in q._state.ready_items()}
    await q.close()
    assert not (recovered & consumed), "a message consumed during compaction came back"
    missing = acked - consumed - in_flight - recovered
    assert not missing, f"acknowledged submits lost: {sorted(missing)}"
    if crash_at is None:
        assert recovered == acked - consumed


_ops = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 3)), max_size=30)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 80), st.integers(1, 8), _ops)
def test_any_interleaving_of_work_with_the_snapshot_steps_survives_reopening(
    initial: int, chunk: int, ops: list[tuple[str, int]]
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sidecar.wal._log._REWRITE_FRAME_RECORDS", SMALL_FRAMES)
        asyncio.run(_run_interleaved(initial, chunk, ops, None, 0))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(10, 80), st.integers(1, 8), _ops, st.integers(1, 120), st.integers(0, 99))
# crash points 1-120 operations after the fill: of 300 such runs 266 crashed, in every
# phase (chunk writes and syncs, seal, catch-up, swap, cutting the old file, and the
# log's own batches meanwhile); up to 400, most fell after the compaction
def test_a_crash_anywhere_in_a_chunked_compaction_keeps_acked_and_consumed(
    initial: int, chunk: int, ops: list[tuple[str, int]], crash_at: int, seed: int
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sidecar.wal._log._REWRITE_FRAME_RECORDS", SMALL_FRAMES)
        asyncio.run(_run_interleaved(initial, chunk, ops, crash_at, seed))


async def test_the_temp_file_is_synced_as_it_grows_and_the_old_log_cut_before_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sidecar.wal._log._REWRITE_FRAME_RECORDS", SMALL_FRAMES)
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", DIR, layer=disk, compact_bytes=1 << 30)
    wal = q._committer.wal  # type: ignore[union-attr]
    wal.compact_sync_bytes = 4096
    wal.retire_cut_bytes = 2048
    ids = await _fill(q, 300)
    for _ in range(100):
        (await q.pop()).consume()  # type: ignore[union-attr]
    old = disk.names[f"{DIR}/v.wal"]
    old_size = len(old.data)
    syncs = disk.syncs
    result = await q.compact_wal()
    assert disk.names[f"{DIR}/v.wal"] is not old
    # the temp file: a sync every 4096 bytes written (+ the seal), not one at the end
    assert disk.syncs - syncs >= result["bytes_after"] // 4096
    # the replaced log: cut down 2048 bytes at a time, then closed
    cuts = [size for op, size, _ in old.pending if op == "t"]
    assert cuts == list(range(old_size - 2048, 0, -2048))
    assert len(old.data) <= 2048
    await q.close()
    q = await QppValidatorQueue.open(
        "v", DIR, layer=SimDisk({p: bytes(i.durable) for p, i in disk.names.items()})
    )
    assert {i.message_id for i in q._state.ready_items()} == set(ids[100:])
    await q.close()


async def test_dedup_keys_are_written_in_steps_too_and_survive(tmp_path: Path) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    q.compaction_chunk = 8
    first = [await q.submit_once(block(i), submitted_by="a", dedup_id=f"k{i}") for i in range(100)]
    while (h := await q.pop()) is not None:
        h.consume()  # the messages are gone, their keys stay in the window
    result = await q.compact_wal()
    assert result["live"] == 0
    assert result["snapshot_steps"] >= 100 // 8  # the keys, not one step for all of them
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    again = [await q.submit_once(block(i), submitted_by="a", dedup_id=f"k{i}") for i in range(100)]
    assert all(a.duplicate for a in again)
    assert [a.message_id for a in again] == [f.message_id for f in first]
    assert q.depth()["total"] == 0
    await q.close()


async def test_a_compaction_cancelled_mid_step_keeps_the_old_log_and_the_queue(
    tmp_path: Path,
) -> None:
    layer = _HeldCompactionLayer()
    layer.gate.set()
    q = await QppValidatorQueue.open("v", tmp_path, layer=layer)
    ids = await _fill(q, 50)
    layer.gate.clear()
    layer.entered.clear()  # (creating the log wrote a temp file too)
    compaction = asyncio.create_task(q.compact_wal())
    assert await asyncio.to_thread(layer.entered.wait, 30)  # a step is writing, held
    compaction.cancel()
    await asyncio.sleep(0.05)
    assert not compaction.done()  # it waits for the step it is in
    layer.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await compaction
    assert not q._durable_live.pinned
    assert not (tmp_path / f"v.wal{TEMP_SUFFIX}").exists()
    more = await q.submit_sync(block(99), submitted_by="t")  # the queue goes on
    result = await q.compact_wal()  # and compacts again
    assert result["live"] == 51
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    assert {i.message_id for i in q._state.ready_items()} == {*ids, more}
    await q.close()


async def test_a_relay_backlog_is_written_in_steps_too_and_survives(tmp_path: Path) -> None:
    peers = ("bob", "charlie")
    q = await QppValidatorQueue.open("v", tmp_path, peers=peers)
    q.compaction_chunk = 8
    mids = [await q.submit(block(n), submitted_by="t", broadcast=True) for n in range(60)]
    await q.relay_done("bob", q.relay_take("bob", 100))  # charlie lacks all of them
    for _ in range(30):
        (await q.pop()).consume()  # type: ignore[union-attr]
    result = await q.compact_wal()
    # 30 consumed (submit + consume + bob's mark) and 30 live (bob's mark), 8 a step
    assert result["snapshot_steps"] >= (30 * 3 + 30) // 8
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path, peers=peers)
    assert q.relay_backlog("bob").count == 0
    taken = q.relay_take("charlie", 100)
    assert [i.message_id for i in taken] == mids
    assert q.depth()["total"] == 30
    await q.close()
