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
        on_fatal: Callable[[], None],
        observer: QueueObserver,
        inline_single: bool = True,
    ) -> None:
        self.wal = wal
        self.inline_single = inline_single
        self._on_commit = on_commit
        self._on_rollback = on_rollback
        self._on_idle = on_idle
        self._on_fatal = on_fatal
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
        self._busy = False  # a batch or job is being written
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

    def withdraw(self, fut: asyncio.Future[None]) -> Op | None:
        """Take a record back out if its batch has not been started (a cancelled caller)."""
        for i, op in enumerate(self._pending):
            if op[2] is fut:
                del self._pending[i]
                return op
        return None

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

    def detach(self) -> None:
        """Drop the callbacks into the queue (breaks the reference cycle at close)."""
        noop: Callable[..., None] = _noop
        self._on_commit = self._on_rollback = noop
        self._on_idle = self._on_fatal = noop

    def shutdown_io(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def commit(self, code: int, record: bytes, payload: Any) -> asyncio.Future[None]:
        """Queue a record and return its future, once it is durable or has failed.

        The fast path for a lone caller: give concurrent callers one loop turn to join;
        if nobody did and no batch is in flight, write and fsync right here (a thread
        hop would cost a large part of the fsync it waits for, and the loop would only
        wait for it anyway). Otherwise the writer task takes the whole batch and runs
        its fsync in the worker thread while the loop accepts the next batch.
        """
        fut: asyncio.Future[None] = self._loop.create_future()
        op: Op = (code, record, fut, payload)
        self._pending.append(op)
        if self._busy or self._jobs or not self.inline_single:
            self._wake.set()
            return fut
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self.withdraw(fut) is not None:
                self._on_rollback([op])
            raise
        pending = self._pending
        if not fut.done() and not self._busy and len(pending) == 1 and pending[0] is op:
            self._pending = []
            self._busy = True
            try:
                self._write_inline(pending)
            finally:
                self._busy = False
            if not self._pending and not self._jobs and self.fatal is None:
                self._on_idle()
        elif not fut.done():
            self._wake.set()
        return fut

    # -- the writer ----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (self._pending or self._jobs) and self.fatal is None:
                self._busy = True
                try:
                    if self._pending:
                        await self._commit_batch()
                    elif self._jobs:
                        await self._run_job()
                finally:
                    self._busy = False
                if not self._pending and not self._jobs:
                    self._on_idle()
            if self.fatal is not None:
                self._fail_all(self.fatal)
            if self._stopping and not self._pending and not self._jobs:
                return

    async def _commit_batch(self) -> None:
        batch, self._pending = self._pending, []
        if len(batch) == 1 and self.inline_single:
            self._write_inline(batch)
            return
        frame = encode_frame([op[1] for op in batch])
        started = time.perf_counter()
        try:
            await self.io(self.wal.append_and_sync, frame)
        except BaseException as exc:
            self._failed(batch, exc)
            return
        self._committed(batch, started)

    def _write_inline(self, batch: list[Op]) -> None:
        frame = encode_frame([op[1] for op in batch])
        started = time.perf_counter()
        try:
            self.wal.append_and_sync(frame)
        except BaseException as exc:
            self._failed(batch, exc)
            return
        self._committed(batch, started)

    def _failed(self, batch: list[Op], exc: BaseException) -> None:
        if not isinstance(exc, WriteFailed):
            self._die(exc, batch)
            return
        self._on_rollback(batch)
        for op in batch:
            if op[2] is not None and not op[2].done():
                op[2].set_exception(exc)

    def _committed(self, batch: list[Op], started: float) -> None:
        self.batches += 1
        self.records += len(batch)
        self._observer.on_fsync(time.perf_counter() - started, len(batch))
        self._observer.on_log_bytes(self.wal.size)
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
        self._on_fatal()

    def _fail_all(self, exc: LogFailed) -> None:
        pending, self._pending = self._pending, []
        for op in pending:
            if op[2] is not None and not op[2].done():
                op[2].set_exception(exc)
        jobs, self._jobs = self._jobs, []
        for _, fut in jobs:
            if not fut.done():
                fut.set_exception(exc)


def _noop(*_: Any) -> None:
    return None
