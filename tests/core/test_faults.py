"""Fault handling: a failed fsync stops the queue for good; a failed write is rolled back."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar import LogFailed, QppValidatorQueue, QueueMessage, Unavailable
from sidecar.errors import AsyncMessagesLost
from sidecar.wal import LogHandle, OsFileLayer, scan
from tests.core.helpers import block, tx
from tests.core.simfs import SimDisk


def _durable(disk: SimDisk) -> dict[str, bytes]:
    return {p: bytes(i.durable) for p, i in disk.names.items()}


async def test_failed_fsync_fails_every_pending_ack_and_refuses_new_work() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    acked = [await q.submit_sync(block(i), submitted_by="t") for i in range(3)]
    disk.fail_sync = lambda: True
    syncs_before = disk.syncs
    results = await asyncio.gather(
        *(q.submit_sync(block(10 + i), submitted_by="t") for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, LogFailed) for r in results)
    assert "fsync failed" in str(results[0])
    assert "Restart" in str(results[0])
    disk.fail_sync = None  # even if the disk "recovers", the queue must not retry
    for call in (
        q.submit_sync(block(99), submitted_by="t"),
        q.submit_async(block(99), submitted_by="t"),
        q.pop(),
        q.lease(timeout=1),
    ):
        with pytest.raises(LogFailed):
            await call
    assert disk.syncs == syncs_before + 1  # one failed fsync, never retried
    assert q.stats()["fatal"] is not None
    with pytest.raises(LogFailed):
        await q.close()
    q2 = await QppValidatorQueue.open("v", "/d", layer=SimDisk(_durable(disk)))
    ids = {i.message_id for i in q2._state.ready_items()}
    assert set(acked) <= ids
    await q2.close()


async def test_failed_fsync_of_a_pop_stops_the_queue_and_the_message_survives() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    mid = await q.submit_sync(block(1), submitted_by="t")
    disk.fail_sync = lambda: True
    with pytest.raises(LogFailed):
        await q.pop()
    with pytest.raises(Unavailable):
        await q.submit_sync(block(2), submitted_by="t")
    q2 = await QppValidatorQueue.open("v", "/d", layer=SimDisk(_durable(disk)))
    assert [i.message_id for i in q2._state.ready_items()] == [mid]  # never delivered
    await q2.close()


async def test_enospc_on_write_is_reported_rolled_back_and_loses_nothing_acked() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    acked = [await q.submit_sync(tx(i), submitted_by="t") for i in range(3)]
    size_before = len(disk.names["/d/v.wal"].data)
    disk.fail_write = lambda data: len(data) // 2  # half written, then ENOSPC
    with pytest.raises(LogFailed, match="ENOSPC") as info:
        await q.submit_sync(tx(50), submitted_by="t")
    assert "nothing of this batch was logged" in str(info.value)
    assert len(disk.names["/d/v.wal"].data) == size_before  # rolled back
    assert q.depth()["total"] == 3  # the failed submit is not in the queue
    disk.fail_write = None
    acked.append(await q.submit_sync(tx(51), submitted_by="t"))  # still working
    h = await q.pop()
    assert h is not None
    popped = h.consume().message_id
    await q.close()
    q2 = await QppValidatorQueue.open("v", "/d", layer=SimDisk(_durable(disk)))
    ids = {i.message_id for i in q2._state.ready_items()}
    assert ids == set(acked) - {popped}
    await q2.close()


async def test_failed_consume_write_puts_the_message_back() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    mid = await q.submit_sync(block(1), submitted_by="t")
    disk.fail_write = lambda data: 0
    with pytest.raises(LogFailed):
        await q.pop()
    disk.fail_write = None
    h = await q.pop()
    assert h is not None
    assert h.consume().message_id == mid
    await q.close()


async def test_failed_ack_write_keeps_the_lease() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    await q.submit_sync(block(1), submitted_by="t")
    lease = await q.lease(timeout=30)
    assert lease is not None
    disk.fail_write = lambda data: 0
    with pytest.raises(LogFailed):
        await q.ack(lease)
    disk.fail_write = None
    await q.ack(lease)  # the lease was restored, the ack can be retried
    assert q.depth()["total"] == 0
    await q.close()


class _FailingSync:
    """A real log handle whose fsync fails once its layer says so (a dying disk)."""

    def __init__(self, inner: LogHandle, layer: _EioLayer) -> None:
        self._inner = inner
        self._layer = layer

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def sync(self) -> None:
        if self._layer.fail:
            raise OSError(errno.EIO, "Input/output error (injected)")
        self._inner.sync()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()


class _EioLayer(OsFileLayer):
    fail = False

    def open_append(self, path: str) -> LogHandle:
        return _FailingSync(super().open_append(path), self)


async def test_fsync_eio_on_the_real_file_layer_is_fatal(tmp_path: Path) -> None:
    layer = _EioLayer()
    q = await QppValidatorQueue.open("v", tmp_path, layer=layer)
    acked = await q.submit_sync(block(1), submitted_by="t")
    layer.fail = True
    with pytest.raises(LogFailed, match="EIO"):
        await q.submit_sync(block(2), submitted_by="t")
    with pytest.raises(LogFailed):
        await q.submit_sync(block(3), submitted_by="t")
    with pytest.raises(LogFailed):
        await q.close()
    q2 = await QppValidatorQueue.open("v", tmp_path)
    assert acked in {i.message_id for i in q2._state.ready_items()}
    await q2.close()


_ROOT = os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _ROOT, reason="mounting a small tmpfs needs root and mount(8)")
async def test_real_enospc_on_a_full_tmpfs_loses_nothing_acked(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=False
    )
    if res.returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here (container without CAP_SYS_ADMIN)")
    try:
        q = await QppValidatorQueue.open("v", mnt)
        big = QueueMessage.create("transaction", tx_hash=bytes(32), tx_data=os.urandom(6000))
        acked: list[int] = []
        error: LogFailed | None = None
        for _ in range(200):  # 200 x ~8 KiB is far more than 256 KiB
            try:
                acked.append(await q.submit_sync(big, submitted_by="t"))
            except LogFailed as exc:
                error = exc
                break
        assert error is not None, "the tmpfs never filled up"
        assert "ENOSPC" in str(error)
        assert q.failed is None  # a failed write is not fatal
        await q.close()
        assert scan((mnt / "v.wal").read_bytes()).clean  # rolled back, no torn frame
        q2 = await QppValidatorQueue.open("v", mnt)
        assert [i.message_id for i in q2._state.ready_items()] == acked
        await q2.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


async def test_close_on_a_full_disk_waits_for_space_then_counts_the_async_messages_lost() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    for i in range(7):
        await q.submit_async(block(i), submitted_by="t")
    disk.fail_write = lambda data: 0  # ENOSPC, and it stays so
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(AsyncMessagesLost, match="ENOSPC") as info:
        await q.close(wait_for_space=0.3)
    assert info.value.lost == 7
    assert loop.time() - began >= 0.3  # it waited before giving up
    q2 = await QppValidatorQueue.open("v", "/d", layer=SimDisk(_durable(disk)))
    assert q2.depth()["total"] == 0
    await q2.close()


async def test_close_on_a_full_disk_keeps_everything_when_space_returns_in_time() -> None:
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    ids = [await q.submit_async(block(i), submitted_by="t") for i in range(7)]
    disk.fail_write = lambda data: 0

    async def free_space_later() -> None:
        await asyncio.sleep(0.3)
        disk.fail_write = None

    freeing = asyncio.create_task(free_space_later())
    await q.close(wait_for_space=30)
    await freeing
    q2 = await QppValidatorQueue.open("v", "/d", layer=SimDisk(_durable(disk)))
    assert {i.message_id for i in q2._state.ready_items()} == set(ids)
    await q2.close()


async def test_close_counts_only_the_frames_it_could_not_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sidecar.queue._CLOSE_FRAME_BYTES", 1)  # one record per frame
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk)
    ids = [await q.submit_async(block(i), submitted_by="t") for i in range(5)]
    writes = 0

    def third_write_fails(data: bytes) -> int | None:
        nonlocal writes
        writes += 1
        return 0 if writes >= 3 else None

    disk.fail_write = third_write_fails
    with pytest.raises(AsyncMessagesLost) as info:
        await q.close()
    assert info.value.lost == 3
    q2 = await QppValidatorQueue.open("v", "/d", layer=SimDisk(_durable(disk)))
    assert {i.message_id for i in q2._state.ready_items()} == set(ids[:2])
    await q2.close()
