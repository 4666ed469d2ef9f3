"""Pure queue state: priority order, leases, limits. No I/O, no clock: callers pass `now`.

Order: higher priority first, then lower message id (FIFO within a priority). Ready
messages wait in one heap per kind; each holds one int per message, its order key, and
a dict maps the key to the message: a million waiting messages add no tuple each for
the garbage collector to scan (ints are not tracked), and int comparisons are the
cheapest heap order. The next message is the smallest top of the seven heaps (of the
heaps of the kinds asked for, for a consumer that takes only some kinds): a take costs
one heap pop and seven comparisons, whatever waits in other kinds.
Recovered messages (`load`, a million at an open) get no key or dict entry each: they
wait in one sorted run per kind, and only the next of each run is in its kind's heap;
taking it feeds the heap the one after. Order is the same as if each had been pushed.
Accounting (count and bytes against the limits) covers messages waiting, leased, being
consumed, and submits reserved but not yet committed; a full queue raises `QueueFull`.
A message is accounted at what it costs in memory, measured, not at its size on the
wire: see `message_cost`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from itertools import compress, islice, repeat
from operator import attrgetter, is_, lt
from typing import Any

from sidecar.errors import AlreadyConsumed, NotFound, QueueFull
from sidecar.messages import Kind, Priority, QueueMessageWithProvenance

DEFAULT_MAX_MESSAGES = 1_000_000
DEFAULT_MAX_BYTES = 1 << 30


# What a queued message costs in memory beyond its canonical bytes: its provenance
# record and message object, its id and timestamp, its ready-heap key and dict entries,
# its entry in the queue's index of logged messages. Measured with bench/depth.py (RSS
# growth per message at 1M queued 300-byte messages, minus the 300 bytes), rounded up;
# tests/core/test_memory.py checks that a queue filled to `max_bytes` stays within it.
MESSAGE_OVERHEAD_BYTES = 352


def message_cost(encoded_size: int) -> int:
    """Bytes a message of `encoded_size` canonical bytes is accounted for."""
    return encoded_size + MESSAGE_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True, slots=True)
class Lease:
    """A reservation of one message until `deadline`.

    `deadline` is on the clock of the `now` values given to `QueueState`; the queue
    shell uses `time.monotonic()`.
    """

    lease_id: int
    message_id: int
    item: QueueMessageWithProvenance
    deadline: float


_ID_BITS = 64  # message ids are u64
_TOP_PRIORITY = max(Priority)


def order_key(priority: int, message_id: int) -> int:
    """Smaller first: higher priority, then lower id."""
    return ((_TOP_PRIORITY - priority) << _ID_BITS) | message_id


def _same(item: QueueMessageWithProvenance) -> QueueMessageWithProvenance:
    return item


def _item_order(item: QueueMessageWithProvenance) -> int:
    return order_key(item.priority, item.message_id)


_IDS = attrgetter("message_id")
_PRIORITIES = attrgetter("priority")


def _in_order(run: list[QueueMessageWithProvenance]) -> bool:
    """Whether `run` is in delivery order: one priority, ids rising (the usual case
    for a log's submit records of one kind; checked at C speed: `list.count` compares
    by identity first, where a set would hash each enum member in Python)."""
    priorities = list(map(_PRIORITIES, run))
    ids = list(map(_IDS, run))
    return priorities.count(priorities[0]) == len(priorities) and all(
        map(lt, ids, islice(ids, 1, None))
    )


class QueueState:
    def __init__(self, limits: QueueLimits | None = None) -> None:
        self.limits = limits or QueueLimits()
        self._ready: dict[Kind, list[int]] = {k: [] for k in Kind}  # heaps of order keys
        self._heaps = list(self._ready.values())
        self._items: dict[int, QueueMessageWithProvenance] = {}  # order key -> message
        # recovered messages not in a heap yet: per kind, in reverse delivery order (the
        # next one last), each as the message or an id that `_fetch` turns into it;
        # `_fed` maps the key of each run's message now in its heap to the kind, so
        # that taking it feeds the heap the next
        self._runs: dict[Kind, list[Any]] = {}
        self._fetch: dict[Kind, Callable[[Any], QueueMessageWithProvenance]] = {}
        self._fed: dict[int, Kind] = {}
        self._in_runs = 0
        self._leases: dict[int, Lease] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._next_lease_id = 1
        self.count = 0
        self.bytes = 0

    # -- admission -----------------------------------------------------------------------
    def admit(self, size: int) -> None:
        """Account for one incoming message of `size` canonical bytes or raise QueueFull."""
        if self.count >= self.limits.max_messages:
            raise QueueFull(
                f"queue holds {self.count} messages (limit {self.limits.max_messages}); "
                "consume some or raise the limit"
            )
        cost = message_cost(size)
        if self.bytes + cost > self.limits.max_bytes:
            raise QueueFull(
                f"queue holds {self.bytes} bytes; a {size}-byte message (accounted "
                f"{cost} bytes in memory) would pass the limit of {self.limits.max_bytes}"
            )
        self.count += 1
        self.bytes += cost

    def keep(self, size: int) -> None:
        """Account a recovered message held outside the queue (a broadcast message
        consumed here that a peer still lacks), without the limit check, like `load`."""
        self.count += 1
        self.bytes += message_cost(size)

    def forget(self, size: int) -> None:
        """Undo `admit`: the message left the queue (consumed) or its submit failed."""
        self.count -= 1
        self.bytes -= message_cost(size)

    # -- ready heaps ---------------------------------------------------------------------
    def push(self, item: QueueMessageWithProvenance) -> None:
        """Make an admitted message available."""
        key = order_key(item.priority, item.message_id)
        self._items[key] = item
        heapq.heappush(self._ready[item.kind], key)

    def load(self, items: Iterable[QueueMessageWithProvenance], *, issued_below: int = 1) -> None:
        """Bulk-load recovered messages (admitted without the limit check); ids below
        `issued_below` may have been leases before the restart, so they count as stale.
        They are filed in one run per kind (in passes at C speed; a run is sorted if
        it is not in delivery order already), and only the first of each run enters
        its heap."""
        self._next_lease_id = max(self._next_lease_id, issued_below)
        every = list(items)
        kinds = QueueMessageWithProvenance.kinds_of(every)
        present = set(kinds)
        runs = {
            kind: every
            if len(present) == 1
            else list(compress(every, map(is_, kinds, repeat(kind))))
            for kind in present
        }
        for run in runs.values():
            if not _in_order(run):
                run.sort(key=_item_order)
        self._load_runs(runs, QueueMessageWithProvenance.total_size(every), _same)

    def load_logged(
        self,
        runs: dict[Kind, list[int]],
        fetch: Callable[[int], QueueMessageWithProvenance],
        size: int,
        *,
        issued_below: int = 1,
    ) -> None:
        """`load` of recovered messages not built yet: their ids by kind, each list in
        delivery order (taken over), and their canonical bytes in all. `fetch(id)`
        gives a message when it enters its heap (as the next of its run)."""
        self._next_lease_id = max(self._next_lease_id, issued_below)
        self._load_runs(runs, size, fetch)

    def _load_runs(
        self,
        runs: Mapping[Kind, list[Any]],
        size: int,
        fetch: Callable[[Any], QueueMessageWithProvenance],
    ) -> None:
        count = sum(map(len, runs.values()))
        self.count += count
        self.bytes += size + count * MESSAGE_OVERHEAD_BYTES  # message_cost of each
        for kind, run in runs.items():
            if not run:
                continue
            if kind in self._runs:  # a second load (not done by the queue): plain pushes
                for entry in run:
                    self.push(fetch(entry))
                continue
            run.reverse()
            self._runs[kind] = run
            self._fetch[kind] = fetch
            self._in_runs += len(run)
            self._feed(kind)

    def _feed(self, kind: Kind) -> None:
        """Move the next message of `kind`'s run into its heap."""
        run = self._runs[kind]
        if not run:
            del self._runs[kind], self._fetch[kind]
            return
        item = self._fetch[kind](run.pop())
        self._in_runs -= 1
        key = order_key(item.priority, item.message_id)
        self._items[key] = item
        heapq.heappush(self._ready[kind], key)
        self._fed[key] = kind

    def take(self, kinds: Collection[Kind] | None = None) -> QueueMessageWithProvenance | None:
        """Remove the next message, of one of `kinds` if given (still accounted until
        `forget`)."""
        heaps = self._heaps if kinds is None else [self._ready[kind] for kind in kinds]
        best: list[int] | None = None
        top = 0
        for heap in heaps:
            if heap and (best is None or heap[0] < top):
                best, top = heap, heap[0]
        if best is None:
            return None
        key = heapq.heappop(best)
        if self._fed:
            kind = self._fed.pop(key, None)
            if kind is not None:
                self._feed(kind)
        return self._items.pop(key)

    @property
    def ready(self) -> int:
        return len(self._items) + self._in_runs

    def ready_of(self, kinds: Collection[Kind] | None) -> int:
        """Ready messages of `kinds` (of every kind for None)."""
        if kinds is None:
            return len(self._items) + self._in_runs
        runs = self._runs
        return sum(len(self._ready[kind]) + len(runs.get(kind, ())) for kind in kinds)

    # -- leases --------------------------------------------------------------------------
    def lease(
        self,
        now: float,
        timeout: float,
        lease_id: int | None = None,
        kinds: Collection[Kind] | None = None,
    ) -> Lease | None:
        """Lease the next message (of one of `kinds` if given); `lease_id` (above every
        id issued so far) comes from the caller when ids must stay unique across
        restarts."""
        item = self.take(kinds)
        if item is None:
            return None
        if lease_id is None:
            lease_id = self._next_lease_id
        elif lease_id < self._next_lease_id:
            raise ValueError(f"lease id {lease_id} was issued before")
        lease = Lease(lease_id, item.message_id, item, now + timeout)
        self._next_lease_id = lease_id + 1
        self._leases[lease.lease_id] = lease
        heapq.heappush(self._deadlines, (lease.deadline, lease.lease_id))
        return lease

    def end_lease(self, lease_id: int) -> Lease:
        """Remove an active lease (for ack or release); raise if stale or unknown."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            if 0 < lease_id < self._next_lease_id:
                raise AlreadyConsumed(
                    f"lease {lease_id} is no longer held (already acked, released or expired)"
                )
            raise NotFound(f"no lease {lease_id}")
        return lease

    def restore_lease(self, lease: Lease) -> None:
        """Undo `end_lease` (the ack could not be logged)."""
        self._leases[lease.lease_id] = lease
        heapq.heappush(self._deadlines, (lease.deadline, lease.lease_id))

    def release(self, lease_id: int) -> Lease:
        """Return a leased message to the queue, counted as one more delivery."""
        lease = self.end_lease(lease_id)
        lease.item.delivery_count += 1
        self.push(lease.item)
        return lease

    def expire(self, now: float) -> int:
        """Return every lease past its deadline to the queue; how many."""
        n = 0
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, lease_id = heapq.heappop(deadlines)
            lease = self._leases.get(lease_id)
            if lease is None or lease.deadline > now:
                continue
            del self._leases[lease_id]
            lease.item.delivery_count += 1
            self.push(lease.item)
            n += 1
        return n

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self._leases:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    @property
    def leased(self) -> int:
        return len(self._leases)

    def leased_items(self) -> list[QueueMessageWithProvenance]:
        return [lease.item for lease in self._leases.values()]

    def ready_items(self) -> list[QueueMessageWithProvenance]:
        """Every ready message (recovered ones still in their runs are built)."""
        items = list(self._items.values())
        for kind, run in self._runs.items():
            items += map(self._fetch[kind], reversed(run))  # in delivery order
        return items

    def pushed_items(self) -> list[QueueMessageWithProvenance]:
        """The ready messages but those recovered and still waiting in their runs (all
        logged, so of no interest to a close that logs the others)."""
        return list(self._items.values())

    def depth_by_priority(self) -> dict[str, int]:
        depth = {p.name.lower(): 0 for p in Priority}
        for kind, heap in self._ready.items():
            depth[kind.priority.name.lower()] += len(heap) + len(self._runs.get(kind, ()))
        return depth
