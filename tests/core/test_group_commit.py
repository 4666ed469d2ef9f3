"""Group commit: concurrent sync submits, pops and acks share one write and one fsync."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from typing import Any

import pytest

from sidecar import QppValidatorQueue
from sidecar.wal import LogHandle, OsFileLayer, record_to_dict, scan
from tests.core.helpers import block
from tests.core.simfs import SimDisk


class _Counted:
    def __init__(self, inner: LogHandle, layer: _CountingLayer) -> None:
        self._inner = inner
        self._layer = layer

    def write(self, data: bytes) -> None:
        self._layer.writes += 1
        self._inner.write(data)

    def sync(self) -> None:
        self._layer.syncs += 1
        self._inner.sync()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()


class _CountingLayer(OsFileLayer):
    """The real OS file layer, counting writes and fsyncs of the log."""

    def __init__(self) -> None:
        self.writes = 0
        self.syncs = 0

    def open_append(self, path: str) -> LogHandle:
        return _Counted(super().open_append(path), self)


async def test_concurrent_sync_submits_share_fsyncs_on_a_real_disk(tmp_path: Path) -> None:
    layer = _CountingLayer()
    q = await QppValidatorQueue.open("v", tmp_path, layer=layer)
    base_w, base_s = layer.writes, layer.syncs
    n = 256
    ids = await asyncio.gather(*(q.submit_sync(block(i), submitted_by="t") for i in range(n)))
    syncs, writes = layer.syncs - base_s, layer.writes - base_w
    assert len(set(ids)) == n
    assert syncs <= n // 8, f"{syncs} fsyncs for {n} concurrent submits"
    assert writes == syncs  # one write per batch
    assert q.stats()["batches"] == syncs
    await q.close()


async def test_concurrent_pops_and_acks_are_grouped_too() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    await asyncio.gather(*(q.submit_sync(block(i), submitted_by="t") for i in range(100)))
    leases = [await q.lease(timeout=60) for _ in range(50)]
    before = disk.syncs
    await asyncio.gather(
        *(q.pop() for _ in range(50)), *(q.ack(lease) for lease in leases if lease is not None)
    )
    assert disk.syncs - before <= 2
    assert q.depth()["total"] == 0
    await q.close()


async def test_no_ack_before_its_record_is_durable() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)

    async def submit_and_check(i: int) -> None:
        mid = await q.submit_sync(block(i), submitted_by="t")
        durable = map(record_to_dict, scan(disk.names["/d/v.wal"].durable).records)
        assert any(r.get("message_id") == mid and r["type"] == "submit" for r in durable)

    await asyncio.gather(*(submit_and_check(i) for i in range(64)))
    for _ in range(8):  # serial too
        await submit_and_check(1000)
    await q.close()


async def test_every_fsync_can_go_to_the_worker_thread(tmp_path: Path) -> None:
    layer = _CountingLayer()
    q = await QppValidatorQueue.open("v", tmp_path, layer=layer, inline_lone_sync=False)
    serial = [await q.submit_sync(block(i), submitted_by="t") for i in range(10)]
    together = await asyncio.gather(*(q.submit_sync(block(i), submitted_by="t") for i in range(50)))
    assert q._committer is not None
    assert q._committer.inline_single is False
    await q.close()
    q = await QppValidatorQueue.open("v", tmp_path)
    assert {i.message_id for i in q._state.ready_items()} == {*serial, *together}
    await q.close()


async def test_callers_of_one_batch_share_one_future_and_no_writer_task_runs(
    tmp_path: Path,
) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    committer = q._committer
    assert committer is not None
    tasks_before = asyncio.all_tasks()
    futures = [committer.enqueue(3, b'["R",%d]' % (n + 5000000), n + 5000000) for n in range(3)]
    assert futures[0] is futures[1] is futures[2]
    assert asyncio.all_tasks() == tasks_before  # the flush is a callback, not a task
    await futures[0]
    assert committer.batches >= 1
    later = committer.enqueue(3, b'["R",5000010]', 5000010)
    assert later is not futures[0]  # the next batch has its own
    await later
    await q.close()


async def test_a_batch_written_in_the_worker_comes_back_as_one_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker thread hands a written batch straight to the loop: no executor future
    chained to an asyncio future (`run_in_executor`) per batch."""
    layer = _CountingLayer()
    q = await QppValidatorQueue.open("v", tmp_path, layer=layer, inline_lone_sync=False)
    loop = asyncio.get_running_loop()
    chained: list[object] = []
    real = loop.run_in_executor

    def counted(executor: Any, fn: Any, *args: Any) -> asyncio.Future[Any]:
        chained.append(fn)
        return real(executor, fn, *args)

    monkeypatch.setattr(loop, "run_in_executor", counted)
    syncs = layer.syncs
    for _ in range(5):
        await asyncio.gather(*(q.submit_sync(block(i), submitted_by="t") for i in range(16)))
    assert layer.syncs > syncs  # the batches were fsync'd (in the worker thread)
    assert chained == []
    monkeypatch.undo()
    await q.close()


async def test_a_batch_wakes_its_callers_in_one_loop_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 callers of one batch are resumed by one `call_soon`, not one each."""
    q = await QppValidatorQueue.open("v", tmp_path)
    assert q._committer is not None
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    real = loop.call_soon

    def counted(callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        scheduled.append(callback)
        return real(callback, *args, context=context)

    start = asyncio.Event()

    async def caller(i: int) -> None:
        await start.wait()
        for _ in range(5):
            await q.submit_sync(block(i), submitted_by="t")

    callers = [asyncio.create_task(caller(i)) for i in range(16)]
    await asyncio.sleep(0)  # all 16 wait for the start
    batches = q._committer.batches
    monkeypatch.setattr(loop, "call_soon", counted)
    start.set()
    await asyncio.wait(callers)
    monkeypatch.undo()
    batches = q._committer.batches - batches
    assert 5 <= batches <= 10
    # one wake-up per caller from the start event and one completion per caller task
    # (asyncio.wait's); per batch its flush, its one wake-up, the idle check. A
    # call_soon per caller of each batch would be 16 more per batch.
    assert len(scheduled) <= 2 * 16 + 4 * batches, (len(scheduled), batches)
    await q.close()


async def test_batch_callbacks_run_in_order_in_their_contexts_and_survive_a_failing_one(
    tmp_path: Path,
) -> None:
    q = await QppValidatorQueue.open("v", tmp_path)
    committer = q._committer
    assert committer is not None
    loop = asyncio.get_running_loop()
    errors: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx["exception"]))
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="none")
    seen: list[tuple[str, str]] = []

    def note(name: str) -> Any:
        return lambda _fut: seen.append((name, var.get()))

    def fail(_fut: object) -> None:
        raise RuntimeError("a callback failed")

    fut = committer.enqueue(3, b'["R",7000000]', 7000000)
    for name in ("a", "b"):
        ctx = contextvars.copy_context()
        ctx.run(var.set, name)
        fut.add_done_callback(note(name), context=ctx)
    fut.add_done_callback(fail)
    dropped = note("dropped")
    fut.add_done_callback(dropped)
    fut.add_done_callback(note("c"))
    assert fut.remove_done_callback(dropped) == 1
    await fut
    await asyncio.sleep(0)
    assert seen == [("a", "a"), ("b", "b"), ("c", "none")]
    assert [str(e) for e in errors] == ["a callback failed"]
    late: list[str] = []
    fut.add_done_callback(lambda _f: late.append("late"))  # after completion: at once
    await asyncio.sleep(0)
    assert late == ["late"]
    loop.set_exception_handler(None)
    await q.close()


def test_on_uvloop_16_callers_share_batches_and_every_ack_is_logged(tmp_path: Path) -> None:
    """The daemon's loop: batches form and wake their callers there too."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")

    async def run() -> None:
        q = await QppValidatorQueue.open("v", tmp_path)
        assert q._committer is not None
        start = asyncio.Event()
        ids: list[int] = []

        async def caller(i: int) -> None:
            await start.wait()
            for _ in range(10):
                ids.append(await q.submit_sync(block(i), submitted_by="t"))

        tasks = [asyncio.create_task(caller(i)) for i in range(16)]
        await asyncio.sleep(0)
        batches = q._committer.batches
        start.set()
        await asyncio.gather(*tasks)
        assert q._committer.batches - batches <= 20  # 160 submits: batches of 16
        await q.close()
        q = await QppValidatorQueue.open("v", tmp_path)
        assert {i.message_id for i in q._state.ready_items()} == set(ids)
        await q.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
