"""Cancelled callers, waiters on a failed queue, and the observer hooks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from sidecar import LogFailed, Mode, QppValidatorQueue, QueueObserver
from sidecar.state import message_cost
from tests.core.helpers import block, gossip
from tests.core.simfs import SimDisk, SimHandle


class _GatedDisk(SimDisk):
    """Simulated storage whose fsync waits for the test to open a gate (in a thread)."""

    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def open_append(self, path: str) -> SimHandle:
        handle = super().open_append(path)
        real_sync, gate = handle.sync, self.gate

        def sync() -> None:
            assert gate.wait(30)
            real_sync()

        handle.sync = sync  # type: ignore[method-assign]
        return handle


async def test_pop_cancelled_before_its_batch_started_leaves_the_message() -> None:
    disk = _GatedDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    first = await q.submit_sync(block(1), submitted_by="t")
    assert q._committer is not None
    q._committer.inline_single = False
    disk.gate.clear()
    in_flight = asyncio.create_task(q.submit_sync(block(2), submitted_by="t"))
    await asyncio.sleep(0.05)  # the writer took that batch and waits at the gate
    popper = asyncio.create_task(q.pop())
    await asyncio.sleep(0.01)
    popper.cancel()  # its consume record waits for the next batch
    await asyncio.sleep(0.01)
    assert not popper.done()  # a batch's callers share one future: it ends with its batch
    disk.gate.set()
    await in_flight
    with pytest.raises(asyncio.CancelledError):
        await popper
    h = await q.pop()
    assert h is not None
    assert h.consume().message_id == first  # still there: the cancelled pop took nothing
    await q.close()


async def test_waiters_wake_with_the_error_when_the_log_fails() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    waiter = asyncio.create_task(q.wait_available(timeout=60))
    await asyncio.sleep(0)
    disk.fail_sync = lambda: True
    with pytest.raises(LogFailed):
        await q.submit_sync(block(1), submitted_by="t")
    with pytest.raises(LogFailed):
        await asyncio.wait_for(waiter, 10)


class _Recorder(QueueObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_fsync(self, seconds: float, batch_records: int) -> None:
        self.events.append(("fsync", batch_records))

    def on_submit(self, mode: Mode, upgraded: bool) -> None:
        self.events.append(("submit", mode))

    def on_consume(self, how: str) -> None:
        self.events.append(("consume", how))

    def on_release(self) -> None:
        self.events.append(("release", None))

    def on_redelivery(self, count: int) -> None:
        self.events.append(("redelivery", count))

    def on_compaction(self, seconds: float, bytes_before: int, bytes_after: int) -> None:
        self.events.append(("compaction", bytes_after <= bytes_before))

    def on_log_bytes(self, size: int) -> None:
        self.events.append(("log_bytes", size > 0))


async def test_observer_sees_fsyncs_submits_acks_redeliveries_and_compactions() -> None:
    rec = _Recorder()
    q = await QppValidatorQueue.open("v", "/d", layer=SimDisk(), observer=rec)
    await asyncio.gather(*(q.submit_sync(block(i), submitted_by="t") for i in range(4)))
    await q.submit_async(gossip(1), submitted_by="t")
    lease = await q.lease(timeout=0.001)
    await asyncio.sleep(0.01)
    lease = await q.lease(timeout=60)
    assert lease is not None
    await q.ack(lease)
    (await q.pop()).consume()  # type: ignore[union-attr]
    lease2 = await q.lease(timeout=60)
    assert lease2 is not None
    await q.release(lease2)
    await q.compact_wal()
    await q.close()
    kinds = [e[0] for e in rec.events]
    assert ("fsync", 4) in rec.events
    assert kinds.count("submit") == 5
    assert ("submit", Mode.ASYNC) in rec.events
    assert ("consume", "ack") in rec.events
    assert ("consume", "pop") in rec.events
    assert ("redelivery", 1) in rec.events
    assert ("release", None) in rec.events
    assert ("compaction", True) in rec.events
    assert ("log_bytes", True) in rec.events


async def test_a_cancelled_caller_leaves_its_batch_and_the_others_in_it_commit() -> None:
    disk = _GatedDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    assert q._committer is not None
    q._committer.inline_single = False
    disk.gate.clear()
    first = asyncio.create_task(q.submit_sync(block(1), submitted_by="t"))
    await asyncio.sleep(0.05)  # that batch waits at the gate
    cancelled = asyncio.create_task(q.submit_sync(block(2), submitted_by="t"))
    kept = asyncio.create_task(q.submit_sync(block(3), submitted_by="t"))
    await asyncio.sleep(0.01)  # both queued for the next batch, one future
    cancelled.cancel()
    disk.gate.set()
    ids = [await first, await kept]
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await q.close()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    assert sorted(i.message_id for i in q._state.ready_items()) == sorted(ids)
    assert q.stats()["bytes"] == sum(message_cost(block(n).encoded_size) for n in (1, 3))
    await q.close()


async def test_a_caller_that_swallowed_an_earlier_cancellation_is_acked_only_once_logged(
    tmp_path: Path,
) -> None:
    """`cancelling()` stays 1 in a task that caught CancelledError without `uncancel()`;
    its next submit must still be logged before it returns, not left out of its batch."""
    q = await QppValidatorQueue.open("v", tmp_path)

    async def after_a_swallowed_cancel() -> int:
        with contextlib.suppress(asyncio.CancelledError):  # no uncancel()
            await asyncio.sleep(30)
        assert asyncio.current_task().cancelling() == 1  # type: ignore[union-attr]
        return await q.submit_sync(block(1), submitted_by="t")

    task = asyncio.create_task(after_a_swallowed_cancel())
    await asyncio.sleep(0)
    task.cancel()
    mid = await task
    assert [i.message_id for i in q._state.ready_items()] == [mid]
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    assert [i.message_id for i in q._state.ready_items()] == [mid]
    await q.close()


async def test_a_cancelled_submit_never_takes_the_id_reservation_it_queued_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submit that crosses half of the reserved id block queues the next block's
    reservation record; if that submit is then cancelled, the reservation stays in the
    batch: the other submits waiting for ids get their ids, not a false LogFailed."""
    monkeypatch.setattr("sidecar.queue.ID_BLOCK", 4)
    monkeypatch.setattr("sidecar.queue.FIRST_ID_BLOCK", 4)
    q = await QppValidatorQueue.open("v", tmp_path)
    try:
        tasks = [asyncio.create_task(q.submit_sync(block(i), submitted_by="t")) for i in range(5)]

        async def cancel_third() -> None:  # after the five first steps, before the flush
            tasks[2].cancel()

        canceller = asyncio.create_task(cancel_third())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await canceller
        assert isinstance(results[2], asyncio.CancelledError)
        others = [r for i, r in enumerate(results) if i != 2]
        assert all(isinstance(r, int) for r in others), results
        assert len(set(others)) == 4
    finally:
        await q.close()
    reopened = await QppValidatorQueue.open("v", tmp_path)
    try:
        assert reopened.depth()["total"] >= 4  # every acknowledged submit is in the log
    finally:
        await reopened.close()
