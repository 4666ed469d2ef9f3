"""`QppValidatorQueue`: the asyncio shell over the pure state, the log and group commit.

Durability rules (SPEC §4):
* sync submit: returns its id only after its submit record is fsync'd; the message is
  visible to consumers from then on.
* async submit: memory only, no disk I/O; written to the log by `close()`.
* pop / ack of a logged message: the consume record is fsync'd before the call returns.
* ids come from blocks reserved durably ahead of use, so no id is ever handed out twice,
  whatever is lost in a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sidecar.commit import GroupCommitter, Op
from sidecar.dedup import (
    DedupIndex,
    DedupKey,
    DedupLimits,
    Submitted,
    check_dedup_id,
    relay_principal,
)
from sidecar.durable_fs import make_dirs
from sidecar.errors import AsyncMessagesLost, InvalidMessage, LogFailed, Unavailable
from sidecar.gc_policy import GcFreezer
from sidecar.handles import NoClone
from sidecar.live import DurableLive
from sidecar.messages import Kind, Mode, QueueMessage, QueueMessageWithProvenance, resolve_mode
from sidecar.observer import NULL_OBSERVER, QueueObserver
from sidecar.relay_backlog import PeerBacklog, RelayBacklog
from sidecar.state import Lease, QueueLimits, QueueState
from sidecar.wal import (
    Compaction,
    FileLayer,
    Live,
    LogLock,
    OsFileLayer,
    Recovery,
    WriteAheadLog,
    WriteFailed,
    checkpoint_record,
    consume_record,
    dedup_record,
    encode_frame,
    live_broadcast,
    live_item,
    live_record,
    relayed_record,
    reserve_record,
    submit_record,
    watermark_record,
)

log = logging.getLogger("sidecar.queue")

# Ids are reserved durably in blocks. A block starts small, so a restart (which resumes
# above the last reservation) skips few ids; it doubles while ids go fast and halves
# while they go slowly, so a busy queue writes a reservation record rarely.
FIRST_ID_BLOCK = 1 << 10
ID_BLOCK = 1 << 20  # the largest block
_BLOCK_FAST, _BLOCK_SLOW = 1.0, 10.0  # seconds a block lasted: grow below, shrink above
DEFAULT_COMPACT_BYTES = 10 * 1024 * 1024
_MIN_COMPACT_BYTES = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CLOSE_FRAME_BYTES = 8 * 1024 * 1024
# how often a close that found the disk full tries its write again
_SPACE_RETRY_SECONDS = 0.1
_FREEZE_AT = 50_000  # recovered messages from which gc.freeze() pays off
_GC = GcFreezer()  # gc.freeze is process-wide: one policy for every queue
# live messages a compaction step serialises (about 1 ms of Python in the worker: the
# event loop waits for the GIL at most that long, not the 5 ms switch interval)
COMPACTION_CHUNK = 512
R = TypeVar("R")

Origin = tuple[str, int]  # (the sidecar a relayed message was submitted to, its id there)
Clock = Callable[[], float]  # seconds; time.monotonic and time.time unless a test gives one

# op codes for the group committer
_SUBMIT, _CONSUME_POP, _CONSUME_ACK, _RESERVE, _SUBMIT_ONCE, _RELAYED, _WATERMARK = range(7)
_PERSIST, _KEY_DURABLE = 7, 8  # a sync retry of an async dedup key: its message, its key


class QppValidatorQueue:
    """One validator's durable priority queue. Create with `await QppValidatorQueue.open()`."""

    def __init__(
        self,
        name: str,
        persist_dir: str | os.PathLike[str],
        *,
        limits: QueueLimits | None = None,
        observer: QueueObserver | None = None,
        layer: FileLayer | None = None,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
        inline_lone_sync: bool = True,
        dedup: DedupLimits | None = None,
        peers: Sequence[str] = (),
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise InvalidMessage(f"queue name {name!r} must be 1-64 of [A-Za-z0-9_.-]")
        self.name = name
        self.persist_dir = os.fspath(persist_dir)
        self.path = os.path.join(self.persist_dir, f"{name}.wal")  # as the operator named it
        # the file a symlink names: the log's renames (compaction) replace that file
        # and keep the link, and its lock (next to the real file) stays where it was
        self._file = os.path.realpath(self.path)
        self._layer = layer or OsFileLayer()
        self._observer = observer or NULL_OBSERVER
        self._clock = clock
        self._wall_clock = wall_clock
        self._state = QueueState(limits)
        self._dedup = DedupIndex(dedup)
        self._dedup_waits: dict[DedupKey, asyncio.Future[None]] = {}
        # async messages submitted with a dedup key, until consumed or written: a sync
        # retry of that key makes its message durable (`_make_durable`)
        self._async_keyed: dict[int, QueueMessageWithProvenance] = {}
        self._persisting: dict[int, asyncio.Future[None]] = {}  # those being written so
        self._relay = RelayBacklog(peers)
        self._relay_news = {peer: asyncio.Event() for peer in peers}
        self.relayed = dict.fromkeys(peers, 0)  # relays acknowledged since open, per peer
        self._pending_broadcast: set[int] = set()  # ids of sync broadcast submits in flight
        # consumed here, still lacked by a peer: id -> size, counted against the limits
        self._kept_for_peers: dict[int, int] = {}
        self._compact_bytes = compact_bytes
        self._inline_lone_sync = inline_lone_sync
        self._committer: GroupCommitter | None = None
        self._durable_live = DurableLive()
        self._next_id = 1
        self._reserved_upto = 1  # ids below this are durably reserved
        self._reserve_pending = False
        self._reserve_waiters: list[asyncio.Future[None]] = []
        self._block = _first_block()
        self._block_since = self._clock()
        self._waiters: list[asyncio.Future[None]] = []
        self._closing = False
        self._closed = False
        self._compacting = False
        self._compaction_lock = asyncio.Lock()
        self.compaction_chunk = COMPACTION_CHUNK
        self._compaction_thread: ThreadPoolExecutor | None = None
        self._log_records = 0  # records in the current log file
        self._lock: LogLock | None = None
        self.recovery: Recovery | None = None
        self.compactions = 0
        self.redeliveries = 0

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        name: str,
        persist_dir: str | os.PathLike[str],
        *,
        salvage: bool = False,
        limits: QueueLimits | None = None,
        observer: QueueObserver | None = None,
        layer: FileLayer | None = None,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
        inline_lone_sync: bool = True,
        dedup: DedupLimits | None = None,
        peers: Sequence[str] = (),
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        progress: Callable[[int, int], None] | None = None,
    ) -> QppValidatorQueue:
        """Open (creating if needed) and recover the queue `name` in `persist_dir`.

        `salvage`: open a log with mid-log corruption by keeping every valid record and
        setting the damaged file aside. `limits`: count and byte limits (`QueueFull`).
        `compact_bytes`: log size that triggers automatic compaction. `inline_lone_sync`:
        a batch is fsync'd on the event loop thread when nothing else is ready to run
        (a thread hop would cost a large part of the fsync); False: always the worker.
        `dedup`: window and size of the `submit_once` index. `peers`: the names of the
        peers broadcast messages are relayed to (docs/relay.md). `clock` (lease deadlines,
        waits) and `wall_clock` (created_at, the dedup window): tests pass their own.
        `progress(bytes_read, total)`: called while a large log is read back (from the
        recovery thread).
        """
        q = cls(
            name,
            persist_dir,
            limits=limits,
            observer=observer,
            layer=layer,
            compact_bytes=compact_bytes,
            inline_lone_sync=inline_lone_sync,
            dedup=dedup,
            peers=peers,
            clock=clock,
            wall_clock=wall_clock,
        )
        if layer is None:
            make_dirs(q.persist_dir)  # the log's own name is durable only with these
            q._lock = LogLock(q._file)
            q._lock.acquire()
        try:
            await q.restore_from_wal(salvage=salvage, progress=progress)
        except BaseException:
            if q._lock is not None:
                q._lock.release()
            raise
        return q

    async def restore_from_wal(
        self, *, salvage: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Recover from the log (the open path); returns how many messages came back."""
        if self._committer is not None:
            raise Unavailable("the queue is already open")
        loop = asyncio.get_running_loop()

        def recover() -> tuple[WriteAheadLog, Recovery]:
            wal, rec = WriteAheadLog.open(
                self._file, layer=self._layer, salvage=salvage, progress=progress
            )
            assert rec.replayed is not None
            upto = rec.replayed.next_id + self._block
            wal.append_and_sync(encode_frame([reserve_record(upto)]))
            return wal, rec

        # Millions of small objects are created and none is garbage: the cyclic collector
        # is paused meanwhile, and what survives is moved to its permanent generation
        # (gc.freeze, for large recoveries) so it is not rescanned later; reference
        # counting still frees each message when it is consumed. Without this, recovery
        # takes several times longer.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            try:
                if self._layer.blocking:
                    wal, rec = await loop.run_in_executor(None, recover)
                else:
                    wal, rec = recover()
            except OSError as exc:
                raise LogFailed(f"{self.path}: cannot open the log: {exc}") from exc
            assert rec.replayed is not None
            self.recovery = rec
            self._next_id = rec.replayed.next_id
            self._reserved_upto = self._next_id + self._block
            self._block_since = self._clock()
            self._log_records = rec.records + 1
            # the replayed id -> message dict becomes the index of logged messages; its
            # plain records are built into messages as they are first used
            replayed = rec.replayed
            runs, size = replayed.runs(), replayed.size()
            live, replayed.live = replayed.live, {}
            self._durable_live = DurableLive(live)
            self._state.load_logged(runs, self._durable_live.item, size, issued_below=self._next_id)
            del live, runs
            self._restore_dedup(rec.replayed.dedup, rec.replayed.watermarks)
            self._restore_relay(rec.replayed.broadcast, rec.replayed.relayed)
            if len(self._durable_live) >= _FREEZE_AT:
                _GC.freeze(len(self._durable_live), collect=False)
        finally:
            if was_enabled:
                gc.enable()
        self._committer = GroupCommitter(
            wal,
            on_commit=self._apply_commit,
            on_rollback=self._apply_rollback,
            on_idle=self._on_idle,
            on_fatal=self._on_log_failed,
            observer=self._observer,
            inline_single=self._inline_lone_sync,
        )
        restored = len(self._durable_live)
        self._observer.on_log_bytes(wal.size)
        log.debug("[%s] restored %d messages from %s", self.name, restored, self.path)
        return restored

    def _restore_dedup(
        self, found: dict[DedupKey, tuple[int, float]], watermarks: dict[str, int]
    ) -> None:
        for principal, watermark in watermarks.items():
            self._dedup.advance(principal, watermark)
        for key, (mid, at) in sorted(found.items(), key=lambda kv: kv[1][1]):
            self._dedup.record(key, mid, at, durable=True)
        self._dedup.expire(self._wall_clock())
        found.clear()

    def _restore_relay(
        self, broadcast: dict[int, QueueMessageWithProvenance], relayed: dict[int, set[str]]
    ) -> None:
        live = self._durable_live
        for mid in sorted(broadcast):
            item = live.get(mid) or broadcast[mid]  # the live object if still queued
            self._relay.add(item, relayed.get(mid, ()))
            if mid not in live and self._relay.retains(mid):
                self._kept_for_peers[mid] = item.message.encoded_size
                self._state.keep(item.message.encoded_size)
        broadcast.clear()
        relayed.clear()

    async def close(self, *, wait_for_space: float = 0.0) -> None:
        """Graceful shutdown: finish in-flight work, log async messages durably, close.

        A write of the async messages that fails and is rolled back (a full disk) is
        tried again until ``wait_for_space`` seconds have passed; then, or on a failed
        fsync, :class:`AsyncMessagesLost` says how many of them were not written."""
        if self._closed or self._closing:
            return
        self._closing = True
        committer = self._committer
        if committer is None:
            self._closed = True
            return
        async with self._compaction_lock:
            pass  # a compaction under way finishes (or fails) before the log closes
        error: LogFailed | None = None
        await committer.stop()
        if committer.fatal is None:
            items = [i for i in self._state.pushed_items() if not i.persisted]
            items += [i for i in self._state.leased_items() if not i.persisted]
            items.sort(key=lambda i: i.message_id)
            frames = self._close_frames(self._async_records(items))
            try:
                await self._write_close_frames(committer, frames, wait_for_space)
            except LogFailed as exc:
                error = exc
        with contextlib.suppress(OSError):
            committer.wal.close()
        committer.shutdown_io()
        committer.detach()
        self._state = QueueState(self._state.limits)
        self._async_keyed = {}
        self._durable_live = DurableLive()
        if self._lock is not None:
            self._lock.release()
        self._closed = True
        self._wake_waiters()
        if error is not None:
            raise error
        if committer.fatal is not None:
            raise committer.fatal

    def _async_records(self, items: list[QueueMessageWithProvenance]) -> list[tuple[bytes, int]]:
        """What a graceful close logs, as groups of records that must share a frame, each
        with the number of messages it writes: a dedup record for each key of an async
        message consumed already; a submit record for each async message still held,
        with its dedup key; and, for each async broadcast message consumed here that a
        peer still lacks, a submit record followed by a consume record (docs/relay.md).
        An async broadcast message's submit record comes with a relayed record for each
        peer that has it (compaction keeps no marks of a message not logged)."""
        keyed = {
            e.message_id: (key, e.at) for key, e in self._dedup.entries().items() if not e.durable
        }
        held = {item.message_id for item in items}
        groups: list[tuple[bytes, int]] = [  # keys of messages consumed already; first
            (dedup_record(principal, dedup_id, mid, at), 0)
            for mid, ((principal, dedup_id), at) in keyed.items()
            if mid not in held
        ]
        consumed = [
            item
            for item, _have in self._relay.retained()
            if not item.persisted and item.message_id not in held
        ]
        for item in sorted([*items, *consumed], key=lambda i: i.message_id):
            item.persisted = True
            mid = item.message_id
            if mid in held:
                found = keyed.get(mid)
                records = [submit_record(item, None if found is None else found[0])]
            else:
                records = [submit_record(item), consume_record(mid)]
            records += self._relay_marks(item)
            groups.append((b",".join(records), 1))
        return groups

    def _relay_marks(self, item: QueueMessageWithProvenance) -> list[bytes]:
        """The relayed records of a broadcast message for the peers that have it."""
        if not item.broadcast or not self._relay_news:
            return []
        mid = item.message_id
        return [relayed_record(p, mid) for p in self._relay.peers if not self._relay.lacks(p, mid)]

    @staticmethod
    def _close_frames(groups: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        """The close records as frames of at most about 8 MiB, each with the number of
        messages it holds; a group of records (comma-joined) never spans two frames."""
        frames: list[tuple[bytes, int]] = []
        chunk: list[bytes] = []
        size = messages = 0
        for rec, n in groups:
            chunk.append(rec)
            size += len(rec)
            messages += n
            if size >= _CLOSE_FRAME_BYTES:
                frames.append((encode_frame(chunk), messages))
                chunk, size, messages = [], 0, 0
        if chunk:
            frames.append((encode_frame(chunk), messages))
        return frames

    @staticmethod
    async def _write_close_frames(
        committer: GroupCommitter, frames: list[tuple[bytes, int]], wait_for_space: float
    ) -> None:
        # one frame per fsync keeps "only the last frame can be torn" true
        deadline = time.monotonic() + wait_for_space
        for i, (frame, _) in enumerate(frames):
            while True:
                try:
                    await committer.io(committer.wal.append_and_sync, frame)
                    break
                except WriteFailed as exc:  # rolled back: nothing of it is in the log
                    if time.monotonic() < deadline:
                        await asyncio.sleep(_SPACE_RETRY_SECONDS)
                        continue
                    lost = sum(n for _, n in frames[i:])
                    raise AsyncMessagesLost(exc.message, lost) from exc
                except LogFailed as exc:  # a failed fsync: never retried
                    lost = sum(n for _, n in frames[i:])
                    raise AsyncMessagesLost(exc.message, lost) from exc

    async def __aenter__(self) -> QppValidatorQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- checks and ids ------------------------------------------------------------------
    def _live(self) -> GroupCommitter:
        committer = self._committer
        if committer is None:
            raise Unavailable(f"queue {self.name!r} is not open")
        if committer.fatal is not None:
            raise committer.fatal
        if self._closing:
            raise Unavailable(f"queue {self.name!r} is shutting down")
        return committer

    async def _alloc_id(self, committer: GroupCommitter) -> int:
        """The next id, waiting for a reservation when the reserved block is used up
        (callers on a hot path try `_take_reserved_id` first: no coroutine)."""
        while (mid := self._take_reserved_id(committer)) is None:
            self._request_reservation(committer)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._reserve_waiters.append(fut)
            await fut
        return mid

    def _take_reserved_id(self, committer: GroupCommitter) -> int | None:
        """The next durably reserved id, or None when the reservation is used up; asks
        for the next block once half of this one is gone."""
        mid = self._next_id
        if mid >= self._reserved_upto:
            return None
        self._next_id = mid + 1
        if mid >= self._reserved_upto - self._block // 2:
            self._request_reservation(committer)
        return mid

    def _request_reservation(self, committer: GroupCommitter) -> None:
        if self._reserve_pending:
            return
        self._reserve_pending = True
        now = self._clock()
        self._block = _next_block(self._block, now - self._block_since)
        self._block_since = now
        upto = self._reserved_upto + self._block
        fut = committer.enqueue(_RESERVE, reserve_record(upto), upto)
        # nobody awaits this one; its failure reaches the waiters in _apply_rollback
        fut.add_done_callback(_retrieve)

    # -- submit --------------------------------------------------------------------------
    async def submit_sync(
        self,
        msg: QueueMessage,
        *,
        submitted_by: str,
        broadcast: bool = False,
        upgraded: bool = False,
        dedup_key: DedupKey | None = None,
        origin: Origin | None = None,
    ) -> int:
        """SyncOp: returns the message id once its record is fsync'd. `dedup_key` (from
        `submit_once`) is logged with the message and recorded once it is durable;
        `origin` is (sidecar, id there) of a message a peer relayed."""
        committer = self._live()
        size = msg.encoded_size
        self._state.admit(size)
        mid = self._take_reserved_id(committer)
        if mid is None:
            try:
                mid = await self._alloc_id(committer)
            except BaseException:
                self._state.forget(size)
                raise
        if broadcast:  # until it is retained: the relay watermark stays below it
            self._pending_broadcast.add(mid)
        try:
            item = QueueMessageWithProvenance(
                msg,
                mid,
                self._wall_clock(),
                submitted_by,
                persisted=True,
                broadcast=broadcast,
                upgraded=upgraded,  # mode: SYNC, the default
                origin=None if origin is None else origin[0],
                origin_id=None if origin is None else origin[1],
            )
            if dedup_key is None:
                await self._durable(committer, _SUBMIT, submit_record(item), item)
            else:
                record = submit_record(item, dedup_key)
                await self._durable(committer, _SUBMIT_ONCE, record, (item, dedup_key))
        finally:
            if broadcast:
                self._pending_broadcast.discard(mid)
        self._observer.on_submit(Mode.SYNC, upgraded)
        return mid

    async def submit_async(
        self,
        msg: QueueMessage,
        *,
        submitted_by: str,
        broadcast: bool = False,
        dedup_key: DedupKey | None = None,
        origin: Origin | None = None,
    ) -> int:
        """AsyncOp: memory only (lost on a crash, logged by a graceful close)."""
        committer = self._live()
        size = msg.encoded_size
        self._state.admit(size)
        mid = self._take_reserved_id(committer)  # no await on the hot path
        if mid is None:
            try:
                mid = await self._alloc_id(committer)
            except BaseException:
                self._state.forget(size)
                raise
        item = QueueMessageWithProvenance(
            msg,
            mid,
            self._wall_clock(),
            submitted_by,
            broadcast=broadcast,
            mode=Mode.ASYNC,
            origin=None if origin is None else origin[0],
            origin_id=None if origin is None else origin[1],
        )
        self._state.push(item)
        if broadcast:
            self._retain_for_peers(item)
        if dedup_key is not None:
            self._dedup.record(dedup_key, mid, item.created_at, durable=False)
            self._async_keyed[mid] = item
        _GC.arrived()
        _GC.check(self._state.count)
        if self._waiters:
            self._wake_waiters()
        self._observer.on_submit(Mode.ASYNC, False)
        return mid

    async def submit(
        self,
        msg: QueueMessage,
        *,
        submitted_by: str,
        mode: Mode | str | None = None,
        broadcast: bool = False,
        upgraded: bool = False,
    ) -> int:
        """Submit in `mode` ("sync", "async", or None/"default" for the kind's default)."""
        if resolve_mode(msg, mode) is Mode.SYNC:
            return await self.submit_sync(
                msg, submitted_by=submitted_by, broadcast=broadcast, upgraded=upgraded
            )
        return await self.submit_async(msg, submitted_by=submitted_by, broadcast=broadcast)

    async def submit_once(
        self,
        msg: QueueMessage,
        *,
        submitted_by: str,
        dedup_id: str,
        mode: Mode | str | None = None,
        broadcast: bool = False,
        upgraded: bool = False,
        origin: Origin | None = None,
    ) -> Submitted:
        """Submit unless `(submitted_by, dedup_id)` was submitted within the dedup window;
        then store nothing and answer the first submit's id with ``duplicate=True``.

        A sync submit's key is durable with its message (so a retry after a crash whose
        reply was lost finds it); an async submit's key is as durable as the message.
        A new key when the index is full raises `QueueFull`.
        """
        key = (submitted_by, check_dedup_id(dedup_id))
        chosen = resolve_mode(msg, mode)
        while True:
            self._live()
            entry = self._dedup.find(key, self._wall_clock())
            if entry is not None:
                if chosen is Mode.SYNC and not entry.durable:
                    await self._make_durable(key, entry.message_id, entry.at)
                return Submitted(entry.message_id, True)
            in_flight = self._dedup_waits.get(key)
            if in_flight is None:
                break
            await asyncio.shield(in_flight)  # the first submit with this key decides
        self._dedup.reserve(key, self._wall_clock())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dedup_waits[key] = done
        try:
            if chosen is Mode.SYNC:
                mid = await self.submit_sync(
                    msg,
                    submitted_by=submitted_by,
                    broadcast=broadcast,
                    upgraded=upgraded,
                    dedup_key=key,
                    origin=origin,
                )
            else:
                mid = await self.submit_async(
                    msg,
                    submitted_by=submitted_by,
                    broadcast=broadcast,
                    dedup_key=key,
                    origin=origin,
                )
        finally:
            self._dedup.unreserve(key)  # a no-op once recorded
            del self._dedup_waits[key]
            done.set_result(None)
        return Submitted(mid, False)

    async def _make_durable(self, key: DedupKey, mid: int, at: float) -> None:
        """A sync submit found `key` recorded by an async one: it is answered only once
        that message (or, if it was consumed already, the key) is in the log, as its
        mode promises. The record is the one a graceful close would write.

        The message counts as logged from the moment its record is queued, so a pop or
        ack of it meanwhile logs its consume after it; if the write fails, it is an
        async message again."""
        committer = self._live()
        while (writing := self._persisting.get(mid)) is not None:
            try:  # another sync retry is writing it: answered when that write is
                await asyncio.shield(writing)
                return
            except Exception:  # noqa: S112 - that write failed: the message is async again
                continue
        item = self._async_keyed.pop(mid, None)
        if item is None:  # consumed already: a later retry must still find the key
            record = dedup_record(key[0], key[1], mid, at)
            await committer.enqueue(_KEY_DURABLE, record, key)
            return
        item.persisted = True
        # with the marks of the peers that have it: a compaction kept none of an
        # unlogged message, and without them it would be due to them again
        record = b",".join([submit_record(item, key), *self._relay_marks(item)])
        writing = self._persisting[mid] = committer.enqueue(_PERSIST, record, (item, key))
        try:
            await writing
        finally:
            if self._persisting.get(mid) is writing:
                del self._persisting[mid]

    def _consumed(self, item: QueueMessageWithProvenance) -> None:
        """A message left the queue: it stops counting against the limits, unless a
        peer still lacks it (then it counts until the last peer has it)."""
        if self._async_keyed:
            self._async_keyed.pop(item.message_id, None)
        if self._relay.retains(item.message_id):
            self._kept_for_peers[item.message_id] = item.message.encoded_size
        else:
            self._state.forget(item.message.encoded_size)

    def _relay_marked(self, peer: str, mid: int) -> None:
        self._relay.mark(peer, mid)
        if not self._relay.retains(mid):
            size = self._kept_for_peers.pop(mid, None)
            if size is not None:
                self._state.forget(size)

    # -- relay to peers (the daemon's links drive this; docs/relay.md) --------------------
    def _retain_for_peers(self, item: QueueMessageWithProvenance) -> None:
        if not self._relay_news:
            return
        self._relay.add(item)
        for news in self._relay_news.values():
            news.set()

    def relay_take(
        self,
        peer: str,
        limit: int,
        why_held: Callable[[QueueMessageWithProvenance], str | None] | None = None,
        max_bytes: int | None = None,
    ) -> list[QueueMessageWithProvenance]:
        """The next broadcast messages `peer` lacks, in id order, now in flight to it;
        one `why_held` gives a reason for waits in the backlog, held, with that reason.
        With `max_bytes`, as many as fit in that many bytes of a relay request, at least
        one (`relay_backlog.wire_size`)."""
        news = self._relay_news[peer]
        news.clear()
        return self._relay.take(peer, limit, why_held, max_bytes)

    def relay_give_back(self, peer: str, items: Sequence[QueueMessageWithProvenance]) -> None:
        """The link to `peer` failed: its in-flight messages wait again."""
        self._relay.give_back(peer, items)
        self._relay_news[peer].set()

    def relay_unhold(self, peer: str) -> None:
        """The link's tier changed: try the held messages again."""
        if self._relay.unhold(peer):
            self._relay_news[peer].set()

    async def relay_done(self, peer: str, items: Sequence[QueueMessageWithProvenance]) -> None:
        """`peer` acknowledged `items`: log that durably, then they leave its backlog.
        If that fails (a write rolled back, cancelled, the queue closing), the ones
        not logged wait again, once every write of them has ended."""
        try:
            committer = self._live()

            async def logged(mid: int) -> None:  # a task each: cancelling leaves unwritten ones out
                await self._durable(committer, _RELAYED, relayed_record(peer, mid), (peer, mid))

            # every write ends first (a cancelled gather waits for its cancelled tasks)
            ends = await asyncio.gather(
                *(logged(i.message_id) for i in items), return_exceptions=True
            )
            for end in ends:
                if isinstance(end, BaseException):
                    raise end
        except BaseException:
            self._relay.give_back(peer, items)  # those marked meanwhile stay marked
            self._relay_news[peer].set()
            raise
        self.relayed[peer] += len(items)

    async def relay_wait(self, peer: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until `peer`'s backlog may have changed (True) or `timeout` s (False)."""
        self._live()
        try:
            await asyncio.wait_for(self._relay_news[peer].wait(), timeout)
        except TimeoutError:
            return False
        return True

    def relay_low_watermark(self, peer: str) -> int:
        """The lowest id this sidecar may still relay to `peer`: below it every
        broadcast message has a durable relayed record for `peer` (or was never one),
        so the peer may forget its relay keys below (docs/relay.md)."""
        pending = min(self._pending_broadcast, default=self._next_id)
        return min(self._relay.low_watermark(peer, self._next_id), pending)

    def relay_floor(self, peer: str) -> int | None:
        """The highest low watermark `peer` has sent us, if any."""
        return self._dedup.floor(relay_principal(peer))

    def relay_keys_full(self, peer: str) -> bool:
        """Whether `peer` holds its bound of relay keys (`DedupLimits.max_peer_keys`):
        a new one is refused until a watermark frees some (docs/relay.md)."""
        return self._dedup.count(relay_principal(peer)) >= self._dedup.limits.max_peer_keys

    async def relay_watermark(self, peer: str, watermark: int) -> None:
        """`peer` will never relay an origin id below `watermark` again: log that
        (fsync'd), then its relay keys below are dropped and the others pinned."""
        principal = relay_principal(peer)
        committer = self._live()
        if self._dedup.advances(principal, watermark):
            record = watermark_record(principal, watermark)
            await self._durable(committer, _WATERMARK, record, (principal, watermark))

    def relay_backlog(self, peer: str) -> PeerBacklog:
        return self._relay.backlog(peer, self._wall_clock())

    # -- consume -------------------------------------------------------------------------
    async def pop(self) -> NoClone[QueueMessageWithProvenance] | None:
        """Take the next message for good (at-most-once): consume record fsync'd first."""
        committer = self._live()
        self._expire()
        item = self._state.take()
        if item is None:
            return None
        if item.persisted:
            await self._durable(committer, _CONSUME_POP, consume_record(item.message_id), item)
        else:
            self._consumed(item)
        self._observer.on_consume("pop")
        return NoClone(item)

    async def lease(
        self,
        timeout: float,  # noqa: ASYNC109
        kinds: Collection[Kind] | None = None,
    ) -> Lease | None:
        """Reserve the next message (of one of `kinds` if given) for `timeout` seconds
        (at-least-once delivery).

        Lease ids come from the durable id space of message ids, so a lease id from
        before a restart never names a lease of a later run (its ack is refused as stale).
        """
        committer = self._live()
        if not timeout > 0:
            raise InvalidMessage("lease timeout must be a positive number of seconds")
        self._expire()
        if not self._state.ready_of(kinds):
            return None
        lease_id = await self._alloc_id(committer)
        return self._state.lease(self._clock(), timeout, lease_id, kinds)

    async def ack(self, lease: Lease | int) -> None:
        """Consume a leased message for good; a second ack or a stale lease raises
        `AlreadyConsumed`, an unknown lease id `NotFound`."""
        committer = self._live()
        lease_id = lease if isinstance(lease, int) else lease.lease_id
        self._expire()
        held = self._state.end_lease(lease_id)
        if held.item.persisted:
            await self._durable(committer, _CONSUME_ACK, consume_record(held.message_id), held)
        else:
            self._consumed(held.item)
        self._observer.on_consume("ack")

    async def release(self, lease: Lease | int) -> None:
        """Give a leased message back now (delivery_count + 1)."""
        self._live()
        lease_id = lease if isinstance(lease, int) else lease.lease_id
        self._expire()
        self._state.release(lease_id)
        self._observer.on_release()
        self._wake_waiters()

    async def wait_available(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        kinds: Collection[Kind] | None = None,
    ) -> bool:
        """Wait until a message (of one of `kinds` if given) can be popped or leased;
        False on timeout.

        Raises `Unavailable` (or `LogFailed`) once the queue is closed or has failed,
        so a subscriber loop ends instead of waiting forever.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            self._live()
            now = self._clock()
            self._expire(now)
            if self._state.ready_of(kinds):
                return True
            wait = None if deadline is None else deadline - now
            if wait is not None and wait <= 0:
                return False
            lease_deadline = self._state.next_deadline()
            if lease_deadline is not None:
                until = max(lease_deadline - now, 0.0) + 0.001
                wait = until if wait is None else min(wait, until)
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, wait)
            except TimeoutError:
                pass
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    def _on_log_failed(self) -> None:
        committer = self._committer
        error = committer.fatal if committer is not None else None
        waiters, self._reserve_waiters = self._reserve_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(error or LogFailed("the log failed"))
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _expire(self, now: float | None = None) -> None:
        n = self._state.expire(self._clock() if now is None else now)
        if n:
            self.redeliveries += n
            self._observer.on_redelivery(n)
            self._wake_waiters()

    @staticmethod
    def _durable(
        committer: GroupCommitter, code: int, record: bytes, payload: Any
    ) -> asyncio.Future[None]:
        """Queue `record` for the next batch; await the result until it is fsync'd
        (a plain future, not a coroutine: one frame less per durable operation).

        A caller cancelled before its batch is written is left out of it and rolled
        back (nothing happened). Once the batch is being written the operation
        completes anyway: a cancelled pop then loses that message to its caller (at
        most once). Either way the caller sees its cancellation when the batch is done.
        """
        return committer.commit(code, record, payload)

    # -- group commit callbacks ------------------------------------------------------------
    def _apply_commit(self, batch: list[Op]) -> None:
        state = self._state
        live = self._durable_live
        arrived = 0
        for code, _rec, _fut, payload in batch:
            if code == _SUBMIT:
                live.add(payload)
                state.push(payload)
                arrived += 1
                if payload.broadcast:
                    self._retain_for_peers(payload)
            elif code == _SUBMIT_ONCE:
                item, key = payload
                live.add(item)
                state.push(item)
                self._dedup.record(key, item.message_id, item.created_at, durable=True)
                arrived += 1
                if item.broadcast:
                    self._retain_for_peers(item)
            elif code == _RELAYED:
                self._relay_marked(*payload)
            elif code == _WATERMARK:
                self._dedup.advance(*payload)
            elif code == _CONSUME_POP:
                live.discard(payload.message_id)
                self._consumed(payload)
            elif code == _CONSUME_ACK:
                live.discard(payload.message_id)
                self._consumed(payload.item)
            elif code == _PERSIST:
                item, key = payload
                live.add(item)  # a consume of it since is logged after this, and drops it
                self._dedup.mark_durable(key)
            elif code == _KEY_DURABLE:
                self._dedup.mark_durable(payload)
            else:
                self._reserved_upto = max(self._reserved_upto, payload)
                self._reserve_pending = False
                waiters, self._reserve_waiters = self._reserve_waiters, []
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
        self._log_records += len(batch)
        _GC.arrived(arrived)
        _GC.check(state.count)  # here, not only when idle: a busy committer is never idle
        if arrived and self._waiters:
            self._wake_waiters()

    def _apply_rollback(self, batch: list[Op]) -> None:
        state = self._state
        for code, _rec, _fut, payload in batch:
            if code == _SUBMIT:
                state.forget(payload.message.encoded_size)
            elif code == _SUBMIT_ONCE:
                state.forget(payload[0].message.encoded_size)
            elif code in (_RELAYED, _WATERMARK):
                pass  # the message stays in the peer's backlog (in flight until given back)
            elif code == _CONSUME_POP:
                state.push(payload)
            elif code == _CONSUME_ACK:
                state.restore_lease(payload)
            elif code == _PERSIST:
                item, _key = payload  # an async message again, written at close
                item.persisted = False
                self._async_keyed[item.message_id] = item  # until consumed, as before
            elif code == _KEY_DURABLE:
                pass
            else:
                self._reserve_pending = False
                waiters, self._reserve_waiters = self._reserve_waiters, []
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(
                            LogFailed("could not reserve message ids (log write failed)")
                        )
        self._wake_waiters()

    # -- compaction ----------------------------------------------------------------------
    def _on_idle(self) -> None:
        _GC.check(self._state.count)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        committer = self._committer
        if committer is None or self._compacting or self._closing:
            return
        size = committer.wal.size
        live = len(self._durable_live) + len(self._relay) * (2 + len(self._relay_news))
        too_big = size >= self._compact_bytes and live * 2 < self._log_records
        mostly_consumed = size >= _MIN_COMPACT_BYTES and live * 4 < self._log_records
        if too_big or mostly_consumed:
            self._compacting = True
            task = asyncio.get_running_loop().create_task(self._compact(committer))
            task.add_done_callback(_log_task_error)

    async def compact_wal(self) -> dict[str, Any]:
        """Rewrite the log with only live messages; safe against concurrent work."""
        return await self._compact(self._live())

    async def _compact(self, committer: GroupCommitter) -> dict[str, Any]:
        """Rewrite the log from a snapshot while the queue goes on (wal/_log.py).

        Only two short steps hold batches back: starting (the log's capture, pinning
        the live messages, copying the dedup keys, the relay records) and the catch-up
        and swap at the end. In between the snapshot is written a chunk at a time, off the event
        loop, while submits, pops and acks go on.
        """
        async with self._compaction_lock:
            if self._layer.blocking:
                self._compaction_thread = ThreadPoolExecutor(1, thread_name_prefix="compact")
            try:
                return await self._compact_now(committer)
            finally:
                if self._compaction_thread is not None:
                    self._compaction_thread.shutdown(wait=False)
                    self._compaction_thread = None

    async def _compact_now(self, committer: GroupCommitter) -> dict[str, Any]:
        wal = committer.wal
        live_items = self._durable_live
        started = time.perf_counter()

        def start() -> tuple[Iterator[Live], Iterator[bytes], Collection[int], int, int]:
            # runs between two batches: the log holds exactly the durable state
            extra = [checkpoint_record(self._reserved_upto, self._wall_clock())]
            extra += [watermark_record(p, w) for p, w in self._dedup.floors().items()]
            # the relay backlog and the dedup keys are copied here (C-level copies) and
            # serialised in steps like the messages: 100,000 dedup keys took 0.1-0.2 s
            # with batches held
            retained, lacking = self._relay.snapshot()
            relay = self._relay_records(retained, lacking) if self._relay_news else iter(())
            keys = self._dedup.entries()
            dedup = (
                dedup_record(principal, dedup_id, e.message_id, e.at)
                for (principal, dedup_id), e in keys.items()
                if e.durable
            )
            snapshot = live_items.pin()
            wal.start_capture()
            records = itertools.chain(extra, relay, dedup)
            return snapshot, records, retained, wal.size, self._log_records

        compaction: Compaction | None = None
        try:
            snapshot, extra, retained, before, records_at = await committer.run_exclusive(start)
            compaction = await self._off_loop(wal.begin_compacted)
            _, count, steps = await self._in_steps(
                _records_chunk(wal, compaction, extra, self.compaction_chunk)
            )
            chunk = self._snapshot_chunk(wal, compaction, snapshot, retained)
            live, records, more = await self._in_steps(chunk)
            count += records
            steps += more
            written = compaction
            live_items.unpin()
            await self._off_loop(wal.seal_compacted, compaction)
            # what was logged meanwhile, off the loop too: the swap has little left
            caught_up_early = await self._off_loop(wal.catch_up, compaction)

            def swap() -> tuple[int, float]:
                swap_started = time.perf_counter()
                caught_up = wal.finish_compacted(written)
                self._log_records = count + (self._log_records - records_at)
                return caught_up, time.perf_counter() - swap_started

            caught_up, swap_seconds = await committer.run_exclusive(swap)
            await self._off_loop(wal.close_retired)  # frees the old file's blocks
        except BaseException:
            wal.abandon_compacted(compaction)
            raise
        finally:
            live_items.unpin()
            self._compacting = False
        result: dict[str, Any] = {
            "bytes_before": before,
            "bytes_after": wal.size,
            "live": live,
            "seconds": time.perf_counter() - started,
            "snapshot_steps": steps,
            "caught_up_frames": caught_up_early + caught_up,
            "caught_up_at_swap": caught_up,
            "swap_seconds": swap_seconds,
        }
        self.compactions += 1
        log.info(
            "[%s] compacted %s: %d -> %d bytes, %d live messages kept, %.3fs",
            self.name,
            self.path,
            result["bytes_before"],
            result["bytes_after"],
            result["live"],
            result["seconds"],
        )
        self._observer.on_compaction(
            result["seconds"], result["bytes_before"], result["bytes_after"]
        )
        self._observer.on_log_bytes(result["bytes_after"])
        return result

    async def _off_loop(self, fn: Callable[..., R], *args: Any) -> R:
        """Blocking log work in the compaction's thread (inline on a layer that never
        blocks). One thread: spread over the default executor's threads, the chunks'
        allocations kept a malloc arena per thread (+40 MB of peak RSS at 1M)."""
        if self._compaction_thread is None:
            return fn(*args)
        step = asyncio.get_running_loop().run_in_executor(self._compaction_thread, fn, *args)
        try:
            return await asyncio.shield(step)
        except asyncio.CancelledError:
            # the step ends before what it uses (the temp file, the pinned dict) is let go
            await asyncio.wait([step])
            raise

    async def _in_steps(self, step: Callable[[], tuple[int, int]]) -> tuple[int, int, int]:
        """Run `step` off the loop until it takes fewer than `compaction_chunk` items,
        letting the loop run between any two; (items, records, steps)."""
        items = records = steps = 0
        while True:
            n, r = await self._off_loop(step)
            items += n
            records += r
            steps += 1
            if n < self.compaction_chunk:
                return items, records, steps
            if not self._layer.blocking:
                await asyncio.sleep(0)

    def _snapshot_chunk(
        self,
        wal: WriteAheadLog,
        compaction: Compaction,
        snapshot: Iterator[Live],
        retained: Collection[int],
    ) -> Callable[[], tuple[int, int]]:
        """A step of the snapshot: the next `compaction_chunk` live messages (about a
        millisecond of work, so the loop soon has the GIL back) into the temp file,
        with, for a broadcast message every peer has, that they do; (messages, records)."""
        peers = tuple(self._relay_news)
        size = self.compaction_chunk

        def chunk() -> tuple[int, int]:
            records: list[bytes] = []
            n = 0
            for value in itertools.islice(snapshot, size):
                n += 1
                records.append(live_record(value))
                if peers and live_broadcast(value):
                    item = live_item(value)
                    if item.message_id not in retained:
                        records += [relayed_record(peer, item.message_id) for peer in peers]
            wal.add_compacted(compaction, records)
            return n, len(records)

        return chunk

    def _relay_records(
        self, retained: dict[int, QueueMessageWithProvenance], lacking: dict[str, set[int]]
    ) -> Iterator[bytes]:
        """What compaction keeps of the relay backlog (copied at its start): each
        broadcast message some peer lacks (submitted and consumed again if it was
        consumed here) and who has it already."""
        live = self._durable_live
        for mid, item in retained.items():
            if not item.persisted:
                continue  # an async message: relayed from memory only
            if not live.held_at_pin(mid):
                yield submit_record(item)
                yield consume_record(mid)
            for peer, lacks in lacking.items():
                if mid not in lacks:
                    yield relayed_record(peer, mid)

    # -- introspection -------------------------------------------------------------------
    def depth(self) -> dict[str, int]:
        """Messages held: total (ready + leased), ready, leased, and ready per priority."""
        state = self._state
        out = {"total": state.ready + state.leased, "ready": state.ready, "leased": state.leased}
        out.update(state.depth_by_priority())
        return out

    def stats(self) -> dict[str, Any]:
        committer = self._committer
        return {
            "name": self.name,
            "path": self.path,
            "depth": self.depth(),
            "bytes": self._state.bytes,
            "durable_messages": len(self._durable_live),
            "next_id": self._next_id,
            "log_bytes": committer.wal.size if committer else 0,
            "log_records": self._log_records,
            "batches": committer.batches if committer else 0,
            "records_committed": committer.records if committer else 0,
            "compactions": self.compactions,
            "redeliveries": self.redeliveries,
            "dedup_ids": len(self._dedup),
            "fatal": committer.fatal.message if committer and committer.fatal else None,
            "closed": self._closed,
        }

    @property
    def failed(self) -> LogFailed | None:
        return self._committer.fatal if self._committer else None


def _records_chunk(
    wal: WriteAheadLog, compaction: Compaction, records: Iterator[bytes], size: int
) -> Callable[[], tuple[int, int]]:
    """A compaction step adding the next `size` of `records` to the temp file."""

    def chunk() -> tuple[int, int]:
        some = list(itertools.islice(records, size))
        wal.add_compacted(compaction, some)
        return len(some), len(some)

    return chunk


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background compaction failed: %s", task.exception())


class QppSyncSubmit:
    """The explicit SyncOp form."""

    @staticmethod
    async def execute(
        queue: QppValidatorQueue, msg: QueueMessage, *, submitted_by: str, **kw: Any
    ) -> int:
        return await queue.submit_sync(msg, submitted_by=submitted_by, **kw)


class QppAsyncSubmit:
    """The explicit AsyncOp form."""

    @staticmethod
    async def execute(
        queue: QppValidatorQueue, msg: QueueMessage, *, submitted_by: str, **kw: Any
    ) -> int:
        return await queue.submit_async(msg, submitted_by=submitted_by, **kw)


def _first_block() -> int:
    return min(FIRST_ID_BLOCK, ID_BLOCK)


def _next_block(size: int, lasted: float) -> int:
    """The next reservation's size, from how long the last one lasted."""
    if lasted < _BLOCK_FAST:
        return min(size * 2, ID_BLOCK)
    if lasted > _BLOCK_SLOW:
        return max(size // 2, _first_block())
    return size
