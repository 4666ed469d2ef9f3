"""Group commit: every record queued while a write+fsync is in flight goes into the
next batch, which is written as ONE frame and made durable with ONE fsync.

A batch has one future, shared by every caller in it, resolved after its fsync.
There is no writer task and no extra loop turn: the first record of a batch schedules
the flush with `call_soon`, so every caller that runs in the same loop iteration
joins that batch. The flush writes and fsyncs on the event loop thread when nothing
else is ready to run (a thread hop would cost a large part of the fsync, and the
loop would only wait anyway); otherwise the fsync runs in the worker thread while
the loop goes on, and the records queued meanwhile form the next batch, flushed the
moment this one is durable. A failed write is rolled back and fails just that batch;
a failed fsync is fatal.

Cancelling a caller never cancels the shared future (see `_BatchFuture`): a caller
cancelled before its batch is written is left out of the batch and rolled back
(nothing happened); once the batch is written its operation stands, and the caller
sees the cancellation when it resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context
from typing import Any, TypeVar

from sidecar.errors import LogFailed, Unavailable
from sidecar.observer import QueueObserver
from sidecar.wal import WriteAheadLog, WriteFailed, encode_frame

R = TypeVar("R")

# (op code, record bytes, the batch's future or None, payload)
Op = tuple[int, bytes, "asyncio.Future[None] | None", Any]
BatchHandler = Callable[[list[Op]], None]


class _BatchFuture(asyncio.Future[None]):
    """The one future of a batch.

    Its callers are tasks awaiting it: cancelling one of them calls `cancel()` here,
    which must not cancel the batch for all others. Refused, the task is cancelled when
    the batch completes (asyncio's rule for a future that will not cancel), and the
    committer leaves it out if not yet written (it looks for such callers only in a
    batch that saw a `cancel()`).

    Its done-callbacks (each caller's task wake-up) run in ONE loop callback when the
    batch completes, in the order they were added and each in its own context, as
    asyncio would run them as one callback each: a batch of 16 callers costs one
    `call_soon` and one turn of the loop's dispatch, not 16.
    """

    cancel_asked = False

    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._waiting: list[tuple[Callable[[_BatchFuture], object], Context | None]] = []

    def add_done_callback(
        self, fn: Callable[[_BatchFuture], object], *, context: Context | None = None
    ) -> None:
        if self.done():  # asyncio schedules it at once
            super().add_done_callback(fn, context=context)
        else:
            self._waiting.append((fn, context))

    def remove_done_callback(self, fn: Callable[[_BatchFuture], object]) -> int:
        kept = [w for w in self._waiting if w[0] != fn]
        removed = len(self._waiting) - len(kept)
        self._waiting = kept
        return removed + super().remove_done_callback(fn)

    def set_result(self, result: None) -> None:
        super().set_result(result)
        self.get_loop().call_soon(self._wake)

    def set_exception(self, exception: type | BaseException) -> None:
        super().set_exception(exception)
        self.get_loop().call_soon(self._wake)

    def cancel(self, msg: Any = None) -> bool:
        self.cancel_asked = True
        return False

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for fn, context in waiting:
            try:
                if context is None:
                    fn(self)
                else:
                    context.run(fn, self)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as asyncio's Handle does for each callback
                self.get_loop().call_exception_handler(
                    {"message": f"Exception in callback {fn!r}", "exception": exc, "future": self}
                )


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
        # fsync on the loop thread when nothing else is ready (False: always the worker)
        self.inline_single = inline_single
        self._on_commit = on_commit
        self._on_rollback = on_rollback
        self._on_idle = on_idle
        self._on_fatal = on_fatal
        self._observer = observer
        self._loop = asyncio.get_running_loop()
        self._pending: list[Op] = []
        self._callers: list[asyncio.Task[Any] | None] = []  # beside _pending
        self._batch: _BatchFuture | None = None  # the future of the pending records
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-io")
            if wal.layer.blocking
            else None
        )
        self._jobs: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self.fatal: LogFailed | None = None
        self._busy = False  # a batch or job is being written
        self._scheduled = False  # a flush is scheduled with call_soon
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None
        self.batches = 0
        self.records = 0

    # -- entry points --------------------------------------------------------------------
    def commit(self, code: int, record: bytes, payload: Any) -> asyncio.Future[None]:
        """Queue a record for the next batch; await the returned (shared) future: it
        resolves once the record is durable, or fails with the batch."""
        return self._queue(code, record, payload, asyncio.current_task(self._loop))

    def enqueue(self, code: int, record: bytes, payload: Any) -> asyncio.Future[None]:
        """`commit` for a record nobody awaits (its failure reaches `on_rollback`). It
        belongs to no caller: the task that queued it being cancelled (a submit that
        happened to request the next id block) never leaves it out of its batch."""
        return self._queue(code, record, payload, None)

    def _queue(
        self, code: int, record: bytes, payload: Any, caller: asyncio.Task[Any] | None
    ) -> asyncio.Future[None]:
        if self.fatal is not None or self._stopping:
            self._check_accepting()
        batch = self._batch
        if batch is None:
            batch = self._batch = _BatchFuture(loop=self._loop)
            batch.add_done_callback(_retrieve)
            self._schedule()
        self._pending.append((code, record, batch, payload))
        self._callers.append(caller)
        return batch

    def _check_accepting(self) -> None:
        if self.fatal is not None:
            raise self.fatal
        if self._stopping:
            raise Unavailable(f"{self.wal.path}: the log is shutting down")

    async def run_exclusive(self, job: Callable[[], R]) -> R:
        """Run `job` (short blocking log work: a compaction's start and swap) between
        two batches, as soon as the batch being written is done."""
        fut: asyncio.Future[R] = self._loop.create_future()
        self._jobs.append((job, fut))
        self._schedule()
        return await fut

    async def io(self, fn: Callable[..., R], *args: Any) -> R:
        if self._executor is None:
            return fn(*args)
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def stop(self) -> None:
        """Finish every queued batch and job, then stop."""
        self._stopping = True
        if self._stopped is None:
            self._stopped = self._loop.create_future()
        self._schedule()
        await self._stopped

    def detach(self) -> None:
        """Drop the callbacks into the queue (breaks the reference cycle at close)."""
        noop: Callable[..., None] = _noop
        self._on_commit = self._on_rollback = noop
        self._on_idle = self._on_fatal = noop

    def shutdown_io(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- the flush -----------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self._scheduled and not self._busy:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Run a waiting job, else write what is queued as a batch, else report idle."""
        self._scheduled = False
        if self._busy:
            return
        if self.fatal is not None:
            self._fail_all(self.fatal)
        elif self._jobs:  # before the next batch: callers that never pause cannot starve it
            self._start_job()
            return
        elif self._pending:
            self._start_batch()
            return
        if self.fatal is None:
            self._on_idle()
            if self._pending or self._jobs:  # the idle hook may queue work
                self._schedule()
                return
        if self._stopping and self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _take_batch(self) -> tuple[list[Op], _BatchFuture]:
        """The pending records minus those whose caller was cancelled (rolled back)."""
        pending, callers = self._pending, self._callers
        batch = self._batch
        assert batch is not None
        self._pending, self._callers, self._batch = [], [], None
        if not batch.cancel_asked or not any(_cancelled_waiter(t, batch) for t in callers):
            return pending, batch
        kept: list[Op] = []
        dropped: list[Op] = []
        for op, task in zip(pending, callers, strict=True):
            (dropped if _cancelled_waiter(task, batch) else kept).append(op)
        self._on_rollback(dropped)
        return kept, batch

    def _start_batch(self) -> None:
        ops, fut = self._take_batch()
        if not ops:
            fut.set_result(None)  # only cancelled callers: they wake to their cancellation
            self._schedule()
            return
        frame = encode_frame([op[1] for op in ops])
        started = time.perf_counter()
        if self._executor is None or (self.inline_single and not _others_ready(self._loop)):
            try:
                self.wal.append_and_sync(frame)
            except BaseException as exc:
                self._failed(ops, fut, exc)
            else:
                self._committed(ops, fut, started)
            self._schedule()
            return
        self._busy = True
        self._executor.submit(self._write_in_worker, frame, ops, fut, started)

    def _write_in_worker(
        self, frame: bytes, ops: list[Op], fut: _BatchFuture, started: float
    ) -> None:
        """In the worker thread: write and fsync, then hand the outcome straight to the
        loop (one callback, not an executor future chained to an asyncio future)."""
        exc: BaseException | None = None
        try:
            self.wal.append_and_sync(frame)
        except BaseException as e:  # handed to the loop: a failed fsync is fatal there
            exc = e
        self._loop.call_soon_threadsafe(self._batch_written, exc, ops, fut, started)

    def _batch_written(
        self, exc: BaseException | None, ops: list[Op], fut: _BatchFuture, started: float
    ) -> None:
        self._busy = False
        if exc is not None:
            self._failed(ops, fut, exc)
        else:
            self._committed(ops, fut, started)
        self._flush()  # the records queued meanwhile: at once, they all had their turn

    def _failed(self, ops: list[Op], fut: _BatchFuture, exc: BaseException) -> None:
        if not isinstance(exc, WriteFailed):
            self._die(exc, ops, fut)
            return
        self._on_rollback(ops)
        if not fut.done():
            fut.set_exception(exc)

    def _committed(self, ops: list[Op], fut: _BatchFuture, started: float) -> None:
        self.batches += 1
        self.records += len(ops)
        self._observer.on_fsync(time.perf_counter() - started, len(ops))
        self._observer.on_log_bytes(self.wal.size)
        self._on_commit(ops)
        if not fut.done():
            fut.set_result(None)

    def _start_job(self) -> None:
        job, fut = self._jobs.pop(0)
        self._busy = True
        if self._executor is None:
            self._job_done(fut, job, None)
            return
        work = self._loop.run_in_executor(self._executor, job)
        work.add_done_callback(lambda w: self._job_done(fut, None, w))

    def _job_done(
        self,
        fut: asyncio.Future[Any],
        job: Callable[[], Any] | None,
        work: asyncio.Future[Any] | None,
    ) -> None:
        self._busy = False
        try:
            result = job() if job is not None else work.result() if work is not None else None
        except WriteFailed as exc:
            if not fut.done():
                fut.set_exception(exc)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, LogFailed) else LogFailed(str(exc)))
            self._die(exc, [], None)
        else:
            if not fut.done():
                fut.set_result(result)
        self._flush()

    def _die(self, exc: BaseException, ops: list[Op], fut: _BatchFuture | None) -> None:
        if isinstance(exc, LogFailed):
            self.fatal = exc
        else:
            self.fatal = LogFailed(
                f"{self.wal.path}: log I/O failed ({exc!r}); the queue has stopped, "
                "restart to recover from what is on disk"
            )
        if fut is not None and not fut.done():
            fut.set_exception(self.fatal)
        self._fail_all(self.fatal)
        self._on_fatal()

    def _fail_all(self, exc: LogFailed) -> None:
        batch, self._batch = self._batch, None
        self._pending, self._callers = [], []
        if batch is not None and not batch.done():
            batch.set_exception(exc)
        jobs, self._jobs = self._jobs, []
        for _, fut in jobs:
            if not fut.done():
                fut.set_exception(exc)
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)


def _cancelled_waiter(task: asyncio.Task[Any] | None, batch: _BatchFuture) -> bool:
    """Whether `task` (current when the record was queued) waits on this batch and will
    be cancelled when it wakes (asyncio's Task keeps both in private attributes). Not
    `cancelling()`: that stays above 0 in a task that swallowed an earlier cancellation,
    which wakes normally and would report a record left out as logged. A record queued
    outside the task that awaits it (a request run eagerly before its task exists) is
    never left out: its operation stands."""
    return (
        task is not None
        and getattr(task, "_must_cancel", False)
        and getattr(task, "_fut_waiter", None) is batch
    )


def _others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether other callbacks wait to run in this loop iteration (asyncio's default
    loops keep them in `_ready`). A loop without it (uvloop) counts as idle, so every
    batch is fsync'd on the loop thread. That was measured to be the better choice
    there: sending a batch to the worker unless all its records came from the callers
    the last batch woke cost 10-32 % of the SSH server's sync submits/s (16
    connections, pipelined and not, 2 runs of 3 rounds against the old tree), and an
    in-process caller wants the inline fsync anyway."""
    return bool(getattr(loop, "_ready", ()))


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _noop(*_: Any) -> None:
    return None
