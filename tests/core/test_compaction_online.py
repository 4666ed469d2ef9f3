"""Compaction while the queue is in use: the new file is written off the event loop
from a snapshot; submits, pops and acks made meanwhile are caught up at the swap."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from sidecar import QppValidatorQueue
from sidecar.wal import TEMP_SUFFIX, LogHandle, OsFileLayer, WriteFailed, record_to_dict, scan
from tests.core.helpers import block


class _Held:
    """A temp-file handle whose first write waits for the test (in its thread)."""

    def __init__(self, inner: LogHandle, layer: _HeldCompactionLayer) -> None:
        self._inner = inner
        self._layer = layer

    def write(self, data: bytes) -> None:
        self._layer.entered.set()
        assert self._layer.gate.wait(30)
        self._inner.write(data)

    def sync(self) -> None:
        self._inner.sync()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()


class _HeldCompactionLayer(OsFileLayer):
    """The real files; writing a compaction's temp file waits on `gate`."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    def create(self, path: str) -> LogHandle:
        handle = super().create(path)
        return _Held(handle, self) if path.endswith(TEMP_SUFFIX) else handle


async def test_submits_pops_and_acks_go_on_while_the_new_log_is_written(tmp_path: Path) -> None:
    layer = _HeldCompactionLayer()
    layer.gate.set()
    q = await QppValidatorQueue.open("v", tmp_path, layer=layer)
    ids = [await q.submit_sync(block(i), submitted_by="t") for i in range(40)]
    for _ in range(20):
        (await q.pop()).consume()  # type: ignore[union-attr]
    layer.gate.clear()
    compaction = asyncio.create_task(q.compact_wal())
    assert await asyncio.to_thread(layer.entered.wait, 30)  # writing, and held there
    # the queue does not wait for it
    during = [await q.submit_sync(block(100 + i), submitted_by="t") for i in range(10)]
    popped = [(await q.pop()).consume().message_id for _ in range(5)]  # type: ignore[union-attr]
    lease = await q.lease(timeout=60)
    assert lease is not None
    await q.ack(lease)
    assert not compaction.done()
    layer.gate.set()
    result = await compaction
    assert result["caught_up_frames"] >= 10 + 5 + 1  # what happened meanwhile, caught up
    assert result["caught_up_at_swap"] < result["caught_up_frames"]  # mostly off the loop
    assert result["bytes_after"] < result["bytes_before"] + 10 * 1024
    expected = set(ids[20:]) | set(during)
    expected -= set(popped) | {lease.message_id}
    await q.close()

    records = [record_to_dict(r) for r in scan((tmp_path / "v.wal").read_bytes()).records]
    assert records[0]["type"] == "checkpoint"  # the compacted log is in place
    q = await QppValidatorQueue.open("v", tmp_path)
    assert {i.message_id for i in q._state.ready_items()} == expected
    assert max(during) < await q.submit_sync(block(999), submitted_by="t")  # ids move on
    await q.close()


async def test_a_compaction_that_fails_to_write_keeps_the_old_log(tmp_path: Path) -> None:
    class _Full(OsFileLayer):
        full = False

        def create(self, path: str) -> LogHandle:
            if self.full and path.endswith(TEMP_SUFFIX):
                raise OSError(28, "No space left on device")
            return super().create(path)

    layer = _Full()
    q = await QppValidatorQueue.open("v", tmp_path, layer=layer)
    ids = [await q.submit_sync(block(i), submitted_by="t") for i in range(10)]
    layer.full = True
    with pytest.raises(WriteFailed, match="compaction failed"):
        await q.compact_wal()
    more = await q.submit_sync(block(11), submitted_by="t")  # the queue still works
    await q.close()
    assert not (tmp_path / f"v.wal{TEMP_SUFFIX}").exists()
    q = await QppValidatorQueue.open("v", tmp_path)
    assert {i.message_id for i in q._state.ready_items()} == {*ids, more}
    await q.close()
