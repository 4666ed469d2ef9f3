"""Group commit under random interleavings of sync submits, cancellations (before and
after a batch is written, and of callers that swallowed an earlier one) and loop turns,
with the fsync inline or in the worker thread: no caller gets an id for a record that
is not durable, and the queue's accounting matches exactly what was logged."""

from __future__ import annotations

import asyncio
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import QppValidatorQueue
from sidecar.state import message_cost
from sidecar.wal import record_to_dict, scan
from tests.core.helpers import block
from tests.core.simfs import SimDisk


class _ThreadedSimDisk(SimDisk):
    blocking = True  # the committer fsyncs in its worker thread when the loop is busy


_op = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 3)),  # 0: a caller that swallows a cancel first
    st.tuples(st.just("cancel"), st.integers(0, 63)),
    st.tuples(st.just("turns"), st.integers(1, 3)),
    st.tuples(st.just("settle"), st.just(0)),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(_op, min_size=1, max_size=40), st.booleans(), st.booleans())
def test_acked_means_logged_and_the_accounting_matches_the_log(
    ops: list[tuple[str, int]], threaded: bool, inline_single: bool
) -> None:
    asyncio.run(_scenario(ops, threaded, inline_single))


async def _scenario(ops: list[tuple[str, int]], threaded: bool, inline_single: bool) -> None:
    disk = _ThreadedSimDisk() if threaded else SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    assert q._committer is not None
    q._committer.inline_single = inline_single
    tasks: list[asyncio.Task[int]] = []
    sleepers: set[asyncio.Task[int]] = set()

    async def submit(n: int) -> int:
        return await q.submit_sync(block(n), submitted_by="t")

    async def after_a_swallowed_cancel(n: int) -> int:
        with contextlib.suppress(asyncio.CancelledError):  # no uncancel(): cancelling() == 1
            await asyncio.sleep(3600)
        sleepers.discard(asyncio.current_task())  # type: ignore[arg-type]
        return await submit(n)

    for kind, arg in ops:
        if kind == "submit":
            n = len(tasks)
            task = asyncio.create_task(after_a_swallowed_cancel(n) if arg == 0 else submit(n))
            if arg == 0:
                sleepers.add(task)
            tasks.append(task)
        elif kind == "cancel" and tasks:
            tasks[arg % len(tasks)].cancel()
        elif kind == "turns":
            for _ in range(arg):
                await asyncio.sleep(0)
        elif kind == "settle":
            await asyncio.sleep(0.002)
    for task in list(sleepers):  # wake the callers still waiting for their first cancel
        task.cancel()
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    logged = {
        r["message_id"]
        for r in map(record_to_dict, scan(disk.names["/d/v.wal"].durable).records)
        if r["type"] == "submit"
    }
    acked = {o for o in outcomes if isinstance(o, int)}
    for o in outcomes:
        assert isinstance(o, int | asyncio.CancelledError), o
    assert acked <= logged  # an id is returned only for a durable record
    ready = {i.message_id: i for i in q._state.ready_items()}
    assert set(ready) == logged  # what is queued is exactly what was logged
    assert q.stats()["bytes"] == sum(message_cost(i.message.encoded_size) for i in ready.values())
    await q.close()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    assert {i.message_id for i in q._state.ready_items()} == logged
    await q.close()
