"""Which broadcast messages each peer still lacks. No I/O, no clock: callers pass `now`.

A broadcast message is *retained* while some peer lacks it, whether or not it was
consumed locally (local consumption and relay are independent). Per peer, messages go
out in id order: `take` hands the next ones to the peer's link (*in flight*), `mark`
records that the peer has one (the shell logs that first), `give_back` returns what a
broken link had in flight to the front of the line, and `hold` parks a message the
link may not carry now (a session tier too low) with the reason, until `unhold`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sidecar.messages import QueueMessageWithProvenance

Item = QueueMessageWithProvenance


# a relay item's envelope around its message: {"origin_id": <up to 20 digits>,
# "mode": "async", "message": …} and the comma after it, rounded up
ITEM_OVERHEAD = 96


def wire_size(item: Item) -> int:
    """An upper bound of the bytes `item` takes in a relay request."""
    return item.message.encoded_size + ITEM_OVERHEAD


@dataclass(frozen=True, slots=True)
class PeerBacklog:
    """What one peer lacks: count and bytes (waiting, in flight and held), the oldest
    message's age, and the messages held back with why."""

    count: int
    bytes: int
    oldest_age: float | None
    in_flight: int
    held: dict[int, str]


class _PeerLine:
    __slots__ = ("bytes", "heap", "held", "in_flight", "lacking")

    def __init__(self) -> None:
        self.heap: list[int] = []  # ids waiting (lazy: may hold ids no longer lacking)
        self.lacking: set[int] = set()  # every id this peer lacks
        self.in_flight: set[int] = set()
        self.held: dict[int, str] = {}
        self.bytes = 0


class RelayBacklog:
    def __init__(self, peers: Iterable[str]) -> None:
        self._lines = {peer: _PeerLine() for peer in peers}
        self._items: dict[int, Item] = {}
        self._missing: dict[int, int] = {}  # id -> how many peers lack it

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._lines)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Item, have: Iterable[str] = ()) -> None:
        """Retain a broadcast message for every peer not in `have`."""
        mid = item.message_id
        if mid in self._items:
            return
        done = set(have)
        size = item.message.encoded_size
        n = 0
        for peer, line in self._lines.items():
            if peer in done:
                continue
            line.lacking.add(mid)
            heapq.heappush(line.heap, mid)
            line.bytes += size
            n += 1
        if n:
            self._items[mid] = item
            self._missing[mid] = n

    def take(
        self,
        peer: str,
        limit: int,
        why_held: Callable[[Item], str | None] | None = None,
        max_bytes: int | None = None,
    ) -> list[Item]:
        """Up to `limit` next messages for `peer`, in id order, now in flight. A message
        for which `why_held` gives a reason is parked instead (see `unhold`). With
        `max_bytes`, the messages' `wire_size` adds up to at most that, except that the
        first is always taken."""
        line = self._lines[peer]
        out: list[Item] = []
        heap = line.heap
        total = 0
        while heap and len(out) < limit:
            mid = heapq.heappop(heap)
            if mid not in line.lacking or mid in line.in_flight or mid in line.held:
                continue
            item = self._items[mid]
            reason = why_held(item) if why_held is not None else None
            if reason is not None:
                line.held[mid] = reason
                continue
            if max_bytes is not None:
                total += wire_size(item)
                if out and total > max_bytes:
                    heapq.heappush(heap, mid)  # first of the next batch
                    break
            line.in_flight.add(mid)
            out.append(item)
        return out

    def give_back(self, peer: str, items: Iterable[Item]) -> None:
        """The link broke: what it had in flight waits again, in id order."""
        line = self._lines[peer]
        for item in items:
            mid = item.message_id
            if mid in line.in_flight:
                line.in_flight.discard(mid)
                heapq.heappush(line.heap, mid)

    def unhold(self, peer: str) -> int:
        """Try every held message again (the session tier changed); how many."""
        line = self._lines[peer]
        held, line.held = line.held, {}
        for mid in held:
            heapq.heappush(line.heap, mid)
        return len(held)

    def mark(self, peer: str, mid: int) -> None:
        """`peer` has message `mid` (its relay record is durable)."""
        line = self._lines.get(peer)
        if line is None or mid not in line.lacking:
            return
        line.lacking.discard(mid)
        line.in_flight.discard(mid)
        line.held.pop(mid, None)
        item = self._items[mid]
        line.bytes -= item.message.encoded_size
        left = self._missing[mid] - 1
        if left:
            self._missing[mid] = left
        else:
            del self._missing[mid]
            del self._items[mid]

    def low_watermark(self, peer: str, next_id: int) -> int:
        """The lowest id `peer` still lacks (waiting, in flight or held), else `next_id`
        (the first id not handed out yet)."""
        line = self._lines[peer]
        heap = line.heap
        while heap and heap[0] not in line.lacking:
            heapq.heappop(heap)  # a lazy entry: the peer has that message by now
        # every waiting id is in the heap; in-flight and held ones are not
        low = min(line.in_flight, default=next_id)
        low = min(low, min(line.held, default=next_id), heap[0] if heap else next_id)
        return min(low, next_id)

    def retains(self, mid: int) -> bool:
        """Some peer still lacks message `mid`."""
        return mid in self._items

    def lacks(self, peer: str, mid: int) -> bool:
        line = self._lines.get(peer)
        return line is not None and mid in line.lacking

    def snapshot(self) -> tuple[dict[int, Item], dict[str, set[int]]]:
        """Copies (C-level, one per peer) of the retained messages by id and of the ids
        each peer lacks, for a compaction to read a piece at a time."""
        return dict(self._items), {peer: set(line.lacking) for peer, line in self._lines.items()}

    def retained(self) -> list[tuple[Item, list[str]]]:
        """Every retained message with the peers that have it (for compaction)."""
        out = []
        for mid, item in list(self._items.items()):
            have = [p for p, line in self._lines.items() if mid not in line.lacking]
            out.append((item, have))
        return out

    def backlog(self, peer: str, now: float) -> PeerBacklog:
        line = self._lines[peer]
        oldest = min(line.lacking, default=None)
        age = None if oldest is None else max(0.0, now - self._items[oldest].created_at)
        return PeerBacklog(len(line.lacking), line.bytes, age, len(line.in_flight), dict(line.held))
