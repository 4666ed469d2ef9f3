"""Group commit: every record queued while a write+fsync is in flight goes into the
next batch, which is written as ONE frame and made durable with ONE fsync.

The fsync runs in a worker thread, so the event loop keeps accepting requests while
the disk works. A caller's future completes only after the fsync of its record.
A failed write is rolled back and fails just that batch; a failed fsync is fatal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sidecar.errors import LogFailed
from sidecar.observer import QueueObserver
from sidecar.wal import WriteAheadLog, WriteFailed, encode_frame

R = TypeVar("R")

# (op code, record bytes, future or None, payload) — tuples keep the hot path lean
Op = tuple[int, bytes, "asyncio.Future[None] | None", Any]
BatchHandler = Callable[[list[Op]], None]


class GroupCommitter:
    def __init__(
        self,
        wal: WriteAheadLog,
        *,
        on_commit: BatchHandler,
        on_rollback: BatchHandler,
        on_idle: Callable[[], None],
        observer: QueueObserver,
        inline_single: bool = True,
    ) -> None:
        self.wal = wal
        self.inline_single = inline_single
        self._on_commit = on_commit
        self._on_rollback = on_rollback
        self._on_idle = on_idle
        self._observer = observer
        self._loop = asyncio.get_running_loop()
        self._pending: list[Op] = []
        self._wake = asyncio.Event()
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-io")
            if wal.layer.blocking
            else None
        )
        self._jobs: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self.fatal: LogFailed | None = None
        self._stopping = False
        self.batches = 0
        self.records = 0
        self._task = self._loop.create_task(self._run(), name=f"wal-commit:{wal.path}")

    # -- entry points --------------------------------------------------------------------
    def enqueue(self, code: int, record: bytes, payload: Any) -> asyncio.Future[None]:
        """Queue a record for the next batch; the future resolves once it is durable."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pending.append((code, record, fut, payload))
        self._wake.set()
        return fut

    async def run_exclusive(self, job: Callable[[], R]) -> R:
        """Run `job` (blocking log work, e.g. compaction) between two batches."""
        fut: asyncio.Future[R] = self._loop.create_future()
        self._jobs.append((job, fut))
        self._wake.set()
        return await fut

    async def io(self, fn: Callable[..., R], *args: Any) -> R:
        if self._executor is None:
            return fn(*args)
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def stop(self) -> None:
        """Finish every queued batch and job, then stop."""
        self._stopping = True
        self._wake.set()
        await self._task

    def shutdown_io(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- the writer ----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (self._pending or self._jobs) and self.fatal is None:
                if self._pending:
                    await self._commit_batch()
                elif self._jobs:
                    await self._run_job()
                if not self._pending and not self._jobs:
                    self._on_idle()
            if self.fatal is not None:
                self._fail_all(self.fatal)
            if self._stopping and not self._pending and not self._jobs:
                return

    async def _commit_batch(self) -> None:
        batch, self._pending = self._pending, []
        frame = encode_frame([op[1] for op in batch])
        started = time.perf_counter()
        try:
            if len(batch) == 1 and self.inline_single:
                # A lone record: a thread hop would cost a large part of the fsync it
                # waits for, so sync it inline (the loop would only wait for it anyway).
                # From two records on, the fsync runs in the worker thread and the loop
                # keeps accepting the next batch.
                self.wal.append_and_sync(frame)
            else:
                await self.io(self.wal.append_and_sync, frame)
        except WriteFailed as exc:
            self._on_rollback(batch)
            for op in batch:
                if op[2] is not None and not op[2].done():
                    op[2].set_exception(exc)
            return
        except BaseException as exc:
            self._die(exc, batch)
            return
        self.batches += 1
        self.records += len(batch)
        self._observer.on_fsync(time.perf_counter() - started, len(batch))
        self._on_commit(batch)
        for op in batch:
            if op[2] is not None and not op[2].done():
                op[2].set_result(None)

    async def _run_job(self) -> None:
        job, fut = self._jobs.pop(0)
        try:
            result = await self.io(job)
        except WriteFailed as exc:
            if not fut.done():
                fut.set_exception(exc)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, LogFailed) else LogFailed(str(exc)))
            self._die(exc, [])
        else:
            if not fut.done():
                fut.set_result(result)

    def _die(self, exc: BaseException, batch: list[Op]) -> None:
        if isinstance(exc, LogFailed):
            self.fatal = exc
        else:
            self.fatal = LogFailed(
                f"{self.wal.path}: log I/O failed ({exc!r}); the queue has stopped, "
                "restart to recover from what is on disk"
            )
        self._pending = batch + self._pending
        self._fail_all(self.fatal)

    def _fail_all(self, exc: LogFailed) -> None:
        pending, self._pending = self._pending, []
        for op in pending:
            if op[2] is not None and not op[2].done():
                op[2].set_exception(exc)
        jobs, self._jobs = self._jobs, []
        for _, fut in jobs:
            if not fut.done():
                fut.set_exception(exc)
